"""CalDAVProvider.reaches against a scripted server on 127.0.0.1 (aiohttp): whether the calendar an event was
moved to is still an event calendar the person reads. False writes the event again in the connected calendar;
True takes its absence for a deletion by the person, which unregisters the learner, so only an answer naming an
event calendar may say True."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from dav_hostile import multistatus, response

from calendars.model import Rejected, Written
from calendars.providers.caldav import CalDAVProvider
from calendars.providers.dav import MAX_REDIRECTS

CONNECTED = "/lena/training/"
OTHER = "/lena/personal/"
EVENT = OTHER + "moved-by-app.ics"
USER, PASSWORD = "lena", "app-password"
AUTHORIZATION = aiohttp.encode_basic_auth(USER, PASSWORD)

EVENTS = '<C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>'
CALENDAR = f"<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>{EVENTS}"
TASKS = (
    "<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>"
    '<C:supported-calendar-component-set><C:comp name="VTODO"/></C:supported-calendar-component-set>'
)
ASKED = "<D:resourcetype/><D:displayname/><C:supported-calendar-component-set/>"


def refused_props(href: str, status: str) -> str:
    """The collection's response with every property asked for in one propstat of `status`."""
    return (
        f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>{ASKED}</D:prop>"
        f"<D:status>HTTP/1.1 {status}</D:status></D:propstat></D:response>"
    )


@dataclass
class Reply:
    status: int
    body: bytes = b""
    location: str | None = None


@dataclass
class Server:
    url: str = ""  # no final '/'
    replies: dict[str, Reply] = field(default_factory=dict)
    received: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Authorization


@asynccontextmanager
async def serving(replies: Mapping[str, Reply]) -> AsyncIterator[Server]:
    """`replies` (path -> Reply; anything else 404) on 127.0.0.1, whatever the method."""
    server = Server(replies=dict(replies))

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        server.received.append((request.method, request.path, request.headers.get("Authorization")))
        reply = server.replies.get(request.path, Reply(404))
        headers = {"Content-Type": "application/xml; charset=utf-8"}
        if reply.location is not None:
            headers["Location"] = reply.location
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def reaches(server: Server) -> bool:
    async with aiohttp.ClientSession() as session:
        provider = CalDAVProvider(session, server.url + CONNECTED, USER, PASSWORD)
        return await provider.reaches(Written(server.url + EVENT))


def calendar_at(href: str, props: str = CALENDAR) -> Reply:
    return Reply(207, multistatus(response(href, props)))


NOT_AN_EVENT_CALENDAR = {
    "propstat 404 (the collection is gone)": multistatus(refused_props(OTHER, "404 Not Found")),
    "the collection's own status 404": multistatus(
        f"<D:response><D:href>{OTHER}</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>"
    ),
    "a plain collection": multistatus(response(OTHER, "<D:resourcetype><D:collection/></D:resourcetype>")),
    "an address book": multistatus(
        response(
            OTHER,
            '<D:resourcetype xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:collection/><CR:addressbook/>'
            "</D:resourcetype>",
        )
    ),
    "a task list": multistatus(response(OTHER, TASKS)),
    "no response at all": multistatus(),
}


@pytest.mark.parametrize("answer", list(NOT_AN_EVENT_CALENDAR))
def test_a_207_that_names_no_event_calendar_is_out_of_reach(answer: str) -> None:
    """The same collection is reached while it answers as an event calendar, and out of reach once its 207 says
    it is gone (a propstat or response status 404) or holds no events: a 207 alone is not a readable calendar."""

    async def go() -> tuple[bool, bool]:
        async with serving({OTHER: calendar_at(OTHER)}) as server:
            before = await reaches(server)
            server.replies[OTHER] = Reply(207, NOT_AN_EVENT_CALENDAR[answer])
            after = await reaches(server)
            assert server.received == [("PROPFIND", OTHER, AUTHORIZATION)] * 2
            return before, after

    assert asyncio.run(go()) == (True, False)


def test_a_collection_no_longer_shared_is_out_of_reach_whether_refused_or_answered_forbidden() -> None:
    """Unsharing shows as a 403 on the PROPFIND, or as a 207 whose propstat for the collection is 403 (the
    properties may no longer be read): both are False, not AuthorizationLost (the password still works for the
    connected calendar). A 405 (no WebDAV there) is neither: Rejected, for the caller to judge."""

    async def go() -> list[bool | str]:
        seen: list[bool | str] = []
        async with serving({}) as server:
            for reply in (
                Reply(403, b"Forbidden"),
                Reply(207, multistatus(refused_props(OTHER, "403 Forbidden"))),
                Reply(405, b"Method Not Allowed"),
            ):
                server.replies[OTHER] = reply
                try:
                    seen.append(await reaches(server))
                except Rejected as exc:
                    seen.append(f"Rejected: {exc}")
        return seen

    refused, forbidden, not_dav = asyncio.run(go())
    assert (refused, forbidden) == (False, False)
    assert isinstance(not_dav, str) and not_dav.startswith("Rejected: PROPFIND") and "405" in not_dav


def test_redirects_are_followed_on_the_calendars_origin_only() -> None:
    """A calendar the server moved on its own origin is followed (with the credentials) and judged where it went:
    an event calendar is True, a task list False. A redirect to another origin, a redirect loop or a 3xx without
    Location is False, and nothing is sent elsewhere: the calendar is not where the event was, and the person's
    password goes only to the server they connected."""

    async def go() -> tuple[list[bool], Server, Server]:
        async with serving({}) as elsewhere, serving({}) as server:
            elsewhere.replies[OTHER] = calendar_at(OTHER)
            renamed = "/lena/personal-2/"
            server.replies[OTHER] = Reply(301, location=renamed)
            server.replies[renamed] = calendar_at(renamed)
            seen = [await reaches(server)]
            assert server.received == [("PROPFIND", OTHER, AUTHORIZATION), ("PROPFIND", renamed, AUTHORIZATION)]
            server.replies[renamed] = calendar_at(renamed, TASKS)
            seen.append(await reaches(server))
            server.replies[OTHER] = Reply(308, location=elsewhere.url + OTHER)
            seen.append(await reaches(server))
            server.replies[OTHER] = Reply(307, location=OTHER)
            server.received.clear()
            seen.append(await reaches(server))
            assert len(server.received) == MAX_REDIRECTS + 1
            server.replies[OTHER] = Reply(302)
            seen.append(await reaches(server))
            return seen, server, elsewhere

    seen, _, elsewhere = asyncio.run(go())
    assert seen == [True, False, False, False, False]
    assert elsewhere.received == []
