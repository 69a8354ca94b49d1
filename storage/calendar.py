"""The calendar mirror's state: the account owner's settings, each person's connected calendar, what was last
written to it (or e-mailed), and the queue of (person, session) pairs to bring up to date.

The mirror is desired state (docs/design.md, "Calendar mirror"): the worker computes what a person's calendar
should hold for a session and compares it with `calendar_items`, so a burst of edits to one session becomes one
write per event, whatever order the edits came in. Every change that can alter what someone's calendar should hold
appends an event to the log in its own transaction; the mirror's consumer turns events into `calendar_dirty`
rows (bumping `version`), and the worker drops a row only when its version did not move while it worked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage import access, events, leases, snapshots
from storage.db import Database, chunks, iso, marks, new_id, parse_iso
from storage.errors import Conflict, Invalid, NotFound, clip
from storage.models import Actor

PROVIDERS = ("Microsoft365", "Google", "CalDAV")
SETTINGS = {
    "Microsoft365Enabled": "microsoft365_enabled",
    "GoogleEnabled": "google_enabled",
    "CalDAVEnabled": "caldav_enabled",
    "EmailFallbackEnabled": "email_fallback_enabled",
    "UnregisterOnCalendarDelete": "unregister_on_delete",
}
# Columns from SETTINGS, in code.
_UPSERT_SETTINGS = (
    f"INSERT INTO calendar_settings (id, {', '.join(SETTINGS.values())}, modified_at)"  # noqa: S608
    f" VALUES (1, {', '.join(['?'] * len(SETTINGS))}, ?) ON CONFLICT(id) DO UPDATE SET"
    f" {', '.join(f'{c} = excluded.{c}' for c in SETTINGS.values())}, modified_at = excluded.modified_at"
)
PROVIDER_NAMES = {"Microsoft365": "Microsoft 365", "Google": "Google", "CalDAV": "CalDAV"}
SYSTEM = Actor(kind="system")


# --- settings ----------------------------------------------------------------------------------------------


def _settings_row(conn: sqlite3.Connection) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM calendar_settings WHERE id = 1").fetchone()  # type: ignore[no-any-return]


def settings_in(conn: sqlite3.Connection) -> dict[str, Any]:
    """The settings as the API shows them (defaults until an administrator changes one)."""
    row = _settings_row(conn)
    if row is None:
        return {
            "Microsoft365Enabled": False,
            "GoogleEnabled": False,
            "CalDAVEnabled": False,
            "EmailFallbackEnabled": True,
            "UnregisterOnCalendarDelete": True,
        }
    out: dict[str, Any] = {name: bool(row[column]) for name, column in SETTINGS.items()}
    out["ModifiedAt"] = row["modified_at"]
    return out


def get_settings(db: Database) -> dict[str, Any]:
    """`{"Microsoft365Enabled", "GoogleEnabled", "CalDAVEnabled", "EmailFallbackEnabled",
    "UnregisterOnCalendarDelete": bool, "ModifiedAt"?}`."""
    with db.read() as conn:
        return settings_in(conn)


def update_settings(db: Database, actor: Actor, changes: dict[str, bool]) -> dict[str, Any]:
    """Change some of the switches (administrators only). Records `CalendarSettingsChanged` with the changes;
    the mirror then pauses or resumes the connections of a provider switched off or on, and sends e-mails
    instead or stops them; UnregisterOnCalendarDelete decides what a learner deleting a session's event from
    their calendar does (calendars/inbound.py). Raises Forbidden, Invalid (unknown name)."""
    access.require_admin(actor, "change the calendar settings")
    for name in changes:
        if name not in SETTINGS:
            raise Invalid(f"'{name}' is not a calendar setting; the settings are {', '.join(SETTINGS)}", name)
    now = db.clock()
    with db.write() as conn:
        before = settings_in(conn)
        after = {**{k: before[k] for k in SETTINGS}, **{k: bool(v) for k, v in changes.items()}}
        conn.execute(_UPSERT_SETTINGS, (*(int(after[k]) for k in SETTINGS), iso(now)))
        diff = {k: {"before": before[k], "after": after[k]} for k in SETTINGS if before[k] != after[k]}
        if diff:
            events.record(conn, "CalendarSettingsChanged", actor, now, {"changes": diff})
        return settings_in(conn)


# --- connections -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """A connected calendar as the worker and the pages use it. `credentials` is sealed (storage.secrets)."""

    id: str
    user_id: str
    provider: str
    account: str | None
    calendar: str | None
    credentials: str
    state: str
    status: str
    sync_enabled: bool
    connected_at: str
    last_sync_at: str | None
    last_error: str | None

    @classmethod
    def of(cls, row: sqlite3.Row) -> Connection:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            provider=row["provider"],
            account=row["account"],
            calendar=row["calendar"],
            credentials=row["credentials"],
            state=row["state"],
            status=row["status"],
            sync_enabled=bool(row["sync_enabled"]),
            connected_at=row["connected_at"],
            last_sync_at=row["last_sync_at"],
            last_error=row["last_error"],
        )


def active_in(conn: sqlite3.Connection, user_id: str) -> Connection | None:
    row = conn.execute(
        "SELECT * FROM calendar_connections WHERE user_id = ? AND state = 'active'", (user_id,)
    ).fetchone()
    return Connection.of(row) if row else None


def active_connection(db: Database, user_id: str) -> Connection | None:
    """The person's connected calendar, None when there is none."""
    with db.read() as conn:
        return active_in(conn, user_id)


