"""Users: create, update, soft-delete."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from typing import Any

from storage import access, events, lookups, names
from storage.db import Database, insert_sql, iso, new_id, update_sql
from storage.errors import Conflict, Invalid
from storage.models import ROLES, Actor
from storage.odata import reading

FIELD_NAMESPACE = uuid.UUID("5b7f7a53-6a0e-4d2b-9f44-2f1f0b6a9c31")

# wire property -> column, for the plain text properties
TEXT_COLUMNS = {
    "Email": "email",
    "Title": "title",
    "Department": "department",
    "City": "city",
    "Country": "country",
    "Office": "office",
    "JobTitle": "job_title",
    "DirectoryObjectId": "directory_object_id",
}


_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# The uniqueness checks a create or rename runs inside its write transaction; each is an index lookup
# (tests/connector/test_identity_names.py checks the plans).
LOGIN_HOLDER = "SELECT id FROM users WHERE login_key = ? AND is_deleted = 0 AND id IS NOT ? LIMIT 1"
EMAIL_HOLDER = "SELECT id FROM users WHERE email_key = ? AND is_deleted = 0 AND id IS NOT ? LIMIT 1"
DIRECTORY_ID_HOLDER = "SELECT id FROM users WHERE directory_object_id = ? AND is_deleted = 0 AND id IS NOT ? LIMIT 1"
ID_HOLDER = "SELECT id FROM users WHERE id = ? AND is_deleted = 0 AND id IS NOT ?"
INDEXED_QUERIES = (LOGIN_HOLDER, EMAIL_HOLDER, DIRECTORY_ID_HOLDER, ID_HOLDER)


def _object_id(value: Any) -> str | None:
    """A DirectoryObjectId: a GUID in the 8-4-4-4-12 form, stored in lower case like every id; blank is none.

    Raises Invalid naming the field otherwise: it is how LMS365-User-Id names a user, so it must be exact.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("DirectoryObjectId must be a string", target="DirectoryObjectId")
    text = value.strip().lower()
    if not text:
        return None
    if not _GUID.fullmatch(text):
        raise Invalid(
            f"DirectoryObjectId {value[:40]!r} is not a GUID such as 3f2504e0-4f89-41d3-9a0c-0305e82c3301"
            " (the user's Microsoft Entra object id)",
            target="DirectoryObjectId",
        )
    return text


def field_id(title: str) -> str:
    """A custom field's id is derived from its title's key, so titles that are the same name share it."""
    return str(uuid.uuid5(FIELD_NAMESPACE, names.key(title.strip())))


def _field_values(values: Any) -> str:
    out = []
    seen: dict[str, int] = {}
    for i, item in enumerate(values or []):
        target = f"UserFieldValues[{i}].FieldTitle"
        title = names.clean(item.get("FieldTitle"), target, limit=255)
        fid = field_id(title)
        if fid in seen:
            raise Invalid(
                f"{target} names the same field as UserFieldValues[{seen[fid]}] (titles compare by case and"
                " Unicode form): give each field once",
                target=target,
            )
        seen[fid] = i
        value = item.get("Value")
        out.append({"FieldId": fid, "FieldTitle": title, "Value": None if value is None else str(value)})
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def _email(value: Any) -> tuple[str | None, str | None]:
    """(what to store, its key) for an Email property: trimmed and composed; the key is None when blank.

    The key folds the whole address, local part included. RFC 5321 section 2.4 lets a mail server treat
    the local part as case-sensitive but discourages relying on it; directories (Microsoft Entra ID,
    Exchange, Google Workspace) never do, so two addresses differing only in case are one mailbox, and
    one person.
    """
    if value is None:
        return None, None
    email = names.clean(value, "Email", limit=320, required=False)
    if email and "@" not in email:
        raise Invalid(f"Email {email!r} is not an email address", target="Email")
    return email, (names.key(email) if email else None)


def _check_free(conn: sqlite3.Connection, sql: str, value: str | None, user_id: str, target: str, what: str) -> None:
    """Raise Conflict naming `target` and the holder's Id when another live user holds `value`."""
    if value is None:
        return
    row = conn.execute(sql, (value, user_id)).fetchone()
    if row:
        raise Conflict(
            f"{target}: another user already has this {what} (Id {row['id']}); names compare ignoring case and"
            " Unicode form",
            target=target,
        )


def _check_directory_id_free(conn: sqlite3.Connection, object_id: str | None, user_id: str) -> None:
    _check_free(conn, DIRECTORY_ID_HOLDER, object_id, user_id, "DirectoryObjectId", "DirectoryObjectId")
    # LMS365-User-Id names a user by Id or DirectoryObjectId: another user's Id would name two people.
    _check_free(conn, ID_HOLDER, object_id, user_id, "DirectoryObjectId", "Id as DirectoryObjectId")


def _manager(conn: sqlite3.Connection, login: str | None, user_id: str) -> str | None:
    if login is None or (isinstance(login, str) and not login.strip()):
        return None
    manager = lookups.user_by_login(conn, login, "ManagerLoginName")
    if manager["id"] == user_id:
        raise Invalid("a user cannot be their own manager", target="ManagerLoginName")
    return str(manager["id"])


