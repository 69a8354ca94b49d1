"""SSRF guard: callbacks may only reach public addresses, or networks the operator allowed.

Checked twice: when a callback subscribes (https required, every address the host resolves to
public or allowed) and on every delivery, on the address actually connected to, so a DNS answer
that changes after subscribing cannot point deliveries at internal hosts.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from storage.errors import Invalid
from webhooks.config import IPNetwork

Resolve = Callable[[str], list[str]]


class BlockedAddress(OSError):
    """A callback host resolved only to addresses deliveries may not reach."""


# IPv6 prefixes that carry an IPv4 address a gateway may forward to: NAT64 (RFC 6052, RFC 8215).
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def _reaches(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address a connection to `ip` may end up at: the IPv4 address inside an IPv6 form that embeds one."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in n for n in NAT64) or ip in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def allowed(address: str, networks: Sequence[IPNetwork]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if any(ip in n for n in networks):
        return True
    inner = _reaches(ip)
    return any(inner in n for n in networks) or (ip.is_global and inner.is_global and not inner.is_multicast)


def literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def resolve(host: str) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})


def check_callback(url: Any, networks: Sequence[IPNetwork], resolver: Resolve = resolve) -> str:
    """Return the callback URL if deliveries may go there; raise Invalid saying why not."""
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(text) > 4096:
        raise Invalid("WebHookUri must be an absolute https URL (the flow's callback URL)", target="WebHookUri")
    if parts.username or parts.password:
        raise Invalid("WebHookUri must not carry a user name or password", target="WebHookUri")
    try:
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        raise Invalid("WebHookUri has an invalid port", target="WebHookUri") from None
    host = parts.hostname
    try:
        fixed = literal(host)
        addresses = [fixed] if fixed else resolver(host)
    except OSError:
        raise Invalid(f"WebHookUri: the host {host!r} does not resolve", target="WebHookUri") from None
    blocked = [a for a in addresses if not allowed(a, networks)]
    if blocked or not addresses:
        raise Invalid(
            f"WebHookUri: {host!r} resolves to {', '.join(blocked) or 'nothing'}, which is not a public address;"
            " private networks are reachable only when listed in COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS",
            target="WebHookUri",
        )
    in_allowed = all(any(ipaddress.ip_address(a) in n for n in networks) for a in addresses)
    if parts.scheme != "https" and not in_allowed:
        raise Invalid("WebHookUri must use https", target="WebHookUri")
    return text


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only addresses deliveries may reach."""

    def __init__(self, networks: Sequence[IPNetwork], inner: AbstractResolver | None = None) -> None:
        self.networks = tuple(networks)
        self.inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        kept = [r for r in results if allowed(r["host"], self.networks)]
        if not kept:
            raise BlockedAddress(f"{host} resolves only to addresses that are not public ({results[0]['host']})")
        return kept

    async def close(self) -> None:
        await self.inner.close()
