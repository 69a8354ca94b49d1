"""The SQLite work of both baselines: the statements coursewire's storage runs for GetUserById and CreateUser.

The baselines must differ from coursewire only in the HTTP edge, so they open the database exactly as
`storage.db.Database` does (one connection per thread, WAL, synchronous=NORMAL, busy timeout, foreign
keys), work on a database migrated by coursewire's own migrations, and run the same statements in the
same transactions: a read transaction around the user SELECT, and BEGIN IMMEDIATE around the login
check, the INSERT, the read-back and the `UserCreated` event. It borrows only coursewire's read model
(plain functions over a connection), never its edge, handlers or transactions, so a baseline stays a bare
framework app.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

# The same SQL and row mapping coursewire uses, so the baselines do exactly its database work.
from storage import names
from storage.odata import reading
from storage.users import TEXT_COLUMNS

_local = threading.local()


class LoginTaken(Exception):
    """CreateUser with a LoginName that a live user already has."""


def _conn() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["BENCH_DATABASE"], isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        _local.conn = conn
    return conn


def _now() -> str:
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def get_user(user_id: str) -> dict[str, Any] | None:
    """The user in its wire shape, or None; one read transaction like `Database.read()`."""
    conn = _conn()
    conn.execute("BEGIN")
    try:
        return reading.load(conn, "Users", [user_id]).get(user_id)
    finally:
        conn.execute("COMMIT")


def create_user(body: dict[str, Any]) -> dict[str, Any]:
    """Insert a user and its `UserCreated` event in one BEGIN IMMEDIATE transaction; raises LoginTaken."""
    login = str(body.get("LoginName") or "").strip()
    now = _now()
    user_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": user_id,
        "login_name": login,
        "login_key": names.key(login),
        "manager_id": None,
        "is_external": int(bool(body.get("IsExternal", False))),
        "role": body.get("Role") or "Learner",
        "field_values": "[]",
        "created_at": now,
        "modified_at": now,
    }
    values.update({column: body.get(prop) for prop, column in TEXT_COLUMNS.items()})
    values["email_key"] = names.key(values["email"]) if values.get("email") else None
    conn = _conn()
    conn.execute("BEGIN IMMEDIATE")
    try:
        taken = conn.execute(
            "SELECT id FROM users WHERE login_key = ? AND is_deleted = 0 AND id IS NOT ? LIMIT 1",
            (values["login_key"], None),
        ).fetchone()
        if taken:
            raise LoginTaken(login)
        columns = ", ".join(values)
        conn.execute(
            f"INSERT INTO users ({columns}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608 - names from code
            list(values.values()),
        )
        user = reading.load(conn, "Users", [user_id])[user_id]
        conn.execute(
            "INSERT INTO events (id, type, occurred_at, actor, catalog_id, course_id, session_id,"
            " enrollment_id, user_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(uuid.uuid4()),
                "UserCreated",
                now,
                '{"kind":"apikey"}',
                None,
                None,
                None,
                None,
                user_id,
                json.dumps({"user": user}, separators=(",", ":")),
            ),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return user
