"""How the two-way calendar mirror hears about changes people make in their calendars (issue 11).

Each active calendar connection has one `calendar_watches` row: its push channel, if the provider has one (a
Graph subscription or a Google events.watch channel: id, resource id, the SHA-256 of the secret the provider
echoes in every notification, expiry), and its change cursor (Graph deltaLink, Google sync token, CalDAV
sync-token). A check of the connection reads the changes after the cursor; it is due when a notification
arrives (at once), and otherwise every sweep interval (Graph, Google: a backstop, since push notifications may be
dropped) or poll interval (CalDAV, which has no push). Checks are leased like the dirty queue, so several
workers share them and a killed worker's check is taken back when its lease runs out.

The receiving endpoints (calendars/receiving.py) only look a channel up and mark its check due, in one short
write transaction: the provider gets its answer within its deadline (Graph: 3 s) and the work happens after.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage import calendar
from storage.db import Database, iso, parse_iso
from storage.errors import clip

# Connections whose changes are read: active and maintained (sync on, a working status, the provider enabled).
_WATCHED = (
    "c.state = 'active' AND c.sync_enabled = 1 AND c.status = 'Connected' AND EXISTS (SELECT 1 FROM"
    " calendar_settings s WHERE s.id = 1 AND CASE c.provider WHEN 'Microsoft365' THEN s.microsoft365_enabled"
    " WHEN 'Google' THEN s.google_enabled ELSE s.caldav_enabled END = 1)"
)


def secret_hash(secret: str) -> str:
    """The stored form of a channel secret (Graph clientState, Google channel token): SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored: str | None, received: str | None) -> bool:
    """Whether `received` is the secret whose hash is `stored` (constant-time comparison)."""
    if not stored or received is None:
        return False
    return hmac.compare_digest(stored, secret_hash(received))


@dataclass(frozen=True)
class WatchState:
    """One connection's watch row, joined with what the worker needs of its connection."""

    connection_id: str
    user_id: str
    provider: str
    channel_id: str | None
    resource_id: str | None
    secret_hash: str | None
    expires_at: datetime | None
    cursor: str | None
    full_check: bool
    check_due_at: datetime
    last_check_at: datetime | None
    last_check_error: str | None
    last_notification_at: datetime | None
    watch_error: str | None

    @classmethod
    def of(cls, row: sqlite3.Row) -> WatchState:
        due = parse_iso(row["check_due_at"])
        assert due is not None
        return cls(
            connection_id=row["connection_id"],
            user_id=row["user_id"],
            provider=row["provider"],
            channel_id=row["channel_id"],
            resource_id=row["resource_id"],
            secret_hash=row["secret_hash"],
            expires_at=parse_iso(row["expires_at"]),
            cursor=row["cursor"],
            full_check=bool(row["full_check"]),
            check_due_at=due,
            last_check_at=parse_iso(row["last_check_at"]),
            last_check_error=row["last_check_error"],
            last_notification_at=parse_iso(row["last_notification_at"]),
            watch_error=row["watch_error"],
        )


_SELECT = (
    "SELECT w.*, c.user_id, c.provider FROM calendar_watches w JOIN calendar_connections c ON c.id = w.connection_id"
)


def ensure(db: Database, now: datetime, limit: int = 500) -> int:
    """Give every watched connection without a watch row one, its first check (a full listing) due now.
    Returns how many were added."""
    with db.read() as conn:
        missing = conn.execute(
            "SELECT c.id FROM calendar_connections c LEFT JOIN calendar_watches w ON w.connection_id = c.id"  # noqa: S608
            f" WHERE {_WATCHED} AND w.connection_id IS NULL LIMIT ?",  # (a constant)
            (limit,),
        ).fetchall()
    if not missing:
        return 0
    with db.write() as conn:
        for (connection_id,) in missing:
            conn.execute(
                "INSERT OR IGNORE INTO calendar_watches (connection_id, check_due_at, watch_due_at) VALUES (?, ?, ?)",
                (connection_id, iso(now), iso(now)),
            )
    return len(missing)


def of_connection(db: Database, connection_id: str) -> WatchState | None:
    with db.read() as conn:
        row = conn.execute(_SELECT + " WHERE w.connection_id = ?", (connection_id,)).fetchone()
    return None if row is None else WatchState.of(row)


def by_channel(db: Database, channel_id: str) -> WatchState | None:
    """The watch whose push channel is `channel_id` (Graph subscription id, Google channel id), if any."""
    with db.read() as conn:
        row = conn.execute(_SELECT + " WHERE w.channel_id = ?", (channel_id,)).fetchone()
    return None if row is None else WatchState.of(row)


def notified(db: Database, connection_id: str, now: datetime, *, full: bool = False, rewatch: bool = False) -> None:
    """A notification for the connection arrived: its check is due now (and lists everything when `full`: Graph
    `missed`, `subscriptionRemoved`); `rewatch`: the channel must be renewed or recreated now (Graph
    `reauthorizationRequired`, `subscriptionRemoved`). Duplicates only make a due check due again."""
    with db.write() as conn:
        notified_in(conn, connection_id, now, full=full, rewatch=rewatch)


