"""Course sessions (instructor-led): days, time zone, room, seats, instructors; create, update, delete."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from storage import access, events, lookups, names, seats, snapshots
from storage.db import Database, iso, new_id, parse_iso, update_sql
from storage.errors import Conflict, Invalid
from storage.models import Actor
from storage.odata import reading
from storage.timeutil import parse_count, parse_when, zone

SESSION_COURSE_TYPES = ("ClassRoom", "Webinar")
MAX_URL = 2048  # MeetingUrl's maxLength in the document: an absolute http(s) URL (storage.names.web_url)


# MaxAttendees' maximum in the document: a session's registrations are one of the uncapped collections,
# which declare 100,000 items (docs/limits.md).
MAX_ATTENDEES = 100_000


def _max_attendees(value: Any) -> int | None:
    """Seats as stored: a whole number from 1 to MAX_ATTENDEES, or None (no limit) for null or ""."""
    return parse_count(value, "MaxAttendees", low=1, high=MAX_ATTENDEES)


def _room(value: Any) -> str | None:
    if not value:
        return None
    source = value.get("Source") or "Unknown"
    if source not in ("Unknown", "Exchange"):
        raise Invalid("Room.Source must be Unknown or Exchange", target="Room.Source")
    room = {k: value.get(k) for k in ("EmailAddress", "Title", "Location")}
    room["Source"] = source
    return json.dumps(room, separators=(",", ":"))


def _schedule(
    body: dict[str, Any], time_zone: str, current_days: list[sqlite3.Row] | None
) -> list[tuple[datetime, datetime]] | None:
    """The session's days from the body, in order: `Days`, or one day from StartDate/EndDate; None if unchanged.

    Times without a UTC offset are wall-clock times in `time_zone` (storage.timeutil.local_instant: one inside
    a daylight-saving gap is refused, a repeated one is its first occurrence). StartDate and EndDate sent
    with Days must be the first day's start and the last day's end: a body that says two things is refused,
    not read one way. On a session of several days, StartDate/EndDate alone may only repeat what they are
    (a body copied from a read); moving them needs Days. A TimeZone alone changes no instant.
    Raises Invalid naming the field.
    """
    tz = zone(time_zone)

    def when(value: Any, target: str) -> datetime | None:
        return parse_when(value, target, tz, zone_name=time_zone)

    start = when(body.get("StartDate"), "StartDate") if "StartDate" in body else None
    end = when(body.get("EndDate"), "EndDate") if "EndDate" in body else None
    if body.get("Days") == []:
        # A session has at least one day: an empty list is a flow's Select that found none, not "unchanged".
        raise Invalid("Days must list at least one day; leave Days out to keep the schedule", target="Days")
    if body.get("Days"):
        indexed = []
        for i, day in enumerate(body["Days"]):
            day_start = when(day.get("StartDate"), f"Days[{i}].StartDate")
            day_end = when(day.get("EndDate"), f"Days[{i}].EndDate")
            if day_start is None or day_end is None:
                raise Invalid(f"Days[{i}] needs a StartDate and an EndDate", target=f"Days[{i}]")
            indexed.append((day_start, day_end, i))
        indexed.sort()
        for n, (day_start, day_end, i) in enumerate(indexed):
            if day_end <= day_start:
                raise Invalid(f"Days[{i}]: the end must be after the start", target=f"Days[{i}]")
            if n and day_start < indexed[n - 1][1]:
                raise Invalid(f"Days[{i}] overlaps Days[{indexed[n - 1][2]}]", target=f"Days[{i}]")
        days = [(day_start, day_end) for day_start, day_end, _ in indexed]
        _agree(start, days[0][0], "StartDate", "the first day starts")
        _agree(end, days[-1][1], "EndDate", "the last day ends")
        return days
    if start is None and end is None:
        if current_days is None and ("StartDate" in body or "EndDate" in body or "TimeZone" in body):
            raise Invalid("StartDate is required", target="StartDate")
        return None
    if current_days:
        first = datetime.fromisoformat(current_days[0]["start_at"].replace("Z", "+00:00"))
        last = datetime.fromisoformat(current_days[-1]["end_at"].replace("Z", "+00:00"))
        if len(current_days) > 1:
            if start in (None, first) and end in (None, last):
                return None  # StartDate/EndDate as they are: nothing to reschedule
            raise Invalid(f"this session has {len(current_days)} days: send Days to reschedule it", target="Days")
        start, end = start or first, end or last
    if start is None:
        raise Invalid("StartDate is required", target="StartDate")
    if end is None:
        raise Invalid("EndDate is required", target="EndDate")
    if end <= start:
        raise Invalid("EndDate: the end must be after the start", target="EndDate")
    return [(start, end)]


def _agree(sent: datetime | None, actual: datetime, target: str, what: str) -> None:
    """Refuse a StartDate/EndDate that contradicts the Days sent with it."""
    if sent is not None and sent != actual:
        raise Invalid(
            f"{target} {iso(sent)} contradicts Days: {what} at {iso(actual)}; send the same instant or leave"
            f" {target} out",
            target=target,
        )


def _deadline_within(deadline: datetime | None, end: datetime | None, target: str) -> None:
    """Refuse an EnrollmentDeadline after the session's end (its last day's end): nobody can register for a
    session that is over. `target` is the field that made them disagree (EnrollmentDeadline, or EndDate or
    Days when a PATCH moves the end before a deadline already set)."""
    if deadline is not None and end is not None and deadline > end:
        raise Invalid(
            f"{target}: the enrollment deadline {iso(deadline)} is after the session ends at {iso(end)};"
            " set EnrollmentDeadline at or before the end",
            target=target,
        )


def _write_days(conn: sqlite3.Connection, session_id: str, days: list[tuple[datetime, datetime]]) -> None:
    """Replace the days, keeping ids: a day whose times did not change keeps its id (attendance points at it),
    and the remaining new days take the remaining old ids in order of time, so a day moved by an hour is the
    same day moved (its calendar events are updated, not removed and added) rather than a new one."""
    rows = conn.execute(
        "SELECT id, start_at, end_at FROM session_days WHERE session_id = ? ORDER BY start_at, id", (session_id,)
    ).fetchall()
    old = {(r["start_at"], r["end_at"]): r["id"] for r in rows}
    wanted = [(iso(start), iso(end)) for start, end in days]
    unchanged = {key for key in wanted if key in old}
    spare = [r["id"] for r in rows if (r["start_at"], r["end_at"]) not in unchanged]
    for key in wanted:
        if key in unchanged:
            continue
        if spare:
            conn.execute("UPDATE session_days SET start_at = ?, end_at = ? WHERE id = ?", (*key, spare.pop(0)))
        else:
            conn.execute(
                "INSERT INTO session_days (id, session_id, start_at, end_at) VALUES (?, ?, ?, ?)",
                (new_id(), session_id, *key),
            )
    for day_id in spare:
        conn.execute("DELETE FROM attendance WHERE day_id = ?", (day_id,))
        conn.execute("DELETE FROM session_days WHERE id = ?", (day_id,))
    conn.execute(
        "UPDATE course_sessions SET start_at = ?, end_at = ? WHERE id = ?",
        (iso(days[0][0]), iso(days[-1][1]), session_id),
    )


def create(db: Database, actor: Actor, course_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a session of a ClassRoom or Webinar course; return it. EnrollToAll courses register it for all."""
    title = (body.get("Title") or "").strip()
    if not title:
        raise Invalid("Title must not be empty", target="Title")
    time_zone = body.get("TimeZone") or ""
    zone(time_zone)
    days = _schedule({**body, "TimeZone": time_zone}, time_zone, None)
    assert days is not None
    deadline = parse_when(body.get("EnrollmentDeadline"), "EnrollmentDeadline", zone(time_zone), zone_name=time_zone)
    _deadline_within(deadline, days[-1][1], "EnrollmentDeadline")
    meeting_url = names.web_url(body.get("MeetingUrl"), "MeetingUrl", limit=MAX_URL)
    now = db.clock()
    session_id = new_id()
    with db.write() as conn:
        course = lookups.course(conn, course_id, "courseId")
        access.require_course_admin(conn, actor, course_id, "manage sessions of this course")
        if course["course_type"] not in SESSION_COURSE_TYPES:
            raise Conflict(f"sessions belong to ClassRoom and Webinar courses; this course is {course['course_type']}")
        instructors = lookups.users_by_login(conn, body.get("InstructorLogins"), "InstructorLogins")
        conn.execute(
            "INSERT INTO course_sessions (id, course_id, title, start_at, end_at, time_zone, details, room,"
            " meeting_url, max_attendees, enrollment_deadline, created_at, modified_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                course_id,
                title,
                iso(days[0][0]),
                iso(days[-1][1]),
                time_zone,
                body.get("Details"),
                _room(body.get("Room")),
                meeting_url,
                _max_attendees(body.get("MaxAttendees")),
                iso(deadline),
                iso(now),
                iso(now),
            ),
        )
        _write_days(conn, session_id, days)
        conn.executemany(
            "INSERT INTO session_instructors (session_id, user_id) VALUES (?, ?)",
            [(session_id, u) for u in instructors],
        )
        events.record(
            conn,
            "CourseSessionCreated",
            actor,
            now,
            {"session": snapshots.session(conn, session_id), "course": snapshots.course(conn, course_id)},
            catalog_id=course["catalog_id"],
            course_id=course_id,
            session_id=session_id,
        )
        if course["session_enrollment_type"] == "EnrollToAll":
            session = conn.execute("SELECT * FROM course_sessions WHERE id = ?", (session_id,)).fetchone()
            for e in conn.execute(
                "SELECT * FROM enrollments WHERE course_id = ? AND status IN (1, 2, 6)", (course_id,)
            ).fetchall():
                seats.register(conn, actor, now, e, session)
                seats.refresh_enrollment(conn, now, e["id"])
        return reading.load(conn, "CourseSessions", [session_id])[session_id]


