"""The calendar mirror converges, whatever happens: hypothesis mixes sessions being created, edited and deleted,
learners enrolling, waiting, being approved, rejected and cancelled, calendars being connected, paused, losing
their authorization and disconnected, providers and the e-mail fallback switched off and on, calendars and the
SMTP server failing, and the clock moving, with worker rounds in between (or none). Once the worker has nothing
left to do, every person's calendar (or, without a writable one, their mailbox) holds exactly one entry per
upcoming session day they should hold, with its current subject and times, and nothing else of ours; and no
iMIP UID ever gets two messages with the same SEQUENCE.

The expectation is computed here from the storage tables (registrations, enrollments, instructors, session
days), not by calendars.desired, so a mistake there fails this test (docs/design.md, "Calendar mirror")."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

sys.path.append(str(Path(__file__).resolve().parents[1] / "mirror"))  # engine_support, as tests/mirror imports it
from engine_support import Mail, World, make_world

from calendars.model import AuthorizationLost, ProviderError, Throttled, Unavailable
from calendars.providers.null import NullProvider
from storage import calendar, courses, enrollments, sessions
from storage.db import parse_iso
from storage.errors import StorageError
from storage.models import CLI, Actor

PEOPLE = ("lena", "omar", "pia", "ivan")
# Windows ids as the API takes them, and the IANA zone each names (CLDR windowsZones, territory 001).
ZONES = {
    "W. Europe Standard Time": "Europe/Berlin",
    "Eastern Standard Time": "America/New_York",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "UTC": "UTC",
}
# Sessions fall between 12 March and 6 April 2027: across the daylight-saving changes of New York (14 March),
# Berlin (28 March) and Sydney (4 April); the clock starts on the first of those days and only moves on.
FIRST_DAY = date(2027, 3, 12)
START = datetime(2027, 3, 12, 0, 0, tzinfo=UTC)
TITLES = ("Session", "CPR basics", "First aid refresher", "Night shift")
PROVIDERS = ("CalDAV", "Google")


@dataclass
class Revocable(NullProvider):
    """An in-memory calendar whose credentials can die: while `revoked`, every call raises AuthorizationLost
    (as Graph and Google answer `invalid_grant` until the person authorizes again)."""

    revoked: bool = False

    def _maybe_fail(self) -> None:
        if self.revoked:
            raise AuthorizationLost("invalid_grant: the user revoked consent")
        super()._maybe_fail()


@dataclass(frozen=True)
class Expected:
    """One session day a person should hold, as the storage tables say."""

    day_id: str
    subject: str
    start: datetime
    end: datetime
    time_zone: str
    location: str | None
    role: str


def uid_of(user_id: str, day_id: str) -> str:
    """The documented iCalendar UID of a person's session day (calendars/model.py, CalendarItem.uid)."""
    return hashlib.sha256(f"{user_id}.{day_id}".encode()).hexdigest()[:32] + "@coursewire"


def expected_days(world: World, user_id: str, now: datetime) -> dict[str, Expected]:
    """The upcoming session days the person should hold, by day id: a live session of a live course where
    they are an instructor, or hold a Registered seat through an enrollment in NotStarted (1), InProgress (2)
    or Completed (3). Pending (0), cancelled (4), rejected (5) and waitlisted (6) enrollments hold nothing."""
    out: dict[str, Expected] = {}
    with world.db.read() as conn:
        rows = conn.execute(
            "SELECT d.id AS day_id, d.start_at, d.end_at, s.id AS session_id, s.title, s.time_zone, s.room,"
            " s.meeting_url, c.title AS course_title,"
            " EXISTS (SELECT 1 FROM session_instructors i WHERE i.session_id = s.id AND i.user_id = :u) AS teaches,"
            " EXISTS (SELECT 1 FROM session_registrations r JOIN enrollments e ON e.id = r.enrollment_id"
            "   WHERE r.session_id = s.id AND r.user_id = :u AND r.status = 'Registered'"
            "   AND e.status IN (1, 2, 3)) AS seated"
            " FROM session_days d JOIN course_sessions s ON s.id = d.session_id JOIN courses c ON c.id = s.course_id"
            " JOIN users u ON u.id = :u"
            " WHERE s.is_deleted = 0 AND c.is_deleted = 0 AND u.is_deleted = 0",
            {"u": user_id},
        ).fetchall()
    for row in rows:
        if not (row["teaches"] or row["seated"]):
            continue
        start, end = parse_iso(row["start_at"]), parse_iso(row["end_at"])
        assert start is not None and end is not None
        if end <= now:
            continue  # the mirror leaves days that have ended as they are
        title, course = row["title"], row["course_title"]
        subject = title if course.casefold() in title.casefold() else f"{course}: {title}"
        location = row["meeting_url"]
        if row["room"]:
            room = json.loads(row["room"])
            location = ", ".join(p for p in (room.get("Title"), room.get("Location")) if p) or location
        out[row["day_id"]] = Expected(
            day_id=row["day_id"],
            subject=subject,
            start=start,
            end=end,
            time_zone=ZONES[row["time_zone"]],
            location=location,
            role="Instructor" if row["teaches"] else "Learner",
        )
    return out