def notified_in(
    conn: sqlite3.Connection, connection_id: str, now: datetime, *, full: bool = False, rewatch: bool = False
) -> None:
    """`notified` in the caller's write transaction (also used when a write found an event of ours gone)."""
    conn.execute(
        "UPDATE calendar_watches SET check_due_at = min(check_due_at, ?), last_notification_at = ?,"
        " notifications = notifications + 1, full_check = max(full_check, ?),"
        " watch_due_at = CASE WHEN ? THEN ? ELSE watch_due_at END WHERE connection_id = ?",
        (iso(now), iso(now), int(full), int(rewatch), iso(now), connection_id),
    )


def watches_due(db: Database, now: datetime, limit: int = 50) -> list[WatchState]:
    """Watches of watched connections whose push channel is to be created, renewed or retried now."""
    with db.read() as conn:
        rows = conn.execute(
            _SELECT + f" WHERE w.watch_due_at IS NOT NULL AND w.watch_due_at <= ? AND {_WATCHED} LIMIT ?",
            (iso(now), limit),
        ).fetchall()
    return [WatchState.of(r) for r in rows]


def set_channel(
    db: Database,
    connection_id: str,
    *,
    channel_id: str | None,
    resource_id: str | None,
    hashed_secret: str | None,
    expires_at: datetime | None,
    renew_at: datetime | None,
) -> None:
    """Record the connection's push channel (None: it has none), the hash of its secret (`secret_hash`) and
    when to renew it (None: never)."""
    with db.write() as conn:
        conn.execute(
            "UPDATE calendar_watches SET channel_id = ?, resource_id = ?, secret_hash = ?, expires_at = ?,"
            " watch_due_at = ?, watch_error = NULL WHERE connection_id = ?",
            (
                channel_id,
                resource_id,
                hashed_secret,
                iso(expires_at) if expires_at else None,
                iso(renew_at) if renew_at else None,
                connection_id,
            ),
        )


def watch_failed(db: Database, connection_id: str, error: str, retry_at: datetime) -> None:
    """Creating or renewing the channel failed: keep the error (shown in sync health), try again at `retry_at`.
    The periodic check goes on meanwhile."""
    with db.write() as conn:
        conn.execute(
            "UPDATE calendar_watches SET watch_error = ?, watch_due_at = ? WHERE connection_id = ?",
            (clip(error), iso(retry_at), connection_id),
        )


def has_due_checks(db: Database, now: datetime) -> bool:
    """Whether a check is due (read-only: an idle round takes no write lock)."""
    with db.read() as conn:
        row = conn.execute(
            "SELECT 1 FROM calendar_watches WHERE check_due_at <= ? AND (owner IS NULL OR lease_until <= ?) LIMIT 1",
            (iso(now), iso(now)),
        ).fetchone()
    return row is not None


def claim_checks(db: Database, owner: str, limit: int, lease: timedelta, now: datetime) -> list[WatchState]:
    """Lease up to `limit` connections whose check is due (not leased, or whose lease ran out), oldest first."""
    with db.write() as conn:
        rows = conn.execute(
            _SELECT + f" WHERE w.check_due_at <= ? AND (w.owner IS NULL OR w.lease_until <= ?) AND {_WATCHED}"
            " ORDER BY w.check_due_at LIMIT ?",
            (iso(now), iso(now), limit),
        ).fetchall()
        for row in rows:
            conn.execute(
                "UPDATE calendar_watches SET owner = ?, lease_until = ? WHERE connection_id = ?",
                (owner, iso(now + lease), row["connection_id"]),
            )
    return [WatchState.of(r) for r in rows]


def checked(
    conn: sqlite3.Connection,
    owner: str,
    connection_id: str,
    *,
    cursor: str | None,
    next_due: datetime,
    now: datetime,
    started: datetime,
    error: str | None = None,
) -> None:
    """Record a finished check (in the caller's transaction): the new cursor, the next check at `next_due` --
    unless a notification arrived after the check `started`, which keeps it due -- and the error, if any.
    A full listing asked for by a notification during the check stays asked for."""
    conn.execute(
        "UPDATE calendar_watches SET cursor = ?, last_check_at = ?, last_check_error = ?, owner = NULL,"
        " lease_until = NULL,"
        " full_check = CASE WHEN last_notification_at > ? THEN full_check ELSE 0 END,"
        " check_due_at = CASE WHEN last_notification_at > ? THEN check_due_at ELSE ? END"
        " WHERE connection_id = ? AND owner = ?",
        (cursor, iso(now), clip(error), iso(started), iso(started), iso(next_due), connection_id, owner),
    )


