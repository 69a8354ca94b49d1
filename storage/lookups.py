"""Row lookups shared by the domain modules; each raises NotFound or Invalid naming the field."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage import ids, names
from storage.errors import Conflict, Invalid, NotFound, excerpt

# The statements behind a lookup by name; tests/connector/test_identity_names.py checks each uses an index.
USER_BY_LOGIN = "SELECT * FROM users WHERE login_key = ? AND is_deleted = 0 LIMIT 2"
USER_BY_REFERENCE = "SELECT * FROM users WHERE id = ? AND is_deleted = 0"
USERS_BY_DIRECTORY_ID = "SELECT * FROM users WHERE directory_object_id = ? AND is_deleted = 0 LIMIT 2"
INDEXED_QUERIES = (USER_BY_LOGIN, USER_BY_REFERENCE, USERS_BY_DIRECTORY_ID)


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
    """The live user with this login name, compared by key (storage/names.py: case, Unicode form).

    Raises Invalid naming `target` when the name holds a refused character or names no live user, and
    Conflict when two live users stored before migration 0006 share the key (naming both, to rename one).
    """
    text = names.clean(login, target, limit=256)
    rows = conn.execute(USER_BY_LOGIN, (names.key(text),)).fetchall()
    if not rows:
        raise Invalid(f"{target}: no user with login name {text!r}", target=target)
    if len(rows) > 1:
        raise Conflict(
            f"{target}: login name {text!r} names more than one user (Ids {', '.join(r['id'] for r in rows)}), stored"
            " before login names were compared by case and Unicode form: rename all but one with UpdateUser",
            target=target,
        )
    row: sqlite3.Row = rows[0]
    return row


def users_by_login(conn: sqlite3.Connection, logins: Sequence[str] | None, target: str) -> list[str]:
    """Resolve a list of login names to user ids, in order, without duplicates; raises like user_by_login."""
    ids: list[str] = []
    for login in logins or []:
        uid = user_by_login(conn, login, target)["id"]
        if uid not in ids:
            ids.append(uid)
    return ids


def user_by_reference(conn: sqlite3.Connection, ref: str) -> sqlite3.Row | None:
    """The live user whose id or directory object id is `ref` (how LMS365-User-Id names a user; a GUID in any
    case, bare or in braces, storage.ids); None if none.

    An id wins over a directory object id. Raises Invalid (target `LMS365-User-Id`) when the directory
    object id is held by two live users (stored before it had to be unique): acting as either would be
    a guess.
    """
    ref = ids.canonical(ref).strip().lower()
    row: sqlite3.Row | None = conn.execute(USER_BY_REFERENCE, (ref,)).fetchone()
    if row is not None:
        return row
    rows = conn.execute(USERS_BY_DIRECTORY_ID, (ref,)).fetchall()
    if len(rows) > 1:
        raise Invalid(
            f"LMS365-User-Id {ref!r} is the DirectoryObjectId of more than one user"
            f" (Ids {', '.join(r['id'] for r in rows)}): give the user's Id, and give each user their own"
            " DirectoryObjectId with UpdateUser",
            target="LMS365-User-Id",
        )
    return rows[0] if rows else None


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


def no_enrollment(enrollment_id: str) -> str:
    """The NotFound message for an enrollment id (also for one the caller may not see)."""
    return f"no enrollment with id {excerpt(enrollment_id)}"


def enrollment(conn: sqlite3.Connection, enrollment_id: str, target: str = "Id") -> sqlite3.Row:
    row = _one(conn, "SELECT * FROM enrollments WHERE id = ?", (enrollment_id,))
    if row is None:
        raise NotFound(no_enrollment(enrollment_id), target=target)
    return row
