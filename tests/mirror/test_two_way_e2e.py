"""The two-way calendar mirror end to end, per provider (issue 11, "Tests and bench"): the real CalendarWorker with
the real Graph, Google and CalDAV providers against the Graph fake, the Google fake and a real Radicale, and the
notification receiver served on 127.0.0.1 where the fakes' subscriptions and watch channels POST
(tests/mirror/two_way_support.py). A person deleting a session's event in their calendar unregisters them and
moves the waitlist up; a move, a duplicate, our own write and a revoked token unregister nobody; a dropped
notification is found by the sweep; Graph's lifecycle notifications and expired delta tokens are handled."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from engine_support import make_world
from fakes.google import GoogleCalendarFake
from fakes.graph import GraphFake
from radicale_support import RadicaleServer, RecordingProxy
from two_way_support import (
    POLL_SECONDS,
    SWEEP_SECONDS,
    CalDAVCalendars,
    Calendars,
    GoogleCalendars,
    GraphCalendars,
    Mirror,
    receiving,
)

from storage import events, sessions
from storage.calendar import PROVIDER_NAMES
from storage.db import Database
from storage.models import CLI

PUSH = ["Microsoft365", "Google"]
ALL = [*PUSH, "CalDAV"]
SUBJECT = "First aid: Session"
DELETED = ("CalendarEventDeleted", "lena", "Unregistered", "DeletedFromCalendar")
MOVED = ("CalendarEventMoved", "lena", "Followed", "MovedToAnotherCalendar")


def _calendars(
    request: pytest.FixtureRequest, provider: str, clock: list[datetime], stack: list[Callable[[], None]]
) -> Calendars:
    """The people's calendars at `provider`; what was started is stopped by the caller (`stack`)."""
    now = lambda: clock[0]  # noqa: E731 (the world's clock, read at call time)
    if provider == "Microsoft365":
        graph = GraphFake().start()
        stack.append(graph.stop)
        return GraphCalendars(graph, now)
    if provider == "Google":
        google = GoogleCalendarFake(clock=now).start()
        stack.append(google.stop)
        return GoogleCalendars(google, now)
    server: RadicaleServer = request.getfixturevalue("radicale")
    proxy = RecordingProxy(server.port)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()

    def stop() -> None:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)

    stack.append(stop)
    return CalDAVCalendars(server, proxy, now)


def _mirror(request: pytest.FixtureRequest, tmp_path: Path, provider: str) -> Iterator[Mirror]:
    world = make_world(tmp_path)
    world.settings(Microsoft365Enabled=True, GoogleEnabled=True, CalDAVEnabled=True)
    stack: list[Callable[[], None]] = []
    receiver_db = Database(tmp_path / "coursewire.db", clock=lambda: world.now[0])
    try:
        calendars = _calendars(request, provider, world.now, stack)
        with receiving(receiver_db) as url:
            yield Mirror(world, calendars, url)
    finally:
        for stop in reversed(stack):
            stop()
        receiver_db.close()
        world.db.close()


@pytest.fixture(params=ALL)
def mirror(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mirror]:
    """Every provider."""
    yield from _mirror(request, tmp_path, request.param)


@pytest.fixture(params=PUSH)
def pushed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mirror]:
    """The providers that push notifications (Microsoft 365, Google)."""
    yield from _mirror(request, tmp_path, request.param)


@pytest.fixture
def graph(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mirror]:
    yield from _mirror(request, tmp_path, "Microsoft365")


def registered(mirror: Mirror, person: str = "lena", **session: object) -> tuple[str, str]:
    """A session (1 March 2027) with `person` registered and their calendar connected, mirrored: (session id,
    enrollment id). The person's calendar holds the one event."""
    session_id = mirror.world.session(**session)  # type: ignore[arg-type]
    mirror.connect(person)
    enrollment = mirror.world.enroll(person, session_id)
    mirror.rounds()
    assert [h.subject for h in mirror.calendars.events(person)] == [SUBJECT]
    return session_id, enrollment


