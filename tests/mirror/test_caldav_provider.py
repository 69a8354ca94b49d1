"""CalDAV against a real Radicale: the provider contract, and what only CalDAV has (conditional PUTs, SEQUENCE,
discovery from a server URL, and a hostile server's answers refused)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from contract import ProviderContract, item, put
from dav_hostile import QuietHandler, account, dav_server, serving
from icalendar import Calendar
from radicale_support import CalDAVEnv, free_port
from support import fake_resolve

from calendars.model import AuthorizationLost, Rejected, Unavailable, Written
from calendars.providers import caldav
from calendars.providers.caldav import MAX_BODY, CalDAVProvider, CalendarInfo, discover
from storage import outbound
from storage.errors import Invalid


class TestCalDAVContract(ProviderContract):
    env_fixture = "caldav_env"


def stored(env: CalDAVEnv, written: Written) -> Any:
    """The VEVENT Radicale holds for `written`, with its VCALENDAR as `.calendar`."""
    data = env.files()[written.provider_id.rsplit("/", 1)[-1]]
    calendar = Calendar.from_ical(data)
    event: Any = calendar.walk("VEVENT")[0]
    event.calendar = calendar
    return event


def current_etag(env: CalDAVEnv, written: Written) -> str:
    answer = env.person("GET", env.calendar_path + written.provider_id.rsplit("/", 1)[-1])
    assert answer.status == 200
    return answer.headers["etag"]


def edit_as_person(env: CalDAVEnv, written: Written, summary: str, sequence: int = 5) -> None:
    """The person renames the event in their calendar app (which also bumps SEQUENCE)."""
    event = stored(env, written)
    event["SUMMARY"] = summary
    event["SEQUENCE"] = sequence
    name = written.provider_id.rsplit("/", 1)[-1]
    answer = env.person("PUT", env.calendar_path + name, event.calendar.to_ical(), {"Content-Type": "text/calendar"})
    assert answer.status in (201, 204), answer


def test_a_create_is_a_conditional_put_to_a_stable_name(caldav_env: CalDAVEnv) -> None:
    """A new event is PUT to <handle>.ics with If-None-Match: *, so it can never overwrite another; the stored
    object has our UID, key and SEQUENCE 0, the session's VTIMEZONE, and no METHOD (RFC 4791 §4.1)."""
    it = item()
    written = put(caldav_env, it)
    path = f"{caldav_env.calendar_path}{it.handle}.ics"
    assert written.provider_id == caldav_env.proxy.url + path
    [exchange] = caldav_env.exchanges()
    assert (exchange.method, exchange.path, exchange.status) == ("PUT", path, 201)
    assert exchange.headers["If-None-Match"] == "*"
    assert exchange.headers["Content-Type"].startswith("text/calendar")
    assert written.etag == current_etag(caldav_env, written)
    event = stored(caldav_env, written)
    assert "METHOD" not in event.calendar
    assert str(event["UID"]) == it.uid
    assert str(event["X-COURSEWIRE-KEY"]) == it.key
    assert int(event["SEQUENCE"]) == 0
    assert [str(tz["TZID"]) for tz in event.calendar.walk("VTIMEZONE")] == ["Europe/Berlin"]
    assert caldav_env.events()[0]["time_zone"] == "Europe/Berlin"


def test_a_retried_create_reads_the_event_and_writes_it_with_if_match(caldav_env: CalDAVEnv) -> None:
    """The same create sent again (its answer was lost) gets 412 from If-None-Match, reads the event, and
    replaces it with If-Match on the ETag it read and SEQUENCE + 1: one event, never two."""
    first = put(caldav_env, item())
    again = put(caldav_env, item(subject="Forklift safety (retried)"))
    steps = [
        (e.method, e.status, e.headers.get("If-None-Match"), e.headers.get("If-Match")) for e in caldav_env.exchanges()
    ]
    assert steps == [
        ("PUT", 201, "*", None),
        ("PUT", 412, "*", None),
        ("GET", 200, None, None),
        ("PUT", 204, None, first.etag),
    ]
    assert int(stored(caldav_env, again)["SEQUENCE"]) == 1
    assert again.etag == current_etag(caldav_env, again) != first.etag


