"""The two-way mirror end to end (tests/mirror/test_two_way_e2e.py): the training world of engine_support (a real
SQLite file, an injected clock), the real CalendarWorker with the real providers, each person's calendar in the
Graph fake, the Google fake or a real Radicale, and calendars.receiving.NotificationReceiver served by uvicorn on
127.0.0.1 -- the `public_url` the worker gives Graph subscriptions and Google watch channels, on the same database
file through a Database of its own, as `coursewire serve` and its worker would share it.

`Calendars` is what a test does to the people's calendars, the same words for every provider: connect one,
read what it holds, delete or move an event as the person would, revoke the person's consent, and steer or wait
for the provider's notifications. `Mirror.notice()` is "time passes until the mirror can know": for Graph and
Google the fake's notifications are delivered and answered (nothing else makes a check due before the sweep);
for CalDAV, which has no push, the clock moves past COURSEWIRE_CALDAV_POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvicorn
from engine_support import World
from fakes.google import GoogleCalendarFake
from fakes.graph import GraphFake
from google_support import FakeTokens as GoogleTokens
from graph_support import FakeTokens as GraphTokens
from icalendar import Calendar
from radicale_support import CalDAVEnv, RadicaleServer, RecordingProxy

from calendars.config import CalendarConfig
from calendars.model import CalendarItem, Changes, Provider
from calendars.providers.caldav import CalDAVProvider
from calendars.providers.google import GoogleProvider
from calendars.providers.graph import GraphProvider
from calendars.receiving import NotificationReceiver
from calendars.sync import Recipient
from calendars.worker import CalendarWorker
from storage import calendar, calendar_watch, events
from storage.calendar import Connection, ItemRecord
from storage.db import Database
from storage.models import CLI, EnrollmentStatus
from storage.secrets import SecretBox

CONFIG = CalendarConfig()
POLL_SECONDS = CONFIG.caldav_poll_seconds
SWEEP_SECONDS = CONFIG.sweep_seconds
START_TIMEOUT = 30.0  # seconds for uvicorn to listen on a loaded machine (a deadline, not a wait)


@dataclass(frozen=True)
class Held:
    """One event a calendar holds: the id the provider knows it by, and its subject."""

    id: str
    subject: str


class Calendars:
    """The people's calendars at one provider (subclassed per provider)."""

    provider = ""  # the connection's Provider, as the API names it
    pushes = True  # the provider notifies (Graph, Google); CalDAV is polled

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.person_of: dict[str, str] = {}  # user id -> person (login prefix)
        self.full_listings = 0  # changes(None) calls the worker made: full listings of a calendar

    def connect(self, world: World, person: str) -> None:
        """Give the person a calendar at the provider and connect it (storage.calendar.connect)."""
        account, target, credentials = self.create(person)
        user_id = world.people[person]
        self.person_of[user_id] = person
        calendar.connect(
            world.db, CLI, user_id, self.provider, account=account, calendar=target, credentials=credentials
        )

    def provider_for(self, connection: Connection, session: aiohttp.ClientSession) -> Provider:
        """The real provider for the connection, counting its full listings."""
        provider = self.open(self.person_of[connection.user_id], session)
        changes = provider.changes  # type: ignore[attr-defined]

        async def counted(cursor: str | None) -> Changes:
            if cursor is None:
                self.full_listings += 1
            result: Changes = await changes(cursor)
            return result

        provider.changes = counted  # type: ignore[attr-defined]
        return provider

    # -- per provider -----------------------------------------------------------------------------------------
    def create(self, person: str) -> tuple[str, str | None, str]:
        """(account, calendar, credentials) of a new calendar of the person."""
        raise NotImplementedError

    def open(self, person: str, session: aiohttp.ClientSession) -> Provider:
        raise NotImplementedError

    def events(self, person: str) -> list[Held]:
        """The events the person's connected calendar holds (deleted ones left out)."""
        raise NotImplementedError

    def moved_events(self, person: str) -> list[Held]:
        """The events of the person's other calendar, where `move` puts them."""
        raise NotImplementedError

    def delete(self, person: str, event_id: str) -> None:
        """The person deletes the event in their calendar app."""
        raise NotImplementedError

    def move(self, person: str, event_id: str) -> None:
        """The person moves the event to another of their calendars ("Personal")."""
        raise NotImplementedError

    def delete_moved(self, person: str, event_id: str) -> None:
        """The person deletes an event of `moved_events` (in "Personal")."""
        self.delete(person, event_id)

    def revoke(self, person: str) -> None:
        """The person's consent (or password) is gone: every request and every refresh is refused."""
        raise NotImplementedError

    def expire_cursors(self, person: str) -> None:
        """Every change cursor given so far for the person's calendar has expired."""
        raise NotImplementedError

    def drop_next(self, count: int = 1) -> None:
        raise NotImplementedError

    def duplicate_next(self, count: int = 1) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until every notification queued so far was delivered and answered."""


class GraphCalendars(Calendars):
    """Mailboxes in the Graph fake; the connection's calendar is the mailbox's default one (`/me/events`)."""

    provider = "Microsoft365"

    def __init__(self, fake: GraphFake, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self.fake = fake
        fake.clock = clock  # subscription expiry is measured on the world's clock
        self.user_ids: dict[str, str] = {}
        self.tokens: dict[str, GraphTokens] = {}
        self.personal: dict[str, str] = {}

    def create(self, person: str) -> tuple[str, str | None, str]:
        user_id = str(uuid.uuid4())
        account = f"{person}@contoso.example"
        self.fake.add_user(user_id, account)
        self.user_ids[person] = user_id
        self.tokens[person] = GraphTokens(self.fake, user_id)
        return account, None, "-"

    def open(self, person: str, session: aiohttp.ClientSession) -> Provider:
        return GraphProvider(session, f"{self.fake.url}/v1.0", self.tokens[person], None, clock=self.clock)

    def events(self, person: str) -> list[Held]:
        return [Held(e.immutable_id, e.fields.get("subject", "")) for e in self.fake.stored(self.user_ids[person])]

    def moved_events(self, person: str) -> list[Held]:
        found = self.fake.stored(self.user_ids[person], self.personal[person])
        return [Held(e.immutable_id, e.fields.get("subject", "")) for e in found]

    def delete(self, person: str, event_id: str) -> None:
        # As Outlook does it: to Deleted Items, where the event's ImmutableId still finds it.
        self.fake.trash_as_person(self.user_ids[person], event_id)

    def move(self, person: str, event_id: str) -> None:
        user_id = self.user_ids[person]
        self.personal[person] = self.fake.add_calendar(user_id, "Personal")
        self.fake.move_as_person(user_id, event_id, self.personal[person])

    def revoke(self, person: str) -> None:
        self.fake.revoke(self.user_ids[person])

    def expire_cursors(self, person: str) -> None:
        self.fake.expire_delta(self.user_ids[person])

    def drop_next(self, count: int = 1) -> None:
        self.fake.drop_next(count)

    def duplicate_next(self, count: int = 1) -> None:
        self.fake.duplicate_next(count)

    def settle(self) -> None:
        self.fake.flush()


class GoogleCalendars(Calendars):
    """Primary calendars in the Google fake (the connection's calendar is `primary`)."""

    provider = "Google"

    def __init__(self, fake: GoogleCalendarFake, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self.fake = fake
        self.accounts: dict[str, str] = {}
        self.tokens: dict[str, GoogleTokens] = {}

    def create(self, person: str) -> tuple[str, str | None, str]:
        account = f"{person}@example.com"
        self.fake.add_calendar(account)
        self.accounts[person] = account
        self.tokens[person] = GoogleTokens(self.fake, account)
        return account, "primary", "-"

    def open(self, person: str, session: aiohttp.ClientSession) -> Provider:
        return GoogleProvider(session, self.fake.base_url, self.tokens[person], "primary", clock=self.clock)

    def _held(self, calendar_id: str) -> list[Held]:
        return [Held(e["id"], e.get("summary", "")) for e in self.fake.stored(calendar_id)]

    def events(self, person: str) -> list[Held]:
        return self._held(self.accounts[person])

    def moved_events(self, person: str) -> list[Held]:
        return self._held(f"personal.{self.accounts[person]}")

    def delete(self, person: str, event_id: str) -> None:
        self.fake.person_deletes(self.accounts[person], event_id)

    def delete_moved(self, person: str, event_id: str) -> None:
        self.fake.person_deletes(f"personal.{self.accounts[person]}", event_id)

    def move(self, person: str, event_id: str) -> None:
        account = self.accounts[person]
        personal = f"personal.{account}"
        self.fake.add_calendar(account, calendar_id=personal, summary="Personal")
        self.fake.person_moves(account, event_id, personal)

    def revoke(self, person: str) -> None:
        self.tokens[person].revoked = True
        self.fake.revoke(account=self.accounts[person])

    def expire_cursors(self, person: str) -> None:
        self.fake.invalidate_sync_tokens()

    def drop_next(self, count: int = 1) -> None:
        self.fake.drop_next(count)

    def duplicate_next(self, count: int = 1) -> None:
        self.fake.duplicate_next(count)

    def settle(self) -> None:
        self.fake.settle()


class CalDAVCalendars(Calendars):
    """A Radicale user per person with a calendar "Training" (connected) and, once `move` ran, "Personal"."""

    provider = "CalDAV"
    pushes = False

    def __init__(self, server: RadicaleServer, proxy: RecordingProxy, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self.server, self.proxy = server, proxy
        self.envs: dict[str, CalDAVEnv] = {}

    def create(self, person: str) -> tuple[str, str | None, str]:
        env = self.envs[person] = CalDAVEnv(self.server, self.proxy)
        return env.username, env.calendar_url, json.dumps({"username": env.username, "password": env.password})

    def open(self, person: str, session: aiohttp.ClientSession) -> Provider:
        env = self.envs[person]
        return CalDAVProvider(session, env.calendar_url, env.username, env.password)

    def events(self, person: str) -> list[Held]:
        return [Held(e["id"], e["subject"]) for e in self.envs[person].events()]

    def moved_events(self, person: str) -> list[Held]:
        env = self.envs[person]
        folder = self.server.storage / "collection-root" / env.username / "personal"
        found = []
        for path in sorted(folder.glob("*.ics")):
            for event in Calendar.from_ical(path.read_bytes()).walk("VEVENT"):
                found.append(Held(f"{self.proxy.url}/{env.username}/personal/{path.name}", str(event["SUMMARY"])))
        return found

    def delete(self, person: str, event_id: str) -> None:
        self.envs[person].delete_as_person(event_id)

    def move(self, person: str, event_id: str) -> None:
        """As CalDAV apps move an event: the same iCalendar object (same UID) PUT into the other calendar under a
        name of the app's choice, then the original DELETEd (RFC 4791 has no MOVE between calendars)."""
        env = self.envs[person]
        personal = env.make_calendar("personal", "Personal")
        data = env.files()[urlsplit(event_id).path.rsplit("/", 1)[-1]]
        answer = env.person("PUT", personal + "moved-by-app.ics", data, {"Content-Type": "text/calendar"})
        assert answer.status == 201, answer
        env.delete_as_person(event_id)

    def revoke(self, person: str) -> None:
        self.envs[person].fail_next("auth")  # the app password changed in htpasswd

    def expire_cursors(self, person: str) -> None:
        raise NotImplementedError("Radicale keeps its sync tokens")

    def drop_next(self, count: int = 1) -> None:
        return None  # nothing is pushed

    def duplicate_next(self, count: int = 1) -> None:
        return None


@contextmanager
def receiving(db: Database) -> Iterator[str]:
    """NotificationReceiver on `db`, served by uvicorn in a thread on 127.0.0.1; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(NotificationReceiver(db), log_level="warning", lifespan="off"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)  # a thread starting: there is no clock to inject
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Mirror:
    """The world, the people's calendars, the receiver's URL; `rounds()` runs the real worker."""

    world: World
    calendars: Calendars
    public_url: str
    mails: list[str] = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.world.db

    def connect(self, *people: str) -> None:
        for person in people:
            self.calendars.connect(self.world, person)

    def rounds(self, limit: int = 10) -> int:
        """Worker rounds at the world's time until one has nothing to do, each followed by the delivery of the
        notifications it caused (our own writes are notified too); returns the pairs and checks worked on."""

        async def send_mail(
            method: str, item: CalendarItem, record: ItemRecord | None, to: Recipient, sequence: int, now: datetime
        ) -> None:
            self.mails.append(f"{method} {to.email}")

        async def go() -> int:
            total = 0
            async with aiohttp.ClientSession() as session:
                worker = CalendarWorker(
                    self.db,
                    SecretBox.for_database(":memory:"),
                    CONFIG,
                    provider_for=lambda connection: self.calendars.provider_for(connection, session),
                    send_mail=send_mail,
                    public_url=self.public_url,
                )
                async with worker:
                    for _ in range(limit):
                        worked = await worker.run_once(self.world.now[0])
                        await asyncio.to_thread(self.calendars.settle)
                        total += worked
                        if not worked:
                            return total
            raise AssertionError(f"the worker was still busy after {limit} rounds")

        return asyncio.run(go())

    def notice(self) -> None:
        """Let the mirror hear of what the person did: the provider's notifications delivered (a second passes,
        far from the sweep), or for CalDAV the clock past the poll interval."""
        if self.calendars.pushes:
            self.calendars.settle()
            self.world.advance(seconds=1)
        else:
            self.world.advance(seconds=POLL_SECONDS + 1)

    # -- what a test reads ------------------------------------------------------------------------------------
    def status(self, enrollment_id: str) -> str:
        with self.db.read() as conn:
            (status,) = conn.execute("SELECT status FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
        return EnrollmentStatus(status).name

    def decisions(self) -> list[tuple[str, str, str, str]]:
        """(event type, person, Decision, Reason) of the two-way decisions in the event log, oldest first."""
        found = events.latest(self.db, types=["CalendarEventDeleted", "CalendarEventMoved"])
        person = {v: k for k, v in self.world.people.items()}
        return [(e.type, person[str(e.user_id)], e.data["Decision"], e.data["Reason"]) for e in found]

    def connection(self, person: str) -> Connection:
        found = calendar.active_connection(self.db, self.world.people[person])
        assert found is not None
        return found

    def watch(self, person: str) -> calendar_watch.WatchState:
        found = calendar_watch.of_connection(self.db, self.connection(person).id)
        assert found is not None
        return found

    def notifications(self, person: str) -> int:
        """How many notifications the receiver took for the person's connection."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT notifications FROM calendar_watches WHERE connection_id = ?", (self.connection(person).id,)
            ).fetchone()
        return int(row[0])

    def shown(self, person: str) -> dict[str, Any]:
        """The person's calendar connection as the API shows it."""
        return calendar.get_connection(self.db, CLI, self.world.people[person])
