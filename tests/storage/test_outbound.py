"""The outbound HTTP guard's general parts (storage/outbound.py), as any caller uses them: the list of allowed
networks read from a named variable, a URL checked under the caller's own field name, a real aiohttp session that
cannot connect to a private address unless allowed, and Retry-After read both ways RFC 9110 allows. The address
tables themselves are tested in tests/webhooks/test_guard.py."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from storage import outbound
from storage.errors import Invalid

NOW = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


def test_networks_are_read_as_cidrs_with_host_bits_dropped() -> None:
    assert outbound.parse_networks(" 10.1.2.3/16, ,127.0.0.1, fd00::/8 ", "COURSEWIRE_ALLOWED_NETWORKS") == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert outbound.parse_networks("", "COURSEWIRE_ALLOWED_NETWORKS") == ()


def test_a_bad_network_is_reported_under_the_variable_it_came_from() -> None:
    with pytest.raises(ValueError, match=r"^COURSEWIRE_CALDAV_NETWORKS: '10\.0\.0\.0/33' is not a network"):
        outbound.parse_networks("10.0.0.0/8,10.0.0.0/33", "COURSEWIRE_CALDAV_NETWORKS")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://cal.example/dav/", "ServerUrl must be an absolute https URL"),
        ("https://me:pw@cal.example/dav/", "ServerUrl must not carry a user name or password"),
        ("https://cal.example:99999/dav/", "ServerUrl has an invalid port"),
        ("https://nowhere.example/dav/", "ServerUrl: the host 'nowhere.example' does not resolve"),
        ("https://intranet.example/dav/", "'intranet.example' resolves to 10.0.0.9, which is not a public address"),
        ("http://cal.example/dav/", "ServerUrl must use https"),
    ],
)
def test_a_url_is_refused_under_the_callers_field_name(url: str, says: str) -> None:
    answers = {"cal.example": ["93.184.215.14"], "intranet.example": ["10.0.0.9"]}

    def resolve(host: str) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    with pytest.raises(Invalid) as refused:
        outbound.check_url(url, (), resolve, field="ServerUrl")
    assert refused.value.target == "ServerUrl" and says in str(refused.value)


def test_a_private_url_passes_once_its_network_is_allowed_over_http_too() -> None:
    networks = outbound.parse_networks("10.0.0.0/8", "COURSEWIRE_ALLOWED_NETWORKS")
    assert outbound.check_url(" http://intranet.example/dav/ ", networks, lambda host: ["10.0.0.9"]) == (
        "http://intranet.example/dav/"
    )


async def _get(url: str, networks: tuple[outbound.IPNetwork, ...]) -> int:
    async with outbound.guarded_session(networks, user_agent="coursewire-tests/1") as session, session.get(url) as r:
        return r.status


async def _serving(networks: tuple[outbound.IPNetwork, ...], host: str = "localhost") -> tuple[int | str, int]:
    """A real server on 127.0.0.1, asked by host name (`localhost`) through a guarded session; returns the answer
    or the error, and how many requests reached the server (each must name the session's User-Agent)."""
    hits = 0

    async def ok(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        assert request.headers["User-Agent"] == "coursewire-tests/1"
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        try:
            return await _get(f"http://{host}:{port}/", networks), hits
        except outbound.BlockedURL as exc:
            return str(exc), hits
        except aiohttp.ClientConnectorError as exc:
            assert isinstance(exc.os_error, outbound.BlockedAddress)
            return str(exc.os_error), hits
    finally:
        await runner.cleanup()


def test_a_guarded_session_never_connects_to_a_private_address() -> None:
    refused, hits = asyncio.run(_serving(()))
    assert hits == 0
    assert isinstance(refused, str) and "localhost resolves only to addresses that are not public" in refused


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"])
def test_a_guarded_session_refuses_an_address_written_in_the_url(host: str) -> None:
    """aiohttp connects to an IP literal without asking the resolver: the session refuses it before sending."""
    refused, hits = asyncio.run(_serving((), host))
    assert hits == 0
    assert isinstance(refused, str) and "not a public address" in refused


def test_a_guarded_session_reaches_allowed_networks() -> None:
    networks = outbound.parse_networks("127.0.0.0/8,::1/128", "COURSEWIRE_ALLOWED_NETWORKS")
    assert asyncio.run(_serving(networks)) == (200, 1)
    assert asyncio.run(_serving(networks, "127.0.0.1")) == (200, 1)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Fri, 01 Mar 2030 08:02:30 GMT", 150.0),  # an HTTP date (IMF-fixdate), counted from now
        ("Fri, 01 Mar 2030 07:00:00 GMT", 0.0),  # already past: no wait, never a negative one
        ("Friday, 01-Mar-30 08:01:00 GMT", 60.0),  # the obsolete RFC 850 form, which recipients accept (§5.6.7)
        ("soon", None),
        ("²", None),  # a digit to str.isdigit(), not to float()
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert outbound.retry_after(header, NOW) == seconds