def test_every_update_raises_the_sequence(caldav_env: CalDAVEnv) -> None:
    """SEQUENCE counts the versions of the event (RFC 5545 §3.8.7.4): 0 when created, +1 on each update."""
    written = put(caldav_env, item())
    for n in (1, 2, 3):
        written = put(caldav_env, item(subject=f"version {n}"), written)
        assert int(stored(caldav_env, written)["SEQUENCE"]) == n
    updates = [e for e in caldav_env.exchanges() if e.method == "PUT"][1:]
    assert all("If-Match" in e.headers and "If-None-Match" not in e.headers for e in updates)


def test_an_event_the_person_edited_is_overwritten_from_its_current_version(caldav_env: CalDAVEnv) -> None:
    """Our ETag is stale after the person edited the event: the update reads the current version, writes with
    If-Match on that ETag and a SEQUENCE above the person's, and the calendar shows the session again."""
    written = put(caldav_env, item())
    edit_as_person(caldav_env, written, "My own title", sequence=5)
    theirs = current_etag(caldav_env, written)
    assert theirs != written.etag
    updated = put(caldav_env, item(subject="Forklift safety, room changed"), written)
    event = stored(caldav_env, updated)
    assert (str(event["SUMMARY"]), int(event["SEQUENCE"])) == ("Forklift safety, room changed", 6)
    assert caldav_env.exchanges()[-1].headers["If-Match"] == theirs
    assert updated.etag == current_etag(caldav_env, updated)


