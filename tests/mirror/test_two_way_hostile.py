"""The two-way mirror against a hostile or unlucky world (issue 11, hostile review): a person's own CalDAV server
written to tie up coursewire, credentials a server tries to send elsewhere, and a learner registered again right
after the mirror unregistered them. Each test names what a user depends on; each failed before its fix (a slow
server stalled every check and write; a 16 MiB answer held the event loop for seconds; a redirect took the
password to another host; a registration made right after an unregistration was lost, then cancelled; resync
deleted an event the worker had just written).

Real parts: small HTTP servers on 127.0.0.1 speaking as a CalDAV server would (http.server), the real
CalDAVProvider and CalendarWorker, a real SQLite file (tests/mirror/engine_support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dav_hostile import QuietHandler, serving
from engine_support import World, make_world

from calendars import resync
from calendars.config import CalendarConfig
from calendars.model import Provider, Written
from calendars.providers.caldav import CalDAVProvider
from calendars.providers.null import NullProvider
from calendars.worker import CalendarWorker
from storage import calendar, events
from storage.calendar import Connection
from storage.models import EnrollmentStatus
from storage.secrets import SecretBox

POLL = 301  # seconds: just past the default COURSEWIRE_CALDAV_POLL_SECONDS
HANDLE = "0123456789abcdef0123456789abcdef"  # a resource name of ours (`<handle>.ics`)

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    """What a test server received: (method, path, headers) in order."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self.lock:
            self.requests.append((method, path, headers))

    def all(self) -> list[tuple[str, str, dict[str, str]]]:
        with self.lock:
            return list(self.requests)


