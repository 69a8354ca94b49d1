"""What one person's calendar should hold for one session: the desired state the worker writes towards.

A learner holds the session's days while registered (`Registered`, with an enrollment that is not pending,
waitlisted, cancelled or rejected); an instructor while assigned. Nobody holds the days of a deleted session,
course or user. One CalendarItem per session day, in the session's time zone.
"""

from __future__ import annotations

import html
import sqlite3
from datetime import datetime
from typing import Any

from calendars.model import CalendarItem
from storage import snapshots, timeutil
from storage.db import parse_iso

# An enrollment holds its registered sessions in 1 NotStarted, 2 InProgress and 3 Completed (docs/design.md,
# "Enrollment status"); 0 PendingApproval, 4 Cancelled, 5 Rejected and 6 Waitlisted hold none.


def role_of(conn: sqlite3.Connection, user_id: str, session_id: str) -> str | None:
    """Instructor, Learner, or None when the person should hold nothing of the session."""
    row = conn.execute(
        "SELECT s.is_deleted AS session_deleted, c.is_deleted AS course_deleted, u.is_deleted AS user_deleted"
        " FROM course_sessions s JOIN courses c ON c.id = s.course_id, users u WHERE s.id = ? AND u.id = ?",
        (session_id, user_id),
    ).fetchone()
    if row is None or row["session_deleted"] or row["course_deleted"] or row["user_deleted"]:
        return None
    if conn.execute(
        "SELECT 1 FROM session_instructors WHERE session_id = ? AND user_id = ?", (session_id, user_id)
    ).fetchone():
        return "Instructor"
    registered = conn.execute(
        "SELECT 1 FROM session_registrations r JOIN enrollments e ON e.id = r.enrollment_id"
        " WHERE r.session_id = ? AND r.user_id = ? AND r.status = 'Registered' AND e.status IN (1, 2, 3)",
        (session_id, user_id),
    ).fetchone()
    return "Learner" if registered else None


def items_for(conn: sqlite3.Connection, user_id: str, session_id: str) -> list[CalendarItem]:
    """The person's items for the session, one per day, oldest first; [] when they should hold none."""
    role = role_of(conn, user_id, session_id)
    if role is None:
        return []
    session = snapshots.session(conn, session_id)
    course = snapshots.course(conn, session["CourseId"])
    windows = session["TimeZone"]
    try:
        time_zone = timeutil.zone(windows).key
    except Exception:  # a zone the API accepted before the table changed: write UTC instants
        time_zone, windows = "UTC", "UTC"
    subject = session["Title"]
    if course["Title"] and course["Title"].casefold() not in subject.casefold():
        subject = f"{course['Title']}: {subject}"
    text, body_html = _bodies(session, course, role)
    room = session.get("Room") or {}
    location = ", ".join(p for p in (room.get("Title"), room.get("Location")) if p) or session.get("MeetingUrl")
    items = []
    for day in session["Days"]:
        start, end = parse_iso(day["StartDate"]), parse_iso(day["EndDate"])
        assert start is not None and end is not None
        items.append(
            CalendarItem(
                user_id=user_id,
                session_id=session_id,
                day_id=day["Id"],
                subject=subject,
                start=start,
                end=end,
                time_zone=time_zone,
                windows_time_zone=windows,
                body_text=text,
                body_html=body_html,
                location=location or None,
                meeting_url=session.get("MeetingUrl"),
                link=course.get("Url"),
                role=role,
            )
        )
    return items


def _bodies(session: dict[str, Any], course: dict[str, Any], role: str) -> tuple[str, str]:
    """The event body as text and HTML: details, meeting URL, room, instructors and the link to the course."""
    lines: list[tuple[str, str]] = []
    if role == "Instructor":
        lines.append(("", "You are an instructor of this session."))
    if session.get("Details"):
        lines.append(("", session["Details"]))
    if session.get("MeetingUrl"):
        lines.append(("Join online", session["MeetingUrl"]))
    room = session.get("Room") or {}
    where = ", ".join(p for p in (room.get("Title"), room.get("Location")) if p)
    if where:
        lines.append(("Room", where))
    names = [p.get("Title") or p.get("LoginName") for p in session.get("Instructors") or []]
    if names:
        lines.append(("Instructors", ", ".join(n for n in names if n)))
    lines.append(("Course", course["Title"]))
    if course.get("Url"):
        lines.append(("Course page", course["Url"]))
    lines.append(("", "Added by coursewire from your registration; changes to the session update this event."))
    text = "\n".join(f"{label}: {value}" if label else value for label, value in lines)
    parts = []
    for label, value in lines:
        shown = html.escape(value)
        if value.startswith(("https://", "http://")):
            shown = f'<a href="{html.escape(value, quote=True)}">{shown}</a>'
        parts.append(f"<p><strong>{html.escape(label)}:</strong> {shown}</p>" if label else f"<p>{shown}</p>")
    return text, "\n".join(parts)


def upcoming(items: list[CalendarItem], now: datetime) -> list[CalendarItem]:
    """Items whose day has not ended: the mirror leaves past days as they are."""
    return [i for i in items if i.end > now]
