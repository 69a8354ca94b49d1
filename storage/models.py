"""Plain frozen records that storage verbs return, and the enumerations of the domain."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal


class EnrollmentStatus(IntEnum):
    """The published EnrollmentStatus mapping (docs/design.md); values never change."""

    PendingApproval = 0
    NotStarted = 1
    InProgress = 2
    Completed = 3
    Cancelled = 4
    Rejected = 5
    Waitlisted = 6

    @property
    def registration_status(self) -> str:
        return {
            EnrollmentStatus.PendingApproval: "PendingApproval",
            EnrollmentStatus.Cancelled: "Cancelled",
            EnrollmentStatus.Rejected: "Rejected",
            EnrollmentStatus.Waitlisted: "Waitlisted",
        }.get(self, "Registered")

    @property
    def passing_status(self) -> str:
        return {
            EnrollmentStatus.InProgress: "InProgress",
            EnrollmentStatus.Completed: "Passed",
            EnrollmentStatus.Cancelled: "NotPassed",
            EnrollmentStatus.Rejected: "NotPassed",
        }.get(self, "NotStarted")

    @property
    def is_active(self) -> bool:
        return self not in (EnrollmentStatus.Cancelled, EnrollmentStatus.Rejected)


COURSE_TYPES = ("ELearning", "ClassRoom", "Webinar", "TrainingPlan")
ENROLLMENT_FLOWS = (
    "AutomaticApproval",
    "LineManagerApproval",
    "LMSAdministratorsApproval",
    "CustomApproval",
    "ExternalWebhookApproval",
)
SESSION_ENROLLMENT_TYPES = ("EnrollToSingle", "EnrollToAll", "EnrollToMultiple")
ROLES = ("Learner", "Administrator")
PROVISIONING_STATES = ("Queued", "ReservingUrl", "CreatingFolder", "Created", "Failed")


@dataclass(frozen=True)
class Actor:
    """Who performs an operation: an API key acting as itself, a user, or the system.

    `is_admin`: may do everything an administrator may (a Full Control key acting as itself, or a user whose
    Role is Administrator acting through one); a Read Only key is never an administrator.
    `reads_all`: reads every row the API lists (keys acting as themselves and Administrator users); other
    users read enrollments, registrations and attendance within their scope (storage.access.enrollment_scope).
    """

    kind: Literal["apikey", "user", "system", "cli"]
    api_key_id: str | None = None
    user_id: str | None = None
    login_name: str | None = None
    is_admin: bool = False
    reads_all: bool = False

    def __post_init__(self) -> None:
        if self.is_admin and not self.reads_all:
            object.__setattr__(self, "reads_all", True)

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "api_key_id": self.api_key_id, "user_id": self.user_id},
            separators=(",", ":"),
        )


SYSTEM = Actor(kind="system", is_admin=True)
CLI = Actor(kind="cli", is_admin=True)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    access: Literal["full", "read"]
    key_prefix: str
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class NewApiKey:
    """An API key just created: the only time the secret is available."""

    key: ApiKey
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    type: str
    occurred_at: str
    actor: dict[str, Any]
    catalog_id: str | None
    course_id: str | None
    session_id: str | None
    enrollment_id: str | None
    user_id: str | None
    data: dict[str, Any]
