"""The mirror's engine with in-memory calendars: who holds which events, when, and how few writes it takes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from engine_support import World, make_world

from calendars.model import AuthorizationLost, Throttled, Unavailable
from storage import calendar, enrollments, events, sessions, users
from storage.models import CLI


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = make_world(tmp_path)
    w.settings(CalDAVEnabled=True)
    return w


def test_a_registered_learner_gets_one_event_per_day_in_the_session_zone(world: World) -> None:
    session = world.session("Two mornings", days=2)
    world.connect("lena")
    world.enroll("lena", session)
    world.sync()
    held = world.calendar_of("lena")
    assert [(i.start, i.end) for i in held] == [
        (datetime(2027, 3, 1, 8, 0, tzinfo=UTC), datetime(2027, 3, 1, 11, 0, tzinfo=UTC)),
        (datetime(2027, 3, 2, 8, 0, tzinfo=UTC), datetime(2027, 3, 2, 11, 0, tzinfo=UTC)),
    ]
    assert {i.time_zone for i in held} == {"Europe/Berlin"}
    assert held[0].subject == "First aid: Two mornings"


def test_a_waitlisted_learner_gets_nothing_until_promoted(world: World) -> None:
    session = world.session(MaxAttendees="1")
    for person in ("lena", "omar"):
        world.connect(person)
    first = world.enroll("lena", session)
    world.enroll("omar", session)
    world.sync()
    assert len(world.calendar_of("lena")) == 1
    assert world.calendar_of("omar") == []
    enrollments.cancel(world.db, CLI, first, "changed plans")
    world.sync()
    assert world.calendar_of("lena") == []
    assert len(world.calendar_of("omar")) == 1


def test_a_burst_of_edits_is_one_write_per_event(world: World) -> None:
    session = world.session(days=3)
    connection = world.connect("lena")
    world.enroll("lena", session)
    world.sync()
    provider = world.providers[connection]
    before = provider.writes
    for n in range(10):
        sessions.update(world.db, CLI, session, {"Title": f"Renamed {n}"})
    world.sync()
    assert provider.writes - before == 3
    assert {i.subject for i in world.calendar_of("lena")} == {"First aid: Renamed 9"}


def test_an_instructor_holds_the_session_while_assigned(world: World) -> None:
    session = world.session(InstructorLogins=["ivan@example.org"])
    world.connect("ivan")
    world.sync()
    assert [i.role for i in world.calendar_of("ivan")] == ["Instructor"]
    sessions.update(world.db, CLI, session, {"InstructorLogins": []})
    world.sync()
    assert world.calendar_of("ivan") == []


@pytest.mark.parametrize("removal", ["session", "course", "user", "cancel", "reject_no"])
def test_removals_take_the_events_away(world: World, removal: str) -> None:
    session = world.session(days=2)
    world.connect("lena")
    enrollment = world.enroll("lena", session)
    world.sync()
    assert len(world.calendar_of("lena")) == 2
    if removal == "session":
        sessions.delete(world.db, CLI, session)
    elif removal == "course":
        from storage import courses

        courses.delete(world.db, CLI, world.course_id)
    elif removal == "user":
        connection = calendar.active_connection(world.db, world.people["lena"])
        assert connection is not None
        users.delete(world.db, CLI, world.people["lena"])
        world.sync()
        assert world.providers[connection.id].events == {}
        return
    else:
        enrollments.cancel(world.db, CLI, enrollment, None)
    world.sync()
    assert world.calendar_of("lena") == []


def test_people_without_a_calendar_get_request_then_cancel_with_rising_sequence(world: World) -> None:
    session = world.session()
    enrollment = world.enroll("omar", session)
    world.sync()
    (first,) = world.mails
    assert (first.method, first.sequence) == ("REQUEST", 0)
    sessions.update(world.db, CLI, session, {"Room": {"Title": "Room 2", "Source": "Unknown"}})
    world.sync()
    enrollments.cancel(world.db, CLI, enrollment, None)
    world.sync()
    assert [(m.method, m.sequence) for m in world.mails] == [("REQUEST", 0), ("REQUEST", 1), ("CANCEL", 2)]
    assert len({m.uid for m in world.mails}) == 1
    cancel = world.mails[-1].item  # the day as last sent: its title and times, not a placeholder
    assert (cancel.subject, cancel.start, cancel.time_zone) == (
        "First aid: Session",
        datetime(2027, 3, 1, 8, 0, tzinfo=UTC),
        "Europe/Berlin",
    )
    assert world.mailbox_events("omar") == []


def test_connecting_cancels_the_emailed_entries_before_writing_the_calendar(world: World) -> None:
    session = world.session(days=2)
    world.enroll("pia", session)
    world.sync()
    assert len(world.mailbox_events("pia")) == 2
    world.connect("pia")
    world.sync()
    assert world.mailbox_events("pia") == []  # each e-mailed day cancelled with a higher SEQUENCE
    assert len(world.calendar_of("pia")) == 2


def test_disconnecting_removes_our_events_and_goes_back_to_email(world: World) -> None:
    session = world.session(days=2)
    connection = world.connect("lena")
    world.enroll("lena", session)
    world.sync()
    calendar.disconnect(world.db, CLI, world.people["lena"], keep_events=False)
    world.sync()
    assert world.providers[connection].events == {}
    assert calendar.connection_by_id(world.db, connection) is None
    assert len(world.mailbox_events("lena")) == 2


def test_disconnecting_with_keep_events_leaves_them(world: World) -> None:
    session = world.session()
    connection = world.connect("lena")
    world.enroll("lena", session)
    world.sync()
    calendar.disconnect(world.db, CLI, world.people["lena"], keep_events=True)
    world.sync()
    assert len(world.providers[connection].events) == 1


def test_a_lost_authorization_marks_the_connection_fires_the_event_and_falls_back_to_email(world: World) -> None:
    session = world.session()
    connection = world.connect("lena")
    world.providers.setdefault(connection, __import__("calendars.providers.null", fromlist=["x"]).NullProvider())
    world.providers[connection].fail.append(AuthorizationLost("invalid_grant: AADSTS700082"))
    world.enroll("lena", session)
    world.sync()
    shown = calendar.get_connection(world.db, CLI, world.people["lena"])
    assert shown["Status"] == "NeedsReauthorization"
    assert "AADSTS700082" in shown["LastError"]
    assert [e.type for e in events.latest(world.db, types=["CalendarConnectionNeedsReauthorization"])] == [
        "CalendarConnectionNeedsReauthorization"
    ]
    assert len(world.mailbox_events("lena")) == 1


def test_a_throttled_write_waits_for_retry_after(world: World) -> None:
    session = world.session()
    connection = world.connect("lena")
    from calendars.providers.null import NullProvider

    world.providers[connection] = NullProvider(fail=[Throttled("429", retry_after=120)])
    world.enroll("lena", session)
    world.sync()
    assert world.calendar_of("lena") == []
    world.advance(seconds=119)
    world.sync()
    assert world.calendar_of("lena") == []
    world.advance(seconds=2)
    world.sync()
    assert len(world.calendar_of("lena")) == 1


def test_a_failing_smtp_server_loses_nothing(world: World) -> None:
    session = world.session()
    world.mail_failures.extend([Unavailable("451 try later"), Unavailable("451 try later")])
    world.enroll("omar", session)
    world.sync()
    assert world.mails == []
    world.advance(minutes=1)
    world.sync()
    assert world.mails == []
    world.advance(minutes=2)
    world.sync()
    assert [(m.method, m.sequence) for m in world.mails] == [("REQUEST", 0)]


def test_disabling_the_provider_pauses_and_enabling_resynchronizes(world: World) -> None:
    session = world.session()
    connection = world.connect("lena")
    world.enroll("lena", session)
    world.sync()
    world.settings(CalDAVEnabled=False)
    world.sync()
    assert calendar.get_connection(world.db, CLI, world.people["lena"])["Status"] == "Paused"
    sessions.update(world.db, CLI, session, {"Title": "Moved"})
    world.sync()
    assert {i.subject for i in world.providers[connection].events.values()} == {"First aid: Session"}  # not maintained
    assert [m.item.subject for m in world.mailbox_events("lena")] == ["First aid: Moved"]
    world.settings(CalDAVEnabled=True)
    world.sync()
    assert {i.subject for i in world.providers[connection].events.values()} == {"First aid: Moved"}
    assert world.mailbox_events("lena") == []


def test_past_days_are_left_alone(world: World) -> None:
    session = world.session(days=2)
    connection = world.connect("lena")
    enrollment = world.enroll("lena", session)
    world.sync()
    world.now[0] = datetime(2027, 3, 1, 20, 0, tzinfo=UTC)  # the first day is over
    enrollments.cancel(world.db, CLI, enrollment, None)
    world.sync()
    assert [i.start.day for i in world.providers[connection].events.values()] == [1]


def test_disconnecting_and_reconnecting_between_two_rounds_keeps_every_event_recorded(world: World) -> None:
    """The old connection's record and the new one's share their key: the new one stays, so cancelling later
    removes the event from the calendar (it used to stay there, unrecorded)."""
    session = world.session()
    world.connect("lena")
    enrollment = world.enroll("lena", session)
    world.sync()
    calendar.disconnect(world.db, CLI, world.people["lena"], keep_events=False)
    second = world.connect("lena")
    world.sync()
    assert len(world.providers[second].events) == 1
    enrollments.cancel(world.db, CLI, enrollment, None)
    world.sync()
    assert world.providers[second].events == {}


def test_switching_email_off_sends_no_cancellations(world: World) -> None:
    """Turning the fallback off stops e-mails; it does not cancel what people already have (as a paused
    calendar keeps its events). On again, the entries are kept up to date."""
    session = world.session()
    world.enroll("omar", session)
    world.sync()
    world.settings(EmailFallbackEnabled=False)
    sessions.update(world.db, CLI, session, {"Title": "Renamed"})
    world.sync()
    assert [m.method for m in world.mails] == ["REQUEST"]
    world.settings(EmailFallbackEnabled=True)
    world.sync()
    assert [(m.method, m.sequence, m.item.subject) for m in world.mails][-1] == ("REQUEST", 1, "First aid: Renamed")


def test_moving_a_day_updates_its_event_and_invitation_in_place(world: World) -> None:
    """A day moved by an hour is the same day moved: the calendar's event is updated (no delete, no second
    event) and the e-mailed entry gets an update with the same UID, not a CANCEL and a new invitation."""
    session = world.session(days=2)
    connection = world.connect("lena")
    world.enroll("lena", session)
    world.enroll("omar", session)
    world.sync()
    provider = world.providers[connection]
    keys, writes = set(provider.events), provider.writes
    later = [{"StartDate": f"2027-03-0{d}T10:00:00", "EndDate": f"2027-03-0{d}T13:00:00"} for d in (1, 2)]
    sessions.update(
        world.db, CLI, session, {"Days": later, "StartDate": later[0]["StartDate"], "EndDate": later[1]["EndDate"]}
    )
    world.sync()
    assert set(provider.events) == keys and provider.writes - writes == 2
    assert sorted(i.start.hour for i in provider.events.values()) == [9, 9]
    assert [(m.method, m.sequence) for m in world.mails] == [("REQUEST", 0)] * 2 + [("REQUEST", 1)] * 2


def test_people_registered_before_smtp_was_configured_get_their_invitations_when_it_is(world: World) -> None:
    session = world.session()
    world.enroll("omar", session)

    async def rounds(send_mail: bool) -> None:
        worker = world.worker()
        if not send_mail:
            worker._send_mail = None  # as a server without COURSEWIRE_SMTP_URL
        async with worker:
            while await worker.run_once(world.now[0]):
                pass

    asyncio.run(rounds(send_mail=False))
    assert world.mails == []
    asyncio.run(rounds(send_mail=True))  # restarted with SMTP configured
    assert [m.method for m in world.mails] == ["REQUEST"]
