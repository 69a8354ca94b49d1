"""The calendar mirror's worker: the event log to the dirty queue, the dirty queue to provider writes.

`run_once(now)` does one round: (1) consume events after the `calendars` cursor and mark the (person,
session) pairs each may change, in the transaction that moves the cursor (storage.consumer); (2) queue the
pairs of calendars being disconnected, and forget those that are empty; (3) lease due pairs
(storage.calendar.claim) and bring each to its desired state (calendars.sync), up to `concurrency` at once.
Leases let several workers share one database; a killed worker's pairs are taken back when their lease runs
out, or at once by a worker of the same host that sees the process is gone. A crash between a provider
write and its record repeats the write, which providers make idempotent (calendars/model.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import aiohttp

from calendars import sync
from calendars.config import CalendarConfig
from calendars.model import CalendarItem, Provider
from storage import calendar, consumer, leases, outbound
from storage.calendar import Connection, DirtyPair, ItemRecord
from storage.db import Database
from storage.models import Event
from storage.secrets import SecretBox

log = logging.getLogger("coursewire.calendars")

CONSUMER = "calendars"
LEASE = timedelta(minutes=5)

ProviderFactory = Callable[[Connection], Provider]
SendMail = Callable[[str, CalendarItem, ItemRecord | None, sync.Recipient, int, datetime], Awaitable[None]]


def pairs_for(conn: sqlite3.Connection, event: Event) -> set[tuple[str, str]]:
    """The (person, session) pairs whose calendars an event may change (docs/design.md, "Calendar mirror")."""
    kind = event.type
    if kind in ("SessionRegistered", "SessionUnregistered", "WaitlistPromoted") and event.user_id and event.session_id:
        return {(event.user_id, event.session_id)}
    if kind.startswith("Enrollment") and event.enrollment_id:
        return calendar.pairs_of_enrollment(conn, event.enrollment_id)
    if kind.startswith("CourseSession") and event.session_id:
        return calendar.pairs_of_session(conn, event.session_id)
    if kind in ("CourseUpdated", "CourseDeleted") and event.course_id:
        return calendar.pairs_of_course(conn, event.course_id)
    if kind in ("UserUpdated", "UserDeleted") and event.user_id:
        return calendar.pairs_of_user(conn, event.user_id)
    if kind.startswith("Calendar") and kind != "CalendarSettingsChanged" and event.user_id:
        return calendar.pairs_of_user(conn, event.user_id)
    if kind == "CalendarSettingsChanged":
        out: set[tuple[str, str]] = set()
        for name in event.data.get("changes", {}):
            provider = name.removesuffix("Enabled")
            out |= calendar.pairs_of_provider(conn, None if provider == "EmailFallback" else provider)
        return out
    return set()


class CalendarWorker:
    """Mirrors sessions into calendars for one database; see the module docstring.

    provider_for: builds the Provider of a connection (default: calendars.connections.open_provider with the
    worker's HTTP session); send_mail: sends one iMIP message (default: calendars.mailing.MailSender, used when
    SMTP is configured); public_url: the server's base URL, for the calendar page link in e-mails.
    """

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        config: CalendarConfig,
        *,
        provider_for: ProviderFactory | None = None,
        send_mail: SendMail | None = None,
        owner: str | None = None,
        batch: int = 100,
        concurrency: int = 32,
        public_url: str = "",
    ) -> None:
        self.db = db
        self.public_url = public_url.rstrip("/")
        self.box = box
        self.config = config
        self.owner = owner or leases.new_owner()
        self.batch = batch
        self.concurrency = concurrency
        self._provider_for = provider_for
        self._send_mail = send_mail
        self._providers: dict[str, Provider] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        released = calendar.release_abandoned(self.db, leases.host_identity(), leases.alive)
        if released:
            log.warning(
                "took back %d calendar pairs leased by workers of this host that are no longer running", released
            )
        queued = calendar.note_mail_configured(self.db, self._mail_ready())
        if queued:
            log.info(
                "e-mail %s since the last start: %d sessions to bring up to date",
                "on" if self._mail_ready() else "off",
                queued,
            )
        if self._session is None and self._provider_for is None:
            self._session = outbound.guarded_session(self.config.allowed_networks, user_agent="coursewire-calendars/1")

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
        self._providers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> CalendarWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the round ----------------------------------------------------------------------------------------

    def consume(self, now: datetime, limit: int = 500) -> int:
        """Mark the pairs of the next events; return how many events were consumed."""

        def handle(conn: sqlite3.Connection, batch: Sequence[Event]) -> int:
            for event in batch:
                calendar.mark_dirty(conn, pairs_for(conn, event), now)
            return len(batch)

        return consumer.consume(self.db, CONSUMER, handle, limit=limit)

    def _removals(self, now: datetime) -> None:
        for connection in calendar.removing(self.db):
            items = calendar.items_of_connection(self.db, connection.id)
            if not items:
                calendar.forget_connection(self.db, connection.id)
                self._drop_provider(connection.id)
                continue
            with self.db.read() as conn:
                queued = {
                    (r[0], r[1])
                    for r in conn.execute(
                        "SELECT user_id, session_id FROM calendar_dirty WHERE user_id = ?", (connection.user_id,)
                    )
                }
            missing = {(i.user_id, i.session_id) for i in items} - queued
            if missing:
                with self.db.write() as conn:
                    calendar.mark_dirty(conn, missing, now)

    async def run_once(self, now: datetime | None = None) -> int:
        """One round (module docstring); returns how many pairs were worked on. `now` defaults to the
        database's clock, which tests inject."""
        now = now or self.db.clock()
        # Read-only probes first, as the webhook worker does: an idle round takes no write lock.
        if consumer.backlog(self.db, CONSUMER):
            while self.consume(now):
                pass
        self._removals(now)
        if not calendar.has_due(self.db, now):
            return 0
        pairs = calendar.claim(self.db, self.owner, self.batch, LEASE, now)
        if not pairs:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(pair: DirtyPair) -> None:
            async with gate:
                await self._sync(pair, now)

        await asyncio.gather(*(one(p) for p in pairs))
        return len(pairs)

    async def _sync(self, pair: DirtyPair, now: datetime) -> None:
        try:
            with self.db.read() as conn:
                plan, connections = sync.plan(conn, pair, now, mail_configured=self._mail_ready())
            if plan.channel == sync.CALENDAR and plan.connection is not None:
                connections[plan.connection.id] = plan.connection
            outcome = await sync.execute(plan, connections, self._provider, self._mail, now)
        except Exception as exc:  # a bug or the database: keep the pair for later, say so once per round
            log.exception("calendar sync of user %s, session %s failed", pair.user_id, pair.session_id)
            with self.db.write() as conn:
                calendar.retry(conn, self.owner, pair, now + timedelta(seconds=sync.BACKOFF_FIRST), repr(exc))
            return
        with self.db.write() as conn:
            sync.record(conn, self.owner, plan, outcome, now)
        for connection_id in {**outcome.lost, **outcome.rejected}:
            self._drop_provider(connection_id)

    async def run(self, stop: asyncio.Event, interval: float = 0.25) -> None:
        """Rounds until `stop` is set: at once again while there was work, else every `interval` seconds."""
        last: str | None = None
        while not stop.is_set():
            try:
                busy = await self.run_once()
                last = None
            except Exception as exc:
                if repr(exc) != last:
                    log.exception("calendar round failed; retrying every %gs, logged again when it changes", interval)
                last, busy = repr(exc), 0
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

    # -- providers and mail -------------------------------------------------------------------------------

    def _provider(self, connection: Connection) -> Provider:
        provider = self._providers.get(connection.id)
        if provider is None:
            if self._provider_for is not None:
                provider = self._provider_for(connection)
            else:
                from calendars.connections import open_provider

                assert self._session is not None, "start() the worker first"
                provider = open_provider(connection, self._session, self.db, self.box, self.config)
            self._providers[connection.id] = provider
        return provider

    def _drop_provider(self, connection_id: str) -> None:
        provider = self._providers.pop(connection_id, None)
        if provider is not None:
            asyncio.get_running_loop().create_task(provider.close())

    def _mail_ready(self) -> bool:
        return self._send_mail is not None or self.config.mail_configured

    async def _mail(
        self,
        method: str,
        item: CalendarItem,
        record: ItemRecord | None,
        to: sync.Recipient,
        sequence: int,
        now: datetime,
    ) -> None:
        if self._send_mail is None:
            from calendars.mailing import MailSender

            self._send_mail = MailSender(self.db, self.config, self.public_url)
        await self._send_mail(method, item, record, to, sequence, now)
