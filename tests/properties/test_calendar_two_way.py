"""Registrations change only on confirmed deletions by the person: hypothesis mixes learners enrolling (with a
waitlist), people deleting events from their calendars, moving them to another calendar, removals reported twice
or for events still there, deletions whose notification is dropped, tokens revoked and restored, cursors
expiring, session edits and the clock moving, with worker rounds in between (or none).

Safety, after every step: every cancelled registration is one whose learner deleted an event of that session
from their calendar while registered (never a move, a duplicate, a revoked token, an instructor's deletion, or
with UnregisterOnCalendarDelete off), and the event log holds a `CalendarEventDeleted` with the decision
`Unregistered` for it. Liveness, once everything settles (tokens restored, a full listing): every such deletion
has unregistered its learner."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

sys.path.append(str(Path(__file__).resolve().parents[1] / "mirror"))  # engine_support, as tests/mirror imports it
from engine_support import World, make_world

from calendars.model import AuthorizationLost
from calendars.providers.null import NullProvider
from storage import calendar, events, sessions
from storage.models import CLI

LEARNERS = ("lena", "omar", "pia")
POLL = timedelta(seconds=301)


@dataclass
class Revocable(NullProvider):
    """An in-memory calendar whose token can be revoked (every call raises AuthorizationLost meanwhile)."""

    revoked: bool = False

    def _maybe_fail(self) -> None:
        if self.revoked:
            raise AuthorizationLost("invalid_grant: the user revoked consent")
        super()._maybe_fail()


class TwoWay(RuleBasedStateMachine):
    world: World

    @initialize(unregister=st.booleans(), seats=st.integers(1, 2))
    def setup(self, unregister: bool, seats: int) -> None:
        self.world = make_world(Path(tempfile.mkdtemp()), learners=LEARNERS)
        self.world.settings(CalDAVEnabled=True, UnregisterOnCalendarDelete=unregister)
        self.unregister = unregister
        self.session = self.world.session(days=2, MaxAttendees=str(seats), InstructorLogins=["ivan@example.org"])
        self.connections = {p: self.world.connect(p) for p in (*LEARNERS, "ivan")}
        for connection_id in self.connections.values():
            self.world.providers[connection_id] = Revocable()
        self.deleted_while_registered: set[str] = set()  # people whose deletion should unregister them
        self.enrollments = {p: self.world.enroll(p, self.session) for p in LEARNERS[:seats]}
        self.world.sync()

    # -- helpers ------------------------------------------------------------------------------------------
    def provider(self, person: str) -> Revocable:
        provider = self.world.providers[self.connections[person]]
        assert isinstance(provider, Revocable)
        return provider

    def registered(self, person: str) -> bool:
        with self.world.db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM session_registrations WHERE session_id = ? AND user_id = ? AND status = 'Registered'",
                (self.session, self.world.people[person]),
            ).fetchone()
        return row is not None

    def cancelled(self) -> set[str]:
        with self.world.db.read() as conn:
            rows = conn.execute(
                "SELECT user_id FROM session_registrations WHERE session_id = ? AND status = 'Cancelled'",
                (self.session,),
            ).fetchall()
        ids = {row[0] for row in rows}
        return {p for p, uid in self.world.people.items() if uid in ids}

    # -- rules --------------------------------------------------------------------------------------------
    @rule(person=st.sampled_from(LEARNERS))
    def enroll(self, person: str) -> None:
        if person not in self.enrollments:
            self.enrollments[person] = self.world.enroll(person, self.session)

    @rule(person=st.sampled_from((*LEARNERS, "ivan")), which=st.integers(0, 1), notify=st.booleans())
    def person_deletes(self, person: str, which: int, notify: bool) -> None:
        """The person deletes one of the session's events; without `notify` the feed never reports it (a
        dropped notification), so only a full listing finds it."""
        provider = self.provider(person)
        ours = sorted(provider.events)
        if not ours:
            return
        pid = ours[which % len(ours)]
        if person != "ivan" and self.registered(person) and self.unregister:
            self.deleted_while_registered.add(person)
        if notify:
            provider.person_deletes(pid)
        else:
            del provider.events[pid]

    @rule(person=st.sampled_from((*LEARNERS, "ivan")), which=st.integers(0, 1))
    def person_moves(self, person: str, which: int) -> None:
        provider = self.provider(person)
        ours = sorted(provider.events)
        if ours:
            provider.person_moves(ours[which % len(ours)])

    @rule(person=st.sampled_from((*LEARNERS, "ivan")))
    def duplicate_or_stale_removal(self, person: str) -> None:
        """A removal reported for an event that is still there (a duplicate, or a notification about our own
        write arriving late)."""
        provider = self.provider(person)
        for pid in list(provider.events)[:1]:
            provider.log.append((pid, True))

    @rule(person=st.sampled_from((*LEARNERS, "ivan")))
    def revoke(self, person: str) -> None:
        self.provider(person).revoked = True

    @rule(person=st.sampled_from((*LEARNERS, "ivan")))
    def reauthorize(self, person: str) -> None:
        provider = self.provider(person)
        if provider.revoked:
            provider.revoked = False
            calendar.set_status(self.world.db, self.connections[person], "Connected", None)

    @rule(person=st.sampled_from((*LEARNERS, "ivan")))
    def cursor_expires(self, person: str) -> None:
        self.provider(person).expire_cursors()

    @rule(title=st.sampled_from(("CPR", "First aid", "Night shift")))
    def edit_session(self, title: str) -> None:
        sessions.update(self.world.db, CLI, self.session, {"Title": title})

    @rule(poll=st.booleans())
    def worker_round(self, poll: bool) -> None:
        if poll:
            self.world.now[0] += POLL
        self.world.sync()

    # -- properties ---------------------------------------------------------------------------------------
    @invariant()
    def only_confirmed_deletions_unregister(self) -> None:
        if not hasattr(self, "world"):
            return
        cancelled = self.cancelled()
        assert cancelled <= self.deleted_while_registered, cancelled - self.deleted_while_registered
        decided = {
            e.user_id
            for e in events.latest(self.world.db, types=["CalendarEventDeleted"], limit=1000)
            if e.data["Decision"] == "Unregistered"
        }
        assert {self.world.people[p] for p in cancelled} <= decided
        assert "ivan" not in cancelled

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        try:
            for person in (*LEARNERS, "ivan"):
                self.reauthorize(person)
                self.cursor_expires(person)  # a full listing finds the deletions no notification reported
            for _ in range(3):
                self.world.now[0] += POLL
                self.world.sync()
            assert self.cancelled() == self.deleted_while_registered
        finally:
            self.world.db.close()


TwoWay.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestCalendarTwoWay = pytest.mark.slow(TwoWay.TestCase)
