"""The two-way mirror's engine with in-memory calendars (calendars/inbound.py): what a person deleting or moving a
session's event in their calendar does to their registration, and what it must not do."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from engine_support import World, make_world

from calendars import resync
from calendars.model import AuthorizationLost, Rejected, Throttled, Written
from calendars.providers.null import NullProvider
from storage import calendar, calendar_watch, events, sessions
from storage.models import CLI, EnrollmentStatus

POLL = 301  # seconds: just past the default COURSEWIRE_CALDAV_POLL_SECONDS


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = make_world(tmp_path)
    w.settings(CalDAVEnabled=True)
    return w


def _provider(world: World, person: str) -> NullProvider:
    connection = calendar.active_connection(world.db, world.people[person])
    assert connection is not None
    return world.providers[connection.id]


def _status(world: World, enrollment_id: str) -> str:
    with world.db.read() as conn:
        (status,) = conn.execute("SELECT status FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
    return EnrollmentStatus(status).name


def _decisions(world: World) -> list[tuple[str, str, str]]:
    found = events.latest(world.db, types=["CalendarEventDeleted", "CalendarEventMoved"])
    return [(e.type, e.data["Decision"], e.data["Reason"]) for e in found]


def _registered(world: World, person: str, **session: object) -> tuple[str, str, NullProvider]:
    session_id = world.session(**session)  # type: ignore[arg-type]
    world.connect(person)
    enrollment = world.enroll(person, session_id)
    world.sync()
    return session_id, enrollment, _provider(world, person)


def test_a_learner_deleting_the_event_is_unregistered_and_the_waitlist_moves_up(world: World) -> None:
    session_id, lena, calendar_of_lena = _registered(world, "lena", days=2, MaxAttendees="1")
    world.connect("omar")
    omar = world.enroll("omar", session_id)
    world.sync()
    assert _status(world, omar) == "Waitlisted"
    first_day = min(calendar_of_lena.events, key=lambda pid: calendar_of_lena.events[pid].start)

    calendar_of_lena.person_deletes(first_day)
    world.advance(seconds=POLL)
    world.sync()

    assert _status(world, lena) == "Cancelled"
    cancelled = events.latest(world.db, types=["EnrollmentCancelled"])[0]
    assert cancelled.actor == {"kind": "user", "api_key_id": None, "user_id": world.people["lena"]}
    assert "deleted from the person's CalDAV calendar" in cancelled.data["Message"]
    assert [e.type for e in events.latest(world.db, types=["SessionUnregistered"])] == ["SessionUnregistered"]
    assert _decisions(world) == [("CalendarEventDeleted", "Unregistered", "DeletedFromCalendar")]
    assert world.calendar_of("lena") == []  # the second day went too
    assert _status(world, omar) != "Waitlisted"
    assert len(world.calendar_of("omar")) == 2


def test_a_notification_arriving_twice_or_for_our_own_write_unregisters_nobody(world: World) -> None:
    session_id, lena, provider = _registered(world, "lena")
    (event_id,) = provider.events
    provider.log.append((event_id, True))  # a removal reported although the event is still there
    provider.log.append((event_id, True))
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert _decisions(world) == []
    sessions.update(world.db, CLI, session_id, {"Title": "Renamed"})
    world.sync()
    assert [i.subject for i in world.calendar_of("lena")] == ["First aid: Renamed"]


def test_an_event_moved_to_another_calendar_is_followed_not_taken_for_a_deletion(world: World) -> None:
    session_id, lena, provider = _registered(world, "lena")
    (event_id,) = provider.events
    new_id = provider.person_moves(event_id)
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert _decisions(world) == [("CalendarEventMoved", "Followed", "MovedToAnotherCalendar")]
    sessions.update(world.db, CLI, session_id, {"Title": "Renamed"})
    world.sync()
    assert list(provider.events) == [new_id]  # updated where the person put it, not written a second time
    assert provider.events[new_id].subject == "First aid: Renamed"


def test_a_followed_event_deleted_where_it_was_moved_unregisters_the_learner_at_the_next_poll(world: World) -> None:
    """Only the connected calendar is watched, so its feed never reports the deletion of an event moved out of
    it: the event is read again once per poll interval where it was followed to, and found gone there."""
    _, lena, provider = _registered(world, "lena")
    (event_id,) = provider.events
    new_id = provider.person_moves(event_id)
    world.advance(seconds=POLL)
    world.sync()
    assert _decisions(world) == [("CalendarEventMoved", "Followed", "MovedToAnotherCalendar")]
    provider.person_deletes(new_id)
    log = len(provider.log)
    world.advance(seconds=POLL)
    world.sync()
    assert len(provider.log) == log  # the feed said nothing: the read found it
    assert _status(world, lena) == "Cancelled"
    assert _decisions(world)[-1] == ("CalendarEventDeleted", "Unregistered", "DeletedFromCalendar")


def test_a_followed_event_is_read_again_once_per_interval_and_followed_back_home(world: World) -> None:
    """A followed event still where it was moved costs one read per poll interval (not one per check), and
    one moved back into the connected calendar is followed back, and no longer read on its own."""
    _, lena, provider = _registered(world, "lena")
    (event_id,) = provider.events
    new_id = provider.person_moves(event_id)
    world.advance(seconds=POLL)
    world.sync()
    reads = provider.reads
    connection = calendar.active_connection(world.db, world.people["lena"])
    assert connection is not None
    for _ in range(3):  # checks made due by notifications, well inside one interval
        calendar_watch.notified(world.db, connection.id, world.now[0])
        world.advance(seconds=10)
        world.sync()
    assert provider.reads - reads == 3  # one feed read per check, and the followed event not read
    world.advance(seconds=POLL)
    world.sync()
    assert provider.reads - reads == 5  # the poll's feed read, and the followed event read once
    provider.elsewhere.discard(new_id)  # the person puts it back in the connected calendar
    world.advance(seconds=POLL)
    world.sync()
    assert _decisions(world)[-1] == ("CalendarEventMoved", "Followed", "MovedBackToConnectedCalendar")
    reads = provider.reads
    world.advance(seconds=POLL)
    world.sync()
    assert provider.reads - reads == 1  # the feed only
    assert _status(world, lena) != "Cancelled"


def test_a_followed_event_whose_calendar_cannot_be_judged_is_decided_later_not_taken_for_a_deletion(
    world: World,
) -> None:
    """Gone where it was followed, but the other calendar answers what coursewire cannot read (Rejected): nothing
    is decided, the check goes on, and the event is asked about again only after the next interval; once the
    calendar answers, the deletion counts."""
    _, lena, provider = _registered(world, "lena")
    (event_id,) = provider.events
    new_id = provider.person_moves(event_id)
    world.advance(seconds=POLL)
    world.sync()
    provider.person_deletes(new_id)
    answers: list[bool | Exception] = [Rejected("PROPFIND: 405")]

    async def reaches(written: Written) -> bool:
        answer = answers.pop(0) if answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer

    provider.reaches = reaches  # type: ignore[method-assign]
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert [d[1] for d in _decisions(world)] == ["Followed"]
    connection = calendar.active_connection(world.db, world.people["lena"])
    assert connection is not None
    watch = calendar_watch.of_connection(world.db, connection.id)
    assert watch is not None and watch.last_check_error is None  # the check itself went through
    reads = provider.reads
    calendar_watch.notified(world.db, watch.connection_id, world.now[0])
    world.advance(seconds=10)
    world.sync()
    assert provider.reads - reads == 1  # the feed only: the followed event waits for the next interval
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) == "Cancelled"


def test_an_instructor_deleting_the_event_is_recorded_and_the_event_comes_back_with_the_next_change(
    world: World,
) -> None:
    session_id = world.session(InstructorLogins=["ivan@example.org"])
    world.connect("ivan")
    world.sync()
    provider = _provider(world, "ivan")
    (event_id,) = provider.events
    provider.person_deletes(event_id)
    world.advance(seconds=POLL)
    world.sync()
    assert _decisions(world) == [("CalendarEventDeleted", "Kept", "Instructor")]
    assert provider.events == {}
    world.advance(seconds=POLL)
    world.sync()  # not written again by the next check, nor by an unrelated round
    assert provider.events == {}
    sessions.update(world.db, CLI, session_id, {"Title": "Renamed"})
    world.sync()
    assert [i.subject for i in world.calendar_of("ivan")] == ["First aid: Renamed"]


def test_with_unregister_on_calendar_delete_off_the_learner_stays_registered(world: World) -> None:
    world.settings(UnregisterOnCalendarDelete=False)
    _, lena, provider = _registered(world, "lena")
    provider.person_deletes(next(iter(provider.events)))
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert _decisions(world) == [("CalendarEventDeleted", "Kept", "UnregisterOnCalendarDeleteOff")]


def test_deleting_the_event_of_a_day_that_has_ended_unregisters_nobody(world: World) -> None:
    _, lena, provider = _registered(world, "lena")
    world.advance(days=40)  # the session (1 March 2027) is over
    provider.person_deletes(next(iter(provider.events)))
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert _decisions(world) == [("CalendarEventDeleted", "Kept", "DayEnded")]


def test_a_deleted_calendar_marks_the_connection_and_unregisters_nobody(world: World) -> None:
    _, lena, provider = _registered(world, "lena")
    provider.person_deletes(next(iter(provider.events)))
    provider.gone = True
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    shown = calendar.get_connection(world.db, CLI, world.people["lena"])
    assert shown["Status"] == "Error"
    assert "gone or no longer shared" in shown["LastError"]


def test_a_revoked_token_marks_the_connection_and_unregisters_nobody(world: World) -> None:
    _, lena, provider = _registered(world, "lena")
    provider.person_deletes(next(iter(provider.events)))
    provider.fail.append(AuthorizationLost("invalid_grant: AADSTS50173"))
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert calendar.get_connection(world.db, CLI, world.people["lena"])["Status"] == "NeedsReauthorization"


def test_an_expired_cursor_lists_the_calendar_again_and_still_finds_the_deletion(world: World) -> None:
    _, lena, provider = _registered(world, "lena")
    provider.person_deletes(next(iter(provider.events)))
    provider.expire_cursors()
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) == "Cancelled"


def test_a_throttled_read_is_tried_again_after_retry_after_and_decides_nothing_meanwhile(world: World) -> None:
    _, lena, provider = _registered(world, "lena")
    provider.person_deletes(next(iter(provider.events)))
    provider.fail.append(Throttled("429", retry_after=120))
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    world.advance(seconds=60)
    world.sync()
    assert _status(world, lena) != "Cancelled"  # still waiting out the Retry-After
    world.advance(seconds=61)
    world.sync()
    assert _status(world, lena) == "Cancelled"


def test_a_notification_makes_the_check_due_at_once(world: World) -> None:
    _, lena, provider = _registered(world, "lena")
    provider.person_deletes(next(iter(provider.events)))
    world.sync()
    assert _status(world, lena) != "Cancelled"  # the next poll is minutes away
    connection = calendar.active_connection(world.db, world.people["lena"])
    assert connection is not None
    calendar_watch.notified(world.db, connection.id, world.now[0])
    world.sync()
    assert _status(world, lena) == "Cancelled"


def test_checks_are_read_only_while_nothing_changes(world: World) -> None:
    _, _, provider = _registered(world, "lena")
    reads = provider.reads
    world.sync()
    assert provider.reads == reads  # not due: no call
    world.advance(seconds=POLL)
    world.sync()
    assert provider.reads == reads + 1  # one changes() call, no confirmation reads


def test_a_session_edit_before_the_deletion_is_noticed_does_not_bring_the_event_back(world: World) -> None:
    session_id, lena, provider = _registered(world, "lena")
    provider.person_deletes(next(iter(provider.events)))
    sessions.update(world.db, CLI, session_id, {"Title": "Renamed"})  # before the next poll
    world.sync()
    assert provider.events == {}  # the update found the event gone: not created again
    assert _status(world, lena) == "Cancelled"  # and the check it made due decided at once


def test_an_instructor_edit_before_the_deletion_is_noticed_writes_the_event_again_after_the_decision(
    world: World,
) -> None:
    session_id = world.session(InstructorLogins=["ivan@example.org"])
    world.connect("ivan")
    world.sync()
    provider = _provider(world, "ivan")
    provider.person_deletes(next(iter(provider.events)))
    sessions.update(world.db, CLI, session_id, {"Title": "Renamed"})
    world.sync()
    assert _decisions(world) == [("CalendarEventDeleted", "Kept", "Instructor")]
    world.advance(seconds=31)  # the pair waits out its backoff after the update found the event gone
    world.sync()
    assert [i.subject for i in world.calendar_of("ivan")] == ["First aid: Renamed"]


def test_resync_writes_missing_events_again_instead_of_unregistering(world: World) -> None:
    """`coursewire calendar resync` (storage.calendar_watch.force_rewrite) repairs: an event missing from the
    calendar is created again, and nobody is unregistered for it."""
    session_id, lena, provider = _registered(world, "lena", days=2)
    provider.events.clear()  # gone without any trace in the feed (a restore from backup, a broken server)
    with world.db.write() as conn:
        marked, pairs = calendar_watch.force_rewrite(conn, world.now[0], session_id=session_id)
    assert (marked, pairs) == (2, {(world.people["lena"], session_id)})
    world.sync()
    assert len(world.calendar_of("lena")) == 2
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert _decisions(world) == []


def test_resync_finds_and_removes_events_of_ours_without_a_record(world: World) -> None:
    """A stray (an event of ours the calendar holds with no record: a crash between write and record, a restore)
    is found by its key and removed; the person's own events and the recorded ones stay."""
    session_id, _, provider = _registered(world, "lena")
    connection = calendar.active_connection(world.db, world.people["lena"])
    assert connection is not None
    (recorded,) = provider.events
    stray = next(iter(provider.events.values()))
    provider.events["left-behind"] = stray  # same key, another provider id: ours, unrecorded
    provider.events["own"] = replace(stray, user_id="someone-else")  # a key that is not this person's
    provider.versions.update({"left-behind": 1, "own": 1})

    async def go() -> list[resync.Stray]:
        found = await resync.strays(world.db, provider, connection)
        assert await resync.remove(provider, found) == []
        return found

    found = asyncio.run(go())
    assert [s.provider_id for s in found] == ["left-behind"]
    assert set(provider.events) == {recorded, "own"}


