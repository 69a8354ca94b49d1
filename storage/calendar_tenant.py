"""Tenant-wide Microsoft 365: the one connected tenant, and the connections its roster makes for people whose
DirectoryObjectId or e-mail address names a mailbox of that tenant (calendars/tenant.py does the looking up).

A tenant-made connection is an ordinary `calendar_connections` row (Provider Microsoft365, Account = the mailbox's
address) with `tenant_mailbox` set to the Graph user id and sealed credentials `{"mode": "tenant", "user": <id>}`
(no token: the worker's tenant token serves every mailbox). A person opts out by switching SyncEnabled off: the
row stays, so the roster never makes another; a person whose mailbox no longer matches is disconnected (state
`removing`: the worker deletes the events it wrote, then the row goes).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage import access, events, snapshots
from storage.calendar import SYSTEM, Connection
from storage.db import Database, iso, new_id
from storage.errors import Invalid, clip
from storage.models import Actor

PROVIDER = "Microsoft365"
# Microsoft's multi-tenant authority names: client credentials need one tenant (its id or a verified domain).
SHARED_AUTHORITIES = frozenset({"common", "organizations", "consumers"})


@dataclass(frozen=True)
class TenantState:
    """The connected tenant: its id or domain, whether the roster runs, when it was enabled and by whom (actor
    JSON), the roster's last round and last error (None after a clean round)."""

    tenant_id: str
    enabled: bool
    enabled_at: str | None
    last_roster_at: str | None
    last_error: str | None
    connections: int  # active tenant-made connections

    def as_api(self) -> dict[str, object]:
        """`{"TenantId", "Enabled", "EnabledAt"?, "LastRosterAt"?, "LastError"?, "Connections"}`."""
        out: dict[str, object] = {"TenantId": self.tenant_id, "Enabled": self.enabled, "Connections": self.connections}
        for name, value in (
            ("EnabledAt", self.enabled_at),
            ("LastRosterAt", self.last_roster_at),
            ("LastError", self.last_error),
        ):
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Candidate:
    """A person the roster may connect: no calendar connection at all (an opted-out tenant connection is one),
    and a DirectoryObjectId or an e-mail address to look a mailbox up by."""

    user_id: str
    directory_object_id: str | None
    email: str | None


@dataclass(frozen=True)
class TenantConnection:
    """A tenant-made connection to check again: the person's current DirectoryObjectId and e-mail address, and
    whether they were deleted."""

    connection_id: str
    user_id: str
    mailbox: str
    directory_object_id: str | None
    email: str | None
    user_deleted: bool


def _state(conn: sqlite3.Connection) -> TenantState | None:
    row = conn.execute("SELECT * FROM calendar_tenant WHERE id = 1").fetchone()
    if row is None:
        return None
    count = conn.execute(
        "SELECT count(*) FROM calendar_connections WHERE tenant_mailbox IS NOT NULL AND state = 'active'"
    ).fetchone()[0]
    return TenantState(
        tenant_id=row["tenant_id"],
        enabled=bool(row["enabled"]),
        enabled_at=row["enabled_at"],
        last_roster_at=row["last_roster_at"],
        last_error=row["last_error"],
        connections=int(count),
    )


def tenant_state(db: Database) -> TenantState | None:
    """The connected tenant, None when none ever was."""
    with db.read() as conn:
        return _state(conn)


def enable_tenant(db: Database, actor: Actor, tenant_id: str) -> TenantState:
    """Connect the tenant (administrators only): the roster starts making connections on its next round. The
    caller first proves that the client credentials work for this tenant (calendars.tenant.prove). Records
    `CalendarTenantEnabled` (no person's calendar changes until the roster connects them). Raises Forbidden,
    Invalid (TenantId empty, over 255 characters, or one of Microsoft's shared authorities)."""
    access.require_admin(actor, "connect the Microsoft 365 tenant")
    tenant = (tenant_id or "").strip()
    if not tenant or len(tenant) > 255 or tenant.lower() in SHARED_AUTHORITIES:
        raise Invalid(
            "TenantId must name one tenant: its id (a GUID) or a verified domain, not common, organizations or"
            " consumers",
            "TenantId",
        )
    now = db.clock()
    with db.write() as conn:
        before = _state(conn)
        conn.execute(
            "INSERT INTO calendar_tenant (id, tenant_id, enabled, enabled_at, enabled_by, last_error, modified_at)"
            " VALUES (1, ?, 1, ?, ?, NULL, ?) ON CONFLICT(id) DO UPDATE SET tenant_id = excluded.tenant_id,"
            " enabled = 1, enabled_at = excluded.enabled_at, enabled_by = excluded.enabled_by, last_error = NULL,"
            " modified_at = excluded.modified_at",
            (tenant, iso(now), actor.to_json(), iso(now)),
        )
        if before is None or not before.enabled or before.tenant_id != tenant:
            events.record(conn, "CalendarTenantEnabled", actor, now, {"TenantId": tenant})
        state = _state(conn)
    assert state is not None
    return state