def create(db: Database, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """Create a user; return it. Raises Forbidden, Invalid (naming the field) or Conflict (login taken)."""
    login = names.clean(body.get("LoginName"), "LoginName", limit=256)
    email, email_key = _email(body.get("Email"))
    object_id = _object_id(body.get("DirectoryObjectId"))
    role = body.get("Role") or "Learner"
    if role not in ROLES:
        raise Invalid(f"Role must be one of {', '.join(ROLES)}", target="Role")
    now = db.clock()
    user_id = new_id()
    with db.write() as conn:
        access.require_admin(actor, "create users")
        _check_free(conn, LOGIN_HOLDER, names.key(login), user_id, "LoginName", "login name")
        _check_free(conn, EMAIL_HOLDER, email_key, user_id, "Email", "e-mail address")
        _check_directory_id_free(conn, object_id, user_id)
        values = {
            "id": user_id,
            "login_name": login,
            "login_key": names.key(login),
            "manager_id": _manager(conn, body.get("ManagerLoginName"), user_id),
            "is_external": int(bool(body.get("IsExternal", False))),
            "role": role,
            "field_values": _field_values(body.get("UserFieldValues")),
            "created_at": iso(now),
            "modified_at": iso(now),
        }
        values.update({column: body.get(prop) for prop, column in TEXT_COLUMNS.items()})
        values.update(email=email, email_key=email_key, directory_object_id=object_id)
        conn.execute(insert_sql("users", values), list(values.values()))
        user = reading.load(conn, "Users", [user_id])[user_id]
        events.record(conn, "UserCreated", actor, now, {"user": user}, user_id=user_id)
    return user


def update(db: Database, actor: Actor, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Change the given properties (null clears optional ones); return the user. Raises like create."""
    now = db.clock()
    with db.write() as conn:
        access.require_admin(actor, "update users")
        row = lookups.user(conn, user_id)
        before = reading.load(conn, "Users", [user_id])[user_id]
        sets: dict[str, Any] = {column: body[prop] for prop, column in TEXT_COLUMNS.items() if prop in body}
        # A name is checked for collisions only when its key changes: a user stored before 0006 that
        # shares a key with another may still be edited, and renamed out of the collision.
        if "LoginName" in body:
            login = names.clean(body["LoginName"], "LoginName", limit=256)
            if names.key(login) != row["login_key"]:
                _check_free(conn, LOGIN_HOLDER, names.key(login), user_id, "LoginName", "login name")
            sets.update(login_name=login, login_key=names.key(login))
        if "Email" in body:
            email, email_key = _email(body["Email"])
            if email_key != row["email_key"]:
                _check_free(conn, EMAIL_HOLDER, email_key, user_id, "Email", "e-mail address")
            sets.update(email=email, email_key=email_key)
        if "DirectoryObjectId" in body:
            object_id = _object_id(body["DirectoryObjectId"])
            if object_id != row["directory_object_id"]:
                _check_directory_id_free(conn, object_id, user_id)
            sets["directory_object_id"] = object_id
        if "ManagerLoginName" in body:
            sets["manager_id"] = _manager(conn, body["ManagerLoginName"], user_id)
        if "IsExternal" in body:
            sets["is_external"] = int(bool(body["IsExternal"]))
        if "Role" in body:
            if body["Role"] not in ROLES:
                raise Invalid(f"Role must be one of {', '.join(ROLES)}", target="Role")
            sets["role"] = body["Role"]
        if "UserFieldValues" in body:
            sets["field_values"] = _field_values(body["UserFieldValues"])
        if sets:
            sets["modified_at"] = iso(now)
            conn.execute(update_sql("users", sets), [*sets.values(), user_id])
        after = reading.load(conn, "Users", [user_id])[user_id]
        changes = {k: {"before": before[k], "after": after[k]} for k in after if before[k] != after[k]}
        if changes:
            events.record(conn, "UserUpdated", actor, now, {"user": after, "changes": changes}, user_id=user_id)
    return after


def delete(db: Database, actor: Actor, user_id: str) -> None:
    """Soft-delete a user and cancel their active enrollments. Raises Forbidden or NotFound."""
    from storage import enrollments  # enrollments imports users' neighbours; keep the cycle out of import time

    now = db.clock()
    with db.write() as conn:
        access.require_admin(actor, "delete users")
        lookups.user(conn, user_id)
        for row in conn.execute(
            "SELECT * FROM enrollments WHERE user_id = ? AND status NOT IN (3, 4, 5)", (user_id,)
        ).fetchall():
            enrollments.cancel_in(conn, row, actor, now, reason="User deleted")
        conn.execute("UPDATE users SET is_deleted = 1, modified_at = ? WHERE id = ?", (iso(now), user_id))
        conn.execute("DELETE FROM catalog_admins WHERE user_id = ?", (user_id,))
        user = reading.load(conn, "Users", [user_id])[user_id]
        events.record(conn, "UserDeleted", actor, now, {"user": user}, user_id=user_id)
