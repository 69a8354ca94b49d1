"""Outbound HTTP requests: the SSRF guard (requests may only reach globally routable unicast addresses, or
networks the operator allowed), the request target sent byte for byte as given, and reading Retry-After.

Every request coursewire makes to an address someone else chose (webhook callbacks, calendar servers and
providers) goes through here, checked twice: when the URL is accepted (`check_url`: https required, every
address the host resolves to public or allowed) and on every request, on the address actually connected to
(`GuardedResolver`), so a DNS answer that changes later cannot point requests at internal hosts.

"Public" is decided by construction, from the tables below, not by Python's `is_global` (which
calls site-local fec0::/10, IPv4-translated ::ffff:0:0:0/96 and registry entries newer than the
running Python global). An address is public when it is unicast (IPv4 outside 224.0.0.0/4 and
240.0.0.0/4; IPv6 inside 2000::/3, the global unicast range of RFC 4291 §2.4) and lies in no block
of the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890, updated by RFC 8190). Every
registry entry is refused, including those the registry marks globally reachable (AS112, AMT, PCP
and TURN anycast, ORCHIDv2, drone tags): they are protocol service addresses, never a request's
target, and a table kept whole is easier to check against its source than a table of exceptions.

IPv6 forms that carry an IPv4 address where a host or gateway will deliver the packet (IPv4-mapped,
IPv4-translated, IPv4-compatible, NAT64 well-known prefix, 6to4) are judged by that IPv4 address.
Two forms are refused whatever they carry: local-use NAT64 (RFC 8215), whose translator is the
operator's own and may map to private IPv4 by design (§5), at a bit position that depends on its
prefix length (RFC 6052 §2.2); and Teredo (RFC 4380), whose client IPv4 address is obfuscated and
names a NAT mapping that a local relay may deliver to directly, so no single IPv4 address decides
where the packet goes. An operator who needs either lists the IPv6 prefix itself.

The networks an operator allows come from COURSEWIRE_ALLOWED_NETWORKS (every outbound request) and, for
webhook callbacks, COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS too (`parse_networks` reads either).
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from storage import names, subscriptions
from storage.errors import Invalid

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str], list[str]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(OSError):
    """A host resolved only to addresses outbound requests may not reach."""


def parse_networks(text: str, variable: str = "COURSEWIRE_ALLOWED_NETWORKS") -> tuple[IPNetwork, ...]:
    """The networks a comma-separated list of CIDRs names, from the environment variable `variable`.

    `"127.0.0.0/8, 10.1.0.0/16"` -> (IPv4Network('127.0.0.0/8'), IPv4Network('10.1.0.0/16')); host bits are
    dropped (`10.1.2.3/16` -> 10.1.0.0/16), a bare address is a network of one, empty entries are skipped.
    Raises ValueError naming `variable` and the first entry that is no network.
    """
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{variable}: {part!r} is not a network in CIDR form") from None
    return tuple(networks)


@dataclass(frozen=True)
class Block:
    """A block of addresses outbound requests may not reach: its network, its registry name, and its source."""

    network: IPNetwork
    name: str
    source: str


def _blocks(*rows: tuple[str, str, str]) -> tuple[Block, ...]:
    return tuple(Block(ipaddress.ip_network(cidr), name, source) for cidr, name, source in rows)


# The IANA IPv4 Special-Purpose Address Registry (RFC 6890 §2.2.2 as updated by RFC 8190; revision of
# 2025-10-09), every entry, and the two non-unicast ranges of the IPv4 address space.
IPV4_BLOCKS = _blocks(
    ("0.0.0.0/8", '"This network"', "RFC 791 §3.2"),
    ("0.0.0.0/32", '"This host on this network"', "RFC 1122 §3.2.1.3"),
    ("10.0.0.0/8", "Private-Use", "RFC 1918"),
    ("100.64.0.0/10", "Shared Address Space (carrier-grade NAT; cloud metadata services)", "RFC 6598"),
    ("127.0.0.0/8", "Loopback", "RFC 1122 §3.2.1.3"),
    ("169.254.0.0/16", "Link Local", "RFC 3927"),
    ("172.16.0.0/12", "Private-Use", "RFC 1918"),
    ("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890 §2.1"),
    ("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335"),
    ("192.0.0.8/32", "IPv4 dummy address", "RFC 7600"),
    ("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723"),
    ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    ("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2"),
    ("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2"),
    ("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737"),
    ("192.31.196.0/24", "AS112-v4", "RFC 7535"),
    ("192.52.193.0/24", "AMT", "RFC 7450"),
    ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    ("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751"),
    ("192.168.0.0/16", "Private-Use", "RFC 1918"),
    ("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534"),
    ("198.18.0.0/15", "Benchmarking", "RFC 2544"),
    ("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737"),
    ("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737"),
    ("240.0.0.0/4", "Reserved", "RFC 1112 §4"),
    ("255.255.255.255/32", "Limited Broadcast", "RFC 8190, RFC 919 §7"),
    ("224.0.0.0/4", "Multicast (IPv4 Multicast Address Space registry)", "RFC 5771"),
)

# Only 2000::/3 is global unicast (RFC 4291 §2.4; IANA IPv6 Address Space registry): the rest of the
# space is reserved, unique-local fc00::/7, link-local fe80::/10, site-local fec0::/10 or multicast ff00::/8.
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

# The IANA IPv6 Special-Purpose Address Registry (RFC 6890 §2.2.3 as updated by RFC 8190; revision of
# 2025-10-09), every entry, and the ranges set apart outside it. The blocks outside 2000::/3 are refused
# by the rule above already; they are listed so the table reads as its sources do.
IPV6_BLOCKS = _blocks(
    ("::1/128", "Loopback Address", "RFC 4291 §2.5.3"),
    ("::/128", "Unspecified Address", "RFC 4291 §2.5.2"),
    ("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291 §2.5.5.2"),
    ("::ffff:0:0:0/96", "IPv4-translated Address (not in the registry)", "RFC 2765 §2.1"),
    ("::/96", "IPv4-compatible Address, deprecated (not in the registry)", "RFC 4291 §2.5.5.1"),
    ("64:ff9b::/96", "IPv4-IPv6 Translation, well-known prefix", "RFC 6052 §2.1"),
    ("64:ff9b:1::/48", "IPv4-IPv6 Translation, local use", "RFC 8215"),
    ("100::/64", "Discard-Only Address Block", "RFC 6666"),
    ("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780"),
    ("2001::/23", "IETF Protocol Assignments", "RFC 2928"),
    ("2001::/32", "TEREDO", "RFC 4380, RFC 8190"),
    ("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723"),
    ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665"),
    ("2001:2::/48", "Benchmarking", "RFC 5180 (erratum 1752)"),
    ("2001:3::/32", "AMT", "RFC 7450"),
    ("2001:4:112::/48", "AS112-v6", "RFC 7535"),
    ("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843"),
    ("2001:20::/28", "ORCHIDv2", "RFC 7343"),
    ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374"),
    ("2001:db8::/32", "Documentation", "RFC 3849"),
    ("2002::/16", "6to4", "RFC 3056"),
    ("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534"),
    ("3fff::/20", "Documentation", "RFC 9637"),
    ("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602"),
    ("fc00::/7", "Unique-Local", "RFC 4193, RFC 8190"),
    ("fe80::/10", "Link-Local Unicast", "RFC 4291 §2.5.6"),
    ("fec0::/10", "Site-Local Unicast, deprecated (not in the registry)", "RFC 3879 §4"),
    ("ff00::/8", "Multicast (not in the registry)", "RFC 4291 §2.7"),
)

# IPv6 forms whose packets end up at the IPv4 address they carry, and where it sits: the address is
# (int(ip) >> shift) & 0xFFFFFFFF. Disjoint prefixes; the order does not matter.
CARRIERS: tuple[tuple[ipaddress.IPv6Network, int], ...] = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), 0),  # IPv4-mapped: the socket speaks IPv4 (RFC 4291 §2.5.5.2)
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), 0),  # IPv4-translated, for SIIT (RFC 2765 §2.1)
    (ipaddress.IPv6Network("::/96"), 0),  # IPv4-compatible, automatic tunnels (RFC 4291 §2.5.5.1)
    (ipaddress.IPv6Network("64:ff9b::/96"), 0),  # NAT64 well-known prefix (RFC 6052 §2.1, §2.2)
    (ipaddress.IPv6Network("2002::/16"), 80),  # 6to4: the site's IPv4 address follows 2002 (RFC 3056 §2)
)

_V4 = tuple(b.network for b in IPV4_BLOCKS)
_V6 = tuple(b.network for b in IPV6_BLOCKS)


def carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address of one of the CARRIERS forms delivers to, or None for other addresses.

    Local-use NAT64 (64:ff9b:1::/48, RFC 8215) and Teredo (2001::/32, RFC 4380) carry IPv4 addresses
    too but are not unwrapped: both are refused whatever they carry (see the module docstring).
    """
    for network, shift in CARRIERS:
        if ip in network:
            return ipaddress.IPv4Address((int(ip) >> shift) & 0xFFFFFFFF)
    return None