@contextmanager
def http_server(answer: Callable[[str, str], Answer]) -> Iterator[tuple[str, Seen]]:
    """An HTTP/1.1 server on 127.0.0.1 (a free port) answering every request with `answer(method, path)` (which
    may sleep, as a slow server does); yields its base URL (`http://127.0.0.1:PORT`) and what it received."""
    seen = Seen()

    class Handler(QuietHandler):
        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # coursewire gave up: what a deadline looks like from here

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):
                return self._any
            raise AttributeError(name)

        def _any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.add(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            status, headers, body = answer(self.command, self.path)
            self.send_response(status)
            for name, value in {"Content-Type": "application/xml; charset=utf-8", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as base:
        yield base, seen


def sync_answer(calendar_path: str, members: str = "", *, more: bool = False, token: str = "t1") -> bytes:  # noqa: S107 (a sync token)
    """A DAV:sync-collection 207 (RFC 6578 §3.2): `members` (DAV:response elements as text), the sync token, and
    with `more` the calendar itself answered 507, "the answer was cut, ask again" (§3.6)."""
    cut = (
        f"<d:response><d:href>{calendar_path}</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status>"
        "</d:response>"
        if more
        else ""
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:">{members}{cut}'
        f"<d:sync-token>{token}</d:sync-token></d:multistatus>"
    ).encode()


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = make_world(tmp_path)
    w.settings(CalDAVEnabled=True)
    return w


def _status(world: World, enrollment_id: str) -> str:
    with world.db.read() as conn:
        (status,) = conn.execute("SELECT status FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
    return EnrollmentStatus(status).name


# -- a person's own server ties up the worker ----------------------------------------------------------------------


def test_one_persons_slow_caldav_server_does_not_stall_the_mirror_for_everyone(world: World) -> None:
    """Any user may connect a CalDAV server of their own. One that answers every sync-collection slowly, each
    time saying "there is more" (a 507 on the calendar, RFC 6578 §3.6), must not keep the worker from mirroring
    other people: a learner registered meanwhile sees the session in their calendar within seconds."""
    delay = 0.5  # seconds per answer: 20 answers (inbound.MAX_CALLS) hold one check 10 s
    omar_session = world.session(title="Other")
    world.connect("lena")  # the hostile person: her "CalDAV server" is the slow one below
    world.connect("omar")
    world.sync()
    world.advance(seconds=POLL)  # every calendar's poll is due

    def slow(method: str, path: str) -> Answer:
        if method == "REPORT":
            time.sleep(delay)
            return 207, {}, sync_answer("/cal/", more=True)
        return 404, {}, b""

    async def go(base: str, seen: Seen) -> float | None:
        session = aiohttp.ClientSession()

        def provider_for(connection: Connection) -> Provider:
            if connection.user_id == world.people["lena"]:
                return CalDAVProvider(session, base + "/cal/", "lena", "secret", timeout=5)
            return world.providers.setdefault(connection.id, NullProvider())

        worker = CalendarWorker(
            world.db, SecretBox.for_database(":memory:"), CalendarConfig(), provider_for=provider_for
        )
        stop = asyncio.Event()
        async with worker:
            task = asyncio.create_task(worker.run(stop, interval=0.02))
            try:
                started = time.monotonic()
                while not any(m == "REPORT" for m, _, _ in seen.all()):  # lena's check is under way
                    assert time.monotonic() - started < 10, "the worker never checked lena's calendar"
                    await asyncio.sleep(0.02)
                world.enroll("omar", omar_session)
                registered = time.monotonic()
                while time.monotonic() - registered < 4 * delay + 1:
                    if world.calendar_of("omar"):
                        return time.monotonic() - registered
                    await asyncio.sleep(0.05)
                return None
            finally:
                stop.set()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await session.close()

    with http_server(slow) as (base, seen):
        waited = asyncio.run(go(base, seen))
    assert waited is not None, "omar's event was not written while lena's slow server was being checked"


def test_a_huge_sync_answer_does_not_hold_the_event_loop() -> None:
    """A CalDAV server (the person's own) answering sync-collection with 16 MiB of tiny elements must not stop
    everything else on the worker's event loop -- webhook deliveries share it -- for seconds: no gap between two
    ticks of a 50 ms timer exceeds one second while coursewire reads the answer."""
    head = b'<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"><d:sync-token>t1</d:sync-token>'
    tail = b"</d:multistatus>"
    filler = b"<a/>" * ((16 * 1024 * 1024 - len(head) - len(tail)) // 4)
    body = head + filler + tail

    def huge(method: str, path: str) -> Answer:
        return (207, {}, body) if method == "REPORT" else (404, {}, b"")

    async def go(base: str) -> float:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.05)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with aiohttp.ClientSession() as session:
            provider = CalDAVProvider(session, base + "/cal/", "lena", "secret")
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.1)
            # a refusal is fine: the time it took to get there is what is measured
            with contextlib.suppress(Exception):
                await provider.changes(None)
            done.set()
            await tick
        return max(gaps)

    with http_server(huge) as (base, _):
        longest = asyncio.run(go(base))
    assert longest < 1.0, f"the event loop stood still for {longest:.1f} s"


# -- credentials stay with the calendar's server -------------------------------------------------------------------


def test_a_redirect_to_another_host_does_not_get_the_persons_password() -> None:
    """When the mirror confirms a deletion (Provider.get) and the calendar server redirects the GET to another
    host, the person's user name and app password (HTTP Basic) are not sent there: find_moved promises that the
    server does not choose where coursewire sends the person's credentials."""
    with http_server(lambda method, path: (404, {}, b"")) as (elsewhere, seen_elsewhere):
        port = elsewhere.rsplit(":", 1)[1]
        target = f"http://localhost:{port}/stolen.ics"  # a host *name*: the literal-address rule does not apply

        def redirecting(method: str, path: str) -> Answer:
            if method == "GET":
                return 302, {"Location": target}, b""
            return 404, {}, b""

        with http_server(redirecting) as (base, _):

            async def go() -> None:
                async with aiohttp.ClientSession() as session:
                    provider = CalDAVProvider(session, base + "/cal/", "lena", "app-password")
                    await provider.get(Written(f"{base}/cal/{HANDLE}.ics"))

            asyncio.run(go())
    sent = [h.get("authorization") for _, _, h in seen_elsewhere.all()]
    assert sent, "the redirect was not followed at all (then nothing could leak)"
    assert sent == [None] * len(sent), "the person's Basic credentials went to another host"


# -- a learner registered again right after the mirror unregistered them -----------------------------------------


def test_a_registration_made_right_after_a_calendar_unregistration_is_written_and_kept(world: World) -> None:
    """Lena deletes the first day's event and is unregistered. Before the worker's next round she (or an
    automation answering the SessionUnregistration trigger) registers again. Her calendar must get both days
    again, and the next full listing must not cancel the new registration for the old deletion."""
    session_id = world.session(days=2)
    world.connect("lena")
    world.enroll("lena", session_id)
    world.sync()
    connection = calendar.active_connection(world.db, world.people["lena"])
    assert connection is not None
    provider = world.providers[connection.id]
    first = min(provider.events, key=lambda pid: provider.events[pid].start)
    provider.person_deletes(first)
    world.advance(seconds=POLL)
    world.sync(rounds=1)  # the round whose check decides; the next round would clean up
    assert [e.data["Decision"] for e in events.latest(world.db, types=["CalendarEventDeleted"])] == ["Unregistered"]

    again = world.enroll("lena", session_id)
    world.sync()
    assert len(world.calendar_of("lena")) == 2, "the new registration's first day was never written"
    provider.expire_cursors()  # any full listing: a server without sync-collection lists fully on every poll
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, again) != "Cancelled"


# -- `coursewire calendar resync` while the server's worker writes -----------------------------------------------


def test_resync_while_the_worker_writes_unregisters_nobody(world: World) -> None:
    """`coursewire calendar resync` runs beside `coursewire serve`. When its stray search lists a calendar while
    the server's worker has written a new event there but not yet recorded it, that event is not a stray: it is
    not deleted, and the learner is not unregistered for it."""
    session_id = world.session()
    world.connect("lena")
    connection = calendar.active_connection(world.db, world.people["lena"])
    assert connection is not None
    provider = world.providers.setdefault(connection.id, NullProvider())
    lena = world.enroll("lena", session_id)

    async def go() -> None:
        written, go_on = asyncio.Event(), asyncio.Event()

        async def put_then_wait(item: Any, before: Any, *, recreate: bool = True) -> Written:
            done = await NullProvider.put(provider, item, before, recreate=recreate)
            written.set()  # on the calendar, not yet recorded: the worker is still in sync.execute
            await go_on.wait()
            return done

        provider.put = put_then_wait  # type: ignore[method-assign,assignment]
        async with world.worker() as worker:
            round_ = asyncio.create_task(worker.run_once(world.now[0]))
            await asyncio.wait_for(written.wait(), 10)
            found = await resync.strays(world.db, provider, connection)  # the CLI, meanwhile
            await resync.remove(provider, found)
            go_on.set()
            await round_
        del provider.put

    asyncio.run(go())
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert len(world.calendar_of("lena")) == 1
