"""The SSRF guard, table by table: every block of the IANA special-purpose registries is refused, public
unicast addresses pass, IPv6 forms that carry an IPv4 address are judged by the address they carry, and
the operator's COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS still open what they list.

The tables below are the test's own copy of the registries, not the guard's: a block dropped from the
guard (say, the shared address space 100.64.0.0/10 where cloud metadata services live) fails here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st
from support import Api, error

from storage import outbound
from storage.errors import Invalid
from storage.outbound import parse_networks

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA IPv4 Special-Purpose Address Registry (RFC 6890 as updated by RFC 8190; revision of 2025-10-09),
# every entry whatever its "Globally Reachable" column says, plus multicast from the IPv4 Multicast
# Address Space registry (RFC 5771).
IPV4_REGISTRY = [
    ("0.0.0.0/8", '"This network" (RFC 791 §3.2)'),
    ("0.0.0.0/32", '"This host on this network" (RFC 1122 §3.2.1.3)'),
    ("10.0.0.0/8", "Private-Use (RFC 1918)"),
    ("100.64.0.0/10", "Shared Address Space (RFC 6598)"),
    ("127.0.0.0/8", "Loopback (RFC 1122 §3.2.1.3)"),
    ("169.254.0.0/16", "Link Local (RFC 3927)"),
    ("172.16.0.0/12", "Private-Use (RFC 1918)"),
    ("192.0.0.0/24", "IETF Protocol Assignments (RFC 6890 §2.1)"),
    ("192.0.0.0/29", "IPv4 Service Continuity Prefix (RFC 7335)"),
    ("192.0.0.8/32", "IPv4 dummy address (RFC 7600)"),
    ("192.0.0.9/32", "Port Control Protocol Anycast (RFC 7723)"),
    ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast (RFC 8155)"),
    ("192.0.0.170/32", "NAT64/DNS64 Discovery (RFC 8880, RFC 7050 §2.2)"),
    ("192.0.0.171/32", "NAT64/DNS64 Discovery (RFC 8880, RFC 7050 §2.2)"),
    ("192.0.2.0/24", "Documentation TEST-NET-1 (RFC 5737)"),
    ("192.31.196.0/24", "AS112-v4 (RFC 7535)"),
    ("192.52.193.0/24", "AMT (RFC 7450)"),
    ("192.88.99.0/24", "Deprecated 6to4 Relay Anycast (RFC 7526)"),
    ("192.88.99.2/32", "6a44-relay anycast address (RFC 6751)"),
    ("192.168.0.0/16", "Private-Use (RFC 1918)"),
    ("192.175.48.0/24", "Direct Delegation AS112 Service (RFC 7534)"),
    ("198.18.0.0/15", "Benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "Documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "Documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "Multicast (RFC 5771)"),
    ("240.0.0.0/4", "Reserved (RFC 1112 §4)"),
    ("255.255.255.255/32", "Limited Broadcast (RFC 8190, RFC 919 §7)"),
]

# IANA IPv6 Special-Purpose Address Registry (RFC 6890 as updated by RFC 8190; revision of 2025-10-09),
# every entry, plus what RFC 4291, RFC 2765 and RFC 3879 set apart outside it.
IPV6_REGISTRY = [
    ("::1/128", "Loopback Address (RFC 4291)"),
    ("::/128", "Unspecified Address (RFC 4291)"),
    ("64:ff9b:1::/48", "IPv4-IPv6 Translation, local use (RFC 8215)"),
    ("100::/64", "Discard-Only Address Block (RFC 6666)"),
    ("100:0:0:1::/64", "Dummy IPv6 Prefix (RFC 9780)"),
    ("2001::/23", "IETF Protocol Assignments (RFC 2928)"),
    ("2001::/32", "TEREDO (RFC 4380, RFC 8190)"),
    ("2001:1::1/128", "Port Control Protocol Anycast (RFC 7723)"),
    ("2001:1::2/128", "Traversal Using Relays around NAT Anycast (RFC 8155)"),
    ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast (RFC 9665)"),
    ("2001:2::/48", "Benchmarking (RFC 5180, erratum 1752)"),
    ("2001:3::/32", "AMT (RFC 7450)"),
    ("2001:4:112::/48", "AS112-v6 (RFC 7535)"),
    ("2001:10::/28", "Deprecated, previously ORCHID (RFC 4843)"),
    ("2001:20::/28", "ORCHIDv2 (RFC 7343)"),
    ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (RFC 9374)"),
    ("2001:db8::/32", "Documentation (RFC 3849)"),
    ("2620:4f:8000::/48", "Direct Delegation AS112 Service (RFC 7534)"),
    ("3fff::/20", "Documentation (RFC 9637)"),
    ("5f00::/16", "Segment Routing (SRv6) SIDs (RFC 9602)"),
    ("fc00::/7", "Unique-Local (RFC 4193, RFC 8190)"),
    ("fe80::/10", "Link-Local Unicast (RFC 4291)"),
    ("fec0::/10", "Site-Local, deprecated (RFC 3879)"),
    ("ff00::/8", "Multicast (RFC 4291 §2.7)"),
]

# The blocks whose addresses carry an IPv4 address where a host or gateway will send the packet: judged
# by that address, so only their ends (which carry 0.0.0.0 and 255.255.255.255) are always refused.
IPV6_CARRYING_IPV4 = [
    ("::ffff:0:0/96", "IPv4-mapped Address (RFC 4291 §2.5.5.2)"),
    ("::ffff:0:0:0/96", "IPv4-translated Address (RFC 2765 §2.1)"),
    ("::/96", "IPv4-compatible Address, deprecated (RFC 4291 §2.5.5.1)"),
    ("64:ff9b::/96", "IPv4-IPv6 Translation, well-known prefix (RFC 6052)"),
    ("2002::/16", "6to4 (RFC 3056)"),
]

V4 = [ipaddress.IPv4Network(cidr) for cidr, _ in IPV4_REGISTRY]
V6 = [ipaddress.IPv6Network(cidr) for cidr, _ in IPV6_REGISTRY + IPV6_CARRYING_IPV4]


def ends_and_middle(cidr: str) -> list[str]:
    """First, middle and last address of a block (one address for a /32 or /128)."""
    net = ipaddress.ip_network(cidr)
    first = net.network_address
    return list(dict.fromkeys(str(a) for a in (first, first + net.num_addresses // 2, net.broadcast_address)))


def rows(table: list[tuple[str, str]]) -> Iterator[Any]:
    for cidr, name in table:
        for address in ends_and_middle(cidr):
            yield pytest.param(address, name, id=f"{address} in {cidr}")


@pytest.mark.parametrize(("address", "name"), [*rows(IPV4_REGISTRY), *rows(IPV6_REGISTRY)])
def test_every_special_purpose_block_is_refused(address: str, name: str) -> None:
    """No callback reaches an address the special-purpose registries set apart (private, shared, loopback,
    documentation, anycast services, multicast, ...), at either end of its block or in its middle."""
    assert not outbound.allowed(address, ()), f"{address} ({name}) passed the guard"


@pytest.mark.parametrize(
    ("address", "name"),
    [
        pytest.param(a, name, id=f"{a} in {cidr}")
        for cidr, name in IPV6_CARRYING_IPV4
        for a in (ends_and_middle(cidr)[0], ends_and_middle(cidr)[-1])
    ],
)
def test_the_ends_of_blocks_carrying_ipv4_are_refused(address: str, name: str) -> None:
    """The first and last address of each IPv4-carrying IPv6 block carry 0.0.0.0 or 255.255.255.255: refused."""
    assert not outbound.allowed(address, ()), f"{address} ({name}) passed the guard"


PUBLIC = [
    ("8.8.8.8", "Google Public DNS"),
    ("1.1.1.1", "Cloudflare DNS"),
    ("20.50.2.1", "Azure"),
    ("52.94.236.248", "AWS"),
    ("9.9.9.9", "Quad9"),
    ("223.255.255.254", "last unicast /8 before multicast"),
    ("100.63.255.255", "just below the shared address space"),
    ("100.128.0.0", "just above the shared address space"),
    ("2001:4860:4860::8888", "Google Public DNS over IPv6"),
    ("2606:4700:4700::1111", "Cloudflare over IPv6"),
    ("2a00:1450:4001:80b::200e", "a RIPE allocation"),
    ("2620:fe::fe", "Quad9, beside the AS112 /48 in 2620::/16"),
    ("2001:200::1", "the first allocation past 2001::/23"),
    ("3fff:1000::1", "just past the 3fff::/20 documentation block"),
    ("64:ff9b::808:808", "NAT64 of a public IPv4 address"),
    ("2002:808:808::1", "6to4 of a public IPv4 address"),
    ("::ffff:8.8.8.8", "IPv4-mapped public address"),
]


@pytest.mark.parametrize(("address", "kind"), PUBLIC, ids=[a for a, _ in PUBLIC])
def test_public_unicast_addresses_are_allowed(address: str, kind: str) -> None:
    """Flows' callbacks live on ordinary public addresses of every kind, and those stay reachable."""
    assert outbound.allowed(address, ()), f"{address} ({kind}) was refused"


