"""The two-way mirror: read what changed in a person's calendar and decide what it means (issue 11).

A check of one connection (`check`) reads the provider's changes after the stored cursor (`ChangeFeed.changes`;
an expired cursor starts a full listing), turns them into deletion candidates -- events of ours reported removed,
or, after a full listing, events of ours the calendar no longer lists -- and confirms each with a direct read
(`Provider.get`) before anything happens (calendar-sync.md §5.1):

- the event is still there: a duplicate or late notification, or our own write; nothing happens;
- it is somewhere else (Graph keeps the immutable id across calendars; Google and CalDAV find it by id or UID in
  the person's other calendars): the mirror follows it there (`CalendarEventMoved`). Only the connected calendar
  is watched, so an event followed to another one is read again (`Provider.get`) at every check once `reread`
  has passed since it was last found (the worker passes the sweep or CalDAV poll interval): deleted there, it
  is a deletion like any other; moved back, it is followed back; gone with a calendar deleted or unshared
  (`ChangeFeed.reaches`), it is written again in the connected calendar and nobody is unregistered;
- it is gone: the person deleted it (`CalendarEventDeleted`). A learner registered for a session whose day has
  not ended is unregistered with the person as the actor and a reason naming the calendar and the time, when
  the account owner left `UnregisterOnCalendarDelete` on: the enrollment is cancelled when this was its only
  registration (triggers CourseUnenrollment and SessionUnregistration), otherwise the one registration (the
  waitlist promotes the next person either way), and the mirror removes the session's other days. Otherwise (an
  instructor, a day that has ended, the setting off) the deletion is recorded on the item, which is written
  again only when the session changes.

The first listing of a watch (a calendar just connected, or maintained again after a pause, an error or a
reauthorization) decides nothing: events of ours missing then went while coursewire was not watching, and are
written again. Before the first confirmation the calendar itself is checked (`ChangeFeed.check_calendar`): a
calendar deleted or unshared as a whole, or credentials that stopped working, raise CalendarGone or
AuthorizationLost, which the worker turns into the connection's status (Error, NeedsReauthorization) without
unregistering anyone.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from calendars import desired
from calendars.model import ChangeFeed, CursorExpired, Provider, Rejected, RemoteEvent, Written
from storage import calendar, calendar_watch, enrollments, events, seats, snapshots
from storage.calendar import PROVIDER_NAMES, ItemRecord
from storage.calendar_watch import WatchState
from storage.db import Database, iso
from storage.models import Actor

log = logging.getLogger("coursewire.calendars")

# Calls of `changes` in one check (each up to the provider's page cap); a longer backlog goes on next check.
MAX_CALLS = 20
# Deletion candidates confirmed in one check; the rest stay candidates (the cursor is not moved past them).
MAX_CONFIRMATIONS = 200


@dataclass
class Decision:
    """What was decided about one event of ours: Unregistered, Kept (deletion recorded), Followed (moved),
    WrittenAgain (followed into a calendar now out of reach)."""

    user_id: str
    session_id: str
    day_id: str
    outcome: str
    reason: str


@dataclass
class CheckResult:
    """What one check read and decided. cursor: where the next check starts (None: list everything again)."""

    cursor: str | None
    changes: int = 0
    full: bool = False
    candidates: int = 0
    restored: int = 0  # events missing at a first listing, written again (nobody unregistered)
    decisions: list[Decision] = field(default_factory=list)


def feed(provider: Provider) -> ChangeFeed | None:
    """The provider's change feed, if it has one (the null provider has none)."""
    if hasattr(provider, "changes") and hasattr(provider, "check_calendar"):
        return cast(ChangeFeed, provider)
    return None


