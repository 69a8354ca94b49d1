"""The calendar mirror's worker: the event log to the dirty queue, the dirty queue to provider writes.

`run_once(now)` does one round: (1) consume events after the `calendars` cursor and mark the (person,
session) pairs each may change, in the transaction that moves the cursor (storage.consumer); (2) queue the
pairs of calendars being disconnected, and forget those that are empty; (3) lease due pairs
(storage.calendar.claim) and bring each to its desired state (calendars.sync), up to `concurrency` at once;
(4) the two-way part (storage.calendar_watch, calendars.inbound): give each maintained connection a watch row,
create or renew push channels (Graph subscriptions, Google watch channels) that are due, stop those of
connections no longer maintained, and run the checks that are due (after a notification, or every sweep or
CalDAV poll interval).
Leases let several workers share one database; a killed worker's pairs are taken back when their lease runs
out, or at once by a worker of the same host that sees the process is gone. A crash between a provider
write and its record repeats the write, which providers make idempotent (calendars/model.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import aiohttp

from calendars import inbound, sync
from calendars.config import CalendarConfig
from calendars.model import (
    ApplicationRefused,
    AuthorizationLost,
    CalendarGone,
    CalendarItem,
    Provider,
    ProviderError,
    Rejected,
    Watch,
    Watchable,
)
from storage import calendar, calendar_watch, consumer, leases, outbound
from storage.calendar import Connection, DirtyPair, ItemRecord
from storage.db import Database
from storage.models import Event
from storage.secrets import SecretBox

log = logging.getLogger("coursewire.calendars")

CONSUMER = "calendars"
LEASE = timedelta(minutes=5)
# Push channels are asked for this long (Graph caps event subscriptions just under 7 days [MS4]) and renewed
# a day before they end; a failed attempt is tried again after WATCH_RETRY (or the provider's Retry-After), one
# the provider refused (Rejected) after WATCH_REFUSED_RETRY.
WATCH_FOR = timedelta(days=6)
RENEW_BEFORE = timedelta(days=1)
WATCH_RETRY = timedelta(minutes=15)
WATCH_REFUSED_RETRY = timedelta(hours=6)
CHECK_RETRY = timedelta(seconds=15)  # a check that failed without Retry-After (a dropped connection)
CHECK_DEADLINE = timedelta(minutes=2)  # one check at most (LEASE is 5 minutes)
CHECK_WAIT = 1.0  # seconds a round waits for the checks in flight before it goes on
NOTIFICATION_PATHS = {
    "Microsoft365": "/calendar/notifications/microsoft365",
    "Google": "/calendar/notifications/google",
}

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
    if kind in ("CalendarEventDeleted", "CalendarEventMoved") and event.user_id and event.session_id:
        return {(event.user_id, event.session_id)}
    if kind.startswith("Calendar") and kind != "CalendarSettingsChanged" and event.user_id:
        return calendar.pairs_of_user(conn, event.user_id)
    if kind == "CalendarSettingsChanged":
        out: set[tuple[str, str]] = set()
        for name in event.data.get("changes", {}):
            if not name.endswith("Enabled"):
                continue  # UnregisterOnCalendarDelete changes nothing anybody's calendar holds
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
        self._next_roster: datetime | None = None
        self._checks: dict[str, asyncio.Task[None]] = {}  # connection id -> its check in flight
        self._check_gate: asyncio.Semaphore | None = None

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
        checks = list(self._checks.values())
        for task in checks:  # their leases run out; the next worker checks those calendars again
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
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
        worked = 0
        if calendar.has_due(self.db, now):
            pairs = calendar.claim(self.db, self.owner, self.batch, LEASE, now)
            gate = asyncio.Semaphore(self.concurrency)

            async def one(pair: DirtyPair) -> None:
                async with gate:
                    await self._sync(pair, now)

            await asyncio.gather(*(one(p) for p in pairs))
            worked += len(pairs)
        await self._roster(now)
        return worked + await self._inbound(now)

    async def _roster(self, now: datetime) -> None:
        """Tenant-wide Microsoft 365 mode: every `roster_seconds`, connect the people the tenant has a mailbox
        for (calendars.tenant.roster_round; nothing when the tenant is not connected). Its batcher goes with this
        worker's HTTP session, so the per-mailbox limits hold across the roster and the writes."""
        if self._session is None or (self._next_roster is not None and now < self._next_roster):
            return
        from calendars import tenant

        self._next_roster = now + timedelta(seconds=self.config.roster_seconds)
        try:
            result = await tenant.roster_round(self.db, self.box, self.config, self._session, now)
        except Exception:
            log.exception("the Microsoft 365 tenant roster failed; trying again in %gs", self.config.roster_seconds)
            return
        if result.connected or result.dropped:
            log.info(
                "Microsoft 365 tenant: %d people connected, %d dropped (%d looked up, %d without a mailbox)",
                result.connected,
                result.dropped,
                result.looked_up,
                result.missed,
            )

    # -- the two-way part ---------------------------------------------------------------------------------

    async def _inbound(self, now: datetime) -> int:
        """Watch rows, push channels and due checks (module docstring, step 4); returns the checks run."""
        calendar_watch.ensure(self.db, now)
        for watch in calendar_watch.unwatched(self.db):
            await self._stop_watching(watch)
        for watch in calendar_watch.watches_due(self.db, now):
            await self._rewatch(watch, now)
        started = 0
        if calendar_watch.has_due_checks(self.db, now):
            for watch in calendar_watch.claim_checks(self.db, self.owner, self.batch, LEASE, now):
                if watch.connection_id not in self._checks:
                    self._start_check(watch, now)
                    started += 1
        # Checks run beside the rounds: one person's slow calendar server does not hold everyone's writes. A
        # round waits a little for them (a quick check is done within its round), then goes on.
        if self._checks:
            await asyncio.wait(list(self._checks.values()), timeout=CHECK_WAIT)
        return started + len(self._checks)

    def _start_check(self, watch: calendar_watch.WatchState, now: datetime) -> None:
        key = watch.connection_id
        task = asyncio.create_task(self._bounded_check(watch, now))
        self._checks[key] = task

        def finished(_: asyncio.Task[None]) -> None:
            self._checks.pop(key, None)

        task.add_done_callback(finished)

    async def _bounded_check(self, watch: calendar_watch.WatchState, now: datetime) -> None:
        """`_check` with at most `concurrency` at once and CHECK_DEADLINE each (well within the lease, so no
        other worker takes the same connection meanwhile)."""
        if self._check_gate is None:
            self._check_gate = asyncio.Semaphore(self.concurrency)
        async with self._check_gate:
            try:
                async with asyncio.timeout(CHECK_DEADLINE.total_seconds()):
                    await self._check(watch, now)
            except TimeoutError:
                error = f"reading the calendar's changes took longer than {CHECK_DEADLINE.total_seconds():g} s"
                later = self.db.clock() + self._interval(watch.provider)
                calendar_watch.release(self.db, self.owner, watch.connection_id, later, error)

    def _interval(self, provider: str) -> timedelta:
        seconds = self.config.caldav_poll_seconds if provider == "CalDAV" else self.config.sweep_seconds
        return timedelta(seconds=seconds)

    async def _check(self, watch: calendar_watch.WatchState, now: datetime) -> None:
        connection = calendar.connection_by_id(self.db, watch.connection_id)
        if connection is None:
            return
        try:
            result = await inbound.check(
                self.db, self._provider(connection), watch, now, reread=self._interval(watch.provider)
            )
        except CalendarGone as exc:
            why = (
                f"The calendar is gone or no longer shared ({exc}): make it again, or share it again, and turn sync"
                " on (PATCH SyncEnabled true), or connect another calendar"
            )
            self._lost(connection.id, "Error", why, watch, now)
            return
        except ApplicationRefused as exc:  # the tenant's application: nothing for the person to do
            calendar_watch.release(self.db, self.owner, watch.connection_id, now + sync.TENANT_RETRY, str(exc))
            return
        except AuthorizationLost as exc:
            self._lost(connection.id, "NeedsReauthorization", str(exc), watch, now)
            return
        except ProviderError as exc:
            later = timedelta(seconds=exc.retry_after) if exc.retry_after else CHECK_RETRY
            if isinstance(exc, Rejected):
                later = max(later, self._interval(watch.provider))
            calendar_watch.release(self.db, self.owner, watch.connection_id, now + later, str(exc))
            return
        except Exception as exc:
            log.exception("reading the changes of calendar connection %s failed", watch.connection_id)
            calendar_watch.release(self.db, self.owner, watch.connection_id, now + CHECK_RETRY, repr(exc))
            return
        for decision in result.decisions:
            log.info(
                "calendar connection %s: event of user %s, session %s, day %s: %s (%s)",
                watch.connection_id,
                decision.user_id,
                decision.session_id,
                decision.day_id,
                decision.outcome,
                decision.reason,
            )
        with self.db.write() as conn:
            calendar_watch.checked(
                conn,
                self.owner,
                watch.connection_id,
                cursor=result.cursor,
                next_due=self.db.clock() + self._interval(watch.provider),
                now=now,
                started=now,
            )

    def _lost(
        self, connection_id: str, status: str, error: str, watch: calendar_watch.WatchState, now: datetime
    ) -> None:
        """The calendar cannot be read: mark the connection (nobody is unregistered) and end the check."""
        with self.db.write() as conn:
            calendar.set_status_in(conn, connection_id, status, error, now)
            calendar_watch.checked(
                conn, self.owner, connection_id, cursor=watch.cursor, next_due=now, now=now, started=now, error=error
            )
        self._drop_provider(connection_id)

    async def _rewatch(self, watch: calendar_watch.WatchState, now: datetime) -> None:
        """Create, renew or recreate the connection's push channel; CalDAV has none (it is polled)."""
        connection = calendar.connection_by_id(self.db, watch.connection_id)
        if connection is None:
            return
        provider = self._provider(connection)
        path = NOTIFICATION_PATHS.get(connection.provider)
        if path is None or not hasattr(provider, "watch"):
            calendar_watch.set_channel(
                self.db, watch.connection_id, channel_id=None, resource_id=None, hashed_secret=None,
                expires_at=None, renew_at=None,
            )  # fmt: skip
            return
        if not self.public_url:
            calendar_watch.watch_failed(
                self.db,
                watch.connection_id,
                "no push notifications: the server's public address is unknown (set COURSEWIRE_PUBLIC_URL);"
                " changes are read every sweep",
                now + WATCH_RETRY,
            )
            return
        watchable: Watchable = provider  # type: ignore[assignment]
        secret = secrets.token_urlsafe(32)
        address = self.public_url + path
        try:
            if watch.channel_id and watch.expires_at:
                old = Watch(watch.channel_id, watch.expires_at, watch.resource_id)
                new = await watchable.renew(old, address, secret, now + WATCH_FOR)
            else:
                new = await watchable.watch(address, secret, now + WATCH_FOR)
        except ApplicationRefused as exc:
            calendar_watch.watch_failed(self.db, watch.connection_id, str(exc), now + sync.TENANT_RETRY)
            return
        except AuthorizationLost as exc:
            calendar.set_status(self.db, watch.connection_id, "NeedsReauthorization", str(exc))
            self._drop_provider(watch.connection_id)
            return
        except ProviderError as exc:
            # Refused (an address the provider cannot reach, such as http or a private one): not again soon.
            later = WATCH_REFUSED_RETRY if isinstance(exc, Rejected) else WATCH_RETRY
            later = timedelta(seconds=exc.retry_after) if exc.retry_after else later
            calendar_watch.watch_failed(self.db, watch.connection_id, str(exc), now + later)
            return
        # A subscription renewed in place keeps the secret it was created with (Graph PATCH changes only the
        # expiry); a new channel carries the new one.
        hashed = watch.secret_hash if new.id == watch.channel_id else calendar_watch.secret_hash(secret)
        renew_at = new.expires_at - min(RENEW_BEFORE, (new.expires_at - now) / 2)
        calendar_watch.set_channel(
            self.db,
            watch.connection_id,
            channel_id=new.id,
            resource_id=new.resource_id,
            hashed_secret=hashed,
            expires_at=new.expires_at,
            renew_at=renew_at,
        )

    async def _stop_watching(self, watch: calendar_watch.WatchState) -> None:
        """Stop the push channel of a connection no longer maintained and drop its watch row."""
        connection = calendar.connection_by_id(self.db, watch.connection_id)
        if watch.channel_id and watch.expires_at and connection is not None:
            provider = self._provider(connection)
            if hasattr(provider, "unwatch"):
                with contextlib.suppress(ProviderError):
                    await provider.unwatch(Watch(watch.channel_id, watch.expires_at, watch.resource_id))
        with self.db.write() as conn:
            calendar_watch.forget(conn, watch.connection_id)

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