def disable_tenant(db: Database, actor: Actor, *, keep_events: bool) -> TenantState | None:
    """Stop tenant-wide mode (administrators only): every tenant-made connection is disconnected as
    storage.calendar.disconnect does it (without `keep_events` the worker first deletes the events it wrote,
    opted-out people's included), recording `CalendarDisconnected` for each person so the mirror re-plans their
    sessions (e-mail instead), then `CalendarTenantDisabled`. Returns the state (None: no tenant was ever
    connected). Raises Forbidden."""
    access.require_admin(actor, "disconnect the Microsoft 365 tenant")
    now = db.clock()
    with db.write() as conn:
        state = _state(conn)
        if state is None:
            return None
        conn.execute("UPDATE calendar_tenant SET enabled = 0, modified_at = ? WHERE id = 1", (iso(now),))
        rows = conn.execute(
            "SELECT * FROM calendar_connections WHERE tenant_mailbox IS NOT NULL AND state = 'active'"
        ).fetchall()
        for row in rows:
            _disconnect(conn, Connection.of(row), actor, now, keep_events=keep_events, reason="TenantDisabled")
        if state.enabled:
            events.record(conn, "CalendarTenantDisabled", actor, now, {"TenantId": state.tenant_id})
        return _state(conn)


def _disconnect(
    conn: sqlite3.Connection, connection: Connection, actor: Actor, now: datetime, *, keep_events: bool, reason: str
) -> None:
    if keep_events:
        conn.execute("DELETE FROM calendar_items WHERE connection_id = ?", (connection.id,))
        conn.execute("DELETE FROM calendar_watches WHERE connection_id = ?", (connection.id,))
        conn.execute("DELETE FROM calendar_connections WHERE id = ?", (connection.id,))
    else:
        conn.execute(
            "UPDATE calendar_connections SET state = 'removing', modified_at = ? WHERE id = ?",
            (iso(now), connection.id),
        )
    events.record(
        conn,
        "CalendarDisconnected",
        actor,
        now,
        {
            "user": snapshots.user(conn, connection.user_id),
            "connection": {
                "Provider": connection.provider,
                "Account": connection.account,
                "KeepEvents": keep_events,
                "TenantWide": True,
                "Reason": reason,
            },
        },
        user_id=connection.user_id,
    )


# --- what the roster needs ------------------------------------------------------------------------------------


def candidates(db: Database, now: datetime, limit: int, relook: timedelta) -> list[Candidate]:
    """Up to `limit` people to look up: not deleted, with a DirectoryObjectId or an e-mail address, without any
    calendar connection (active or being removed), and not found in the tenant within `relook` unless they
    changed since. People never looked up come first."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT u.id, u.directory_object_id, u.email FROM users u"
            " LEFT JOIN calendar_tenant_misses m ON m.user_id = u.id"
            " WHERE u.is_deleted = 0 AND (u.directory_object_id IS NOT NULL OR u.email IS NOT NULL)"
            " AND NOT EXISTS (SELECT 1 FROM calendar_connections c WHERE c.user_id = u.id)"
            " AND (m.looked_at IS NULL OR m.looked_at <= ? OR m.looked_at < u.modified_at)"
            " ORDER BY m.looked_at IS NOT NULL, m.looked_at, u.id LIMIT ?",
            (iso(now - relook), limit),
        ).fetchall()
    return [Candidate(r[0], r[1] or None, r[2] or None) for r in rows]


def due_for_check(db: Database, now: datetime, limit: int, every: timedelta) -> list[TenantConnection]:
    """Up to `limit` active tenant-made connections not checked within `every` (opted-out ones included),
    least recently checked first."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT c.id, c.user_id, c.tenant_mailbox, u.directory_object_id, u.email, u.is_deleted"
            " FROM calendar_connections c JOIN users u ON u.id = c.user_id"
            " WHERE c.tenant_mailbox IS NOT NULL AND c.state = 'active'"
            " AND (c.tenant_checked_at IS NULL OR c.tenant_checked_at <= ?)"
            " ORDER BY c.tenant_checked_at IS NOT NULL, c.tenant_checked_at LIMIT ?",
            (iso(now - every), limit),
        ).fetchall()
    return [TenantConnection(r[0], r[1], r[2], r[3] or None, r[4] or None, bool(r[5])) for r in rows]


