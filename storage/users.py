"""Users: create, update, soft-delete."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from storage import access, events, lookups, readmodel
from storage.db import Database, insert_sql, iso, new_id, update_sql
from storage.errors import Conflict, Invalid
from storage.models import ROLES, Actor

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


def _object_id(value: Any) -> Any:
    """Directory object ids are GUIDs, stored in lower case like every id so lookups can use the index."""
    return value.strip().lower() if isinstance(value, str) else value


def field_id(title: str) -> str:
    """A custom field's id is derived from its title, so the same title always has the same id."""
    return str(uuid.uuid5(FIELD_NAMESPACE, title.strip().lower()))


def _field_values(values: Any) -> str:
    out = []
    for i, item in enumerate(values or []):
        title = (item.get("FieldTitle") or "").strip()
        if not title:
            raise Invalid(
                f"UserFieldValues[{i}].FieldTitle must not be empty", target=f"UserFieldValues[{i}].FieldTitle"
            )
        value = item.get("Value")
        out.append({"FieldId": field_id(title), "FieldTitle": title, "Value": None if value is None else str(value)})
    return json.dumps(out, separators=(",", ":"))


def _login(value: Any) -> str:
    login = (value or "").strip()
    if not login:
        raise Invalid("LoginName must not be empty", target="LoginName")
    if len(login) > 256:
        raise Invalid("LoginName is longer than 256 characters", target="LoginName")
    return login


def _check_email(email: str | None) -> None:
    if email is not None and email != "" and ("@" not in email or len(email) > 320):
        raise Invalid(f"Email {email!r} is not an email address", target="Email")


def _check_login_free(conn: sqlite3.Connection, login: str, except_id: str | None = None) -> None:
    row = conn.execute(
        "SELECT id FROM users WHERE login_name = ? COLLATE NOCASE AND is_deleted = 0 AND id IS NOT ?",
        (login, except_id),
    ).fetchone()
    if row:
        raise Conflict(f"a user with login name {login!r} already exists (Id {row['id']})", target="LoginName")


def _manager(conn: sqlite3.Connection, login: str | None, user_id: str) -> str | None:
    if not login:
        return None
    manager = lookups.user_by_login(conn, login, "ManagerLoginName")
    if manager["id"] == user_id:
        raise Invalid("a user cannot be their own manager", target="ManagerLoginName")
    return str(manager["id"])


def create(db: Database, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """Create a user; return it. Raises Forbidden, Invalid (naming the field) or Conflict (login taken)."""
    login = _login(body.get("LoginName"))
    _check_email(body.get("Email"))
    role = body.get("Role") or "Learner"
    if role not in ROLES:
        raise Invalid(f"Role must be one of {', '.join(ROLES)}", target="Role")
    now = db.clock()
    user_id = new_id()
    with db.write() as conn:
        access.require_admin(actor, "create users")
        _check_login_free(conn, login)
        values = {
            "id": user_id,
            "login_name": login,
            "manager_id": _manager(conn, body.get("ManagerLoginName"), user_id),
            "is_external": int(bool(body.get("IsExternal", False))),
            "role": role,
            "field_values": _field_values(body.get("UserFieldValues")),
            "created_at": iso(now),
            "modified_at": iso(now),
        }
        values.update({column: body.get(prop) for prop, column in TEXT_COLUMNS.items()})
        values["directory_object_id"] = _object_id(values["directory_object_id"])
        conn.execute(insert_sql("users", values), list(values.values()))
        user = readmodel.load_users(conn, [user_id])[user_id]
        events.record(conn, "UserCreated", actor, now, {"user": user}, user_id=user_id)
    return user


def update(db: Database, actor: Actor, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Change the given properties (null clears optional ones); return the user. Raises like create."""
    now = db.clock()
    with db.write() as conn:
        access.require_admin(actor, "update users")
        lookups.user(conn, user_id)
        before = readmodel.load_users(conn, [user_id])[user_id]
        sets: dict[str, Any] = {}
        if "LoginName" in body:
            login = _login(body["LoginName"])
            _check_login_free(conn, login, user_id)
            sets["login_name"] = login
        if "Email" in body:
            _check_email(body["Email"])
        for prop, column in TEXT_COLUMNS.items():
            if prop in body:
                sets[column] = body[prop]
        if "directory_object_id" in sets:
            sets["directory_object_id"] = _object_id(sets["directory_object_id"])
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
        after = readmodel.load_users(conn, [user_id])[user_id]
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
        user = readmodel.load_users(conn, [user_id])[user_id]
        events.record(conn, "UserDeleted", actor, now, {"user": user}, user_id=user_id)