async def check(
    db: Database, provider: Provider, watch: WatchState, now: datetime, *, reread: timedelta | None = None
) -> CheckResult:
    """Read the changes of `watch`'s calendar since its cursor and act on confirmed deletions and moves (module
    docstring); events followed to another calendar and last found there `reread` or longer ago are read again
    (None: not at all). Returns what happened; the caller records the cursor. Raises the provider's errors
    (Throttled, Unavailable, AuthorizationLost, CalendarGone, Rejected) before anything is decided on a failed
    read."""
    changes = feed(provider)
    if changes is None:
        return CheckResult(cursor=None)
    cursor = None if watch.full_check else watch.cursor
    full = cursor is None
    removed: set[str] = set()
    listed: set[str] = set()
    listed_keys: set[str] = set()
    result = CheckResult(cursor=cursor)
    for _ in range(MAX_CALLS):
        try:
            page = await changes.changes(cursor)
        except CursorExpired:
            if cursor is None:
                raise
            log.info("connection %s: change cursor expired; listing the calendar again", watch.connection_id)
            cursor, full = None, True
            removed.clear()
            continue
        for change in page.changes:
            if change.removed:
                removed.add(change.provider_id)
            else:
                listed.add(change.provider_id)
                if change.key:
                    listed_keys.add(change.key)
        result.changes += len(page.changes)
        cursor = page.cursor
        if not page.more:
            break
    else:
        full = False  # cut short: a partial listing says nothing about what it did not reach
    result.full = full

    candidates = _candidates(db, watch, now, removed, listed if full else None, listed_keys)
    result.candidates = len(candidates)
    if candidates and watch.cursor is None and watch.last_check_at is None:
        # The first listing since the calendar was connected, resumed (sync on again, the provider enabled again,
        # reauthorized) or repaired: what is missing went while coursewire was not watching -- deleted while
        # paused, a calendar deleted and made again -- which says nothing about the person leaving the session.
        # It is written again, as resync does, and nobody is unregistered.
        with db.write() as conn:
            calendar_watch.rewrite_items(conn, candidates, now)
        log.info(
            "connection %s: %d event(s) missing at its first listing are written again", watch.connection_id,
            len(candidates),
        )  # fmt: skip
        result.restored = len(candidates)
        result.cursor = cursor
        return result
    confirm = candidates[:MAX_CONFIRMATIONS]
    if reread is not None and len(confirm) < MAX_CONFIRMATIONS:
        confirm += _followed(db, watch, now, now - reread, MAX_CONFIRMATIONS - len(confirm), confirm)
    if confirm:
        await changes.check_calendar()
    for record in confirm:
        assert record.provider_id is not None
        written = Written(record.provider_id, record.etag)
        remote = await provider.get(written, uid=record.uid)
        if remote is None and record.followed_at is not None:
            try:
                reached = await changes.reaches(written)
            except Rejected as exc:
                # The other calendar answers what we cannot read (a redirect, a 405...): decide nothing about this
                # event now, and ask again after the next interval rather than on every check.
                log.info("connection %s: cannot tell whether a followed event's calendar is still there: %s",
                         watch.connection_id, exc)  # fmt: skip
                _still_followed(db, record, now)
                continue
            if not reached:
                out_of_reach = _out_of_reach(db, watch, record, now)
                if out_of_reach is not None:
                    result.restored += 1
                    result.decisions.append(out_of_reach)
                continue
        decision = _decide(db, watch, record, remote, now)
        if decision is not None:
            result.decisions.append(decision)
    result.cursor = cursor if len(candidates) <= MAX_CONFIRMATIONS else watch.cursor
    return result