def test_a_learner_deleting_the_event_is_unregistered_and_the_next_on_the_waitlist_gets_theirs(
    mirror: Mirror,
) -> None:
    """The issue's core promise, per provider: Lena deletes the session's event in her calendar; once the mirror
    hears of it (a push notification at once, a CalDAV poll) her enrollment is cancelled by her with a reason
    naming her calendar, the decision is in the event log, and Omar, first on the waitlist, is promoted and
    gets the event in his calendar."""
    session_id = mirror.world.session(MaxAttendees="1")
    mirror.connect("lena", "omar")
    lena = mirror.world.enroll("lena", session_id)
    omar = mirror.world.enroll("omar", session_id)
    mirror.rounds()
    assert mirror.status(omar) == "Waitlisted"
    (event,) = mirror.calendars.events("lena")
    assert event.subject == SUBJECT
    assert mirror.calendars.events("omar") == []

    mirror.calendars.delete("lena", event.id)
    mirror.notice()
    mirror.rounds()

    assert mirror.status(lena) == "Cancelled"
    (cancelled,) = events.latest(mirror.db, types=["EnrollmentCancelled"])
    assert cancelled.actor == {"kind": "user", "api_key_id": None, "user_id": mirror.world.people["lena"]}
    calendar_name = PROVIDER_NAMES[mirror.calendars.provider]
    assert f"The event was deleted from the person's {calendar_name} calendar" in cancelled.data["Message"]
    assert mirror.decisions() == [DELETED]
    assert [e.type for e in events.latest(mirror.db, types=["SessionUnregistered"])] == ["SessionUnregistered"]
    assert mirror.status(omar) != "Waitlisted"
    assert [h.subject for h in mirror.calendars.events("omar")] == [SUBJECT]
    assert mirror.calendars.events("lena") == []
    if mirror.calendars.pushes:
        assert mirror.notifications("lena") >= 1  # it was the notification that made the check due


def test_a_moved_event_unregisters_nobody_and_a_later_session_edit_updates_it_where_it_is(mirror: Mirror) -> None:
    """An event the person moved to another of their calendars is not a deletion: nobody is unregistered, and
    the next edit of the session updates the event in the calendar it was moved to, without writing it again
    in the connected one."""
    session_id, lena = registered(mirror)
    (event,) = mirror.calendars.events("lena")
    mirror.calendars.move("lena", event.id)
    mirror.notice()
    mirror.rounds()
    assert mirror.status(lena) != "Cancelled"
    # Graph's ImmutableId is the same in every calendar [MS16]: the event's calendar tells the move.
    assert mirror.decisions() == [MOVED]

    sessions.update(mirror.db, CLI, session_id, {"Title": "Renamed"})
    mirror.rounds()
    mirror.notice()
    mirror.rounds()
    assert mirror.calendars.events("lena") == []
    assert [h.subject for h in mirror.calendars.moved_events("lena")] == ["First aid: Renamed"]
    assert mirror.status(lena) != "Cancelled"


def test_a_moved_event_deleted_in_the_calendar_it_was_moved_to_unregisters_the_learner_by_the_next_sweep(
    mirror: Mirror,
) -> None:
    """Only the connected calendar is watched, so the deletion of an event the person moved to another calendar
    is not notified: the sweep (CalDAV: the poll) reads the followed event again, finds it gone (Outlook: in
    Deleted Items, in no calendar), and unregisters the learner as for any deletion."""
    _, lena = registered(mirror)
    (event,) = mirror.calendars.events("lena")
    mirror.calendars.move("lena", event.id)
    mirror.notice()
    mirror.rounds()
    assert mirror.decisions() == [MOVED]
    (moved,) = mirror.calendars.moved_events("lena")
    mirror.calendars.delete_moved("lena", moved.id)
    mirror.notice()
    mirror.rounds()
    interval = POLL_SECONDS if mirror.calendars.provider == "CalDAV" else SWEEP_SECONDS
    mirror.world.advance(seconds=interval)
    mirror.rounds()
    assert mirror.status(lena) == "Cancelled"
    assert mirror.decisions() == [MOVED, DELETED]
    assert mirror.calendars.events("lena") == []
    assert mirror.calendars.moved_events("lena") == []


