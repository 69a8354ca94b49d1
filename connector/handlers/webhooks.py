"""Handlers for the webhook triggers: subscribe (201 + Location), inspect and DELETE a subscription."""

from __future__ import annotations

from typing import Any

from connector import context
from connector.handlers import key
from storage import subscriptions
from webhooks import registry


def _subscribe(event: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    sub, created = registry.subscribe(
        context.services().db, context.actor(), context.api_key().id, event, body.get("WebHookUri")
    )
    location = f"{context.base_url()}/webhooks/subscriptions({sub['Id']})"
    return {**sub, "Location": location}, 201 if created else 200, {"Location": location}


def enrollment_approval_request(body: dict[str, Any]) -> Any:
    return _subscribe("EnrollmentApprovalRequest", body)


def course_enrollment(body: dict[str, Any]) -> Any:
    return _subscribe("CourseEnrollment", body)


def course_unenrollment(body: dict[str, Any]) -> Any:
    return _subscribe("CourseUnenrollment", body)


def course_started(body: dict[str, Any]) -> Any:
    return _subscribe("CourseStarted", body)


def course_completed(body: dict[str, Any]) -> Any:
    return _subscribe("CourseCompleted", body)


def course_published(body: dict[str, Any]) -> Any:
    return _subscribe("CoursePublished", body)


def course_unpublished(body: dict[str, Any]) -> Any:
    return _subscribe("CourseUnpublished", body)


def course_created(body: dict[str, Any]) -> Any:
    return _subscribe("CourseCreated", body)


def course_deleted(body: dict[str, Any]) -> Any:
    return _subscribe("CourseDeleted", body)


def user_created(body: dict[str, Any]) -> Any:
    return _subscribe("UserCreated", body)


def user_deleted(body: dict[str, Any]) -> Any:
    return _subscribe("UserDeleted", body)


def get_webhook_subscription(Id: str) -> dict[str, Any]:
    sub = subscriptions.get(context.services().db, key(Id))
    return {**sub, "Location": f"{context.base_url()}/webhooks/subscriptions({sub['Id']})"}


def delete_webhook_subscription(Id: str) -> tuple[None, int]:
    subscriptions.delete(context.services().db, context.actor(), key(Id))
    return None, 204
