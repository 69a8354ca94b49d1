"""Enrollments: enroll, approve, reject, cancel, start, complete, retake, and attendance."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from storage import access, events, lookups, seats, snapshots
from storage.db import Database, iso, new_id, parse_iso
from storage.errors import Conflict, Forbidden, Invalid
from storage.models import Actor, EnrollmentStatus
from storage.odata import reading
from storage.timeutil import add_days

S = EnrollmentStatus


def _record(conn: sqlite3.Connection, type: str, actor: Actor, now: datetime, enrollment_id: str, **data: Any) -> None:
    e = conn.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
    events.record(
        conn,
        type,
        actor,
        now,
        {
            "enrollment": snapshots.enrollment(conn, enrollment_id),
            "course": snapshots.course(conn, e["course_id"]),
            "user": snapshots.user(conn, e["user_id"]),
            **data,
        },
        course_id=e["course_id"],
        user_id=e["user_id"],
        enrollment_id=enrollment_id,
        session_id=e["session_id"],
    )


def _session_of(
    conn: sqlite3.Connection, course: sqlite3.Row, session_id: str, now: datetime, target: str
) -> sqlite3.Row:
    session = lookups.session(conn, session_id, target)
    if session["course_id"] != course["id"]:
        raise Invalid(f"{target}: session {session_id!r} belongs to another course", target=target)
    deadline = parse_iso(session["enrollment_deadline"])
    if deadline is not None and now > deadline:
        raise Conflict(
            f"the enrollment deadline of session {session['title']!r} passed at {session['enrollment_deadline']}",
            target=target,
        )
    return session


def _register_requested(
    conn: sqlite3.Connection,
    actor: Actor,
    now: datetime,
    course: sqlite3.Row,
    enrollment_id: str,
    session_id: str | None,
) -> None:
    """Register a just-activated enrollment into its session(s) as the course's enrollment type says."""
    enrollment = conn.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
    if course["session_enrollment_type"] == "EnrollToAll":
        for session in conn.execute(
            "SELECT * FROM course_sessions WHERE course_id = ? AND is_deleted = 0"
            " AND (enrollment_deadline IS NULL OR enrollment_deadline >= ?) ORDER BY start_at, id",
            (course["id"], iso(now)),
        ).fetchall():
            seats.register(conn, actor, now, enrollment, session)
    elif session_id:
        session = lookups.session(conn, session_id, "courseSessionId")
        seats.register(conn, actor, now, enrollment, session)
    seats.refresh_enrollment(conn, now, enrollment_id)


def _due_at(course: sqlite3.Row, now: datetime) -> str | None:
    if not course["due_enabled"]:
        return None
    if course["due_fixed_date"]:
        return str(course["due_fixed_date"])
    if course["due_days_after_enrollment"] is not None:
        # add_days clamps a count stored before DaysAfterEnrollment had a range (3,000,000 overflowed here)
        return iso(add_days(now, course["due_days_after_enrollment"]))
    return None