def test_a_move_first_met_by_a_session_edit_is_followed_and_its_deletion_there_still_unregisters(
    mirror: Mirror,
) -> None:
    """The person moves the event and the session is edited before any check read the move: the write finds
    the event where it went (CalDAV by UID, Google by id in the other calendar, Graph by its ImmutableId) and
    updates it there, the move is in the event log once, and the event is read there every sweep from then on,
    so deleting it there unregisters the learner (a newcomer found such moves neither logged nor watched)."""
    session_id, lena = registered(mirror)
    (event,) = mirror.calendars.events("lena")
    mirror.calendars.move("lena", event.id)
    sessions.update(mirror.db, CLI, session_id, {"Title": "Renamed"})
    mirror.rounds()
    mirror.notice()
    mirror.rounds()
    assert mirror.decisions() == [MOVED]
    (moved,) = mirror.calendars.moved_events("lena")
    assert moved.subject == "First aid: Renamed" and mirror.calendars.events("lena") == []
    mirror.calendars.delete_moved("lena", moved.id)
    mirror.notice()
    mirror.rounds()
    mirror.world.advance(seconds=POLL_SECONDS if mirror.calendars.provider == "CalDAV" else SWEEP_SECONDS)
    mirror.rounds()
    assert mirror.status(lena) == "Cancelled"
    assert mirror.decisions() == [MOVED, DELETED]


def test_duplicate_notifications_and_those_of_our_own_writes_change_nothing(mirror: Mirror) -> None:
    """Our own update of the event is notified (twice: the provider repeats itself) or seen by the next poll; the
    checks this makes due find the event where it is and decide nothing."""
    session_id, lena = registered(mirror)
    before = mirror.notifications("lena")
    mirror.calendars.duplicate_next(2)
    sessions.update(mirror.db, CLI, session_id, {"Title": "Renamed"})
    mirror.rounds()
    mirror.notice()
    mirror.rounds()
    if mirror.calendars.pushes:
        assert mirror.notifications("lena") >= before + 2  # our write, heard twice
    assert mirror.decisions() == []
    assert mirror.status(lena) != "Cancelled"
    assert [h.subject for h in mirror.calendars.events("lena")] == ["First aid: Renamed"]


def test_a_deletion_notified_twice_unregisters_once(pushed: Mirror) -> None:
    """The same deletion notified twice is decided once: one cancellation, one decision in the event log."""
    _, lena = registered(pushed)
    (event,) = pushed.calendars.events("lena")
    pushed.calendars.duplicate_next()
    pushed.calendars.delete("lena", event.id)
    pushed.notice()
    pushed.rounds()
    assert pushed.status(lena) == "Cancelled"
    assert pushed.decisions() == [DELETED]
    assert len(events.latest(pushed.db, types=["EnrollmentCancelled"])) == 1


def test_a_revoked_token_unregisters_nobody_and_the_connection_needs_reauthorization(mirror: Mirror) -> None:
    """The person revokes coursewire's access (or changes the CalDAV app password) and deletes the event: the
    mirror cannot read the calendar, so it decides nothing and shows the connection as NeedsReauthorization."""
    _, lena = registered(mirror)
    (event,) = mirror.calendars.events("lena")
    mirror.calendars.revoke("lena")
    mirror.calendars.delete("lena", event.id)
    mirror.notice()
    mirror.rounds()
    assert mirror.status(lena) != "Cancelled"
    assert mirror.decisions() == []
    assert mirror.shown("lena")["Status"] == "NeedsReauthorization"


def test_a_dropped_notification_is_found_by_the_sweep(pushed: Mirror) -> None:
    """A deletion whose notification never came is decided by the next sweep, and not before."""
    _, lena = registered(pushed)
    (event,) = pushed.calendars.events("lena")
    pushed.calendars.drop_next()
    pushed.calendars.delete("lena", event.id)
    pushed.notice()
    pushed.rounds()
    assert pushed.status(lena) != "Cancelled"  # nothing told the mirror yet
    pushed.world.advance(seconds=SWEEP_SECONDS)
    pushed.rounds()
    assert pushed.status(lena) == "Cancelled"
    assert pushed.decisions() == [DELETED]


def test_an_expired_change_cursor_is_followed_by_a_full_listing_that_finds_the_deletion(pushed: Mirror) -> None:
    """Graph's delta token or Google's sync token expired (410): the calendar is listed in full, and the event
    missing from it is confirmed deleted."""
    _, lena = registered(pushed)
    listings = pushed.calendars.full_listings
    (event,) = pushed.calendars.events("lena")
    pushed.calendars.expire_cursors("lena")
    pushed.calendars.delete("lena", event.id)
    pushed.notice()
    pushed.rounds()
    assert pushed.calendars.full_listings > listings
    assert pushed.status(lena) == "Cancelled"
    assert pushed.decisions() == [DELETED]


