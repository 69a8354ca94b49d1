"""Who may do what: each check runs inside the write transaction and raises Forbidden with the reason."""

from __future__ import annotations

import sqlite3

from storage.errors import Forbidden
from storage.models import Actor


def _name(actor: Actor) -> str:
    return f"user '{actor.login_name or actor.user_id}'"


def require_admin(actor: Actor, doing: str) -> None:
    """Allow administrators only."""
    if not actor.is_admin:
        raise Forbidden(f"{_name(actor)} may not {doing}: only administrators may")


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