def connection_by_id(db: Database, connection_id: str) -> Connection | None:
    with db.read() as conn:
        row = conn.execute("SELECT * FROM calendar_connections WHERE id = ?", (connection_id,)).fetchone()
    return Connection.of(row) if row else None


def effective_status(connection: Connection | None, settings: dict[str, Any]) -> str:
    """NotConnected, Connected, Paused (sync off, or the provider disabled), NeedsReauthorization or Error."""
    if connection is None:
        return "NotConnected"
    if connection.status != "Connected":
        return connection.status
    if not connection.sync_enabled or not settings[f"{connection.provider}Enabled"]:
        return "Paused"
    return "Connected"


def writable(connection: Connection | None, settings: dict[str, Any]) -> bool:
    """Whether the mirror writes to this connection now (its effective status is Connected)."""
    return effective_status(connection, settings) == "Connected"


# The watch row's columns each connection shows (LEFT JOIN: none until the worker first watches it).
_WATCH_FIELDS = (
    ("LastCheckAt", "last_check_at"),
    ("LastNotificationAt", "last_notification_at"),
    ("SubscriptionExpiresAt", "expires_at"),
    ("LastCheckError", "last_check_error"),
)


def _watch_of(conn: sqlite3.Connection, connection: Connection | None) -> sqlite3.Row | None:
    if connection is None:
        return None
    return conn.execute(  # type: ignore[no-any-return]
        f"SELECT {', '.join(c for _, c in _WATCH_FIELDS)} FROM calendar_watches WHERE connection_id = ?",  # noqa: S608
        (connection.id,),
    ).fetchone()


def _shape(
    user_id: str, connection: Connection | None, settings: dict[str, Any], watch: sqlite3.Row | None = None
) -> dict[str, Any]:
    """The CalendarConnection of the API: UserId, Status, SyncEnabled always; Provider, ConnectedAt, Account,
    Calendar (the CalDAV calendar's URL or the Google calendar id), LastSyncAt, LastError, and from the
    connection's watch row (storage.calendar_watch) LastCheckAt, LastNotificationAt, SubscriptionExpiresAt (the
    push channel's expiry, ISO 8601 UTC) and LastCheckError, each only when it has a value (a response never
    carries null)."""
    out: dict[str, Any] = {"UserId": user_id, "Status": effective_status(connection, settings), "SyncEnabled": False}
    if connection is not None:
        out.update(
            Provider=connection.provider, SyncEnabled=connection.sync_enabled, ConnectedAt=connection.connected_at
        )
        for key, value in (
            ("Account", connection.account),
            ("Calendar", connection.calendar),
            ("LastSyncAt", connection.last_sync_at),
            ("LastError", connection.last_error),
        ):
            if value is not None:
                out[key] = value
    if watch is not None:
        out.update((name, watch[column]) for name, column in _WATCH_FIELDS if watch[column] is not None)
    return out


