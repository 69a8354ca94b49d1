"""Random sequences of enroll / cancel / approve / reject / retake / capacity changes / deletes never
exceed MaxAttendees and always promote the waitlist in order."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from storage import catalogs, courses, enrollments, sessions, users
from storage.db import Database
from storage.errors import StorageError
from storage.models import Actor

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
        self.flow = flow

    def teardown(self) -> None:
        self.db.close()
        self.dir.cleanup()

    def _learner_actor(self, login: str) -> Actor:
        return Actor(kind="user", api_key_id="k", user_id=self.users[login], login_name=login)

    @rule(login=st.sampled_from(LEARNERS), which=st.integers(0, 1), self_service=st.booleans())
    def enroll(self, login: str, which: int, self_service: bool) -> None:
        actor = self._learner_actor(login) if self_service else ADMIN
        if self_service:
            courses.provision_step(self.db, Path(self.dir.name))  # may still be provisioning; publish when ready
        try:
            e = enrollments.enroll(
                self.db, actor, self.course, {"userLoginName": login, "courseSessionId": self.sessions[which]}
            )
        except StorageError:
            return
        self.enrollments[login] = e["Id"]

    @precondition(lambda self: bool(self.enrollments))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        login = data.draw(st.sampled_from(sorted(self.enrollments)))
        try:
            enrollments.cancel(self.db, ADMIN, self.enrollments[login], "random")
        except StorageError:
            return
        del self.enrollments[login]

    @precondition(lambda self: bool(self.enrollments))
    @rule(data=st.data(), approve=st.booleans())
    def decide(self, data: st.DataObject, approve: bool) -> None:
        login = data.draw(st.sampled_from(sorted(self.enrollments)))
        try:
            if approve:
                enrollments.approve(self.db, ADMIN, self.enrollments[login])
            else:
                enrollments.reject(self.db, ADMIN, self.enrollments[login], "no")
                del self.enrollments[login]
        except StorageError:
            return

    @precondition(lambda self: bool(self.enrollments))
    @rule(data=st.data(), which=st.integers(0, 1))
    def retake(self, data: st.DataObject, which: int) -> None:
        login = data.draw(st.sampled_from(sorted(self.enrollments)))
        try:
            enrollments.retake(self.db, ADMIN, self.enrollments[login], self.sessions[which])
        except StorageError:
            return

    @rule(which=st.integers(0, 1), capacity=st.integers(1, 4))
    def change_capacity(self, which: int, capacity: int) -> None:
        try:
            sessions.update(self.db, ADMIN, self.sessions[which], {"MaxAttendees": str(capacity)})
        except StorageError:
            return  # refused: it would put seated learners over the new capacity
        self.capacity[self.sessions[which]] = capacity

    @rule(login=st.sampled_from(LEARNERS))
    def delete_user(self, login: str) -> None:
        try:
            users.delete(self.db, ADMIN, self.users[login])
        except StorageError:
            return
        self.enrollments.pop(login, None)

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
