"""Handlers for courses: create, read, list, update, delete, publish, provisioning status."""

from __future__ import annotations

from typing import Any

from connector import context, shaping
from connector.handlers import key, options
from storage import courses, lookups


def _exists(course_id: str) -> str:
    with context.services().db.read() as conn:
        lookups.course(conn, course_id, "CourseId")
    return course_id


def create_course(body: dict[str, Any]) -> dict[str, Any]:
    course = courses.create(context.services().db, context.actor(), body)
    return {"@odata.context": shaping.metadata("Courses", entity=True), **course}


def get_course_info(CourseId: str, **kwargs: Any) -> dict[str, Any]:
    return shaping.one("Courses", _exists(key(CourseId)), options(kwargs))


def get_courses(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("Courses", options(kwargs), hide_deleted="courses.is_deleted = 0")


def get_course_provisioning_status(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("Courses", options(kwargs), hide_deleted="courses.is_deleted = 0")


def update_course(CourseId: str, body: dict[str, Any]) -> dict[str, Any]:
    course = courses.update(context.services().db, context.actor(), key(CourseId), body)
    return {"@odata.context": shaping.metadata("Courses", entity=True), **course}


def delete_course(CourseId: str) -> tuple[None, int]:
    courses.delete(context.services().db, context.actor(), key(CourseId))
    return None, 204


def publish_course(CourseId: str) -> tuple[None, int]:
    courses.set_published(context.services().db, context.actor(), key(CourseId), True)
    return None, 204


def unpublish_course(CourseId: str) -> tuple[None, int]:
    courses.set_published(context.services().db, context.actor(), key(CourseId), False)
    return None, 204
