"""The Enrollments entity set: the reference's 21 properties plus status, sessions and waitlist place."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from storage.models import EnrollmentStatus
from storage.odata.entities.common import col, rows_by
from storage.odata.model import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    GUID,
    INT32,
    STRING,
    Coded,
    EntitySet,
    Link,
    Navigation,
    Property,
    ReadContext,
)

_COMPLETED = int(EnrollmentStatus.Completed)
_CAN_UNENROLL = ", ".join(
    str(int(s))
    for s in (
        EnrollmentStatus.PendingApproval,
        EnrollmentStatus.NotStarted,
        EnrollmentStatus.InProgress,
        EnrollmentStatus.Waitlisted,
    )
)


def _coded(name: str, text_of: Callable[[EnrollmentStatus], str]) -> Property:
    """A text shown for the status code: read as the text, filtered on the codes that show it."""
    groups: dict[str, list[int]] = {}
    for status in EnrollmentStatus:
        groups.setdefault(text_of(status), []).append(int(status))
    cases = " ".join(f"WHEN {int(s)} THEN '{text_of(s)}'" for s in EnrollmentStatus)
    return Property(
        name,
        STRING,
        sql=f"CASE {{t}}.status {cases} END",
        coded=Coded("{t}.status", {text: tuple(codes) for text, codes in groups.items()}),
    )


def _sessions(conn: sqlite3.Connection, ids: Sequence[str], ctx: ReadContext | None) -> dict[str, Any]:
    """The sessions each enrollment is registered or waitlisted in, in the order it joined them."""
    sessions: dict[str, list[str]] = defaultdict(list)
    for reg in rows_by(
        conn,
        "SELECT enrollment_id, session_id FROM session_registrations"
        " WHERE enrollment_id IN ({ids}) AND status <> 'Cancelled' ORDER BY seq",
        ids,
    ):
        sessions[reg["enrollment_id"]].append(reg["session_id"])
    return {i: sessions.get(i, []) for i in ids}


def _waitlist_place(conn: sqlite3.Connection, ids: Sequence[str], ctx: ReadContext | None) -> dict[str, Any]:
    """The place of an enrollment's first waitlisted registration in its session's waitlist, counted on the
    (session_id, status, seq) index as storage.odata.entities.sessions.waitlist_positions does."""
    places: dict[str, int] = {}
    for reg in rows_by(
        conn,
        "SELECT r.enrollment_id, (SELECT count(*) FROM session_registrations w WHERE w.session_id = r.session_id"
        " AND w.status = 'Waitlisted' AND w.seq <= r.seq) FROM session_registrations r"
        " WHERE r.enrollment_id IN ({ids}) AND r.status = 'Waitlisted' ORDER BY r.seq",
        ids,
    ):
        places.setdefault(reg[0], reg[1])
    return {i: places.get(i) for i in ids}


def _when_completed(value: str, otherwise: str) -> str:
    return f"CASE WHEN {{t}}.status = {_COMPLETED} THEN {value} ELSE {otherwise} END"


ENROLLMENTS = EntitySet(
    name="Enrollments",
    type_name="Enrollment",
    key=("Id",),
    table="enrollments",
    # Every enrollment has its user and course (foreign keys), so these joins keep every row.
    joins={
        "user": "JOIN users {t}_user ON {t}_user.id = {t}.user_id",
        "course": "JOIN courses {t}_course ON {t}_course.id = {t}.course_id",
    },
    default_order="{t}.registered_at",
    properties=(
        col("Id", GUID, "id"),
        col("CourseId", GUID, "course_id"),
        col("UserId", GUID, "user_id"),
        Property("UserLoginName", STRING, sql="{t}_user.login_name", joins=("user",)),
        Property("Roles", STRING, collection=True, sql="""'["Learner"]'"""),
        col("RegistrationDate", DATETIME, "registered_at"),
        col("StartDate", DATETIME, "started_at", nullable=True),
        col("CompletionDate", DATETIME, "completed_at", nullable=True),
        _coded("RegistrationStatus", lambda s: s.registration_status),
        _coded("CoursePassingStatus", lambda s: s.passing_status),
        col("CertificateId", STRING, "certificate_id", nullable=True),
        Property("CEU", INT32, sql=_when_completed("CAST({t}_course.ceu AS INTEGER)", "0"), joins=("course",)),
        Property("DecimalCEU", DOUBLE, sql=_when_completed("{t}_course.ceu", "0.0"), joins=("course",)),
        col("DueDate", DATETIME, "due_at", nullable=True),
        col("EndDate", DATETIME, "completed_at", nullable=True),
        # Not the literal `0`: SQLite reads `ORDER BY 0` as a column position and fails.
        Property("IsPartOfTrainingPlan", BOOLEAN, sql="(0 = 1)"),
        Property("CanUnenroll", BOOLEAN, sql=f"({{t}}.status IN ({_CAN_UNENROLL}))"),
        col("CancellationReason", STRING, "cancellation_reason", nullable=True),
        col("courseSessionId", GUID, "session_id", nullable=True),
        col("EnrollmentStatus", INT32, "status"),
        _coded("EnrollmentStatusText", lambda s: s.name),
        Property("CourseSessionIds", GUID, collection=True, load=_sessions),
        Property("WaitlistPosition", INT32, nullable=True, load=_waitlist_place),
        col("ModifiedAt", DATETIME, "modified_at"),
    ),
    navigations=(
        Navigation("Course", "Courses", many=False, link=Link("column", column="course_id")),
        Navigation("User", "Users", many=False, link=Link("column", column="user_id")),
        Navigation(
            "CourseSession", "CourseSessions", many=False, nullable=True, link=Link("column", column="session_id")
        ),
        Navigation(
            "Registrations",
            "SessionRegistrations",
            many=True,
            link=Link("children", column="enrollment_id", where="{c}.status <> 'Cancelled'", order="{c}.seq"),
        ),
        Navigation(
            "Attendance",
            "Attendance",
            many=True,
            link=Link("children", column="enrollment_id", order="{c}.recorded_at"),
        ),
    ),
)