def public(ip: Address) -> bool:
    """True if `ip` is globally routable unicast: in no IPV4_BLOCKS block (IPv4), or inside 2000::/3 and in no
    IPV6_BLOCKS block (IPv6), an IPv6 form carrying an IPv4 address being judged by that address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in n for n in _V4)
    if ip.scope_id:
        return False  # a zone index names a link (RFC 4007 §11): never the internet
    inner = carried_ipv4(ip)
    if inner is not None:
        return public(inner)
    return ip in GLOBAL_UNICAST and not any(ip in n for n in _V6)


def listed(address: str, networks: Sequence[IPNetwork]) -> bool:
    """True if the operator allowed `address` (text, IPv6 zone index allowed): it, or the IPv4 address
    it carries (see `carried_ipv4`), lies in one of `networks`. Raises ValueError for text that is no address."""
    return _listed(ipaddress.ip_address(address), networks)


def _listed(ip: Address, networks: Sequence[IPNetwork]) -> bool:
    inner = carried_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return any(ip in n or (inner is not None and inner in n) for n in networks)


def allowed(address: str, networks: Sequence[IPNetwork]) -> bool:
    """True if an outbound request may connect to `address` (an IPv4 or IPv6 address as text, possibly with a
    zone index such as `fe80::1%eth0`): the operator listed it in `networks` (COURSEWIRE_ALLOWED_NETWORKS, for
    webhooks COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS too), or it is globally routable unicast by the special-purpose
    registries (RFC 6890, RFC 8190; see `public`). Raises ValueError for text that is no address."""
    ip = ipaddress.ip_address(address)
    return _listed(ip, networks) or public(ip)


def literal(host: str) -> str | None:
    """The address a URL's host names literally (`[::1]` -> `::1`), or None for a host name to resolve."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def resolve(host: str) -> list[str]:
    """Every address `host` resolves to (system resolver), sorted; raises OSError when it does not resolve."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})


MAX_URL = 4096  # the document's maxLength of WebHookUri


def check_url(url: Any, networks: Sequence[IPNetwork], resolver: Resolve = resolve, *, field: str = "URL") -> str:
    """Return `url` (text, stripped) if outbound requests may go there; raise Invalid (target `field`, the
    name the caller knows the URL by, such as WebHookUri) saying why not.

    The URL must be absolute http(s) without credentials, at most MAX_URL characters, and hold only what a
    request target can carry as it is (storage.names.web_url: no unencoded space, backslash or invisible
    character), so requests send it byte for byte (`request_url`); every address its host names or resolves
    to (`resolver`, by default the system's; an OSError from it means the host does not resolve) must be
    `allowed`; plain http only when every one is `listed` in `networks`.
    """
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or len(text) > MAX_URL:
        raise Invalid(f"{field} must be an absolute https URL", target=field)
    if parts.username or parts.password:
        raise Invalid(f"{field} must not carry a user name or password", target=field)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        raise Invalid(f"{field} has an invalid port", target=field) from None
    text = names.web_url(text, field, limit=MAX_URL) or ""
    parts = urlsplit(text)
    host = parts.hostname or ""
    try:
        fixed = literal(host)
        addresses = [fixed] if fixed else resolver(host)
    except OSError:
        raise Invalid(f"{field}: the host {host!r} does not resolve", target=field) from None
    blocked = [a for a in addresses if not allowed(a, networks)]
    if blocked or not addresses:
        raise Invalid(
            f"{field}: {host!r} resolves to {', '.join(blocked) or 'nothing'}, which is not a public address;"
            " private networks are reachable only when listed in COURSEWIRE_ALLOWED_NETWORKS",
            target=field,
        )
    if parts.scheme.lower() != "https" and not all(listed(a, networks) for a in addresses):
        raise Invalid(f"{field} must use https", target=field)
    return text


# What RFC 3986 section 2 lets a request target hold as it is (storage.names._URI_ASCII without letters and
# digits, which quote never touches): `%` included, so percent-encodings pass through unchanged.
_AS_REGISTERED = "-._~:/?#[]@!$&'()*+,;=%"


def request_url(url: str) -> yarl.URL:
    """The URL a request to `url` asks for: its path and query exactly as given (registered).

    A flow's callback carries a signature over its query (`sig=`) and `%2F`-encoded paths (`sp=%2Ftriggers
    %2Fmanual%2Frun`); yarl, and so aiohttp, would re-encode a URL given as text (`%2F` -> `/`, `%7e` -> `~`,
    `%2f` -> `%2F`), and the flow would refuse the request. So the request target is the registered text after
    the authority, up to any `#`, as it is; only what a request line cannot carry is percent-encoded as UTF-8
    (characters beyond ASCII, as RFC 3987 section 3.1 maps an IRI to a URI; space and the like in a callback
    stored before check_url refused them). An empty path is `/`, and an empty query after a bare `?` is
    dropped (yarl keeps no empty query). The host is IDNA-encoded; the scheme and host are compared and
    resolved as usual. Raises ValueError for a URL without a host or with an invalid port.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("the URL has no host")
    origin = yarl.URL.build(scheme=parts.scheme.lower(), host=parts.hostname, port=parts.port)
    after = url.find("//") + 2 + len(parts.netloc)
    target = url[after:].split("#", 1)[0]
    if not target.startswith("/"):
        target = "/" + target
    return yarl.URL(f"{origin}{quote(target, safe=_AS_REGISTERED)}", encoded=True)


def describe(exc: BaseException, url: str) -> str:
    """An exception as a log shows it, without `url`'s path and query (a flow's callback carries its
    signature there, other URLs their tokens; aiohttp puts the whole URL in some messages, as text or as
    the request target it sent)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        text = f"{type(exc).__name__}: {exc.status}, {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    shown = subscriptions.origin(url) + "/…"
    forms = {url, url[len(subscriptions.origin(url)) :]}
    for parse in (yarl.URL, request_url):
        try:
            parsed = parse(url)
        except ValueError:
            continue
        forms |= {str(parsed), str(parsed.raw_path_qs)}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) > 1:
            text = text.replace(form, shown if "://" in form else "/…")
    return text


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the answers outbound requests may reach (`allowed` by `networks`);
    raises BlockedAddress (an OSError, so aiohttp reports a connection error) for a host with none.

    Give it to every session that requests a URL someone else chose:
    `aiohttp.TCPConnector(resolver=GuardedResolver(networks))`.
    """

    def __init__(self, networks: Sequence[IPNetwork], inner: AbstractResolver | None = None) -> None:
        self.networks = tuple(networks)
        self.inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        kept = [r for r in results if allowed(r["host"], self.networks)]
        if not kept:
            refused = ", ".join(str(r["host"]) for r in results) or "nothing"
            raise BlockedAddress(f"{host} resolves only to addresses that are not public ({refused})")
        return kept

    async def close(self) -> None:
        await self.inner.close()


def guarded_session(
    networks: Sequence[IPNetwork],
    *,
    user_agent: str,
    timeout: float = 30.0,
    limit: int = 100,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """An aiohttp session for requests to URLs someone else chose: it connects only to addresses `allowed` by
    `networks` (GuardedResolver over `resolver`, by default aiohttp's threaded system resolver; DNS answers kept
    10 s), sends `User-Agent: user_agent` and nothing else by default, gives each request `timeout` seconds in all
    (connecting included; aiohttp raises TimeoutError), and opens at most `limit` connections (any per host).

    Call it inside a running event loop; the caller closes the session (`await session.close()`). Requests to a
    host with no allowed address fail with aiohttp.ClientConnectorError whose `os_error` is a BlockedAddress; a
    URL naming an address that is not allowed (aiohttp connects to an IP literal without asking the resolver)
    fails with BlockedURL before anything is sent.
    """
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(networks, resolver), limit=limit, limit_per_host=0, ttl_dns_cache=10
    )
    allowed_networks = tuple(networks)

    async def refuse_literals(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        address = literal(params.url.host or "")
        if address is not None and not allowed(address, allowed_networks):
            raise BlockedURL(f"{params.url.scheme}://{params.url.host}: not a public address")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(refuse_literals)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        skip_auto_headers=("User-Agent",),
        headers={"User-Agent": user_agent},
        trace_configs=[trace],
    )


class BlockedURL(aiohttp.ClientError):
    """A request named an IP address outbound requests may not reach (aiohttp does not resolve literals, so the
    GuardedResolver never sees them): refused before connecting. A ClientError, so callers treat it as a
    connection failure."""


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header `value` asks to wait (RFC 9110 §10.2.3: delay-seconds or an HTTP date,
    counted from `now`, never negative); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also takes "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