def update(db: Database, actor: Actor, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Change the given properties; raising MaxAttendees promotes the waitlist. Return the session."""
    now = db.clock()
    with db.write() as conn:
        row = lookups.session(conn, session_id)
        access.require_course_admin(conn, actor, row["course_id"], "manage sessions of this course")
        before = snapshots.session(conn, session_id)
        time_zone = body.get("TimeZone") or row["time_zone"]
        sets: dict[str, Any] = {}
        if "Title" in body:
            if not (body["Title"] or "").strip():
                raise Invalid("Title must not be empty", target="Title")
            sets["title"] = body["Title"].strip()
        if "TimeZone" in body:
            zone(time_zone)
            sets["time_zone"] = time_zone
        if "EnrollmentDeadline" in body:
            sets["enrollment_deadline"] = iso(
                parse_when(body["EnrollmentDeadline"], "EnrollmentDeadline", zone(time_zone), zone_name=time_zone)
            )
        if "Room" in body:
            sets["room"] = _room(body["Room"])
        if "MeetingUrl" in body:
            sets["meeting_url"] = names.web_url(body["MeetingUrl"], "MeetingUrl", limit=MAX_URL)
        if "Details" in body:
            sets["details"] = body["Details"]
        if "MaxAttendees" in body:
            sets["max_attendees"] = _max_attendees(body["MaxAttendees"])
            taken = seats.seats_taken(conn, session_id)
            if sets["max_attendees"] is not None and sets["max_attendees"] < taken:
                raise Conflict(
                    f"{taken} learners hold seats in this session: MaxAttendees cannot go below {taken}"
                    " (cancel registrations first)",
                    target="MaxAttendees",
                )
        current_days = conn.execute(
            "SELECT * FROM session_days WHERE session_id = ? ORDER BY start_at", (session_id,)
        ).fetchall()
        days = _schedule(body, time_zone, current_days)
        end = parse_iso(row["end_at"])
        if days is not None and days[-1][1] != end:
            end = days[-1][1]
            target = "EnrollmentDeadline" if "EnrollmentDeadline" in body else "Days" if body.get("Days") else "EndDate"
            _deadline_within(parse_iso(sets.get("enrollment_deadline", row["enrollment_deadline"])), end, target)
        elif "EnrollmentDeadline" in body:
            _deadline_within(parse_iso(sets["enrollment_deadline"]), end, "EnrollmentDeadline")
        sets["modified_at"] = iso(now)
        conn.execute(
            update_sql("course_sessions", sets),
            [*sets.values(), session_id],
        )
        if days is not None:
            _write_days(conn, session_id, days)
        if "InstructorLogins" in body:
            conn.execute("DELETE FROM session_instructors WHERE session_id = ?", (session_id,))
            conn.executemany(
                "INSERT INTO session_instructors (session_id, user_id) VALUES (?, ?)",
                [(session_id, u) for u in lookups.users_by_login(conn, body["InstructorLogins"], "InstructorLogins")],
            )
        after = snapshots.session(conn, session_id)
        ignore = {"ModifiedAt", "AttendeesCount", "WaitlistCount"}
        changes = {
            k: {"before": before[k], "after": after[k]} for k in after if k not in ignore and before[k] != after[k]
        }
        if changes:
            events.record(
                conn,
                "CourseSessionUpdated",
                actor,
                now,
                {
                    "session": after,
                    "before": before,
                    "changes": changes,
                    "course": snapshots.course(conn, row["course_id"]),
                },
                course_id=row["course_id"],
                session_id=session_id,
            )
        seats.promote(conn, actor, now, session_id)
        return reading.load(conn, "CourseSessions", [session_id])[session_id]


def delete_in(conn: sqlite3.Connection, actor: Actor, now: datetime, session_id: str) -> None:
    """Delete a session inside the caller's transaction: every registration is unregistered first."""
    row = conn.execute("SELECT * FROM course_sessions WHERE id = ?", (session_id,)).fetchone()
    snapshot = snapshots.session(conn, session_id)
    registrations = conn.execute(
        "SELECT * FROM session_registrations WHERE session_id = ? AND status <> 'Cancelled' ORDER BY seq", (session_id,)
    ).fetchall()
    conn.execute("UPDATE course_sessions SET is_deleted = 1, modified_at = ? WHERE id = ?", (iso(now), session_id))
    for registration in registrations:
        seats.unregister(conn, actor, now, registration, "Session deleted")
        seats.refresh_enrollment(conn, now, registration["enrollment_id"])
    conn.execute(
        "UPDATE enrollments SET session_id = NULL, modified_at = ? WHERE session_id = ? AND status = 0",
        (iso(now), session_id),
    )
    events.record(
        conn,
        "CourseSessionDeleted",
        actor,
        now,
        {
            "session": snapshot,
            "course": snapshots.course(conn, row["course_id"]),
            "UnregisteredEnrollmentIds": [r["enrollment_id"] for r in registrations],
        },
        course_id=row["course_id"],
        session_id=session_id,
    )


def delete(db: Database, actor: Actor, session_id: str) -> None:
    """Delete a session; its learners are unregistered (their enrollments in the course stay)."""
    now = db.clock()
    with db.write() as conn:
        row = lookups.session(conn, session_id)
        access.require_course_admin(conn, actor, row["course_id"], "manage sessions of this course")
        delete_in(conn, actor, now, session_id)