def test_a_change_between_our_read_and_write_is_seen_and_then_overwritten(caldav_env: CalDAVEnv) -> None:
    """When the person edits the event after our GET and before our PUT, If-Match makes Radicale answer 412;
    the provider reads again and writes on the newer version instead of losing track of it."""
    written = put(caldav_env, item())
    edits: list[int] = []

    async def person_edits_after_first_read(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
        if params.method == "GET" and not edits:
            edits.append(1)
            edit_as_person(caldav_env, written, "Edited meanwhile", sequence=9)

    async def go() -> Written:
        tracing = aiohttp.TraceConfig()
        tracing.on_request_end.append(person_edits_after_first_read)
        async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
            return await caldav_env.make_provider(session).put(item(subject="Ours"), written)

    updated = asyncio.run(go())
    steps = [(e.method, e.status) for e in caldav_env.exchanges()][1:]
    assert len(steps) == 4 and steps[:3] == [("GET", 200), ("PUT", 412), ("GET", 200)]
    assert steps[3] == ("PUT", 204)
    event = stored(caldav_env, updated)
    assert (str(event["SUMMARY"]), int(event["SEQUENCE"])) == ("Ours", 10)


def test_a_uid_already_used_by_another_resource_is_rejected_with_the_servers_words(caldav_env: CalDAVEnv) -> None:
    """Radicale refuses a second resource with the same UID (CALDAV:no-uid-conflict, RFC 4791 §5.3.2.1): that is
    Rejected, naming the status, not retried for ever."""
    it = item()
    written = put(caldav_env, it)
    data = caldav_env.files()[f"{it.handle}.ics"]
    caldav_env.delete_as_person(written.provider_id)
    answer = caldav_env.person("PUT", caldav_env.calendar_path + "copy.ics", data, {"Content-Type": "text/calendar"})
    assert answer.status == 201
    with pytest.raises(Rejected, match="409"):
        put(caldav_env, it)


def test_a_wrong_password_is_authorization_lost_and_never_shown(caldav_env: CalDAVEnv) -> None:
    """A 401 means the app password is wrong or revoked: AuthorizationLost, and the password is not in the message."""

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            provider = CalDAVProvider(session, caldav_env.calendar_url, caldav_env.username, "not-the-password")
            assert "not-the-password" not in repr(provider)
            await provider.put(item(), None)

    with pytest.raises(AuthorizationLost) as caught:
        asyncio.run(go())
    assert "not-the-password" not in str(caught.value)
    with pytest.raises(AuthorizationLost):
        asyncio.run(discover_in(caldav_env.server_url, caldav_env.username, "not-the-password"))


async def discover_in(url: str, username: str, password: str, **options: Any) -> list[CalendarInfo]:
    async with aiohttp.ClientSession() as session:
        return await discover(session, url, username, password, **options)


def test_discovery_from_the_server_root_lists_the_event_calendars(caldav_env: CalDAVEnv) -> None:
    """A person pastes the server's address: the principal, its calendar home and the calendars in it are found
    (RFC 5397, RFC 4791 §6.2.1); a task list and an address book are not offered."""
    personal = caldav_env.make_calendar("personal", "Personal")
    caldav_env.make_calendar("tasks", "Tasks", components=("VTODO",))
    book = caldav_env.person(
        "MKCOL",
        f"/{caldav_env.username}/contacts/",
        b'<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>'
        b"<D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>",
        {"Content-Type": "application/xml"},
    )
    assert book.status == 201
    found = asyncio.run(discover_in(caldav_env.server_url, caldav_env.username, caldav_env.password))
    assert sorted(found, key=lambda c: c.name) == [
        CalendarInfo(caldav_env.proxy.url + personal, "Personal"),
        CalendarInfo(caldav_env.calendar_url, "Training"),
    ]
    assert [(e.method, e.path, e.headers["Depth"]) for e in caldav_env.exchanges()] == [
        ("PROPFIND", "/", "0"),
        ("PROPFIND", f"/{caldav_env.username}/", "0"),
        ("PROPFIND", f"/{caldav_env.username}/", "1"),
    ]


def test_discovery_from_the_calendar_url_is_that_calendar(caldav_env: CalDAVEnv) -> None:
    """A person who pastes the calendar's own URL gets that calendar, found with one PROPFIND."""
    found = asyncio.run(discover_in(caldav_env.calendar_url, caldav_env.username, caldav_env.password))
    assert found == [CalendarInfo(caldav_env.calendar_url, "Training")]
    assert caldav_env.requests() == [("PROPFIND", caldav_env.calendar_path)]


def test_discovery_follows_the_well_known_redirect(caldav_env: CalDAVEnv) -> None:
    """`/.well-known/caldav` (RFC 6764 §5) redirects to the server's context path; discovery follows it."""
    found = asyncio.run(
        discover_in(caldav_env.server_url + ".well-known/caldav", caldav_env.username, caldav_env.password)
    )
    assert found == [CalendarInfo(caldav_env.calendar_url, "Training")]


class Hostile(SimpleNamespace):
    url: str
    sent: int  # body bytes written so far
    answered: threading.Event  # set when the last answer ended (written, or the client hung up)


@contextmanager
def hostile(answer: Callable[[BaseHTTPRequestHandler, Hostile], None]) -> Iterator[Hostile]:
    """An HTTP server on 127.0.0.1 answering every request with `answer` (which counts what it sends)."""
    state = Hostile(url="", sent=0, answered=threading.Event())

    class Handler(QuietHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                answer(self, state)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client hung up: what a refusal looks like from here
            finally:
                state.answered.set()

        do_PROPFIND = do_GET = do_PUT = answer

    with serving(Handler) as base:
        state.url = base + "/"
        yield state


def answering(
    body: bytes, status: int = 207, headers: dict[str, str] | None = None
) -> Callable[[BaseHTTPRequestHandler, Hostile], None]:
    """A hostile server's answer: `status`, `headers` and `body` (counted in `sent` as one answer)."""

    def answer(handler: BaseHTTPRequestHandler, state: Hostile) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        state.sent += 1

    return answer


def endless_multistatus(handler: BaseHTTPRequestHandler, state: Hostile) -> None:
    """A 207 whose body never ends (chunked), up to 1 GiB: a server trying to exhaust the worker's memory."""
    handler.send_response(207)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    opening = b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">'
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(opening), opening))
    chunk = b"<D:response><D:href>/x/</D:href></D:response>" * 1400
    while state.sent < 1024**3:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        state.sent += len(chunk)


def test_an_endless_propfind_answer_is_refused_without_reading_it_all() -> None:
    """A hostile server answering PROPFIND with gigabytes is refused once the answer passes 4 MiB, and the
    worker stops reading: the server cannot write much more than that before the connection is gone."""
    with hostile(endless_multistatus) as server, pytest.raises(Rejected, match=f"larger than the {MAX_BODY} bytes"):
        asyncio.run(discover_in(server.url, "someone", "secret"))
    assert server.answered.wait(10)
    assert MAX_BODY < server.sent < 8 * MAX_BODY