def test_an_event_deleted_while_sync_was_paused_is_written_again_not_taken_for_leaving(world: World) -> None:
    """While the mirror is paused the person gets e-mails on top of the calendar and may delete the calendar's
    copy; once sync is on again the event is written again and nobody is unregistered (the first listing after
    a pause decides nothing)."""
    _, lena, provider = _registered(world, "lena")
    calendar.set_sync_enabled(world.db, CLI, world.people["lena"], False)
    world.sync()
    provider.person_deletes(next(iter(provider.events)))
    world.advance(seconds=POLL)
    world.sync()
    calendar.set_sync_enabled(world.db, CLI, world.people["lena"], True)
    world.sync()
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert _decisions(world) == []
    assert len(world.calendar_of("lena")) == 1


def test_a_calendar_deleted_and_made_again_gets_its_events_back_and_unregisters_nobody(world: World) -> None:
    """The calendar goes as a whole (connection Error), the person makes it again, empty, and turns sync on: the
    events are written again; nobody is unregistered for the emptied calendar."""
    _, lena, provider = _registered(world, "lena", days=2)
    provider.gone = True
    world.advance(seconds=POLL)
    world.sync()
    assert calendar.get_connection(world.db, CLI, world.people["lena"])["Status"] == "Error"
    provider.gone = False
    provider.events.clear()  # made again, empty
    calendar.set_sync_enabled(world.db, CLI, world.people["lena"], True)  # retries a connection in Error
    world.sync()
    world.advance(seconds=POLL)
    world.sync()
    assert _status(world, lena) != "Cancelled"
    assert len(world.calendar_of("lena")) == 2
