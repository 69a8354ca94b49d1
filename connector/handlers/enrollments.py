"""Handlers for enrollments: enroll, read, list, and the bound actions."""

from __future__ import annotations

from typing import Any

from connector import context, shaping
from connector.handlers import key, options
from storage import access, enrollments


def enroll_user_to_course(courseId: str, body: dict[str, Any]) -> dict[str, Any]:
    enrollment = enrollments.enroll(context.services().db, context.actor(), key(courseId), body)
    return {"@odata.context": shaping.metadata("Enrollments", entity=True), **enrollment}


def get_enrollment_by_id(EnrollmentId: str, **kwargs: Any) -> dict[str, Any]:
    enrollment_id = key(EnrollmentId)
    return shaping.one(
        "Enrollments",
        enrollment_id,
        options(kwargs),
        check=lambda c: access.readable_enrollment(c, context.actor(), enrollment_id, "EnrollmentId"),
    )


def get_enrollments(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("Enrollments", options(kwargs))


def _message(body: dict[str, Any] | None) -> str | None:
    return (body or {}).get("message") or None


def approve_enrollment_request(Id: str) -> tuple[None, int]:
    enrollments.approve(context.services().db, context.actor(), key(Id))
    return None, 204


def reject_enrollment_request(Id: str, body: dict[str, Any] | None = None) -> tuple[None, int]:
    enrollments.reject(context.services().db, context.actor(), key(Id), _message(body))
    return None, 204


def cancel_enrollment(EnrollmentId: str, body: dict[str, Any] | None = None) -> tuple[None, int]:
    enrollments.cancel(context.services().db, context.actor(), key(EnrollmentId), _message(body))
    return None, 204


def complete_enrollment_by_id(Id: str) -> tuple[None, int]:
    enrollments.complete(context.services().db, context.actor(), key(Id))
    return None, 204


def retake_enrollment_by_id(Id: str, body: dict[str, Any] | None = None) -> tuple[None, int]:
    enrollments.retake(context.services().db, context.actor(), key(Id), (body or {}).get("courseSessionId") or None)
    return None, 204


def start_enrollment(Id: str) -> tuple[None, int]:
    enrollments.start(context.services().db, context.actor(), key(Id))
    return None, 204