def _shape_in(conn: sqlite3.Connection, user_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    connection = active_in(conn, user_id)
    return _shape(user_id, connection, settings, _watch_of(conn, connection))


def _user(conn: sqlite3.Connection, actor: Actor, user_id: str, doing: str) -> sqlite3.Row:
    """The user, when the actor is that user or an administrator; NotFound otherwise, as for any id the
    actor may not see (a Read Only key reads, but `doing` a write is Forbidden)."""
    row = conn.execute("SELECT * FROM users WHERE id = ? AND is_deleted = 0", (user_id,)).fetchone()
    own = actor.kind == "user" and actor.user_id == user_id
    if row is None or not (own or actor.reads_all):
        raise NotFound(f"no user with Id '{user_id}'", "Id")
    if doing and not own:
        access.require_admin(actor, doing)
    return row  # type: ignore[no-any-return]


def get_connection(db: Database, actor: Actor, user_id: str) -> dict[str, Any]:
    """The person's calendar connection as the API shows it (see `_shape`); Status NotConnected without one.
    Raises NotFound for users the actor may not see."""
    with db.read() as conn:
        _user(conn, actor, user_id, "")
        return _shape_in(conn, user_id, settings_in(conn))


def connect(
    db: Database,
    actor: Actor,
    user_id: str,
    provider: str,
    *,
    account: str | None,
    calendar: str | None,
    credentials: str,
) -> dict[str, Any]:
    """Connect the person's calendar. `credentials` is sealed JSON. Records `CalendarConnected`.

    Raises NotFound (user), Forbidden, Invalid (unknown or disabled provider, target Provider), Conflict (a
    calendar is already connected: one per person; disconnect it first).
    """
    if provider not in PROVIDERS:
        raise Invalid(f"Provider must be one of {', '.join(PROVIDERS)}", "Provider")
    now = db.clock()
    with db.write() as conn:
        _user(conn, actor, user_id, "connect a calendar for another user")
        settings = settings_in(conn)
        if not settings[f"{provider}Enabled"]:
            raise Invalid(
                f"{PROVIDER_NAMES[provider]} calendars are not enabled; an administrator turns them on in"
                f" CalendarSettings ({provider}Enabled)",
                "Provider",
            )
        existing = active_in(conn, user_id)
        if existing is not None:
            raise Conflict(already_connected(existing), "Provider")
        connection_id = new_id()
        conn.execute(
            "INSERT INTO calendar_connections (id, user_id, provider, account, calendar, credentials, connected_at,"
            " modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                connection_id,
                user_id,
                provider,
                clip(account, 320),
                clip(calendar, 2048),
                credentials,
                iso(now),
                iso(now),
            ),
        )
        events.record(
            conn,
            "CalendarConnected",
            actor,
            now,
            {"user": snapshots.user(conn, user_id), "connection": {"Provider": provider, "Account": account}},
            user_id=user_id,
        )
        return _shape_in(conn, user_id, settings)


def already_connected(existing: Connection) -> str:
    """The words of the 409, on the API and the page alike."""
    where = f" ({existing.account})" if existing.account else ""
    return (
        f"a {PROVIDER_NAMES[existing.provider]} calendar{where} is already connected; disconnect it before"
        " connecting another (one calendar per person)"
    )


def disconnect(db: Database, actor: Actor, user_id: str, *, keep_events: bool) -> None:
    """Disconnect the person's calendar. Without `keep_events` the worker first removes the events coursewire
    wrote there (the connection is kept, state `removing`, until it has); with it they stay and are no longer
    maintained. Either way the person may connect another calendar at once. Records `CalendarDisconnected`.
    Raises NotFound (no user, or no calendar connected), Forbidden, Conflict (a calendar the tenant-wide mode
    connected: the person opts out with SyncEnabled false instead, so the roster does not connect it again)."""
    now = db.clock()
    with db.write() as conn:
        _user(conn, actor, user_id, "disconnect another user's calendar")
        existing = active_in(conn, user_id)
        if existing is None:
            raise NotFound(f"user '{user_id}' has no calendar connected", "Id")
        tenant = conn.execute("SELECT tenant_mailbox FROM calendar_connections WHERE id = ?", (existing.id,)).fetchone()
        if tenant[0] is not None:
            raise Conflict(
                "this calendar is connected through the organization's Microsoft 365 tenant: turn its sync off"
                " (PATCH SyncEnabled false) instead; an administrator disconnects the tenant as a whole"
            )
        if keep_events:
            conn.execute("DELETE FROM calendar_items WHERE connection_id = ?", (existing.id,))
            conn.execute("DELETE FROM calendar_connections WHERE id = ?", (existing.id,))
        else:
            conn.execute(
                "UPDATE calendar_connections SET state = 'removing', modified_at = ? WHERE id = ?",
                (iso(now), existing.id),
            )
        events.record(
            conn,
            "CalendarDisconnected",
            actor,
            now,
            {
                "user": snapshots.user(conn, user_id),
                "connection": {"Provider": existing.provider, "Account": existing.account, "KeepEvents": keep_events},
            },
            user_id=user_id,
        )


