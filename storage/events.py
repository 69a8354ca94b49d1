"""The event log: every state change appends one row in the same transaction; consumers read by cursor."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from storage.db import Database, iso, new_id
from storage.models import Actor, Event


def record(
    conn: sqlite3.Connection,
    type: str,
    actor: Actor,
    now: datetime,
    data: dict[str, Any],
    *,
    catalog_id: str | None = None,
    course_id: str | None = None,
    session_id: str | None = None,
    enrollment_id: str | None = None,
    user_id: str | None = None,
) -> int:
    """Append an event inside the caller's write transaction; return its sequence number."""
    cursor = conn.execute(
        "INSERT INTO events (id, type, occurred_at, actor, catalog_id, course_id, session_id,"
        " enrollment_id, user_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new_id(),
            type,
            iso(now),
            actor.to_json(),
            catalog_id,
            course_id,
            session_id,
            enrollment_id,
            user_id,
            json.dumps(data, separators=(",", ":"), default=str, ensure_ascii=False),
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _event(row: sqlite3.Row) -> Event:
    return Event(
        seq=row["seq"],
        id=row["id"],
        type=row["type"],
        occurred_at=row["occurred_at"],
        actor=json.loads(row["actor"]),
        catalog_id=row["catalog_id"],
        course_id=row["course_id"],
        session_id=row["session_id"],
        enrollment_id=row["enrollment_id"],
        user_id=row["user_id"],
        data=json.loads(row["data"]),
    )


def read_after(db: Database, seq: int, *, limit: int = 100, types: Sequence[str] | None = None) -> list[Event]:
    """Return up to `limit` events with sequence numbers above `seq`, oldest first."""
    sql = "SELECT * FROM events WHERE seq > ?"
    params: list[Any] = [seq]
    if types:
        sql += f" AND type IN ({','.join('?' * len(types))})"
        params.extend(types)
    sql += " ORDER BY seq LIMIT ?"
    params.append(limit)
    with db.read() as conn:
        return [_event(row) for row in conn.execute(sql, params)]


def latest(
    db: Database,
    *,
    limit: int = 50,
    types: Sequence[str] | None = None,
    course_id: str | None = None,
    user_id: str | None = None,
    enrollment_id: str | None = None,
) -> list[Event]:
    """Return the newest `limit` events matching the filters, oldest first."""
    clauses: list[str] = ["1=1"]
    params: list[object] = []
    if types:
        clauses.append(f"type IN ({','.join('?' * len(types))})")
        params.extend(types)
    for column, value in (("course_id", course_id), ("user_id", user_id), ("enrollment_id", enrollment_id)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT * FROM events WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?"  # noqa: S608 (fixed clauses)
    with db.read() as conn:
        rows = [_event(row) for row in conn.execute(sql, [*params, limit])]
    return rows[::-1]


def cursor(db: Database, consumer: str) -> int:
    """Return the last sequence number `consumer` has processed (0 when it never ran)."""
    with db.read() as conn:
        row = conn.execute("SELECT seq FROM event_cursors WHERE consumer = ?", (consumer,)).fetchone()
    return row["seq"] if row else 0


def advance_cursor(conn: sqlite3.Connection, consumer: str, seq: int, now: datetime) -> None:
    """Move `consumer`'s cursor forward to `seq` inside the caller's write transaction (never back)."""
    conn.execute(
        "INSERT INTO event_cursors (consumer, seq, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT(consumer) DO UPDATE SET seq = max(seq, excluded.seq), updated_at = excluded.updated_at",
        (consumer, seq, iso(now)),
    )