def neighbours(networks: list[Any]) -> Iterator[Any]:
    """The addresses just outside each block that lie in no other block: the guard must not over-reach."""
    for net in networks:
        for step in (int(net.network_address) - 1, int(net.broadcast_address) + 1):
            if not 0 <= step < 2**net.max_prefixlen:
                continue
            outside = ipaddress.IPv4Address(step) if net.version == 4 else ipaddress.IPv6Address(step)
            if any(outside in other for other in networks):
                continue
            if outside.version == 6 and outside not in ipaddress.IPv6Network("2000::/3"):
                continue  # outside global unicast: refused, and covered by test_only_global_unicast_ipv6
            yield pytest.param(str(outside), id=f"{outside} beside {net}")


@pytest.mark.parametrize("address", list(neighbours(V4)))
def test_the_address_beside_each_ipv4_block_is_allowed(address: str) -> None:
    """Blocks end where the registry says: the public address next to each one still passes."""
    assert outbound.allowed(address, ())


@pytest.mark.parametrize("address", list(neighbours(V6)))
def test_the_address_beside_each_ipv6_block_is_allowed(address: str) -> None:
    """Blocks end where the registry says: the global unicast address next to each one still passes."""
    assert outbound.allowed(address, ())


@pytest.mark.parametrize(
    "address", ["100::", "4000::1", "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "e000::1", "fe00::1"]
)
def test_only_global_unicast_ipv6_is_allowed(address: str) -> None:
    """IPv6 outside 2000::/3 is reserved, local or multicast (RFC 4291 §2.4): never a callback."""
    assert not outbound.allowed(address, ())


# The IPv6 forms of an IPv4 address a, built here independently of the guard.
def six_to_four(a: ipaddress.IPv4Address) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(a) << 80) | 1))