def _candidates(
    db: Database,
    watch: WatchState,
    now: datetime,
    removed: set[str],
    listed: set[str] | None,
    listed_keys: set[str],
) -> list[ItemRecord]:
    """Events of ours that may have been deleted: reported removed, or (after a full listing) upcoming and not
    listed. Items already recorded as deleted are not candidates again."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT * FROM calendar_items WHERE connection_id = ? AND channel = 'calendar' AND deleted_at IS NULL"
            " AND provider_id IS NOT NULL",
            (watch.connection_id,),
        ).fetchall()
    known = (listed or set()) | listed_keys
    out = []
    for row in rows:
        record = ItemRecord.of(row)
        key = f"{record.user_id}.{record.day_id}"
        if record.provider_id in removed:
            out.append(record)
        elif listed is not None and record.day_end > now and not ({record.provider_id, key} & known):
            out.append(record)  # one written while the listing ran is confirmed present by the read
    return out


def _followed(
    db: Database, watch: WatchState, now: datetime, found_before: datetime, limit: int, taken: list[ItemRecord]
) -> list[ItemRecord]:
    """Upcoming events of ours followed to another calendar and last found there before `found_before`, longest
    ago first, at most `limit`, those already in `taken` left out."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT * FROM calendar_items WHERE connection_id = ? AND channel = 'calendar' AND deleted_at IS NULL"
            " AND provider_id IS NOT NULL AND followed_at IS NOT NULL AND followed_at <= ? AND day_end > ?"
            " ORDER BY followed_at LIMIT ?",
            (watch.connection_id, iso(found_before), iso(now), limit + len(taken)),
        ).fetchall()
    seen = {(r.user_id, r.session_id, r.day_id) for r in taken}
    out = [ItemRecord.of(row) for row in rows]
    return [r for r in out if (r.user_id, r.session_id, r.day_id) not in seen][:limit]


def _still_followed(db: Database, record: ItemRecord, now: datetime) -> None:
    """Read the followed event again only after the next interval."""
    with db.write() as conn:
        conn.execute(
            "UPDATE calendar_items SET followed_at = ? WHERE user_id = ? AND session_id = ? AND day_id = ?"
            " AND channel = 'calendar' AND provider_id IS ?",
            (iso(now), record.user_id, record.session_id, record.day_id, record.provider_id),
        )


def _out_of_reach(db: Database, watch: WatchState, record: ItemRecord, now: datetime) -> Decision | None:
    """A followed event whose calendar was deleted or unshared: its absence says nothing about the person
    leaving the session, so the item is forgotten and the mirror writes the event afresh in the connected
    calendar (`CalendarEventMoved`, Decision `WrittenAgain`, Reason `CalendarOutOfReach`, which also queues the
    pair). None when the item changed meanwhile."""
    with db.write() as conn:
        gone = conn.execute(
            "DELETE FROM calendar_items WHERE user_id = ? AND session_id = ? AND day_id = ? AND channel = 'calendar'"
            " AND connection_id = ? AND provider_id IS ? AND deleted_at IS NULL",
            (record.user_id, record.session_id, record.day_id, watch.connection_id, record.provider_id),
        ).rowcount
        if not gone:
            return None
        calendar.remember_sequence(conn, record.uid, record.sequence)
        calendar.mark_dirty(conn, {(record.user_id, record.session_id)}, now)
        decision = Decision(record.user_id, record.session_id, record.day_id, "WrittenAgain", "CalendarOutOfReach")
        _log(conn, "CalendarEventMoved", watch, record, decision, now)
    return decision


def _decide(
    db: Database, watch: WatchState, record: ItemRecord, remote: RemoteEvent | None, now: datetime
) -> Decision | None:
    """Act on one confirmed read in one write transaction; None when nothing was to be done."""
    # Where it was last found: the same id, in the connected calendar or (followed) in another one.
    stays = (
        remote is not None
        and not remote.cancelled
        and remote.provider_id == record.provider_id
        and remote.elsewhere == (record.followed_at is not None)
    )
    if stays and record.followed_at is None:
        return None  # still there: a duplicate, a late notification, or our own write
    with db.write() as conn:
        row = conn.execute(
            "SELECT * FROM calendar_items WHERE user_id = ? AND session_id = ? AND day_id = ? AND channel = 'calendar'"
            " AND connection_id = ? AND provider_id IS ? AND deleted_at IS NULL",
            (record.user_id, record.session_id, record.day_id, watch.connection_id, record.provider_id),
        ).fetchone()
        if row is None:
            return None  # rewritten, removed or decided meanwhile
        if remote is not None and not remote.cancelled:
            followed_at = iso(now) if remote.elsewhere else None
            conn.execute(
                "UPDATE calendar_items SET provider_id = ?, etag = ?, followed_at = ? WHERE user_id = ?"
                " AND session_id = ? AND day_id = ? AND channel = 'calendar'",
                (remote.provider_id, remote.etag, followed_at, record.user_id, record.session_id, record.day_id),
            )
            if stays:
                return None  # still in the calendar it was followed to: read again after the next interval
            reason = "MovedToAnotherCalendar" if remote.elsewhere else "MovedBackToConnectedCalendar"
            decision = Decision(record.user_id, record.session_id, record.day_id, "Followed", reason)
            _log(conn, "CalendarEventMoved", watch, record, decision, now)
            return decision
        return _deleted(conn, watch, record, now)