def test_an_announced_oversized_answer_is_refused_before_reading() -> None:
    """An answer whose Content-Length exceeds the cap is refused from its head, for an event as for a PROPFIND."""

    def announce(handler: BaseHTTPRequestHandler, state: Hostile) -> None:
        handler.send_response(200 if handler.command == "GET" else 207)
        handler.send_header("Content-Length", str(10 * 1024**3))
        handler.end_headers()
        handler.wfile.write(b"<")

    with hostile(announce) as server:
        with pytest.raises(Rejected, match="10737418240 bytes"):
            asyncio.run(discover_in(server.url, "someone", "secret"))

        async def get() -> None:
            async with aiohttp.ClientSession() as session:
                provider = CalDAVProvider(session, server.url + "cal/", "someone", "secret")
                await provider.get(Written(server.url + "cal/x.ics"))

        with pytest.raises(Rejected, match="10737418240 bytes"):
            asyncio.run(get())


def test_an_xml_entity_bomb_is_refused() -> None:
    """A multistatus declaring entities (billion laughs) is refused before any entity is expanded."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;">' % ((98 + i,) + (97 + i,) * 10) for i in range(8)
        )
        + b']><D:multistatus xmlns:D="DAV:"><D:response><D:href>&i;</D:href></D:response></D:multistatus>'
    )

    with hostile(answering(bomb)) as server, pytest.raises(Rejected, match="DTD"):
        asyncio.run(discover_in(server.url, "someone", "secret"))


def test_a_web_page_that_is_not_caldav_is_rejected_with_a_reason() -> None:
    """A URL that is a web site, not a CalDAV server, is refused with a message saying so."""
    page = answering(b"<html><body>Not here</body></html>", 404)
    with hostile(page) as server, pytest.raises(Rejected, match="no CalDAV account"):
        asyncio.run(discover_in(server.url, "someone", "secret"))


def test_a_server_nobody_answers_on_is_unavailable() -> None:
    """A refused connection is Unavailable (retried later), for writes and for discovery alike."""
    url = f"http://127.0.0.1:{free_port()}/cal/"

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            await CalDAVProvider(session, url, "someone", "secret").put(item(), None)

    with pytest.raises(Unavailable):
        asyncio.run(go())
    with pytest.raises(Unavailable):
        asyncio.run(discover_in(url, "someone", "secret"))


def test_credentials_inside_the_url_are_refused_and_not_repeated(caldav_env: CalDAVEnv) -> None:
    """A pasted URL with user:password@ in it is refused with a message that does not repeat the password."""
    url = caldav_env.server_url.replace("http://", f"http://{caldav_env.username}:hunter2@")
    with pytest.raises(Rejected, match="own fields") as caught:
        asyncio.run(discover_in(url, caldav_env.username, caldav_env.password))
    assert "hunter2" not in str(caught.value)
    assert caldav_env.requests() == []


def test_the_sessions_ssrf_guard_applies(caldav_env: CalDAVEnv) -> None:
    """With the guarded session coursewire gives providers, a CalDAV server whose name resolves to a private
    address (here `localhost`, not in COURSEWIRE_ALLOWED_NETWORKS) is refused before any request reaches it, for
    discovery and for writes, with a reason a person can act on."""
    server_url = caldav_env.server_url.replace("127.0.0.1", "localhost")
    calendar_url = caldav_env.calendar_url.replace("127.0.0.1", "localhost")

    async def go() -> None:
        session = outbound.guarded_session((), user_agent="coursewire-test")
        async with session:
            with pytest.raises(Rejected, match="not public"):
                await discover(session, server_url, caldav_env.username, caldav_env.password)
            provider = CalDAVProvider(session, calendar_url, caldav_env.username, caldav_env.password)
            with pytest.raises(Rejected, match="not public"):
                await provider.put(item(), None)

    asyncio.run(go())
    assert caldav_env.requests() == []


@pytest.mark.parametrize("address", ["169.254.169.254", "10.0.0.1", "[::1]"])
def test_a_server_pointing_to_an_address_is_not_followed(address: str) -> None:
    """aiohttp never asks the resolver about an address written in a URL, so the SSRF guard cannot see it: a
    server naming one (a principal href, or a redirect) is refused before anything is sent there."""
    href = f"http://{address}/principals/someone/".encode()
    principal = (
        b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/</D:href><D:propstat><D:prop>'
        b"<D:current-user-principal><D:href>" + href + b"</D:href></D:current-user-principal>"
        b"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"
    )
    with hostile(answering(principal)) as server, pytest.raises(Rejected, match="does not follow"):
        asyncio.run(discover_in(server.url, "someone", "secret"))
    redirect = answering(b"", 301, {"Location": href.decode()})
    with hostile(redirect) as server, pytest.raises(Rejected, match="does not follow"):
        asyncio.run(discover_in(server.url, "someone", "secret"))
    assert server.sent == 1


# --- what a hostile server cannot make discovery do ------------------------------------------------------------

LOCAL = outbound.parse_networks("127.0.0.0/8")  # the operator allowed the test servers' network


def test_calendars_listed_elsewhere_are_kept_only_where_outbound_requests_may_go() -> None:
    """The calendars a server lists are where the worker will PUT events with the person's credentials: one on
    the server's own origin is kept, one elsewhere only when it passes the outbound check (public, or in the
    allowed networks, https unless allowed); a documentation address, a name resolving to a private address
    and plain http to a public host are dropped, and nothing is sent to any of them."""
    other_port = free_port()
    listed = [
        ("http://192.0.2.2:35837/steal/", "Steal"),
        ("https://internal.example/dav/cal/", "Internal"),
        ("http://public.example/cal/", "Plain http"),
        ("/cal/mine/", "Mine"),
        (f"http://127.0.0.1:{other_port}/allowed/", "Allowed network"),
        ("https://public.example/cal/", "Public"),
    ]
    with dav_server(account({"/cal/": listed})) as server:
        found = asyncio.run(discover_in(server.url, "someone", "secret", networks=LOCAL, resolve=fake_resolve))
        assert found == [
            CalendarInfo(server.url + "cal/mine/", "Mine"),
            CalendarInfo(f"http://127.0.0.1:{other_port}/allowed/", "Allowed network"),
            CalendarInfo("https://public.example/cal/", "Public"),
        ]
        assert [path for _, path in server.requests()] == ["/", "/p/", "/cal/"]


def test_a_server_listing_calendars_only_elsewhere_is_refused_with_the_reason() -> None:
    """When every calendar listed was dropped, discovery says why instead of finding nothing."""
    steal = account({"/cal/": [("http://192.0.2.2:35837/steal/", "Steal")]})
    with dav_server(steal) as server, pytest.raises(Rejected, match="does not write to .*192.0.2.2.*not a public"):
        asyncio.run(discover_in(server.url, "someone", "secret", networks=LOCAL, resolve=fake_resolve))


def test_a_calendar_url_that_is_itself_elsewhere_is_dropped() -> None:
    """A URL that answers as a calendar but names another host as its href is not taken at its word."""
    body = (
        b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:response>'
        b"<D:href>http://192.0.2.2:35837/steal/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/>"
        b"<C:calendar/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        b"</D:multistatus>"
    )
    with dav_server({"/cal/": body}) as server, pytest.raises(Rejected, match="does not write to"):
        asyncio.run(discover_in(server.url + "cal/", "someone", "secret", networks=LOCAL, resolve=fake_resolve))


def test_discovery_follows_at_most_five_homes() -> None:
    """A principal naming many calendar homes gets MAX_HOMES of them followed, in its order."""
    homes = {f"/home{n}/": [(f"/home{n}/cal/", f"Calendar {n}")] for n in range(8)}
    with dav_server(account(homes)) as server:
        found = asyncio.run(discover_in(server.url, "someone", "secret", networks=LOCAL, resolve=fake_resolve))
        assert [c.name for c in found] == [f"Calendar {n}" for n in range(caldav.MAX_HOMES)]
        assert [path for _, path in server.requests()] == ["/", "/p/", *[f"/home{n}/" for n in range(5)]]


def test_discovery_lists_at_most_100_calendars_with_short_clean_names() -> None:
    """A home listing thousands of calendars yields the first MAX_CALENDARS; names lose control and format
    characters (a right-to-left override would reorder what the page shows) and are cut to MAX_NAME characters;
    a calendar at an overlong URL is not offered."""
    long_url = "/cal/" + "x" * caldav.MAX_CALENDAR_URL + "/"
    listed = [(long_url, "Too long"), ("/cal/odd/", "Evil\u202egnp.exe" + "y" * 1000)]
    listed += [(f"/cal/{n}/", f"Calendar {n}") for n in range(300)]
    with dav_server(account({"/cal/": listed})) as server:
        found = asyncio.run(discover_in(server.url, "someone", "secret", networks=LOCAL, resolve=fake_resolve))
    assert len(found) == caldav.MAX_CALENDARS - 1  # 100 examined, the overlong one dropped
    assert found[0].name == ("Evilgnp.exe" + "y" * 1000)[: caldav.MAX_NAME]
    assert found[-1].name == "Calendar 97"
    assert all(len(c.url) <= caldav.MAX_CALENDAR_URL for c in found)


def test_the_whole_discovery_has_a_deadline() -> None:
    """A server that accepts a request and never answers holds discovery for `deadline` seconds in all, not for
    each request's own timeout (30 s): the calendar page and the API answer within the deadline."""
    with dav_server(account({"/cal/": [("/cal/a/", "A")]}), stall=["/p/"]) as server:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="longer than 0.5 s"):
            asyncio.run(discover_in(server.url, "someone", "secret", networks=LOCAL, deadline=0.5))
        assert time.monotonic() - started < 5
        assert [path for _, path in server.requests()] == ["/", "/p/"]