def set_sync_enabled(db: Database, actor: Actor, user_id: str, enabled: bool) -> dict[str, Any]:
    """Switch the mirror on or off for the person's calendar (off: events stay, not maintained; e-mails
    instead). Switching on also clears an Error, so the mirror tries again. Records `CalendarSyncChanged`.
    Raises NotFound, Forbidden."""
    now = db.clock()
    with db.write() as conn:
        _user(conn, actor, user_id, "change another user's calendar")
        existing = active_in(conn, user_id)
        if existing is None:
            raise NotFound(f"user '{user_id}' has no calendar connected", "Id")
        retry = enabled and existing.status == "Error"
        if existing.sync_enabled != enabled or retry:
            conn.execute(
                "UPDATE calendar_connections SET sync_enabled = ?, modified_at = ?,"
                " status = CASE WHEN ? THEN 'Connected' ELSE status END WHERE id = ?",
                (int(enabled), iso(now), int(retry), existing.id),
            )
            events.record(conn, "CalendarSyncChanged", actor, now, {"SyncEnabled": enabled}, user_id=user_id)
        return _shape_in(conn, user_id, settings_in(conn))


def update_credentials(db: Database, connection_id: str, credentials: str) -> None:
    """Store new sealed credentials (a rotated refresh token, a fresh access token)."""
    with db.write() as conn:
        conn.execute(
            "UPDATE calendar_connections SET credentials = ?, modified_at = ? WHERE id = ?",
            (credentials, iso(db.clock()), connection_id),
        )


def set_status(db: Database, connection_id: str, status: str, error: str | None) -> None:
    """Mark a connection Connected, NeedsReauthorization or Error with the last error (clipped).

    Moving to NeedsReauthorization records `CalendarConnectionNeedsReauthorization` (a webhook trigger), once
    per change; any change of status records `CalendarConnectionStatusChanged` so the mirror re-plans the
    person's sessions (e-mail while the calendar cannot be written)."""
    now = db.clock()
    with db.write() as conn:
        set_status_in(conn, connection_id, status, error, now)


def set_status_in(conn: sqlite3.Connection, connection_id: str, status: str, error: str | None, now: datetime) -> None:
    row = conn.execute("SELECT * FROM calendar_connections WHERE id = ?", (connection_id,)).fetchone()
    if row is None:
        return
    connection = Connection.of(row)
    conn.execute(
        "UPDATE calendar_connections SET status = ?, last_error = ?, modified_at = ? WHERE id = ?",
        (status, clip(error), iso(now), connection_id),
    )
    if status == connection.status or connection.state != "active":
        return
    payload = {
        "user": snapshots.user(conn, connection.user_id),
        "connection": {
            "Provider": connection.provider,
            "Account": connection.account,
            "Status": status,
            "LastError": clip(error),
        },
    }
    kind = (
        "CalendarConnectionNeedsReauthorization"
        if status == "NeedsReauthorization"
        else "CalendarConnectionStatusChanged"
    )
    events.record(conn, kind, SYSTEM, now, payload, user_id=connection.user_id)


def synced(conn: sqlite3.Connection, connection_id: str, now: datetime) -> None:
    """Note a successful write: LastSyncAt, and the error cleared."""
    conn.execute(
        "UPDATE calendar_connections SET last_sync_at = ?, last_error = NULL WHERE id = ?", (iso(now), connection_id)
    )


def removing(db: Database, limit: int = 10) -> list[Connection]:
    """Disconnected calendars whose events the worker still has to remove."""
    with db.read() as conn:
        rows = conn.execute("SELECT * FROM calendar_connections WHERE state = 'removing' LIMIT ?", (limit,)).fetchall()
    return [Connection.of(r) for r in rows]


def forget_connection(db: Database, connection_id: str) -> None:
    """Drop a removed connection and what was written through it."""
    with db.write() as conn:
        conn.execute("DELETE FROM calendar_items WHERE connection_id = ?", (connection_id,))
        conn.execute("DELETE FROM calendar_watches WHERE connection_id = ?", (connection_id,))
        conn.execute("DELETE FROM calendar_connections WHERE id = ? AND state = 'removing'", (connection_id,))