def _deleted(conn: sqlite3.Connection, watch: WatchState, record: ItemRecord, now: datetime) -> Decision:
    settings = calendar.settings_in(conn)
    role = desired.role_of(conn, record.user_id, record.session_id)
    registration = conn.execute(
        "SELECT * FROM session_registrations WHERE session_id = ? AND user_id = ? AND status = 'Registered'",
        (record.session_id, record.user_id),
    ).fetchone()
    if role == "Instructor":
        reason = "Instructor"
    elif record.day_end <= now:
        reason = "DayEnded"
    elif role != "Learner" or registration is None:
        reason = "NotRegistered"
    elif not settings["UnregisterOnCalendarDelete"]:
        reason = "UnregisterOnCalendarDeleteOff"
    else:
        reason = ""
    if reason:
        conn.execute(
            "UPDATE calendar_items SET deleted_at = ? WHERE user_id = ? AND session_id = ? AND day_id = ?"
            " AND channel = 'calendar'",
            (iso(now), record.user_id, record.session_id, record.day_id),
        )
        decision = Decision(record.user_id, record.session_id, record.day_id, "Kept", reason)
        _log(conn, "CalendarEventDeleted", watch, record, decision, now)
        return decision
    person = Actor(kind="user", user_id=record.user_id)
    why = (
        f"The event was deleted from the person's {PROVIDER_NAMES.get(watch.provider, watch.provider)} calendar"
        f" (noticed {iso(now)})"
    )
    decision = Decision(record.user_id, record.session_id, record.day_id, "Unregistered", "DeletedFromCalendar")
    _log(conn, "CalendarEventDeleted", watch, record, decision, now)
    # The event is gone and so is the registration: forget the item, so a registration made again before the
    # next round is written afresh (a kept record, same digest, would write nothing and be taken for deleted).
    calendar.drop_item(conn, record)
    others = conn.execute(
        "SELECT count(*) FROM session_registrations WHERE enrollment_id = ? AND status <> 'Cancelled' AND id <> ?",
        (registration["enrollment_id"], registration["id"]),
    ).fetchone()[0]
    if others:
        seats.unregister(conn, person, now, registration, why)
        seats.refresh_enrollment(conn, now, registration["enrollment_id"])
    else:
        enrollment = conn.execute("SELECT * FROM enrollments WHERE id = ?", (registration["enrollment_id"],)).fetchone()
        enrollments.cancel_in(conn, enrollment, person, now, why)
    return decision


def _log(
    conn: sqlite3.Connection, kind: str, watch: WatchState, record: ItemRecord, decision: Decision, now: datetime
) -> None:
    record_decision(conn, kind, watch.provider, record, decision.outcome, decision.reason, now)


def record_decision(
    conn: sqlite3.Connection,
    kind: str,
    provider: str,
    record: ItemRecord,
    outcome: str,
    reason: str,
    now: datetime,
) -> None:
    """Record a two-way decision about one event of ours in the event log (`coursewire events`), in the caller's
    transaction: `kind` CalendarEventDeleted or CalendarEventMoved, data {Provider, Decision: `outcome`, Reason,
    SessionDayId, DayStart, Subject, user}; the actor is the person for an unregistration, else the system."""
    events.record(
        conn,
        kind,
        calendar.SYSTEM if outcome != "Unregistered" else Actor(kind="user", user_id=record.user_id),
        now,
        {
            "Provider": provider,
            "Decision": outcome,
            "Reason": reason,
            "SessionDayId": record.day_id,
            "DayStart": iso(record.day_start) if record.day_start else None,
            "Subject": record.subject,
            "user": snapshots.user(conn, record.user_id),
        },
        user_id=record.user_id,
        session_id=record.session_id,
    )
