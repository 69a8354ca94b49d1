"""Handlers for course sessions and attendance."""

from __future__ import annotations

from typing import Any

from connector import context, shaping
from connector.handlers import key, options
from storage import enrollments, lookups, sessions


def create_course_session(courseId: str, body: dict[str, Any]) -> dict[str, Any]:
    session = sessions.create(context.services().db, context.actor(), key(courseId), body)
    return {"@odata.context": shaping.metadata("CourseSessions", entity=True), **session}


def get_course_sessions(courseId: str, **kwargs: Any) -> dict[str, Any]:
    course_id = key(courseId)
    with context.services().db.read() as conn:
        lookups.course(conn, course_id, "courseId")
    return shaping.many("CourseSessions", options(kwargs), parent_key=course_id)


def get_course_session_by_id(Id: str, **kwargs: Any) -> dict[str, Any]:
    session_id = key(Id)
    return shaping.one("CourseSessions", session_id, options(kwargs), check=lambda c: lookups.session(c, session_id))


def update_course_session(Id: str, body: dict[str, Any]) -> dict[str, Any]:
    session = sessions.update(context.services().db, context.actor(), key(Id), body)
    return {"@odata.context": shaping.metadata("CourseSessions", entity=True), **session}


def delete_course_session(Id: str) -> tuple[None, int]:
    sessions.delete(context.services().db, context.actor(), key(Id))
    return None, 204


def record_attendance(Id: str, body: dict[str, Any]) -> dict[str, Any]:
    rows = enrollments.record_attendance(context.services().db, context.actor(), key(Id), body.get("Attendance") or [])
    return {"@odata.context": shaping.metadata("Attendance"), "value": rows}
