"""Random sequences of enroll / cancel / approve / reject / retake / capacity changes / deletes never
exceed MaxAttendees, always promote the waitlist in order, and make progress: every call a model
says is valid succeeds (a learner let in while a seat is free takes it), and every refusal is one the
model expects."""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from storage import catalogs, courses, enrollments, sessions, users
from storage.db import Database
from storage.errors import Conflict, Invalid, NotFound
from storage.models import Actor, EnrollmentStatus

ADMIN = Actor(kind="apikey", api_key_id="k", is_admin=True)
LEARNERS = [f"l{i}@x.example" for i in range(8)]


class Seats(RuleBasedStateMachine):
    """Model: per session, the ordered waitlist; check the database against it after every step."""

    @initialize(
        capacities=st.lists(st.integers(1, 3), min_size=2, max_size=2),
        flow=st.sampled_from(["AutomaticApproval", "CustomApproval"]),
    )
    def setup(self, capacities: list[int], flow: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.db = Database(Path(self.dir.name) / "t.db")
        self.db.migrate()
        self.users = {login: users.create(self.db, ADMIN, {"LoginName": login})["Id"] for login in LEARNERS}
        cat = catalogs.create_catalog(self.db, ADMIN, {"Title": "C"}, "http://x")
        self.course = courses.create(
            self.db,
            ADMIN,
            {
                "CourseCatalogId": cat["Id"],
                "CourseType": "ClassRoom",
                "Title": "T",
                "Description": "D",
                "Culture": "en",
                "UICulture": "en",
                "Url": "t",
                "EnrollmentFlow": flow,
            },
            "http://x",
        )["Id"]
        self.sessions = [
            sessions.create(
                self.db,
                ADMIN,
                self.course,
                {
                    "Title": f"S{i}",
                    "StartDate": "2031-01-01T09:00:00Z",
                    "EndDate": "2031-01-01T10:00:00Z",
                    "TimeZone": "UTC",
                    "MaxAttendees": str(cap),
                },
            )["Id"]
            for i, cap in enumerate(capacities)
        ]
        self.capacity = dict(zip(self.sessions, capacities, strict=True))
        self.enrollments: dict[str, str] = {}  # login -> active enrollment id
        self.pending: set[str] = set()  # logins whose enrollment waits for approval
        self.deleted: set[str] = set()
        self.flow = flow
        while courses.provision_step(self.db, Path(self.dir.name)):  # published once provisioned
            pass

    def teardown(self) -> None:
        self.db.close()
        self.dir.cleanup()

    def _learner_actor(self, login: str) -> Actor:
        return Actor(kind="user", api_key_id="k", user_id=self.users[login], login_name=login)

    def _seated(self, session_id: str) -> int:
        row = self.db.conn.execute(
            "SELECT count(*) FROM session_registrations WHERE session_id = ? AND status = 'Registered'", (session_id,)
        ).fetchone()
        return int(row[0])

    def _registration(self, enrollment_id: str, session_id: str) -> str | None:
        row = self.db.conn.execute(
            "SELECT status FROM session_registrations WHERE enrollment_id = ? AND session_id = ?"
            " AND status <> 'Cancelled'",
            (enrollment_id, session_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def _status(self, enrollment_id: str) -> str:
        row = self.db.conn.execute("SELECT status FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
        return EnrollmentStatus(row[0]).name

    def _check_seated(self, enrollment_id: str, session_id: str, free: bool) -> None:
        """Progress: a learner let in while the session had a free seat holds it; otherwise waits."""
        expected = ("Registered", "NotStarted") if free else ("Waitlisted", "Waitlisted")
        assert (self._registration(enrollment_id, session_id), self._status(enrollment_id)) == expected

    @rule(login=st.sampled_from(LEARNERS), which=st.integers(0, 1), self_service=st.booleans())
    def enroll(self, login: str, which: int, self_service: bool) -> None:
        session_id = self.sessions[which]
        actor = self._learner_actor(login) if self_service else ADMIN
        free = self._seated(session_id) < self.capacity[session_id]
        body = {"userLoginName": login, "courseSessionId": session_id}
        if login in self.deleted:
            with pytest.raises(Invalid):  # nobody by that login name any more
                enrollments.enroll(self.db, actor, self.course, body)
            return
        if login in self.enrollments:
            with pytest.raises(Conflict):  # one active enrollment per learner and course
                enrollments.enroll(self.db, actor, self.course, body)
            return
        e = enrollments.enroll(self.db, actor, self.course, body)
        self.enrollments[login] = e["Id"]
        if self_service and self.flow != "AutomaticApproval":
            assert (self._status(e["Id"]), self._registration(e["Id"], session_id)) == ("PendingApproval", None)
            self.pending.add(login)
        else:
            self._check_seated(e["Id"], session_id, free)

    @precondition(lambda self: bool(self.enrollments))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        login = data.draw(st.sampled_from(sorted(self.enrollments)))
        enrollments.cancel(self.db, ADMIN, self.enrollments[login], "random")
        assert self._status(self.enrollments.pop(login)) == "Cancelled"
        self.pending.discard(login)

    @precondition(lambda self: bool(self.enrollments))
    @rule(data=st.data(), approve=st.booleans())
    def decide(self, data: st.DataObject, approve: bool) -> None:
        login = data.draw(st.sampled_from(sorted(self.enrollments)))
        enrollment_id = self.enrollments[login]
        decide = enrollments.approve if approve else partial(enrollments.reject, message="no")
        if login not in self.pending:
            with pytest.raises(Conflict):  # only requests are decided
                decide(self.db, ADMIN, enrollment_id)
            return
        session_id = self.db.conn.execute(
            "SELECT session_id FROM enrollments WHERE id = ?", (enrollment_id,)
        ).fetchone()[0]
        free = self._seated(session_id) < self.capacity[session_id]
        decide(self.db, ADMIN, enrollment_id)
        self.pending.discard(login)
        if approve:
            self._check_seated(enrollment_id, session_id, free)
        else:
            assert self._status(self.enrollments.pop(login)) == "Rejected"

    @precondition(lambda self: bool(self.enrollments))
    @rule(data=st.data(), which=st.integers(0, 1))
    def retake(self, data: st.DataObject, which: int) -> None:
        login = data.draw(st.sampled_from(sorted(self.enrollments)))
        enrollment_id, session_id = self.enrollments[login], self.sessions[which]
        if login in self.pending:
            with pytest.raises(Conflict):  # a request is decided before anything else
                enrollments.retake(self.db, ADMIN, enrollment_id, session_id)
            return
        already = self._registration(enrollment_id, session_id)
        free = self._seated(session_id) < self.capacity[session_id]
        enrollments.retake(self.db, ADMIN, enrollment_id, session_id)
        if already is None:
            self._check_seated(enrollment_id, session_id, free)
        else:  # it keeps its place there, seat or waitlist
            assert self._registration(enrollment_id, session_id) == already

    @rule(which=st.integers(0, 1), capacity=st.integers(1, 4))
    def change_capacity(self, which: int, capacity: int) -> None:
        session_id = self.sessions[which]
        if capacity < self._seated(session_id):
            with pytest.raises(Conflict):  # it would put seated learners over the new capacity
                sessions.update(self.db, ADMIN, session_id, {"MaxAttendees": str(capacity)})
            return
        sessions.update(self.db, ADMIN, session_id, {"MaxAttendees": str(capacity)})
        self.capacity[session_id] = capacity

    @rule(login=st.sampled_from(LEARNERS))
    def delete_user(self, login: str) -> None:
        if login in self.deleted:
            with pytest.raises(NotFound):
                users.delete(self.db, ADMIN, self.users[login])
            return
        users.delete(self.db, ADMIN, self.users[login])
        self.deleted.add(login)
        self.pending.discard(login)
        if login in self.enrollments:
            assert self._status(self.enrollments.pop(login)) == "Cancelled"

    @invariant()
    def the_model_and_the_database_agree(self) -> None:
        """Every refusal above was expected, so the active enrollments are exactly those the model holds."""
        if not hasattr(self, "db"):
            return
        active = {
            r[0]: r[1]
            for r in self.db.conn.execute(
                "SELECT u.login_name, e.status FROM enrollments e JOIN users u ON u.id = e.user_id"
                " WHERE e.course_id = ? AND e.status NOT IN (4, 5)",
                (self.course,),
            )
        }
        assert set(active) == set(self.enrollments)
        assert {login for login, status in active.items() if status == EnrollmentStatus.PendingApproval} == self.pending

    @invariant()
    def never_over_capacity_and_fifo(self) -> None:
        if not hasattr(self, "db"):
            return
        conn = self.db.conn
        for session_id in self.sessions:
            seated = conn.execute(
                "SELECT count(*) FROM session_registrations WHERE session_id = ? AND status = 'Registered'",
                (session_id,),
            ).fetchone()[0]
            waiting = conn.execute(
                "SELECT count(*) FROM session_registrations WHERE session_id = ? AND status = 'Waitlisted'",
                (session_id,),
            ).fetchone()[0]
            assert seated <= self.capacity[session_id]
            # Nobody waits while a seat is free: promotion happened in order.
            assert waiting == 0 or seated == self.capacity[session_id]
        self._check_promotions_in_order()

    def _check_promotions_in_order(self) -> None:
        """Replaying the log, every promotion takes the head of its session's waitlist."""
        rows = self.db.conn.execute(
            "SELECT type, session_id, data FROM events WHERE type IN ('SessionRegistered', 'WaitlistPromoted',"
            " 'SessionUnregistered') ORDER BY seq"
        ).fetchall()
        queues: dict[str, list[str]] = {s: [] for s in self.sessions}
        for row in rows:
            data = json.loads(row["data"])
            queue = queues.setdefault(row["session_id"], [])
            if row["type"] == "SessionRegistered" and data["Status"] == "Waitlisted":
                queue.append(data["RegistrationId"])
            elif row["type"] == "WaitlistPromoted":
                assert queue and queue[0] == data["RegistrationId"], "promotion skipped the queue"
                queue.pop(0)
            elif row["type"] == "SessionUnregistered" and data["RegistrationId"] in queue:
                queue.remove(data["RegistrationId"])


Seats.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestSeats = Seats.TestCase
