"""Who may do what: each check runs inside the write transaction and raises Forbidden with the reason;
and what each actor may read (the read scope of enrollments and what belongs to them)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage import lookups
from storage.db import chunks, marks
from storage.errors import Forbidden, NotFound
from storage.models import Actor


def _name(actor: Actor) -> str:
    if actor.kind == "apikey":
        return "this API key"
    return f"user '{actor.login_name or actor.user_id}'"


def require_admin(actor: Actor, doing: str) -> None:
    """Allow administrators only (a Read Only key never is one, whoever it names)."""
    if actor.is_admin:
        return
    if actor.reads_all:  # a Read Only key, acting as itself or as an Administrator
        raise Forbidden(
            f"{_name(actor)} may not {doing}: the API key is Read Only; administrators do this through a"
            " Full Control key"
        )
    raise Forbidden(f"{_name(actor)} may not {doing}: only administrators may")


def require_reads_all(actor: Actor, doing: str) -> None:
    """Allow actors who read everything: API keys acting as themselves and Administrator users."""
    if not actor.reads_all:
        raise Forbidden(
            f"{_name(actor)} may not {doing}: it would show other people's data;"
            " only administrators and API keys acting as themselves may"
        )


def is_catalog_admin(conn: sqlite3.Connection, actor: Actor, catalog_id: str) -> bool:
    if actor.is_admin:
        return True
    return (
        conn.execute(
            "SELECT 1 FROM catalog_admins WHERE catalog_id = ? AND user_id = ?", (catalog_id, actor.user_id)
        ).fetchone()
        is not None
    )


def require_catalog_admin(conn: sqlite3.Connection, actor: Actor, catalog_id: str, doing: str) -> None:
    """Allow administrators and admins of the catalog."""
    if not is_catalog_admin(conn, actor, catalog_id):
        raise Forbidden(f"{_name(actor)} may not {doing}: only catalog admins and administrators may")


def course_roles(conn: sqlite3.Connection, actor: Actor, course_id: str) -> set[str]:
    """Return the actor's roles on a course: Admin, Teacher, Trainer, CatalogAdmin (administrators: all)."""
    if actor.is_admin:
        return {"Admin", "Teacher", "Trainer", "CatalogAdmin"}
    roles = {
        row[0]
        for row in conn.execute(
            "SELECT role FROM course_people WHERE course_id = ? AND user_id = ?", (course_id, actor.user_id)
        )
    }
    catalog = conn.execute(
        "SELECT 1 FROM courses c JOIN catalog_admins a ON a.catalog_id = c.catalog_id"
        " WHERE c.id = ? AND a.user_id = ?",
        (course_id, actor.user_id),
    ).fetchone()
    if catalog:
        roles.add("CatalogAdmin")
    return roles


def is_course_admin(conn: sqlite3.Connection, actor: Actor, course_id: str) -> bool:
    return bool(course_roles(conn, actor, course_id) & {"Admin", "CatalogAdmin"})


def require_course_admin(conn: sqlite3.Connection, actor: Actor, course_id: str, doing: str) -> None:
    """Allow administrators, course admins and admins of the course's catalog."""
    if not is_course_admin(conn, actor, course_id):
        raise Forbidden(f"{_name(actor)} may not {doing}: only course admins, catalog admins and administrators may")


def require_course_staff(conn: sqlite3.Connection, actor: Actor, course_id: str, doing: str) -> None:
    """Allow course/catalog admins, teachers and trainers of the course."""
    if not course_roles(conn, actor, course_id):
        raise Forbidden(
            f"{_name(actor)} may not {doing}: only the course's admins, teachers, trainers,"
            " its catalog admins and administrators may"
        )


def require_self_or_course_admin(
    conn: sqlite3.Connection, actor: Actor, course_id: str, learner_id: str, doing: str
) -> None:
    """Allow the learner themself, course/catalog admins and administrators."""
    if actor.user_id == learner_id and actor.kind == "user":
        return
    if not is_course_admin(conn, actor, course_id):
        raise Forbidden(
            f"{_name(actor)} may not {doing} for another user: only the learner, course admins,"
            " catalog admins and administrators may"
        )


# --- read scope ----------------------------------------------------------------------------------------

# The enrollments a user who does not read everything may read, as ids: their own, their direct reports',
# every enrollment of a course they administer, teach or train (or whose catalog they administer), and
# every registration to a session they instruct. One `?` per branch, each bound to the user's id.
_VISIBLE_ENROLLMENTS = (
    "SELECT id FROM enrollments WHERE user_id = ?"
    " UNION SELECT e.id FROM users r JOIN enrollments e ON e.user_id = r.id WHERE r.manager_id = ?"
    " UNION SELECT e.id FROM course_people cp JOIN enrollments e ON e.course_id = cp.course_id WHERE cp.user_id = ?"
    " UNION SELECT e.id FROM catalog_admins ca JOIN courses c ON c.catalog_id = ca.catalog_id"
    " JOIN enrollments e ON e.course_id = c.id WHERE ca.user_id = ?"
    " UNION SELECT sr.enrollment_id FROM session_instructors si"
    " JOIN session_registrations sr ON sr.session_id = si.session_id WHERE si.user_id = ?"
)
_BRANCHES = _VISIBLE_ENROLLMENTS.count("?")

# Entity sets whose rows belong to an enrollment: (table, column holding the enrollment id).
ENROLLMENT_OWNED = {
    "Enrollments": ("enrollments", "id"),
    "SessionRegistrations": ("session_registrations", "enrollment_id"),
    "Attendance": ("attendance", "enrollment_id"),
}


def enrollment_scope(actor: Actor, column: str) -> tuple[str, list[str]] | None:
    """A SQL condition on `column` (an enrollment id) keeping what `actor` may read, with its parameters;
    None when the actor reads everything (keys acting as themselves, administrators)."""
    if actor.reads_all:
        return None
    return f"{column} IN ({_VISIBLE_ENROLLMENTS})", [actor.user_id or ""] * _BRANCHES


def readable(conn: sqlite3.Connection, actor: Actor, set_name: str, ids: Sequence[str]) -> set[str]:
    """The ids among `ids` of entity set `set_name` that `actor` may read (all of them for sets without a
    read scope, and for actors who read everything)."""
    owned = ENROLLMENT_OWNED.get(set_name)
    scope = enrollment_scope(actor, "t." + owned[1]) if owned else None
    if owned is None or scope is None:
        return set(ids)
    condition, params = scope
    table, _ = owned
    found: set[str] = set()
    for part in chunks(ids, 500):
        sql = f"SELECT t.id FROM {table} t WHERE t.id IN ({marks(part)}) AND {condition}"  # noqa: S608 (code-built)
        found.update(row[0] for row in conn.execute(sql, [*part, *params]))
    return found


def readable_enrollment(conn: sqlite3.Connection, actor: Actor, enrollment_id: str, target: str = "Id") -> sqlite3.Row:
    """The enrollment, if `actor` may read it; NotFound otherwise, worded the same whether it does not exist or
    is outside the actor's read scope, so a write tells nothing a read would not."""
    row = lookups.enrollment(conn, enrollment_id, target)
    if not actor.reads_all and enrollment_id not in readable(conn, actor, "Enrollments", [enrollment_id]):
        raise NotFound(lookups.no_enrollment(enrollment_id), target=target)
    return row
