"""Bring one (person, session) pair's calendar to what it should hold.

`plan` reads, in one snapshot, what the person should hold (calendars.desired) and what was written
(storage.calendar.items_of), and decides per session day: create, update, remove, or nothing. `Pair.run` does
the provider calls and e-mails outside any transaction, then records each outcome in one short write
transaction. The rules (docs/design.md, "Calendar mirror"):

- the channel is the person's calendar when its connection is writable (Connected, sync on, provider
  enabled), else e-mail when the fallback is on, SMTP is configured and the person has an address, else none;
- what is on another channel is taken away first (hand-over: e-mailed entries are cancelled, same UID and a
  higher SEQUENCE, before the calendar gets its events), except on a calendar that cannot be written now
  (paused, needs reauthorization): those events stay, not maintained;
- days that have ended are left as they are, except in a calendar being disconnected, which is emptied;
- equal digests mean no write, so a burst of edits is one write per event; an event the person deleted from
  their calendar and that stays deleted (calendars/inbound.py) is written again only when its digest changes.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from calendars import desired, inbound
from calendars.model import (
    ApplicationRefused,
    AuthorizationLost,
    CalendarItem,
    EventGone,
    Provider,
    ProviderError,
    Rejected,
    Written,
)
from storage import calendar, calendar_watch
from storage.calendar import Connection, DirtyPair, ItemRecord

log = logging.getLogger("coursewire.calendars")

MAIL = "mail"
CALENDAR = "calendar"
# The digest `coursewire calendar resync` stores on the items it repairs (storage.calendar_watch.force_rewrite):
# it differs from every item's, so the item is written again, and written as it is even on a two-way calendar
# (an event missing there is created again, not taken for a deletion by the person).
RESYNC = calendar_watch.RESYNC_DIGEST
# Waits before trying a pair again after an error without Retry-After: 30 s, doubling, at most an hour.
BACKOFF_FIRST = 30.0
BACKOFF_MAX = 3600.0
# How long a pair waits before trying again while the tenant's application is refused (ApplicationRefused).
TENANT_RETRY = timedelta(minutes=5)


@dataclass
class Recipient:
    user_id: str
    email: str | None
    name: str | None


@dataclass
class Plan:
    """What to do for one pair. `creates`/`updates` are (item, record or None); `removes` are records with
    the item they were written for when it is still known (for a CANCEL's content)."""

    pair: DirtyPair
    recipient: Recipient
    channel: str | None
    connection: Connection | None
    puts: list[tuple[CalendarItem, ItemRecord | None]] = field(default_factory=list)
    removes: list[tuple[ItemRecord, CalendarItem | None]] = field(default_factory=list)
    forget: list[ItemRecord] = field(default_factory=list)  # records dropped without a provider call or e-mail
    # The highest SEQUENCE ever used per UID (storage.calendar.last_sequence), kept when an item row goes: a
    # REQUEST after a CANCEL must be newer than the CANCEL, or calendar apps keep the cancellation (RFC 5546
    # §2.1.5, the highest SEQUENCE wins).
    sequences: dict[str, int] = field(default_factory=dict)

    def next_sequence(self, uid: str, last: ItemRecord | None) -> int:
        return max(self.sequences.get(uid, -1), last.sequence if last else -1) + 1


def plan(
    conn: sqlite3.Connection, pair: DirtyPair, now: datetime, *, mail_configured: bool
) -> tuple[Plan, dict[str, Connection]]:
    """Decide what the pair needs (see the module docstring). Returns the plan and the connections its
    removals go through, by id."""
    user = conn.execute("SELECT id, email, title, login_name FROM users WHERE id = ?", (pair.user_id,)).fetchone()
    recipient = Recipient(pair.user_id, user["email"] if user else None, (user["title"] if user else None))
    settings = calendar.settings_in(conn)
    active = calendar.active_in(conn, pair.user_id)
    items = desired.items_for(conn, pair.user_id, pair.session_id)
    by_day = {i.day_id: i for i in items}
    channel: str | None = None
    mail_possible = mail_configured and bool(recipient.email)
    if calendar.writable(active, settings):
        channel = CALENDAR
    elif settings["EmailFallbackEnabled"] and mail_possible:
        channel = MAIL
    wanted = {i.day_id: i for i in desired.upcoming(items, now)} if channel else {}
    result = Plan(pair, recipient, channel, active if channel == CALENDAR else None)
    connections: dict[str, Connection] = {}
    kept: dict[str, ItemRecord] = {}
    for record in calendar.items_of(conn, pair.user_id, pair.session_id):
        on_channel = record.channel == channel and (
            channel == MAIL or (active is not None and record.connection_id == active.id)
        )
        if on_channel and record.day_id in wanted:
            kept[record.day_id] = record
            continue
        if record.channel == MAIL:
            if record.day_end <= now or not mail_possible:
                result.forget.append(record)  # no CANCEL for a day gone by, or with no way to send one
            elif channel is not None:
                result.removes.append((record, by_day.get(record.day_id)))
            # else: e-mail switched off; the entries sent stay, not maintained (as a paused calendar's events)
            continue
        if record.deleted_at is not None:
            result.forget.append(record)  # the person deleted it from their calendar: nothing left to remove
            continue
        via = _connection(conn, record.connection_id, connections)
        if via is None:
            result.removes.append((record, None))  # the connection is gone: nothing left to delete through
        elif via.state == "removing" or (calendar.writable(via, settings) and record.day_end > now):
            result.removes.append((record, by_day.get(record.day_id)))
        # else: a paused or broken calendar keeps what it holds until it can be written again
    for day_id, item in wanted.items():
        last = kept.get(day_id)
        if last is None or last.digest != item.digest():
            result.puts.append((item, last))
    for uid in {i.uid for i, _ in result.puts} | {r.uid for r, _ in result.removes}:
        remembered = calendar.last_sequence(conn, uid)
        if remembered is not None:
            result.sequences[uid] = remembered
    return result, connections


def _connection(conn: sqlite3.Connection, connection_id: str | None, seen: dict[str, Connection]) -> Connection | None:
    if connection_id is None:
        return None
    if connection_id not in seen:
        row = conn.execute("SELECT * FROM calendar_connections WHERE id = ?", (connection_id,)).fetchone()
        if row is None:
            return None
        seen[connection_id] = Connection.of(row)
    return seen[connection_id]


@dataclass
class Outcome:
    """What happened to a pair's writes, recorded in one transaction by `record`."""

    saved: list[ItemRecord] = field(default_factory=list)
    dropped: list[ItemRecord] = field(default_factory=list)
    retry_after: float | None = None
    error: str | None = None
    lost: dict[str, str] = field(default_factory=dict)  # connection id -> why it needs reauthorization
    rejected: dict[str, str] = field(default_factory=dict)  # connection id -> the provider's refusal
    synced: set[str] = field(default_factory=set)  # connections written successfully
    gone: set[str] = field(default_factory=set)  # connections where an update found our event deleted
    moved: list[ItemRecord] = field(default_factory=list)  # written where the person had moved them, now followed

    def failed(self, exc: ProviderError, connection_id: str | None) -> None:
        """Sort a failure: a calendar whose credentials died or that refused the item changes status (the
        person gets e-mail meanwhile); a refused e-mail address is logged and not retried; anything else
        (Throttled, Unavailable) retries the pair after the provider's Retry-After or the backoff."""
        if isinstance(exc, EventGone) and connection_id:
            self.gone.add(connection_id)  # the connection's check decides first; the pair waits for it
        if isinstance(exc, ApplicationRefused):
            # The tenant's application, not the person: nothing changes for them; the pair waits for the fix.
            self.retry_after = max(self.retry_after or 0.0, TENANT_RETRY.total_seconds())
            self.error = str(exc)
        elif isinstance(exc, AuthorizationLost) and connection_id:
            self.lost[connection_id] = str(exc)
        elif isinstance(exc, Rejected) and connection_id:
            self.rejected[connection_id] = str(exc)
        elif isinstance(exc, Rejected):
            log.warning("an e-mail was refused for good and is not sent again: %s", exc)
        else:
            if exc.retry_after is not None:
                self.retry_after = max(self.retry_after or 0.0, exc.retry_after)
            self.error = str(exc)


Send = Callable[[str, CalendarItem, ItemRecord | None, Recipient, int, datetime], Awaitable[None]]


async def execute(
    p: Plan,
    connections: dict[str, Connection],
    provider_for: Callable[[Connection], Provider],
    send_mail: Send,
    now: datetime,
) -> Outcome:
    """Do the plan's removals, then its writes; never raises for a provider or mail failure (it is in the
    Outcome). `send_mail(method, item, record, recipient, sequence, now)` sends one iMIP message."""
    out = Outcome()
    out.dropped.extend(p.forget)
    for record, item in p.removes:
        if record.channel == MAIL:
            sequence = p.next_sequence(record.uid, record)
            try:
                await send_mail("CANCEL", item or _placeholder(record), record, p.recipient, sequence, now)
            except ProviderError as exc:
                out.failed(exc, None)
                continue
            out.dropped.append(_bumped(record, sequence))
            continue
        via = connections.get(record.connection_id or "") if record.connection_id else None
        if via is None or record.provider_id is None:
            out.dropped.append(record)
            continue
        try:
            await provider_for(via).delete(Written(record.provider_id, record.etag), item)
        except (AuthorizationLost, Rejected) as exc:
            if via.state == "removing":
                # A calendar being disconnected that can no longer be reached (consent revoked, refused): its
                # events stay there; forget them rather than retry for ever and hold the person's e-mails.
                log.warning("could not remove an event from a disconnected calendar (%s); it stays there", exc)
                out.dropped.append(record)
                continue
            out.failed(exc, via.id)
            continue
        except ProviderError as exc:
            out.failed(exc, via.id)
            continue
        out.dropped.append(record)
        out.synced.add(via.id)
    if out.lost or out.rejected or out.error:
        return out  # order: nothing new is written while an old copy could not be taken away (no two at once)
    if p.channel == CALENDAR and p.connection is not None and p.puts:
        provider = provider_for(p.connection)
        # On a two-way calendar an update must not bring back an event the person deleted before the mirror
        # noticed (calendars/inbound.py decides about it first): those go with recreate=False. Creations, and
        # events whose deletion was decided and kept, are written as they are.
        two_way = hasattr(provider, "changes")
        guarded = [two_way and r is not None and r.deleted_at is None and r.digest != RESYNC for _, r in p.puts]
        results: list[Written | ProviderError | None] = [None] * len(p.puts)
        for recreate in (True, False):
            indexes = [n for n, g in enumerate(guarded) if g != recreate]
            if not indexes:
                continue
            batch = [(p.puts[n][0], _written(p.puts[n][1])) for n in indexes]
            for n, answer in zip(indexes, await provider.put_many(batch, recreate=recreate), strict=True):
                results[n] = answer
        for (item, last), result in zip(p.puts, results, strict=True):
            assert result is not None
            if isinstance(result, ProviderError):
                out.failed(result, p.connection.id)
                continue
            saved = _record(item, CALENDAR, p.connection.id, result, last, p.next_sequence(item.uid, last), now)
            out.saved.append(saved)
            out.synced.add(p.connection.id)
            if result.elsewhere and (last is None or last.followed_at is None):
                out.moved.append(saved)
    elif p.channel == MAIL:
        for item, last in p.puts:
            sequence = p.next_sequence(item.uid, last)
            try:
                await send_mail("REQUEST", item, last, p.recipient, sequence, now)
            except ProviderError as exc:
                out.failed(exc, None)
                continue
            out.saved.append(_record(item, MAIL, None, None, last, sequence))
    return out


def _written(record: ItemRecord | None) -> Written | None:
    return Written(record.provider_id, record.etag) if record and record.provider_id else None


def _record(
    item: CalendarItem,
    channel: str,
    connection_id: str | None,
    written: Written | None,
    previous: ItemRecord | None,
    sequence: int | None = None,
    now: datetime | None = None,
) -> ItemRecord:
    # A write that found the event in another calendar (the person moved it; the check had not read it yet)
    # follows it from now on, so it is read there every sweep (calendars/inbound.py). An event already followed
    # stays followed when written again, also when `put` found it moved on or back (its next reading tells).
    followed_at = None
    if written is not None and previous is not None and previous.provider_id is not None and not previous.deleted_at:
        followed_at = previous.followed_at
    if written is not None and written.elsewhere and followed_at is None:
        followed_at = now
    return ItemRecord(
        user_id=item.user_id,
        session_id=item.session_id,
        day_id=item.day_id,
        channel=channel,
        connection_id=connection_id,
        provider_id=written.provider_id if written else None,
        etag=written.etag if written else None,
        uid=item.uid,
        sequence=sequence if sequence is not None else (0 if previous is None else previous.sequence + 1),
        digest=item.digest(),
        day_end=item.end,
        day_start=item.start,
        time_zone=item.time_zone,
        subject=item.subject,
        followed_at=followed_at,
    )


def _bumped(record: ItemRecord, sequence: int) -> ItemRecord:
    return ItemRecord(**{**record.__dict__, "sequence": sequence})


def _placeholder(record: ItemRecord) -> CalendarItem:
    """What a CANCEL says about a day no longer on offer to the person: the day as it was last sent (its
    subject, times and zone); the UID and SEQUENCE are what calendar apps match (RFC 5546 §3.2.5)."""
    return CalendarItem(
        user_id=record.user_id,
        session_id=record.session_id,
        day_id=record.day_id,
        subject=record.subject or "Cancelled session",
        start=record.day_start or record.day_end - timedelta(hours=1),
        end=record.day_end,
        time_zone=record.time_zone or "UTC",
        body_text="This session was removed from your calendar.",
        body_html="<p>This session was removed from your calendar.</p>",
    )


def record(conn: sqlite3.Connection, owner: str, p: Plan, out: Outcome, now: datetime) -> None:
    """Store the outcome in the caller's write transaction: items saved and dropped, connection states, and
    the pair released (done, or due again after the wait a provider asked for or the backoff)."""
    # Drops first: a record of an old connection and the new one's may share (person, session, day, channel),
    # and the new one must stay (disconnect and reconnect between two rounds).
    for item in out.dropped:
        calendar.drop_item(conn, item)
    for item in out.saved:
        calendar.save_item(conn, item, now)
    for item in out.moved:
        provider = p.connection.provider if p.connection is not None else ""
        inbound.record_decision(
            conn, "CalendarEventMoved", provider, item, "Followed", "MovedToAnotherCalendar", now
        )  # fmt: skip
    for connection_id in out.synced - set(out.lost) - set(out.rejected):
        calendar.synced(conn, connection_id, now)
    for connection_id in out.gone:
        calendar_watch.notified_in(conn, connection_id, now)
    for connection_id, why in out.lost.items():
        calendar.set_status_in(conn, connection_id, "NeedsReauthorization", why, now)
    for connection_id, why in out.rejected.items():
        calendar.set_status_in(conn, connection_id, "Error", why, now)
    if out.error is None and not out.lost and not out.rejected:
        calendar.done(conn, owner, p.pair)
        return
    if out.error is None:
        calendar.done(conn, owner, p.pair)  # the status change re-plans the person (e-mail from now on)
        return
    wait = out.retry_after
    if wait is None:
        wait = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(p.pair.attempts, 10))
    calendar.retry(conn, owner, p.pair, now + timedelta(seconds=wait), out.error)
