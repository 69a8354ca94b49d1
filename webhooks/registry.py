"""The subscription registry: checks callback URLs, then records subscriptions in storage."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from storage import subscriptions
from storage.db import Database
from storage.errors import Invalid
from storage.models import Actor

# The triggers of the LMS365 connector; each is `POST /webhooks/subscribe/{Event}`.
EVENTS = (
    "EnrollmentApprovalRequest",
    "CourseEnrollment",
    "CourseUnenrollment",
    "CourseStarted",
    "CourseCompleted",
    "CoursePublished",
    "CourseUnpublished",
    "CourseCreated",
    "CourseDeleted",
    "UserCreated",
    "UserDeleted",
)


def check_callback(url: Any) -> str:
    """Return the callback URL if it is an absolute http(s) URL with a host; raise Invalid otherwise."""
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(text) > 4096:
        raise Invalid("WebHookUri must be an absolute https URL (the flow's callback URL)", target="WebHookUri")
    return text


def subscribe(db: Database, actor: Actor, api_key_id: str, event: str, callback: Any) -> tuple[dict[str, Any], bool]:
    """Subscribe a callback to an event; return (subscription, created). Raises Invalid for a bad URL."""
    if event not in EVENTS:
        raise Invalid(f"unknown event {event!r}", target="Event")
    return subscriptions.subscribe(db, actor, api_key_id, event, check_callback(callback))