FORMS: dict[str, Callable[[ipaddress.IPv4Address], str]] = {
    "IPv4-mapped ::ffff:a.b.c.d (RFC 4291)": lambda a: f"::ffff:{a}",
    "IPv4-translated ::ffff:0:a.b.c.d (RFC 2765)": lambda a: f"::ffff:0:{a}",
    "IPv4-compatible ::a.b.c.d (RFC 4291)": lambda a: f"::{a}",
    "NAT64 well-known 64:ff9b::a.b.c.d (RFC 6052)": lambda a: f"64:ff9b::{a}",
    "6to4 2002:AABB:CCDD::1 (RFC 3056)": six_to_four,
}


def teredo(a: ipaddress.IPv4Address) -> str:
    """A Teredo address whose server is 65.54.227.120 and whose client is `a`, obfuscated (RFC 4380 §4)."""
    server, flags, port = int(ipaddress.IPv4Address("65.54.227.120")), 0x8000, 0x63BF
    client = ~int(a) & 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (flags << 48) | (port << 32) | client))


REFUSED_WHATEVER_THEY_CARRY: dict[str, Callable[[ipaddress.IPv4Address], str]] = {
    "NAT64 local use 64:ff9b:1::a.b.c.d (RFC 8215)": lambda a: f"64:ff9b:1::{a}",
    "Teredo 2001:0::/32 (RFC 4380)": teredo,
}

SAMPLES = [
    ("10.0.0.5", False),
    ("100.64.0.1", False),
    ("127.0.0.1", False),
    ("169.254.169.254", False),
    ("192.168.1.1", False),
    ("0.1.2.3", False),
    ("224.0.0.1", False),
    ("8.8.8.8", True),
    ("20.50.2.1", True),
]


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize(("ipv4", "public"), SAMPLES)
def test_ipv6_forms_are_judged_by_the_ipv4_address_they_carry(form: str, ipv4: str, public: bool) -> None:
    """Wrapping an internal IPv4 address in IPv6 (mapped, translated, compatible, NAT64, 6to4) reaches
    the same internal host, so it is refused like that host; a public one passes like its IPv4 address."""
    address = FORMS[form](ipaddress.IPv4Address(ipv4))
    assert outbound.allowed(address, ()) is public, f"{address}: {form} of {ipv4}"


@pytest.mark.parametrize("form", list(REFUSED_WHATEVER_THEY_CARRY))
@pytest.mark.parametrize("ipv4", [a for a, _ in SAMPLES])
def test_local_nat64_and_teredo_are_refused_whatever_they_carry(form: str, ipv4: str) -> None:
    """Local-use NAT64 may translate to private IPv4 by design (RFC 8215 §5) and Teredo's client address
    is obfuscated behind a NAT: neither is a public destination, whatever address they seem to carry."""
    address = REFUSED_WHATEVER_THEY_CARRY[form](ipaddress.IPv4Address(ipv4))
    assert not outbound.allowed(address, ()), f"{address}: {form} of {ipv4}"


@given(a=st.ip_addresses(v=4), form=st.sampled_from(list(FORMS)))
def test_an_ipv4_address_and_its_ipv6_forms_get_the_same_answer(a: ipaddress.IPv4Address, form: str) -> None:
    """For every IPv4 address, each IPv6 form carrying it is allowed exactly when the address itself is."""
    assert outbound.allowed(FORMS[form](a), ()) == outbound.allowed(str(a), ())