@pytest.mark.parametrize(("status", "code"), [(410, "resyncRequired"), (400, "syncStateNotFound")])
def test_graph_delta_expired_either_way_still_finds_the_deletion(graph: Mirror, status: int, code: str) -> None:
    """Graph answers an expired delta token with 410 Gone or 400 syncStateNotFound [MS10-b]: both lead to a full
    listing that finds the deletion."""
    assert isinstance(graph.calendars, GraphCalendars)
    _, lena = registered(graph)
    (event,) = graph.calendars.events("lena")
    graph.calendars.fake.expire_delta(graph.calendars.user_ids["lena"], status, code)
    graph.calendars.delete("lena", event.id)
    graph.notice()
    graph.rounds()
    assert graph.status(lena) == "Cancelled"


def test_graph_subscription_removed_is_recreated_and_a_full_check_runs(graph: Mirror) -> None:
    """Graph removed the subscription (`subscriptionRemoved` [MS7]): a new one is made at once, and the full check
    that follows finds a deletion whose notification was lost with the old subscription."""
    calendars = graph.calendars
    assert isinstance(calendars, GraphCalendars)
    _, lena = registered(graph)
    user_id = calendars.user_ids["lena"]
    (old,) = calendars.fake.subscriptions_of(user_id)
    assert graph.watch("lena").channel_id == old.id
    (event,) = calendars.events("lena")
    calendars.drop_next()
    calendars.delete("lena", event.id)
    listings = calendars.full_listings

    calendars.fake.lifecycle(old.id, "subscriptionRemoved")
    graph.world.advance(seconds=1)
    graph.rounds()

    (new,) = calendars.fake.subscriptions_of(user_id)
    assert new.id != old.id
    assert new.notification_url == graph.public_url + "/calendar/notifications/microsoft365"
    assert graph.watch("lena").channel_id == new.id
    assert calendars.full_listings == listings + 1
    assert graph.status(lena) == "Cancelled"
    # The new subscription is heard: a change after it makes the next check due at once.
    heard = graph.notifications("lena")
    session_id = graph.world.session(title="Second")
    graph.world.enroll("lena", session_id)
    graph.rounds()
    assert graph.notifications("lena") > heard


def test_graph_reauthorization_required_renews_the_subscription(graph: Mirror) -> None:
    """`reauthorizationRequired` [MS7]: the subscription is renewed (PATCH, same id, a later expiry) at once,
    not when its renewal would otherwise be due."""
    calendars = graph.calendars
    assert isinstance(calendars, GraphCalendars)
    registered(graph)
    user_id = calendars.user_ids["lena"]
    (sub,) = calendars.fake.subscriptions_of(user_id)
    expires = sub.expires
    graph.world.advance(hours=1)
    calendars.fake.lifecycle(sub.id, "reauthorizationRequired")
    graph.rounds()
    assert ("PATCH", f"/v1.0/subscriptions/{sub.id}") in calendars.fake.requests
    (renewed,) = calendars.fake.subscriptions_of(user_id)
    assert renewed.id == sub.id
    assert renewed.expires >= expires + timedelta(hours=1)
    watch = graph.watch("lena")
    assert watch.channel_id == sub.id and watch.expires_at == renewed.expires


def test_graph_missed_notifications_make_a_full_check_run_at_once(graph: Mirror) -> None:
    """`missed` [MS7]: Graph says it could not deliver some notifications; a full check runs at once (not at the
    next sweep) and finds the deletion whose notification was lost, keeping the subscription."""
    calendars = graph.calendars
    assert isinstance(calendars, GraphCalendars)
    _, lena = registered(graph)
    (sub,) = calendars.fake.subscriptions_of(calendars.user_ids["lena"])
    (event,) = calendars.events("lena")
    calendars.drop_next()
    calendars.delete("lena", event.id)
    listings = calendars.full_listings
    calendars.fake.lifecycle(sub.id, "missed")
    graph.world.advance(seconds=1)
    graph.rounds()
    assert calendars.full_listings == listings + 1
    assert graph.status(lena) == "Cancelled"
    assert [s.id for s in calendars.fake.subscriptions_of(calendars.user_ids["lena"])] == [sub.id]
