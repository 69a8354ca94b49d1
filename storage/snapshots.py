"""Snapshots of entities copied into event data, so event consumers never need current state."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage import readmodel


def user(conn: sqlite3.Connection, user_id: str) -> dict[str, Any]:
    u = readmodel.load_users(conn, [user_id])[user_id]
    return {k: u[k] for k in ("Id", "LoginName", "Email", "Title", "Department", "DirectoryObjectId")}


def course(conn: sqlite3.Connection, course_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM courses WHERE id = ?", (course_id,)).fetchone()
    return {
        "Id": row["id"],
        "Title": row["title"],
        "Url": row["site_url"] or row["url"],
        "CourseType": row["course_type"],
        "IsPublished": bool(row["is_published"]),
        "SiteId": row["site_id"],
        "WebId": row["web_id"],
        "CourseCatalogId": row["catalog_id"],
    }


def session(conn: sqlite3.Connection, session_id: str) -> dict[str, Any]:
    s = readmodel.load_sessions(conn, [session_id])[session_id]
    instructors = readmodel.ENTITY_SETS["CourseSessions"].navigations["Instructors"].load(conn, [session_id])
    ids = instructors[session_id]
    people = readmodel.load_users(conn, ids)
    s = dict(s)
    s["Instructors"] = [{k: people[i][k] for k in ("Id", "LoginName", "Email", "Title")} for i in ids if i in people]
    return s


def enrollment(conn: sqlite3.Connection, enrollment_id: str) -> dict[str, Any]:
    e = readmodel.load_enrollments(conn, [enrollment_id])[enrollment_id]
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