def release(db: Database, owner: str, connection_id: str, due: datetime, error: str | None) -> None:
    """Give a check back to be tried at `due` (the provider was throttled or unreachable), keeping the cursor."""
    with db.write() as conn:
        conn.execute(
            "UPDATE calendar_watches SET owner = NULL, lease_until = NULL, last_check_error = ?,"
            " check_due_at = max(check_due_at, ?) WHERE connection_id = ? AND owner = ?",
            (clip(error), iso(due), connection_id, owner),
        )


def forget(conn: sqlite3.Connection, connection_id: str) -> WatchState | None:
    """Drop the connection's watch (disconnected, or no longer watched); return it, so its channel can be
    stopped."""
    row = conn.execute(_SELECT + " WHERE w.connection_id = ?", (connection_id,)).fetchone()
    conn.execute("DELETE FROM calendar_watches WHERE connection_id = ?", (connection_id,))
    return None if row is None else WatchState.of(row)


def unwatched(db: Database, limit: int = 50) -> list[WatchState]:
    """Watch rows of connections no longer watched (disconnected, paused, needing reauthorization, in error):
    their channels are to be stopped and the rows dropped; a watched connection gets a new row (full check)."""
    with db.read() as conn:
        rows = conn.execute(
            _SELECT + f" WHERE NOT ({_WATCHED}) LIMIT ?",
            (limit,),
        ).fetchall()
        orphans = conn.execute(
            "SELECT w.connection_id FROM calendar_watches w LEFT JOIN calendar_connections c"
            " ON c.id = w.connection_id WHERE c.id IS NULL LIMIT ?",
            (limit,),
        ).fetchall()
    if orphans:
        with db.write() as conn:
            for (connection_id,) in orphans:
                conn.execute("DELETE FROM calendar_watches WHERE connection_id = ?", (connection_id,))
    return [WatchState.of(r) for r in rows]


RESYNC_DIGEST = "resync"


def force_rewrite(
    conn: sqlite3.Connection, now: datetime, *, user_id: str | None = None, session_id: str | None = None
) -> tuple[int, set[tuple[str, str]]]:
    """What `coursewire calendar resync` does, in the caller's write transaction: every calendar item of
    `user_id` and/or `session_id` (all when both are None) gets the digest RESYNC_DIGEST, which no item has,
    and every (person, session) pair in scope -- registrations, instructors, items -- is queued. The worker then
    writes each event again as it is (one missing from the calendar is created again, not taken for a deletion
    by the person: calendars/sync.py) and creates what was never written. Returns (items marked, pairs queued).
    """
    where, args = "channel = 'calendar'", list[str]()
    if user_id is not None:
        where, args = where + " AND user_id = ?", [*args, user_id]
    if session_id is not None:
        where, args = where + " AND session_id = ?", [*args, session_id]
    marked = conn.execute(f"UPDATE calendar_items SET digest = ? WHERE {where}", (RESYNC_DIGEST, *args)).rowcount  # noqa: S608
    pairs = calendar.pairs_in_scope(conn, user_id, session_id)
    calendar.mark_dirty(conn, pairs, now)
    return int(marked), pairs


def rewrite_items(conn: sqlite3.Connection, items: Iterable[calendar.ItemRecord], now: datetime) -> int:
    """`force_rewrite` for the given items only (calendars/inbound.py: events missing at a calendar's first
    reading): each is written again as it is and its pair queued. Returns how many were marked."""
    marked, pairs = 0, set()
    for item in items:
        marked += conn.execute(
            "UPDATE calendar_items SET digest = ? WHERE user_id = ? AND session_id = ? AND day_id = ?"
            " AND channel = ?",
            (RESYNC_DIGEST, item.user_id, item.session_id, item.day_id, item.channel),
        ).rowcount
        pairs.add((item.user_id, item.session_id))
    calendar.mark_dirty(conn, pairs, now)
    return marked


def health(db: Database) -> dict[str, object]:
    """Sync health for administrators: connections by status and provider, and the watches' oldest last check,
    soonest channel expiry and errors. Shape: {"ByStatus": {status: count}, "ByProvider": {provider: count},
    "Watched": int, "ChannelErrors": int, "CheckErrors": int, "OldestCheckAt": iso|None,
    "SoonestChannelExpiry": iso|None}."""
    with db.read() as conn:
        by_status = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT status, count(*) FROM calendar_connections WHERE state = 'active' GROUP BY status"
            )
        }
        by_provider = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT provider, count(*) FROM calendar_connections WHERE state = 'active' GROUP BY provider"
            )
        }
        row = conn.execute(
            "SELECT count(*), sum(watch_error IS NOT NULL), sum(last_check_error IS NOT NULL), min(last_check_at),"
            " min(expires_at) FROM calendar_watches"
        ).fetchone()
    return {
        "ByStatus": by_status,
        "ByProvider": by_provider,
        "Watched": int(row[0] or 0),
        "ChannelErrors": int(row[1] or 0),
        "CheckErrors": int(row[2] or 0),
        "OldestCheckAt": row[3],
        "SoonestChannelExpiry": row[4],
    }