# --- written items -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemRecord:
    """What was last written for one person and session day on one channel (`mail` or `calendar`)."""

    user_id: str
    session_id: str
    day_id: str
    channel: str
    connection_id: str | None
    provider_id: str | None
    etag: str | None
    uid: str
    sequence: int
    digest: str
    day_end: datetime
    day_start: datetime | None = None
    time_zone: str | None = None
    subject: str | None = None
    deleted_at: datetime | None = None  # the person deleted it from their calendar and it stays deleted
    # Last found in another of the person's calendars (moved there, followed): read again every sweep.
    followed_at: datetime | None = None

    @classmethod
    def of(cls, row: sqlite3.Row) -> ItemRecord:
        end = parse_iso(row["day_end"])
        assert end is not None
        return cls(
            day_start=parse_iso(row["day_start"]),
            time_zone=row["time_zone"],
            subject=row["subject"],
            user_id=row["user_id"],
            session_id=row["session_id"],
            day_id=row["day_id"],
            channel=row["channel"],
            connection_id=row["connection_id"],
            provider_id=row["provider_id"],
            etag=row["etag"],
            uid=row["uid"],
            sequence=row["sequence"],
            digest=row["digest"],
            day_end=end,
            deleted_at=parse_iso(row["deleted_at"]),
            followed_at=parse_iso(row["followed_at"]),
        )


def items_of(conn: sqlite3.Connection, user_id: str, session_id: str) -> list[ItemRecord]:
    rows = conn.execute(
        "SELECT * FROM calendar_items WHERE user_id = ? AND session_id = ? ORDER BY day_end", (user_id, session_id)
    ).fetchall()
    return [ItemRecord.of(r) for r in rows]


def items_of_connection(db: Database, connection_id: str, limit: int = 100) -> list[ItemRecord]:
    with db.read() as conn:
        rows = conn.execute(
            "SELECT * FROM calendar_items WHERE connection_id = ? LIMIT ?", (connection_id, limit)
        ).fetchall()
    return [ItemRecord.of(r) for r in rows]


def save_item(conn: sqlite3.Connection, item: ItemRecord, now: datetime) -> None:
    """Record what was written (insert or replace; `deleted_at` starts again empty, `followed_at` is the item's)
    and remember its SEQUENCE for the UID."""
    conn.execute(
        "INSERT OR REPLACE INTO calendar_items (user_id, session_id, day_id, channel, connection_id, provider_id,"
        " etag, uid, sequence, digest, day_end, written_at, day_start, time_zone, subject, followed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item.user_id,
            item.session_id,
            item.day_id,
            item.channel,
            item.connection_id,
            item.provider_id,
            item.etag,
            item.uid,
            item.sequence,
            item.digest,
            iso(item.day_end),
            iso(now),
            iso(item.day_start),
            item.time_zone,
            clip(item.subject, 1000),
            iso(item.followed_at),
        ),
    )
    remember_sequence(conn, item.uid, item.sequence)


def drop_item(conn: sqlite3.Connection, item: ItemRecord) -> None:
    conn.execute(
        "DELETE FROM calendar_items WHERE user_id = ? AND session_id = ? AND day_id = ? AND channel = ?",
        (item.user_id, item.session_id, item.day_id, item.channel),
    )
    remember_sequence(conn, item.uid, item.sequence)


def remember_sequence(conn: sqlite3.Connection, uid: str, sequence: int) -> None:
    conn.execute(
        "INSERT INTO calendar_sequences (uid, sequence) VALUES (?, ?)"
        " ON CONFLICT(uid) DO UPDATE SET sequence = max(sequence, excluded.sequence)",
        (uid, sequence),
    )


def last_sequence(conn: sqlite3.Connection, uid: str) -> int | None:
    row = conn.execute("SELECT sequence FROM calendar_sequences WHERE uid = ?", (uid,)).fetchone()
    return None if row is None else int(row[0])


# --- the dirty queue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirtyPair:
    user_id: str
    session_id: str
    version: int
    attempts: int


def mark_dirty(conn: sqlite3.Connection, pairs: Iterable[tuple[str, str]], now: datetime) -> int:
    """Queue (user, session) pairs for the worker, due now. A pair already queued gets a new version (so a
    worker busy with it keeps it queued) and keeps its due time: one waiting out a provider's Retry-After
    is not tried earlier because the session changed again. Returns how many pairs were marked."""
    n = 0
    for user_id, session_id in set(pairs):
        conn.execute(
            "INSERT INTO calendar_dirty (user_id, session_id, due_at) VALUES (?, ?, ?)"
            " ON CONFLICT(user_id, session_id) DO UPDATE SET version = version + 1",
            (user_id, session_id, iso(now)),
        )
        n += 1
    return n