@given(a=st.ip_addresses(v=4), form=st.sampled_from(list(REFUSED_WHATEVER_THEY_CARRY)))
def test_local_nat64_and_teredo_are_refused_for_every_ipv4_address(a: ipaddress.IPv4Address, form: str) -> None:
    """Local-use NAT64 and Teredo addresses are refused whatever IPv4 address they carry."""
    assert not outbound.allowed(REFUSED_WHATEVER_THEY_CARRY[form](a), ())


@pytest.mark.parametrize(
    "address", ["::ffff:0:10.0.0.1", "::ffff:0:169.254.169.254", "::ffff:0:c0a8:101", "fec0::1", "fec0::a9fe:a9fe"]
)
def test_the_issue_examples_are_refused_by_the_api(api: Api, address: str) -> None:
    """IPv4-translated ::ffff:0:a.b.c.d and site-local fec0::/10, which Python calls global, cannot be
    subscribed to: the subscription is a 400 naming WebHookUri."""
    assert not outbound.allowed(address, ())
    response = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": f"https://[{address}]/hook"})
    assert (response.status_code, error(response)["target"]) == (400, "WebHookUri")


@pytest.mark.parametrize(
    "address", ["fe80::1%eth0", "fe80::1%25eth0", "fe80::a9fe:a9fe%2", "2001:4860:4860::8888%eth0"]
)
def test_scoped_ipv6_literals_are_refused(address: str) -> None:
    """An address with a zone index (RFC 4007 §11) names a link, not the internet: refused, even if the
    address part alone would be public."""
    assert not outbound.allowed(address, ())


def test_a_scoped_link_local_callback_is_refused_by_the_api(api: Api) -> None:
    """A callback URL with a zone index in its IPv6 literal (RFC 6874) is a 400 naming WebHookUri."""
    response = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": "https://[fe80::1%25eth0]/hook"})
    assert (response.status_code, error(response)["target"]) == (400, "WebHookUri")


@pytest.mark.parametrize(
    ("listed", "address"),
    [
        ("10.0.0.0/8", "10.1.2.3"),
        ("10.0.0.0/8", "::ffff:10.1.2.3"),
        ("10.0.0.0/8", "64:ff9b::a01:203"),
        ("100.64.0.0/10", "100.100.100.200"),
        ("127.0.0.0/8", "::ffff:127.0.0.1"),
        ("fd00::/8", "fd12:3456::1"),
        ("fe80::/10", "fe80::1%eth0"),
        ("64:ff9b:1::/48", "64:ff9b:1::a00:5"),
    ],
)
def test_networks_the_operator_allows_are_reachable(listed: str, address: str) -> None:
    """COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS opens what it lists, in IPv4 or any IPv6 form carrying it,
    and nothing else."""
    networks = parse_networks(listed)
    assert outbound.allowed(address, networks)
    assert not outbound.allowed(address, ())
    assert not outbound.allowed("192.168.7.7", networks)


def test_plain_http_is_accepted_only_for_networks_the_operator_allows() -> None:
    """An http callback is accepted when every address it resolves to is in an allowed network (in
    any form), and must use https otherwise."""
    networks = parse_networks("127.0.0.0/8")
    assert outbound.check_url("http://[::ffff:127.0.0.1]:8080/hook", networks) == "http://[::ffff:127.0.0.1]:8080/hook"
    assert outbound.check_url("http://local.test/hook", networks, lambda host: ["127.0.0.1"])
    with pytest.raises(Invalid, match="must use https"):
        outbound.check_url("http://flow.test/hook", networks, lambda host: ["8.8.8.8"])
    with pytest.raises(Invalid, match="not a public address"):
        outbound.check_url("https://mixed.test/hook", networks, lambda host: ["8.8.8.8", "100.64.0.1"])


class Answers(AbstractResolver):
    """A resolver answering every host with fixed addresses."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": h,
                "port": port,
                "family": socket.AF_INET6 if ":" in h else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for h in self.hosts
        ]

    async def close(self) -> None:
        pass


def test_deliveries_connect_only_to_allowed_answers() -> None:
    """At delivery, the resolver keeps only the public answers of a host and refuses a host with none."""
    kept = asyncio.run(outbound.GuardedResolver((), Answers("100.64.0.1", "8.8.8.8", "fec0::1")).resolve("h.test"))
    assert [r["host"] for r in kept] == ["8.8.8.8"]
    with pytest.raises(outbound.BlockedAddress, match="100.64.0.1"):
        asyncio.run(outbound.GuardedResolver((), Answers("100.64.0.1", "::ffff:0:a00:1")).resolve("h.test"))