def enroll(db: Database, actor: Actor, course_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Enroll a user by login name, optionally into a session; return the enrollment.

    Self-enrollment under an approval flow leaves it PendingApproval; a full session waitlists it.
    Raises Invalid, Forbidden, NotFound, or Conflict (already enrolled, deadline passed, course not open).
    """
    now = db.clock()
    with db.write() as conn:
        course = lookups.course(conn, course_id, "courseId")
        learner = lookups.user_by_login(conn, (body.get("userLoginName") or "").strip(), "userLoginName")
        access.require_self_or_course_admin(conn, actor, course_id, learner["id"], "enroll users")
        is_admin = access.is_course_admin(conn, actor, course_id)
        if course["provisioning"] == "Failed":
            raise Conflict(f"the course failed to provision ({course['provisioning_error']}); enrollments are closed")
        if not is_admin:
            end = course["publishing_end"]
            if not course["is_published"] or (course["publishing_enabled"] and end and end < iso(now)):
                raise Conflict(
                    "the course is not open for enrollment: it is unpublished or its publishing window ended"
                )
        session_id = body.get("courseSessionId") or None
        session = _session_of(conn, course, session_id, now, "courseSessionId") if session_id else None
        existing = conn.execute(
            "SELECT * FROM enrollments WHERE course_id = ? AND user_id = ? AND status NOT IN (4, 5)",
            (course_id, learner["id"]),
        ).fetchone()
        if existing is not None:
            if (
                session is not None
                and course["session_enrollment_type"] == "EnrollToMultiple"
                and existing["status"] != S.PendingApproval
            ):
                seats.register(conn, actor, now, existing, session)
                seats.refresh_enrollment(conn, now, existing["id"])
                return reading.load(conn, "Enrollments", [existing["id"]])[existing["id"]]
            raise Conflict(
                f"user {learner['login_name']!r} is already enrolled in this course (enrollment {existing['id']},"
                f" status {S(existing['status']).name}); use Retake to move them to another session",
                target="userLoginName",
            )
        pending = course["enrollment_flow"] != "AutomaticApproval" and not is_admin
        enrollment_id = new_id()
        conn.execute(
            "INSERT INTO enrollments (id, course_id, user_id, status, session_id, registered_at, due_at, created_at,"
            " modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                enrollment_id,
                course_id,
                learner["id"],
                int(S.PendingApproval if pending else S.NotStarted),
                session_id,
                iso(now),
                _due_at(course, now),
                iso(now),
                iso(now),
            ),
        )
        if pending:
            _record(conn, "EnrollmentRequested", actor, now, enrollment_id, EnrollmentFlow=course["enrollment_flow"])
        else:
            _register_requested(conn, actor, now, course, enrollment_id, session_id)
            _record(conn, "EnrollmentCreated", actor, now, enrollment_id)
        return reading.load(conn, "Enrollments", [enrollment_id])[enrollment_id]


def _may_decide(conn: sqlite3.Connection, actor: Actor, course: sqlite3.Row, learner_id: str) -> None:
    if access.is_course_admin(conn, actor, course["id"]):
        return
    if course["enrollment_flow"] == "LineManagerApproval" and actor.user_id:
        manager = conn.execute("SELECT manager_id FROM users WHERE id = ?", (learner_id,)).fetchone()
        if manager and manager["manager_id"] == actor.user_id:
            return
    raise Forbidden(
        f"user '{actor.login_name or actor.user_id}' may not decide this enrollment request: course admins,"
        " catalog admins and administrators may"
        + (", and the learner's manager" if course["enrollment_flow"] == "LineManagerApproval" else "")
    )


def _pending(conn: sqlite3.Connection, actor: Actor, enrollment_id: str) -> tuple[sqlite3.Row, sqlite3.Row]:
    """The pending enrollment `actor` may decide, and its course: NotFound, Forbidden, then Conflict, in that
    order, so nobody learns the state of an enrollment they may not decide."""
    e = access.readable_enrollment(conn, actor, enrollment_id)
    course = conn.execute("SELECT * FROM courses WHERE id = ?", (e["course_id"],)).fetchone()
    _may_decide(conn, actor, course, e["user_id"])
    if e["status"] != S.PendingApproval:
        raise Conflict(f"the enrollment is {S(e['status']).name}, not PendingApproval")
    return e, course


def approve(db: Database, actor: Actor, enrollment_id: str) -> None:
    """Approve a pending enrollment: it takes a seat in its session, or the waitlist when full."""
    now = db.clock()
    with db.write() as conn:
        e, course = _pending(conn, actor, enrollment_id)
        conn.execute(
            "UPDATE enrollments SET status = ?, decided_by = ?, modified_at = ? WHERE id = ?",
            (int(S.NotStarted), actor.user_id or actor.api_key_id, iso(now), enrollment_id),
        )
        session_id = e["session_id"]
        if (
            session_id
            and not conn.execute(
                "SELECT 1 FROM course_sessions WHERE id = ? AND is_deleted = 0", (session_id,)
            ).fetchone()
        ):
            session_id = None  # the session was deleted while the request waited
        _register_requested(conn, actor, now, course, enrollment_id, session_id)
        _record(conn, "EnrollmentApproved", actor, now, enrollment_id)


def reject(db: Database, actor: Actor, enrollment_id: str, message: str | None) -> None:
    """Refuse a pending enrollment; the message is kept as CancellationReason."""
    now = db.clock()
    with db.write() as conn:
        e, course = _pending(conn, actor, enrollment_id)
        conn.execute(
            "UPDATE enrollments SET status = ?, cancellation_reason = ?, decided_by = ?, modified_at = ? WHERE id = ?",
            (int(S.Rejected), message, actor.user_id or actor.api_key_id, iso(now), enrollment_id),
        )
        _record(conn, "EnrollmentRejected", actor, now, enrollment_id, Message=message)


def cancel_in(conn: sqlite3.Connection, e: sqlite3.Row, actor: Actor, now: datetime, reason: str | None) -> None:
    """Cancel inside the caller's transaction: free its seats (promoting the waitlist) and record it."""
    before = S(e["status"])
    seats.unregister_all(conn, actor, now, e["id"], reason or "Enrollment cancelled")
    conn.execute(
        "UPDATE enrollments SET status = ?, cancellation_reason = ?, modified_at = ? WHERE id = ?",
        (int(S.Cancelled), reason, iso(now), e["id"]),
    )
    _record(conn, "EnrollmentCancelled", actor, now, e["id"], Message=reason, PreviousStatus=before.name)


def cancel(db: Database, actor: Actor, enrollment_id: str, message: str | None) -> None:
    """Cancel an enrollment (the learner or a course admin). Raises Conflict when it is not cancellable."""
    now = db.clock()
    with db.write() as conn:
        e = access.readable_enrollment(conn, actor, enrollment_id, "EnrollmentId")
        access.require_self_or_course_admin(conn, actor, e["course_id"], e["user_id"], "cancel enrollments")
        if e["status"] in (S.Cancelled, S.Rejected, S.Completed):
            raise Conflict(f"the enrollment is {S(e['status']).name} and cannot be cancelled")
        cancel_in(conn, e, actor, now, message)


def start(db: Database, actor: Actor, enrollment_id: str) -> None:
    """Mark that the learner started an activity (NotStarted → InProgress; again is a no-op)."""
    now = db.clock()
    with db.write() as conn:
        e = access.readable_enrollment(conn, actor, enrollment_id)
        access.require_self_or_course_admin(conn, actor, e["course_id"], e["user_id"], "start enrollments")
        if e["status"] == S.InProgress:
            return
        if e["status"] != S.NotStarted:
            raise Conflict(f"the enrollment is {S(e['status']).name}; only NotStarted enrollments can start")
        conn.execute(
            "UPDATE enrollments SET status = ?, started_at = ?, modified_at = ? WHERE id = ?",
            (int(S.InProgress), iso(now), iso(now), enrollment_id),
        )
        _record(conn, "EnrollmentStarted", actor, now, enrollment_id)


def complete(db: Database, actor: Actor, enrollment_id: str) -> None:
    """Set the enrollment Completed (course staff); already completed is a no-op."""
    now = db.clock()
    with db.write() as conn:
        e = access.readable_enrollment(conn, actor, enrollment_id)
        access.require_course_staff(conn, actor, e["course_id"], "complete enrollments")
        if e["status"] == S.Completed:
            return
        if e["status"] not in (S.NotStarted, S.InProgress):
            raise Conflict(f"the enrollment is {S(e['status']).name}; only NotStarted or InProgress can complete")
        course = conn.execute("SELECT certificate_template_id FROM courses WHERE id = ?", (e["course_id"],)).fetchone()
        conn.execute(
            "UPDATE enrollments SET status = ?, started_at = coalesce(started_at, ?), completed_at = ?,"
            " certificate_id = ?, modified_at = ? WHERE id = ?",
            (
                int(S.Completed),
                iso(now),
                iso(now),
                new_id() if course["certificate_template_id"] else None,
                iso(now),
                enrollment_id,
            ),
        )
        _record(conn, "EnrollmentCompleted", actor, now, enrollment_id)


def retake(db: Database, actor: Actor, enrollment_id: str, session_id: str | None) -> None:
    """Reset progress to NotStarted, optionally moving the learner into another session of the course."""
    now = db.clock()
    with db.write() as conn:
        e = access.readable_enrollment(conn, actor, enrollment_id)
        access.require_course_staff(conn, actor, e["course_id"], "make learners retake")
        if e["status"] in (S.PendingApproval, S.Cancelled, S.Rejected):
            raise Conflict(f"the enrollment is {S(e['status']).name}; only active enrollments can be retaken")
        course = lookups.course(conn, e["course_id"], "CourseId")
        target = _session_of(conn, course, session_id, now, "courseSessionId") if session_id else None
        before = S(e["status"])
        conn.execute(
            "UPDATE enrollments SET status = ?, started_at = NULL, completed_at = NULL, certificate_id = NULL,"
            " modified_at = ? WHERE id = ?",
            (int(S.NotStarted), iso(now), enrollment_id),
        )
        if target is not None:
            for registration in conn.execute(
                "SELECT * FROM session_registrations WHERE enrollment_id = ? AND status <> 'Cancelled'"
                " AND session_id <> ? ORDER BY seq",
                (enrollment_id, target["id"]),
            ).fetchall():
                seats.unregister(conn, actor, now, registration, "Retake in another session")
            e = conn.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
            seats.register(conn, actor, now, e, target)
        seats.refresh_enrollment(conn, now, enrollment_id)
        _record(conn, "EnrollmentRetaken", actor, now, enrollment_id, PreviousStatus=before.name)


def record_attendance(db: Database, actor: Actor, session_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark Attended or NoShow per learner and session day (all days when none is named); return the rows."""
    if not items:
        raise Invalid("Attendance must list at least one learner", target="Attendance")
    now = db.clock()
    with db.write() as conn:
        session = lookups.session(conn, session_id)
        instructor = conn.execute(
            "SELECT 1 FROM session_instructors WHERE session_id = ? AND user_id = ?", (session_id, actor.user_id)
        ).fetchone()
        if not instructor:
            access.require_course_staff(conn, actor, session["course_id"], "record attendance")
        days = [
            r["id"]
            for r in conn.execute("SELECT id FROM session_days WHERE session_id = ? ORDER BY start_at", (session_id,))
        ]
        written: list[str] = []
        for i, item in enumerate(items):
            target = f"Attendance[{i}]"
            enrollment = _attendee(conn, session, item, target)
            status = item.get("Status")
            if status not in ("Attended", "NoShow"):
                raise Invalid(f"{target}.Status must be Attended or NoShow", target=f"{target}.Status")
            day_ids = days
            if item.get("CourseSessionDayId"):
                if item["CourseSessionDayId"] not in days:
                    raise Invalid(
                        f"{target}.CourseSessionDayId: no day {item['CourseSessionDayId']!r} in this session",
                        target=f"{target}.CourseSessionDayId",
                    )
                day_ids = [item["CourseSessionDayId"]]
            for day_id in day_ids:
                row = conn.execute(
                    "SELECT id, status FROM attendance WHERE day_id = ? AND enrollment_id = ?",
                    (day_id, enrollment["id"]),
                ).fetchone()
                if row is None:
                    attendance_id = new_id()
                    conn.execute(
                        "INSERT INTO attendance (id, session_id, day_id, enrollment_id, user_id, status, recorded_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (attendance_id, session_id, day_id, enrollment["id"], enrollment["user_id"], status, iso(now)),
                    )
                else:
                    attendance_id = row["id"]
                    conn.execute(
                        "UPDATE attendance SET status = ?, recorded_at = ? WHERE id = ?",
                        (status, iso(now), attendance_id),
                    )
                written.append(attendance_id)
                if row is None or row["status"] != status:
                    _record(
                        conn,
                        "AttendanceRecorded",
                        actor,
                        now,
                        enrollment["id"],
                        session=snapshots.session(conn, session_id),
                        CourseSessionDayId=day_id,
                        Status=status,
                        PreviousStatus=row["status"] if row else None,
                    )
        loaded = reading.load(conn, "Attendance", written)
        return [loaded[i] for i in dict.fromkeys(written)]


def _attendee(conn: sqlite3.Connection, session: sqlite3.Row, item: dict[str, Any], target: str) -> sqlite3.Row:
    if item.get("EnrollmentId"):
        e: sqlite3.Row | None = conn.execute(
            "SELECT * FROM enrollments WHERE id = ?", (item["EnrollmentId"],)
        ).fetchone()
        if e is None:
            raise Invalid(
                f"{target}.EnrollmentId: no enrollment {item['EnrollmentId']!r}", target=f"{target}.EnrollmentId"
            )
    elif item.get("UserLoginName"):
        user = lookups.user_by_login(conn, item["UserLoginName"], f"{target}.UserLoginName")
        e = conn.execute(
            "SELECT * FROM enrollments WHERE course_id = ? AND user_id = ? AND status NOT IN (4, 5)",
            (session["course_id"], user["id"]),
        ).fetchone()
        if e is None:
            raise Invalid(
                f"{target}: {item['UserLoginName']!r} is not enrolled in this course", target=f"{target}.UserLoginName"
            )
    else:
        raise Invalid(f"{target} needs an EnrollmentId or a UserLoginName", target=target)
    registered = conn.execute(
        "SELECT 1 FROM session_registrations WHERE session_id = ? AND enrollment_id = ? AND status = 'Registered'",
        (session["id"], e["id"]),
    ).fetchone()
    if not registered:
        raise Invalid(f"{target}: the learner does not hold a seat in this session", target=target)
    return e