def claim(db: Database, owner: str, limit: int, lease: timedelta, now: datetime) -> list[DirtyPair]:
    """Lease up to `limit` due pairs (due_at <= now, not leased, or whose lease ran out), oldest first."""
    with db.write() as conn:
        rows = conn.execute(
            "SELECT user_id, session_id, version, attempts FROM calendar_dirty INDEXED BY calendar_dirty_due"
            " WHERE owner IS NULL AND due_at <= ? ORDER BY due_at LIMIT ?",
            (iso(now), limit),
        ).fetchall()
        if len(rows) < limit:
            rows += conn.execute(
                "SELECT user_id, session_id, version, attempts FROM calendar_dirty INDEXED BY calendar_dirty_leased"
                " WHERE owner IS NOT NULL AND lease_until <= ? ORDER BY lease_until LIMIT ?",
                (iso(now), limit - len(rows)),
            ).fetchall()
        for row in rows:
            conn.execute(
                "UPDATE calendar_dirty SET owner = ?, lease_until = ? WHERE user_id = ? AND session_id = ?",
                (owner, iso(now + lease), row["user_id"], row["session_id"]),
            )
    return [DirtyPair(r["user_id"], r["session_id"], r["version"], r["attempts"]) for r in rows]


def done(conn: sqlite3.Connection, owner: str, pair: DirtyPair) -> None:
    """The pair's calendar is right as of `pair.version`: drop it, unless it was marked again meanwhile (then
    release it, due at once)."""
    conn.execute(
        "DELETE FROM calendar_dirty WHERE user_id = ? AND session_id = ? AND owner = ? AND version = ?",
        (pair.user_id, pair.session_id, owner, pair.version),
    )
    conn.execute(
        "UPDATE calendar_dirty SET owner = NULL, lease_until = NULL WHERE user_id = ? AND session_id = ? AND owner = ?",
        (pair.user_id, pair.session_id, owner),
    )


def retry(conn: sqlite3.Connection, owner: str, pair: DirtyPair, due: datetime, error: str | None) -> None:
    """Release the pair to be tried again at `due` (a throttled or failed write), keeping the error."""
    conn.execute(
        "UPDATE calendar_dirty SET owner = NULL, lease_until = NULL, due_at = max(due_at, ?), attempts = attempts + 1,"
        " last_error = ? WHERE user_id = ? AND session_id = ? AND owner = ?",
        (iso(due), clip(error), pair.user_id, pair.session_id, owner),
    )


def note_mail_configured(db: Database, configured: bool) -> int:
    """Record whether e-mail can be sent now; when that changed since the last worker started (SMTP set up or
    removed), queue everyone's sessions, so people registered meanwhile get their invitations without waiting
    for the next change. Returns how many pairs were queued."""
    value = "on" if configured else "off"
    with db.write() as conn:
        row = conn.execute("SELECT value FROM calendar_state WHERE key = 'mail'").fetchone()
        if (row[0] if row else "off") == value:
            return 0
        conn.execute(
            "INSERT INTO calendar_state (key, value) VALUES ('mail', ?) ON CONFLICT(key) DO UPDATE SET value = ?",
            (value, value),
        )
        return mark_dirty(conn, pairs_of_provider(conn, None), db.clock())


def release_abandoned(db: Database, host: str, alive: Callable[[int], bool]) -> int:
    """Give back pairs leased by workers of this host that are no longer running (storage.leases)."""
    with db.write() as conn:
        return leases.release_abandoned(conn, "calendar_dirty", host, alive)


def has_due(db: Database, now: datetime) -> bool:
    """Whether a pair is due or its lease ran out (two indexed probes in a read transaction)."""
    with db.read() as conn:
        due = conn.execute(
            "SELECT 1 FROM calendar_dirty INDEXED BY calendar_dirty_due WHERE owner IS NULL AND due_at <= ? LIMIT 1",
            (iso(now),),
        ).fetchone()
        if due is None:
            due = conn.execute(
                "SELECT 1 FROM calendar_dirty INDEXED BY calendar_dirty_leased"
                " WHERE owner IS NOT NULL AND lease_until <= ? LIMIT 1",
                (iso(now),),
            ).fetchone()
    return due is not None