def test_discoveries_are_limited_per_process_and_per_person() -> None:
    """At most DISCOVERIES_PER_PROCESS run at once, and one per person; a refusal never waits, and a finished
    discovery frees its slot."""
    with ExitStack() as running:
        running.enter_context(caldav.discovery_slot("ann"))
        with pytest.raises(caldav.DiscoveryBusy) as own:
            running.enter_context(caldav.discovery_slot("ann"))
        assert own.value.yours
        for n in range(caldav.DISCOVERIES_PER_PROCESS - 1):
            running.enter_context(caldav.discovery_slot(f"person-{n}"))
        with pytest.raises(caldav.DiscoveryBusy) as full:
            running.enter_context(caldav.discovery_slot("bob"))
        assert not full.value.yours and full.value.retry_after > 0
    with caldav.discovery_slot("bob"), caldav.discovery_slot("ann"):
        pass


@pytest.mark.parametrize(
    ("username", "password", "target", "said"),
    [
        ("", "secret", "Username", "must not be empty"),
        ("ann", "", "Password", "must not be empty"),
        ("ann:admin", "secret", "Username", "must not contain ':'"),
        ("ann\x00", "secret", "Username", "U+0000"),
        ("ann\r\nX-Injected: 1", "secret", "Username", "U+000D"),
        ("ann\u202egnp", "secret", "Username", "U+202E"),
        ("ann\u200b", "secret", "Username", "U+200B"),
        ("ann", "sec\nret", "Password", "control character at character 4"),
        ("ann", "sec\x7fret", "Password", "control character"),
        ("ann", "sec\ud800ret", "Password", "control character"),
    ],
)
def test_credentials_are_checked_before_use(username: str, password: str, target: str, said: str) -> None:
    """Basic auth cannot carry a ':' in the user name (RFC 7617 §2); an empty value or invisible characters
    would be stored and shown as the account. The message names the field and never quotes the password."""
    with pytest.raises(Invalid, match=re.escape(said)) as caught:
        caldav.check_credentials(username, password)
    assert caught.value.target == target
    assert "sec" not in caught.value.message


def test_ordinary_credentials_pass() -> None:
    """Spaces, accents and symbols in a password, and an e-mail address as the user name, are fine."""
    assert caldav.check_credentials("zoë@example.com", "abcd-efgh ijkl:mnop ☃") == (
        "zoë@example.com",
        "abcd-efgh ijkl:mnop ☃",
    )
