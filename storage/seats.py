"""Session seats and the waitlist: registering, unregistering and promoting, inside a write transaction.

MaxAttendees is never exceeded because every caller holds SQLite's write lock (`Database.write` uses
BEGIN IMMEDIATE) between counting seats and taking one.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from storage import events, snapshots
from storage.db import iso, new_id
from storage.models import Actor, EnrollmentStatus


def seats_taken(conn: sqlite3.Connection, session_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM session_registrations WHERE session_id = ? AND status = 'Registered'", (session_id,)
    ).fetchone()
    return int(row[0])


def has_seat(conn: sqlite3.Connection, session: sqlite3.Row) -> bool:
    return session["max_attendees"] is None or seats_taken(conn, session["id"]) < session["max_attendees"]


def _context(conn: sqlite3.Connection, enrollment_id: str, session_id: str) -> dict[str, Any]:
    e = conn.execute("SELECT course_id, user_id FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
    return {
        "course": snapshots.course(conn, e["course_id"]),
        "user": snapshots.user(conn, e["user_id"]),
        "session": snapshots.session(conn, session_id),
    }


def _ids(conn: sqlite3.Connection, enrollment_id: str) -> dict[str, str]:
    e = conn.execute("SELECT course_id, user_id FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
    return {"course_id": e["course_id"], "user_id": e["user_id"], "enrollment_id": enrollment_id}


def register(
    conn: sqlite3.Connection, actor: Actor, now: datetime, enrollment: sqlite3.Row, session: sqlite3.Row
) -> str:
    """Register the enrollment into the session: a seat if one is free, else the waitlist. Return the status."""
    existing = conn.execute(
        "SELECT status FROM session_registrations WHERE session_id = ? AND enrollment_id = ? AND status <> 'Cancelled'",
        (session["id"], enrollment["id"]),
    ).fetchone()
    if existing:
        return str(existing["status"])
    status = "Registered" if has_seat(conn, session) else "Waitlisted"
    registration_id = new_id()
    conn.execute(
        "INSERT INTO session_registrations (id, enrollment_id, session_id, user_id, status, registered_at, modified_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (registration_id, enrollment["id"], session["id"], enrollment["user_id"], status, iso(now), iso(now)),
    )
    events.record(
        conn,
        "SessionRegistered",
        actor,
        now,
        {"RegistrationId": registration_id, "Status": status, **_context(conn, enrollment["id"], session["id"])},
        session_id=session["id"],
        **_ids(conn, enrollment["id"]),
    )
    return status


def unregister(conn: sqlite3.Connection, actor: Actor, now: datetime, registration: sqlite3.Row, reason: str) -> None:
    """Cancel a registration; a freed seat goes to the first in the waitlist."""
    conn.execute(
        "UPDATE session_registrations SET status = 'Cancelled', modified_at = ? WHERE id = ?",
        (iso(now), registration["id"]),
    )
    events.record(
        conn,
        "SessionUnregistered",
        actor,
        now,
        {
            "RegistrationId": registration["id"],
            "PreviousStatus": registration["status"],
            "Reason": reason,
            **_context(conn, registration["enrollment_id"], registration["session_id"]),
        },
        session_id=registration["session_id"],
        **_ids(conn, registration["enrollment_id"]),
    )
    if registration["status"] == "Registered":
        promote(conn, actor, now, registration["session_id"])


def unregister_all(conn: sqlite3.Connection, actor: Actor, now: datetime, enrollment_id: str, reason: str) -> None:
    for registration in conn.execute(
        "SELECT * FROM session_registrations WHERE enrollment_id = ? AND status <> 'Cancelled' ORDER BY seq",
        (enrollment_id,),
    ).fetchall():
        unregister(conn, actor, now, registration, reason)


def promote(conn: sqlite3.Connection, actor: Actor, now: datetime, session_id: str) -> list[str]:
    """Give free seats to the waitlist in order; return the promoted registration ids."""
    session = conn.execute("SELECT * FROM course_sessions WHERE id = ? AND is_deleted = 0", (session_id,)).fetchone()
    promoted: list[str] = []
    while session is not None and has_seat(conn, session):
        nxt = conn.execute(
            "SELECT * FROM session_registrations WHERE session_id = ? AND status = 'Waitlisted' ORDER BY seq LIMIT 1",
            (session_id,),
        ).fetchone()
        if nxt is None:
            break
        conn.execute(
            "UPDATE session_registrations SET status = 'Registered', modified_at = ? WHERE id = ?",
            (iso(now), nxt["id"]),
        )
        refresh_enrollment(conn, now, nxt["enrollment_id"])
        events.record(
            conn,
            "WaitlistPromoted",
            actor,
            now,
            {
                "RegistrationId": nxt["id"],
                "enrollment": snapshots.enrollment(conn, nxt["enrollment_id"]),
                **_context(conn, nxt["enrollment_id"], session_id),
            },
            session_id=session_id,
            **_ids(conn, nxt["enrollment_id"]),
        )
        promoted.append(nxt["id"])
    return promoted


def refresh_enrollment(conn: sqlite3.Connection, now: datetime, enrollment_id: str) -> None:
    """Recompute an active enrollment's Waitlisted/NotStarted status and its primary session."""
    e = conn.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
    regs = conn.execute(
        "SELECT session_id, status FROM session_registrations WHERE enrollment_id = ? AND status <> 'Cancelled'"
        " ORDER BY status = 'Registered' DESC, seq",
        (enrollment_id,),
    ).fetchall()
    if e["status"] == EnrollmentStatus.PendingApproval or not EnrollmentStatus(e["status"]).is_active:
        return
    status = e["status"]
    if status in (EnrollmentStatus.NotStarted, EnrollmentStatus.Waitlisted):
        all_waiting = bool(regs) and all(r["status"] == "Waitlisted" for r in regs)
        status = EnrollmentStatus.Waitlisted if all_waiting else EnrollmentStatus.NotStarted
    session_id = regs[0]["session_id"] if regs else None
    if status != e["status"] or session_id != e["session_id"]:
        conn.execute(
            "UPDATE enrollments SET status = ?, session_id = ?, modified_at = ? WHERE id = ?",
            (int(status), session_id, iso(now), enrollment_id),
        )