def pending(db: Database) -> int:
    """Pairs waiting for the worker (for status output and tests)."""
    with db.read() as conn:
        return int(conn.execute("SELECT count(*) FROM calendar_dirty").fetchone()[0])


def next_due(db: Database) -> datetime | None:
    with db.read() as conn:
        row = conn.execute("SELECT min(due_at) FROM calendar_dirty WHERE owner IS NULL").fetchone()
    return parse_iso(row[0]) if row and row[0] else None


# --- who is affected by what -------------------------------------------------------------------------------


def pairs_of_session(conn: sqlite3.Connection, session_id: str) -> set[tuple[str, str]]:
    """Everyone whose calendar may hold the session: registrations in any state, instructors, and anyone
    something was written for."""
    rows = conn.execute(
        "SELECT user_id FROM session_registrations WHERE session_id = ?"
        " UNION SELECT user_id FROM session_instructors WHERE session_id = ?"
        " UNION SELECT user_id FROM calendar_items WHERE session_id = ?",
        (session_id, session_id, session_id),
    ).fetchall()
    return {(r[0], session_id) for r in rows}


def pairs_of_user(conn: sqlite3.Connection, user_id: str) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT session_id FROM session_registrations WHERE user_id = ?"
        " UNION SELECT session_id FROM session_instructors WHERE user_id = ?"
        " UNION SELECT session_id FROM calendar_items WHERE user_id = ?",
        (user_id, user_id, user_id),
    ).fetchall()
    return {(user_id, r[0]) for r in rows}


def pairs_of_enrollment(conn: sqlite3.Connection, enrollment_id: str) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT user_id, session_id FROM session_registrations WHERE enrollment_id = ?"
        " UNION SELECT e.user_id, s.id FROM enrollments e JOIN course_sessions s ON s.course_id = e.course_id"
        " JOIN calendar_items ci ON ci.session_id = s.id AND ci.user_id = e.user_id WHERE e.id = ?",
        (enrollment_id, enrollment_id),
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def pairs_of_course(conn: sqlite3.Connection, course_id: str) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for (session_id,) in conn.execute("SELECT id FROM course_sessions WHERE course_id = ?", (course_id,)).fetchall():
        out |= pairs_of_session(conn, session_id)
    return out


def pairs_of_provider(conn: sqlite3.Connection, provider: str | None) -> set[tuple[str, str]]:
    """Pairs of everyone connected to `provider` (None: everyone with a registration or an item: the e-mail
    switch changes what every person without a calendar gets)."""
    if provider is None:
        rows = conn.execute(
            "SELECT user_id, session_id FROM session_registrations WHERE status = 'Registered'"
            " UNION SELECT user_id, session_id FROM session_instructors"
            " UNION SELECT user_id, session_id FROM calendar_items"
        ).fetchall()
        return {(r[0], r[1]) for r in rows}
    out: set[tuple[str, str]] = set()
    for (user_id,) in conn.execute(
        "SELECT user_id FROM calendar_connections WHERE provider = ? AND state = 'active'", (provider,)
    ).fetchall():
        out |= pairs_of_user(conn, user_id)
    return out


# --- health and resync (coursewire calendar status, coursewire calendar resync) ------------------------------


@dataclass(frozen=True)
class ConnectionHealth:
    """One active connection as `coursewire calendar status` lists it: `status` is the effective one (Paused
    included, as the API shows it); the `last_check*` fields come from its watch row, None before the first
    check. Times are ISO 8601 UTC strings as stored."""

    user_id: str
    login_name: str
    provider: str
    account: str | None
    status: str
    last_error: str | None
    last_sync_at: str | None
    last_check_at: str | None
    last_check_error: str | None
    subscription_expires_at: str | None


