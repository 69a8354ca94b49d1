"""Snapshots of entities copied into event data, so event consumers never need current state."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.odata import reading
from storage.odata.entities.common import absolute_link


def user(conn: sqlite3.Connection, user_id: str) -> dict[str, Any]:
    u = reading.load(conn, "Users", [user_id])[user_id]
    return {k: u[k] for k in ("Id", "LoginName", "Email", "Title", "Department", "DirectoryObjectId")}


def course(conn: sqlite3.Connection, course_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT c.*, cat.base_url AS catalog_base_url FROM courses c JOIN catalogs cat ON cat.id = c.catalog_id"
        " WHERE c.id = ?",
        (course_id,),
    ).fetchone()
    return {
        "Id": row["id"],
        "Title": row["title"],
        # Events have no request to take a base URL from: the one the catalog was created under.
        "Url": absolute_link(row["site_url"] or row["url"], row["catalog_base_url"] or ""),
        "CourseType": row["course_type"],
        "IsPublished": bool(row["is_published"]),
        "SiteId": row["site_id"],
        "WebId": row["web_id"],
        "CourseCatalogId": row["catalog_id"],
    }


def session(conn: sqlite3.Connection, session_id: str) -> dict[str, Any]:
    s = reading.load(conn, "CourseSessions", [session_id])[session_id]
    instructors = reading.navigate(conn, "CourseSessions", "Instructors", [session_id])
    ids = instructors[session_id]
    people = reading.load(conn, "Users", ids)
    s = dict(s)
    s["Instructors"] = [{k: people[i][k] for k in ("Id", "LoginName", "Email", "Title")} for i in ids if i in people]
    return s


def enrollment(conn: sqlite3.Connection, enrollment_id: str) -> dict[str, Any]:
    e = reading.load(conn, "Enrollments", [enrollment_id])[enrollment_id]
    return {
        k: e[k]
        for k in (
            "Id",
            "EnrollmentStatus",
            "EnrollmentStatusText",
            "courseSessionId",
            "CourseSessionIds",
            "CancellationReason",
        )
    }
