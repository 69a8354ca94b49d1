"""Handlers for courses: create, read, list, update, delete, publish, provisioning status."""

from __future__ import annotations

from typing import Any

from connector import context, shaping
from connector.handlers import key, options
from storage import courses, lookups


def create_course(body: dict[str, Any]) -> dict[str, Any]:
    course = courses.create(context.services().db, context.actor(), body, context.base_url())
    # The operation promises the state at creation, which lists show only under $expand: a new course is
    # always Queued (the column's default), whatever the worker has done since.
    return {"@odata.context": shaping.metadata("Courses", entity=True), **course, "ProvisioningProgress": "Queued"}


def get_course_info(CourseId: str, **kwargs: Any) -> dict[str, Any]:
    course_id = key(CourseId)
    return shaping.one("Courses", course_id, options(kwargs), check=lambda c: lookups.course(c, course_id, "CourseId"))


def get_courses(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("Courses", options(kwargs))


def get_course_provisioning_status(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("Courses", options(kwargs))


def update_course(CourseId: str, body: dict[str, Any]) -> dict[str, Any]:
    course = courses.update(context.services().db, context.actor(), key(CourseId), body, context.base_url())
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