def connections_health(db: Database) -> list[ConnectionHealth]:
    """Every active connection (not those being removed), oldest connected first, with its watch row's
    figures (LEFT JOIN calendar_watches) and its owner's login name."""
    with db.read() as conn:
        settings = settings_in(conn)
        rows = conn.execute(
            "SELECT c.*, u.login_name, w.last_check_at, w.last_check_error, w.expires_at FROM calendar_connections c"
            " JOIN users u ON u.id = c.user_id LEFT JOIN calendar_watches w ON w.connection_id = c.id"
            " WHERE c.state = 'active' ORDER BY c.connected_at, c.id"
        ).fetchall()
    return [
        ConnectionHealth(
            user_id=r["user_id"],
            login_name=r["login_name"],
            provider=r["provider"],
            account=r["account"],
            status=effective_status(Connection.of(r), settings),
            last_error=r["last_error"],
            last_sync_at=r["last_sync_at"],
            last_check_at=r["last_check_at"],
            last_check_error=r["last_check_error"],
            subscription_expires_at=r["expires_at"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class RetryingPair:
    """A (person, session) pair the worker failed to bring up to date and tries again at `due_at` (ISO 8601 UTC
    as stored), after `attempts` failures, the last one saying `last_error`."""

    login_name: str
    session_id: str
    session_title: str | None
    attempts: int
    due_at: str
    last_error: str | None


def retrying(db: Database, limit: int = 20) -> list[RetryingPair]:
    """At most `limit` pairs waiting for a retry (failed at least once), the soonest due first."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT u.login_name, d.session_id, s.title, d.attempts, d.due_at, d.last_error FROM calendar_dirty d"
            " JOIN users u ON u.id = d.user_id LEFT JOIN course_sessions s ON s.id = d.session_id"
            " WHERE d.attempts > 0 ORDER BY d.due_at LIMIT ?",
            (limit,),
        ).fetchall()
    return [RetryingPair(*row) for row in rows]


def resync_pairs(db: Database, user_id: str | None = None, session_id: str | None = None) -> set[tuple[str, str]]:
    """The (user, session) pairs a resync brings up to date: the user's (`pairs_of_user`), the session's
    (`pairs_of_session`), both: their intersection; neither: every pair with a registration in any state, an
    instructor or a calendar item. Raises NotFound naming `user_id` or `session_id` when there is no such user
    or session (deleted ones included: their pairs still hold items to remove)."""
    with db.read() as conn:
        if user_id is not None and conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            raise NotFound(f"no user with Id '{user_id}'", "user")
        if (
            session_id is not None
            and conn.execute("SELECT 1 FROM course_sessions WHERE id = ?", (session_id,)).fetchone() is None
        ):
            raise NotFound(f"no session with Id '{session_id}'", "session")
        return pairs_in_scope(conn, user_id, session_id)


def pairs_in_scope(conn: sqlite3.Connection, user_id: str | None, session_id: str | None) -> set[tuple[str, str]]:
    """The pairs of `resync_pairs` without its checks: the user's, the session's, both (their intersection) or,
    with neither, every pair with a registration in any state, an instructor or a calendar item."""
    if user_id is not None:
        pairs = pairs_of_user(conn, user_id)
        return {p for p in pairs if p[1] == session_id} if session_id is not None else pairs
    if session_id is not None:
        return pairs_of_session(conn, session_id)
    rows = conn.execute(
        "SELECT user_id, session_id FROM session_registrations"
        " UNION SELECT user_id, session_id FROM session_instructors"
        " UNION SELECT user_id, session_id FROM calendar_items"
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def active_connection_ids(db: Database, user_ids: Iterable[str] | None) -> list[str]:
    """The ids of the active connections of `user_ids` (people without one are left out), or of everyone's
    when `user_ids` is None, oldest connected first."""
    with db.read() as conn:
        if user_ids is None:
            rows = conn.execute(
                "SELECT id FROM calendar_connections WHERE state = 'active' ORDER BY connected_at, id"
            ).fetchall()
            return [r[0] for r in rows]
        out: list[str] = []
        for chunk in chunks(list(dict.fromkeys(user_ids))):
            out += [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM calendar_connections WHERE state = 'active'"  # noqa: S608 (marks only)
                    f" AND user_id IN ({marks(chunk)}) ORDER BY connected_at, id",
                    list(chunk),
                )
            ]
    return out


def names_of(
    db: Database, user_ids: Iterable[str], session_ids: Iterable[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """({user id: login name}, {session id: title}) of the ids that exist, deleted ones included (for the
    lines a resync prints)."""
    users: dict[str, str] = {}
    sessions: dict[str, str] = {}
    with db.read() as conn:
        for table, column, ids, into in (
            ("users", "login_name", user_ids, users),
            ("course_sessions", "title", session_ids, sessions),
        ):
            for chunk in chunks(list(dict.fromkeys(ids))):
                into.update(
                    (r[0], r[1])
                    for r in conn.execute(
                        f"SELECT id, {column} FROM {table} WHERE id IN ({marks(chunk)})",  # noqa: S608 (constants)
                        list(chunk),
                    )
                )
    return users, sessions