def connect_mailbox(
    db: Database, user_id: str, mailbox: str, account: str | None, credentials: str, now: datetime
) -> str | None:
    """Connect the person to the tenant mailbox `mailbox` (Graph user id), Status Connected, sync on; records
    `CalendarConnected` (actor: the system) so the mirror writes their sessions. Returns the connection id; None
    when the person meanwhile has a connection, was deleted, or another person holds that mailbox."""
    with db.write() as conn:
        alive = conn.execute("SELECT 1 FROM users WHERE id = ? AND is_deleted = 0", (user_id,)).fetchone()
        taken = conn.execute(
            "SELECT 1 FROM calendar_connections WHERE user_id = ?"
            " OR (tenant_mailbox = ? AND state = 'active') LIMIT 1",
            (user_id, mailbox),
        ).fetchone()
        if alive is None or taken is not None:
            return None
        connection_id = new_id()
        conn.execute(
            "INSERT INTO calendar_connections (id, user_id, provider, account, calendar, credentials, connected_at,"
            " modified_at, tenant_mailbox, tenant_checked_at) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
            (connection_id, user_id, PROVIDER, clip(account, 320), credentials, iso(now), iso(now), mailbox, iso(now)),
        )
        conn.execute("DELETE FROM calendar_tenant_misses WHERE user_id = ?", (user_id,))
        events.record(
            conn,
            "CalendarConnected",
            SYSTEM,
            now,
            {
                "user": snapshots.user(conn, user_id),
                "connection": {"Provider": PROVIDER, "Account": account, "TenantWide": True},
            },
            user_id=user_id,
        )
        return connection_id


def note_misses(db: Database, user_ids: list[str], now: datetime) -> None:
    """Remember that these people have no mailbox in the tenant (looked up again later, or when they change)."""
    if not user_ids:
        return
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO calendar_tenant_misses (user_id, looked_at) VALUES (?, ?)"
            " ON CONFLICT(user_id) DO UPDATE SET looked_at = excluded.looked_at",
            [(u, iso(now)) for u in user_ids],
        )


def confirm(db: Database, connection_ids: list[str], now: datetime) -> None:
    """These tenant-made connections still match their mailbox."""
    if not connection_ids:
        return
    with db.write() as conn:
        conn.executemany(
            "UPDATE calendar_connections SET tenant_checked_at = ? WHERE id = ?",
            [(iso(now), c) for c in connection_ids],
        )


def drop(db: Database, connection_id: str, reason: str, now: datetime) -> bool:
    """Disconnect a tenant-made connection whose person no longer matches its mailbox (or was deleted): the
    worker deletes the events it wrote, then the row goes; records `CalendarDisconnected` with the reason.
    Returns False when it was no longer an active tenant-made connection."""
    with db.write() as conn:
        row = conn.execute(
            "SELECT * FROM calendar_connections WHERE id = ? AND tenant_mailbox IS NOT NULL AND state = 'active'",
            (connection_id,),
        ).fetchone()
        if row is None:
            return False
        _disconnect(conn, Connection.of(row), SYSTEM, now, keep_events=False, reason=clip(reason, 200) or "")
        return True


def roster_done(db: Database, now: datetime, error: str | None) -> None:
    """Record the roster's round: when, and its error (None: it went through)."""
    with db.write() as conn:
        conn.execute(
            "UPDATE calendar_tenant SET last_roster_at = ?, last_error = ? WHERE id = 1", (iso(now), clip(error))
        )


def tenant_mailbox(db: Database, connection_id: str) -> str | None:
    """The Graph user id of a tenant-made connection's mailbox; None for a person's own connection."""
    with db.read() as conn:
        row = conn.execute("SELECT tenant_mailbox FROM calendar_connections WHERE id = ?", (connection_id,)).fetchone()
    return row[0] if row else None
