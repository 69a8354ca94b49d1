"""Row lookups shared by the domain modules; each raises NotFound or Invalid naming the field."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.errors import Invalid, NotFound


def _one(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
    return row


def user(conn: sqlite3.Connection, user_id: str, target: str = "Id") -> sqlite3.Row:
    """The live user with this id; NotFound otherwise."""
    row = _one(conn, "SELECT * FROM users WHERE id = ? AND is_deleted = 0", (user_id,))
    if row is None:
        raise NotFound(f"no user with id {user_id!r}", target=target)
    return row


def user_by_login(conn: sqlite3.Connection, login: str, target: str) -> sqlite3.Row:
    """The live user with this login name (case-insensitive); Invalid naming `target` otherwise."""
    row = _one(conn, "SELECT * FROM users WHERE login_name = ? COLLATE NOCASE AND is_deleted = 0", (login,))
    if row is None:
        raise Invalid(f"{target}: no user with login name {login!r}", target=target)
    return row


def users_by_login(conn: sqlite3.Connection, logins: Sequence[str] | None, target: str) -> list[str]:
    """Resolve a list of login names to user ids, in order, without duplicates."""
    ids: list[str] = []
    for login in logins or []:
        uid = user_by_login(conn, login, target)["id"]
        if uid not in ids:
            ids.append(uid)
    return ids


def user_by_reference(conn: sqlite3.Connection, ref: str) -> sqlite3.Row | None:
    """The live user whose id or directory object id is `ref` (how LMS365-User-Id names a user)."""
    return _one(
        conn,
        "SELECT * FROM users WHERE (id = ? OR directory_object_id = ?) AND is_deleted = 0 ORDER BY id = ? DESC LIMIT 1",
        (ref.lower(), ref.strip().lower(), ref.lower()),
    )


def catalog(conn: sqlite3.Connection, catalog_id: str, target: str = "CourseCatalogId") -> sqlite3.Row:
    row = _one(conn, "SELECT * FROM catalogs WHERE id = ?", (catalog_id,))
    if row is None:
        raise (NotFound if target == "Id" else Invalid)(f"no course catalog with id {catalog_id!r}", target=target)
    return row


def course(conn: sqlite3.Connection, course_id: str, target: str = "CourseId") -> sqlite3.Row:
    """The live (not deleted) course; NotFound otherwise."""
    row = _one(conn, "SELECT * FROM courses WHERE id = ? AND is_deleted = 0", (course_id,))
    if row is None:
        raise NotFound(f"no course with id {course_id!r}", target=target)
    return row


def session(conn: sqlite3.Connection, session_id: str, target: str = "Id") -> sqlite3.Row:
    """The live session; NotFound when named by the path, Invalid when named in a body field."""
    row = _one(conn, "SELECT * FROM course_sessions WHERE id = ? AND is_deleted = 0", (session_id,))
    if row is None:
        raise (NotFound if target == "Id" else Invalid)(f"no course session with id {session_id!r}", target=target)
    return row


def enrollment(conn: sqlite3.Connection, enrollment_id: str, target: str = "Id") -> sqlite3.Row:
    row = _one(conn, "SELECT * FROM enrollments WHERE id = ?", (enrollment_id,))
    if row is None:
        raise NotFound(f"no enrollment with id {enrollment_id!r}", target=target)
    return row