def days_body(days: list[tuple[int, int, int]]) -> list[dict[str, str]]:
    """`Days` from (day after FIRST_DAY, start hour, hours long): wall-clock times in the session's zone."""
    out = []
    for offset, hour, length in days:
        day = (FIRST_DAY + timedelta(days=offset)).isoformat()
        out.append({"StartDate": f"{day}T{hour:02d}:00:00", "EndDate": f"{day}T{hour + length:02d}:00:00"})
    return out


DAY = st.tuples(st.integers(0, 25), st.integers(7, 17), st.integers(1, 4))
DAYS = st.lists(DAY, min_size=1, max_size=3, unique_by=lambda d: d[0])
INSTRUCTORS: st.SearchStrategy[list[str]] = st.one_of(
    st.just([]), st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=2, unique=True)
)


class Mirror(RuleBasedStateMachine):
    """Drives the training world of tests/mirror/engine_support.py; the state is in its database, the
    calendars (Revocable per connection) and the mailbox. Domain refusals (a full approval queue, a disabled
    provider, overlapping days) are part of the game: the rules try, and the database says what happened."""

    @initialize(
        plan=st.lists(
            st.tuples(st.integers(0, 1), DAYS, st.sampled_from(sorted(ZONES)), st.sampled_from(["1", "1", "2", None])),
            min_size=1,
            max_size=2,
        ),
        learners=st.lists(st.tuples(st.sampled_from(PEOPLE), st.integers(0, 1), st.booleans()), min_size=2, max_size=5),
        connected=st.lists(st.sampled_from(PEOPLE), unique=True, max_size=3),
    )
    def setup(
        self,
        plan: list[tuple[int, list[tuple[int, int, int]], str, str | None]],
        learners: list[tuple[str, int, bool]],
        connected: list[str],
    ) -> None:
        """The world, a second course with approval, and a first schedule (a session or two with learners and
        some calendars connected) so that every run starts with something to mirror."""
        self.dir = tempfile.TemporaryDirectory()
        self.world = make_world(Path(self.dir.name))
        self.world.now[0] = START
        self.world.settings(CalDAVEnabled=True, GoogleEnabled=True)
        # A second course whose self-enrollments wait for a course admin (PendingApproval, then approve/reject).
        with self.world.db.read() as conn:
            catalog_id = conn.execute(
                "SELECT catalog_id FROM courses WHERE id = ?", (self.world.course_id,)
            ).fetchone()[0]
        approval = courses.create(
            self.world.db,
            CLI,
            {
                "CourseCatalogId": catalog_id,
                "Title": "Night shift",
                "Description": "Approval needed",
                "Culture": "en-US",
                "UICulture": "en-US",
                "CourseType": "ClassRoom",
                "Url": "night-shift",
                "CourseSessionEnrollmentType": "EnrollToMultiple",
                "EnrollmentFlow": "CustomApproval",
            },
            "https://lms.example",
        )
        while courses.provision_step(self.world.db, Path(self.dir.name) / "files"):
            pass
        self.courses = [self.world.course_id, approval["Id"]]
        self.sessions: list[str] = []
        self.enrollments: list[str] = []
        for course, days, zone, seats in plan:
            self.create_session(course, "Session", days, zone, seats, [])
        for person, which, self_service in learners:
            self.enroll(person, which, self_service)
        for person in connected:
            self.connect(person, "CalDAV")

    def teardown(self) -> None:
        if hasattr(self, "world"):
            try:
                self.settle_and_check()
            finally:
                self.world.db.close()
                self.dir.cleanup()

    # -- helpers ------------------------------------------------------------------------------------------

    @property
    def db(self) -> Any:
        return self.world.db

    def _try(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a domain verb; a refusal (StorageError) is a legitimate outcome of a random step."""
        try:
            return call(*args, **kwargs)
        except StorageError:
            return None

    def _user(self, person: str) -> str:
        return str(self.world.people[person])

    def _active(self, person: str) -> calendar.Connection | None:
        return calendar.active_connection(self.db, self._user(person))

    def _calendar(self, connection_id: str) -> Revocable:
        provider = self.world.providers.setdefault(connection_id, Revocable())
        assert isinstance(provider, Revocable)
        return provider

    def _session(self, which: int) -> str:
        return self.sessions[which % len(self.sessions)]

    def _days_of(self, session_id: str) -> list[tuple[str, str]]:
        with self.db.read() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT start_at, end_at FROM session_days WHERE session_id = ? ORDER BY start_at", (session_id,)
                )
            ]

    # -- sessions -----------------------------------------------------------------------------------------

    @rule(
        course=st.integers(0, 1),
        title=st.sampled_from(TITLES),
        days=DAYS,
        zone=st.sampled_from(sorted(ZONES)),
        seats=st.sampled_from([None, "1", "1", "2"]),
        instructors=INSTRUCTORS,
    )
    def create_session(
        self,
        course: int,
        title: str,
        days: list[tuple[int, int, int]],
        zone: str,
        seats: str | None,
        instructors: list[str],
    ) -> None:
        body: dict[str, Any] = {"Title": title, "TimeZone": zone, "Days": days_body(sorted(days))}
        if seats:
            body["MaxAttendees"] = seats
        if instructors:
            body["InstructorLogins"] = [f"{p}@example.org" for p in instructors]
        created = self._try(sessions.create, self.db, CLI, self.courses[course], body)
        if created is not None:
            self.sessions.append(created["Id"])

    @precondition(lambda self: self.sessions)
    @rule(which=st.integers(0, 50), title=st.sampled_from(TITLES))
    def rename_session(self, which: int, title: str) -> None:
        self._try(sessions.update, self.db, CLI, self._session(which), {"Title": title})

    @precondition(lambda self: self.sessions)
    @rule(which=st.integers(0, 50), change=st.sampled_from(["add", "move", "remove", "replace"]), day=DAY, days=DAYS)
    def reschedule_session(
        self, which: int, change: str, day: tuple[int, int, int], days: list[tuple[int, int, int]]
    ) -> None:
        """Days added, moved or removed (the others keep their ids), or a new schedule."""
        session_id = self._session(which)
        current = [{"StartDate": s, "EndDate": e} for s, e in self._days_of(session_id)]
        (new,) = days_body([day])
        if change == "add":
            schedule = [*current, new]
        elif change == "move" and current:
            schedule = [*current[: which % len(current)], new, *current[which % len(current) + 1 :]]
        elif change == "remove" and len(current) > 1:
            schedule = current[: which % len(current)] + current[which % len(current) + 1 :]
        else:
            schedule = days_body(sorted(days))
        self._try(sessions.update, self.db, CLI, session_id, {"Days": schedule})

    @precondition(lambda self: self.sessions)
    @rule(which=st.integers(0, 50), zone=st.sampled_from(sorted(ZONES)))
    def change_time_zone(self, which: int, zone: str) -> None:
        self._try(sessions.update, self.db, CLI, self._session(which), {"TimeZone": zone})

    @precondition(lambda self: self.sessions)
    @rule(which=st.integers(0, 50), instructors=INSTRUCTORS)
    def change_instructors(self, which: int, instructors: list[str]) -> None:
        logins = [f"{p}@example.org" for p in instructors]
        self._try(sessions.update, self.db, CLI, self._session(which), {"InstructorLogins": logins})

    @precondition(lambda self: self.sessions)
    @rule(which=st.integers(0, 50), room=st.sampled_from([None, "Room 1", "Room 2"]))
    def change_room(self, which: int, room: str | None) -> None:
        body = {"Room": {"Title": room, "Location": "Building A", "Source": "Unknown"} if room else None}
        self._try(sessions.update, self.db, CLI, self._session(which), body)

    @precondition(lambda self: self.sessions)
    @rule(which=st.integers(0, 50), seats=st.sampled_from([None, "1", "2", "3"]))
    def change_seats(self, which: int, seats: str | None) -> None:
        """More seats promote the waitlist; fewer than taken is refused."""
        self._try(sessions.update, self.db, CLI, self._session(which), {"MaxAttendees": seats})

    @precondition(lambda self: self.sessions)
    @rule(which=st.integers(0, 50))
    def delete_session(self, which: int) -> None:
        self._try(sessions.delete, self.db, CLI, self._session(which))

    # -- enrollments --------------------------------------------------------------------------------------

    @precondition(lambda self: self.sessions)
    @rule(person=st.sampled_from(PEOPLE), which=st.integers(0, 50), self_service=st.booleans())
    def enroll(self, person: str, which: int, self_service: bool) -> None:
        """By an administrator (a seat or the waitlist), or by the learner (PendingApproval in the approval
        course)."""
        session_id = self._session(which)
        with self.db.read() as conn:
            course_id = conn.execute("SELECT course_id FROM course_sessions WHERE id = ?", (session_id,)).fetchone()[0]
        actor = (
            Actor(kind="user", api_key_id="k", user_id=self._user(person), login_name=f"{person}@example.org")
            if self_service
            else CLI
        )
        body = {"userLoginName": f"{person}@example.org", "courseSessionId": session_id}
        enrollment = self._try(enrollments.enroll, self.db, actor, course_id, body)
        if enrollment is not None and enrollment["Id"] not in self.enrollments:
            self.enrollments.append(enrollment["Id"])

    @precondition(lambda self: self.enrollments)
    @rule(
        which=st.integers(0, 50), verb=st.sampled_from(["cancel", "cancel", "approve", "reject", "start", "complete"])
    )
    def decide(self, which: int, verb: str) -> None:
        """Cancel (promotes the waitlist), approve or reject a pending request, start or complete."""
        enrollment_id = self.enrollments[which % len(self.enrollments)]
        if verb == "cancel":
            self._try(enrollments.cancel, self.db, CLI, enrollment_id, "changed plans")
        elif verb == "approve":
            self._try(enrollments.approve, self.db, CLI, enrollment_id)
        elif verb == "reject":
            self._try(enrollments.reject, self.db, CLI, enrollment_id, "no seats for you")
        elif verb == "start":
            self._try(enrollments.start, self.db, CLI, enrollment_id)
        else:
            self._try(enrollments.complete, self.db, CLI, enrollment_id)

    # -- calendars ----------------------------------------------------------------------------------------

    @rule(person=st.sampled_from(PEOPLE), provider=st.sampled_from(PROVIDERS))
    def connect(self, person: str, provider: str) -> None:
        if self._active(person) is not None:
            return
        try:
            connection_id = self.world.connect(person, provider)
        except StorageError:
            return  # the provider is switched off
        self.world.providers[connection_id] = Revocable()

    @rule(person=st.sampled_from(PEOPLE), keep_events=st.booleans())
    def disconnect(self, person: str, keep_events: bool) -> None:
        self._try(calendar.disconnect, self.db, CLI, self._user(person), keep_events=keep_events)

    @rule(person=st.sampled_from(PEOPLE), enabled=st.booleans())
    def switch_sync(self, person: str, enabled: bool) -> None:
        self._try(calendar.set_sync_enabled, self.db, CLI, self._user(person), enabled)

    @rule(person=st.sampled_from(PEOPLE))
    def reauthorize(self, person: str) -> None:
        """The person signs in again: new credentials, the connection Connected (what the OAuth callback does
        for a connection that needs reauthorization)."""
        active = self._active(person)
        if active is None:
            return
        self._calendar(active.id).revoked = False
        calendar.update_credentials(self.db, active.id, active.credentials)
        calendar.set_status(self.db, active.id, "Connected", None)

    @rule(
        name=st.sampled_from(["CalDAVEnabled", "GoogleEnabled", "EmailFallbackEnabled"]),
        enabled=st.booleans(),
    )
    def switch_setting(self, name: str, enabled: bool) -> None:
        self.world.settings(**{name: enabled})

    @rule(
        person=st.sampled_from(PEOPLE),
        failure=st.sampled_from(
            ["throttled 1", "throttled 30", "throttled 120", "throttled 900", "unavailable", "revoked"]
        ),
        count=st.integers(1, 3),
    )
    def calendar_fails(self, person: str, failure: str, count: int) -> None:
        """The person's calendar answers 429 with Retry-After (seconds), 503, or its credentials die
        (AuthorizationLost on every call until the person reauthorizes)."""
        active = self._active(person)
        if active is None:
            return
        provider = self._calendar(active.id)
        if failure == "revoked":
            provider.revoked = True
        else:
            provider.fail.extend([_failure(failure)] * count)

    @rule(failure=st.sampled_from(["unavailable", "throttled 60"]), count=st.integers(1, 3))
    def smtp_fails(self, failure: str, count: int) -> None:
        """The SMTP server answers 451 (try later) or 421 with a wait."""
        self.world.mail_failures.extend([_failure(failure)] * count)

    # -- time and the worker ------------------------------------------------------------------------------

    @rule(minutes=st.sampled_from([1, 10, 61, 6 * 60, 24 * 60, 3 * 24 * 60]))
    def advance(self, minutes: int) -> None:
        self.world.advance(minutes=minutes)

    @rule(rounds=st.integers(1, 3))
    def worker_rounds(self, rounds: int) -> None:
        self.world.sync(rounds=rounds)

    @rule()
    def settle_and_check(self) -> None:
        self.settle()
        self.check()

    # -- convergence --------------------------------------------------------------------------------------

    def settle(self) -> None:
        """Run the worker until nothing is queued, moving the clock past each Retry-After and backoff."""
        for _ in range(60):
            self.world.sync(rounds=20)  # until a round finds nothing due, or 20 busy rounds
            if calendar.pending(self.db) == 0:
                return
            due = calendar.next_due(self.db)
            if due is not None and due > self.world.now[0]:
                self.world.now[0] = due + timedelta(seconds=1)
        raise AssertionError(f"the worker never settles: {calendar.pending(self.db)} pairs still queued")

    def check(self) -> None:
        now = self.world.now[0]
        with self.db.read() as conn:
            removing = conn.execute("SELECT count(*) FROM calendar_connections WHERE state = 'removing'").fetchone()[0]
        assert removing == 0, "a disconnected calendar was never emptied and forgotten"
        settings_ = calendar.get_settings(self.db)
        for person in PEOPLE:
            user_id = self._user(person)
            want = expected_days(self.world, user_id, now)
            active = self._active(person)
            writable = (
                active is not None
                and active.status == "Connected"
                and active.sync_enabled
                and settings_[f"{active.provider}Enabled"]
            )
            requested = {
                m.item.day_id: m
                for m in self.world.mailbox(person).values()
                if m.method == "REQUEST" and m.item.end > now
            }
            if writable:
                assert active is not None
                held = [i for i in self._calendar(active.id).events.values() if i.end > now]
                twice = [day for day, n in Counter(i.day_id for i in held).items() if n > 1]
                assert not twice, f"{person} holds two events for days {twice}"
                assert {i.day_id for i in held} == set(want), f"{person}'s calendar: {_diff(held, want)}"
                for item in held:
                    _same(person, item.user_id, item, want[item.day_id], user_id)
                assert not requested, f"{person} has a calendar and still e-mailed entries for {sorted(requested)}"
            elif settings_["EmailFallbackEnabled"]:
                assert set(requested) == set(
                    want
                ), f"{person}'s mailbox (newest per UID): REQUESTs for {sorted(requested)}, should hold {sorted(want)}"
                for day_id, mail in requested.items():
                    assert mail.uid == uid_of(user_id, day_id)
                    _same(person, mail.item.user_id, mail.item, want[day_id], user_id)

    @invariant()
    def one_message_per_sequence(self) -> None:
        """(c) No UID gets two different messages with the same SEQUENCE; each new one is higher, or a
        calendar app keeps the older state (RFC 5546 §2.1.5)."""
        if not hasattr(self, "world"):
            return
        seen: dict[str, list[Mail]] = defaultdict(list)
        for mail in self.world.mails:
            seen[mail.uid].append(mail)
        for uid, mails in seen.items():
            by_sequence: dict[int, Mail] = {}
            for mail in mails:
                other = by_sequence.setdefault(mail.sequence, mail)
                assert other is mail or (other.method, other.item) == (
                    mail.method,
                    mail.item,
                ), f"UID {uid}: {other.method} and {mail.method} both with SEQUENCE {mail.sequence}"
            sequences = [m.sequence for m in mails]
            assert sequences == sorted(set(sequences)), f"UID {uid}: SEQUENCE went {sequences}"


def _failure(kind: str) -> ProviderError:
    if kind.startswith("throttled"):
        return Throttled("429 Too Many Requests", retry_after=float(kind.split()[1]))
    return Unavailable("503 Service Unavailable")


def _diff(held: list[Any], want: dict[str, Expected]) -> str:
    have = {i.day_id for i in held}
    return f"extra {sorted(have - set(want))}, missing {sorted(set(want) - have)}"


def _same(person: str, owner: str, item: Any, want: Expected, user_id: str) -> None:
    assert owner == user_id
    got = (item.subject, item.start, item.end, item.time_zone, item.location, item.role)
    expected = (want.subject, want.start, want.end, want.time_zone, want.location, want.role)
    assert got == expected, f"{person}, day {want.day_id}: holds {got}, should hold {expected}"


# -- what the machine found, shrunk -------------------------------------------------------------------------

# A REQUEST after a CANCEL once restarted at SEQUENCE 0 (sync.execute ignored calendar_sequences): calendar
# apps kept the cancellation (RFC 5546 §2.1.5, the highest SEQUENCE wins) and the person never saw the day again.


def test_a_learner_enrolled_again_sees_the_day_again(tmp_path: Path) -> None:
    """Cancelled and enrolled again without a calendar: the new REQUEST outranks the CANCEL before it."""
    world = make_world(tmp_path)
    session = world.session()
    enrollment = world.enroll("omar", session)
    world.sync()
    enrollments.cancel(world.db, CLI, enrollment, "changed plans")
    world.sync()
    world.enroll("omar", session)
    world.sync()
    assert [(m.method, m.sequence) for m in world.mails] == [("REQUEST", 0), ("CANCEL", 1), ("REQUEST", 2)]
    assert len(world.mailbox_events("omar")) == 1


def test_a_paused_calendar_hands_the_days_back_to_email(tmp_path: Path) -> None:
    """E-mail, then a calendar (the e-mailed day is cancelled), then the provider switched off: the day comes
    back by e-mail with a SEQUENCE above the CANCEL's (seen by the machine as an empty mailbox)."""
    world = make_world(tmp_path)
    world.settings(CalDAVEnabled=True)
    world.enroll("lena", world.session())
    world.sync()
    world.connect("lena")
    world.sync()
    world.settings(CalDAVEnabled=False)
    world.sync()
    assert [(m.method, m.sequence) for m in world.mails] == [("REQUEST", 0), ("CANCEL", 1), ("REQUEST", 2)]
    assert len(world.mailbox_events("lena")) == 1


# A calendar disconnected without KeepEvents whose credentials died was retried every round for ever (the pair
# was done, and the removal queued it again), and hand-over order held back the person's e-mails meanwhile.


def test_a_dead_calendar_being_disconnected_does_not_hold_the_worker(tmp_path: Path) -> None:
    """Disconnecting a calendar whose authorization is gone: the worker goes quiet instead of calling the dead
    calendar every round, and the person's days come by e-mail."""
    world = make_world(tmp_path)
    world.settings(CalDAVEnabled=True)
    session = world.session()
    connection_id = world.connect("lena")
    world.providers[connection_id] = dead = Revocable()
    world.enroll("lena", session)
    world.sync()
    dead.revoked = True
    calendar.disconnect(world.db, CLI, world.people["lena"], keep_events=False)
    world.sync(rounds=1)  # the removal fails: the calendar says invalid_grant
    assert world.sync(rounds=10) < 10, "the worker works on the dead calendar every round"
    assert len(world.mailbox_events("lena")) == 1


Mirror.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCalendarMirror = pytest.mark.slow(Mirror.TestCase)
