"""Attacks on following an event moved to another of the person's calendars (calendars/inbound.py `_followed`):
whatever the person does with a moved event short of deleting it -- move it on, move it back -- must not
unregister them, and an event moved on is still read where it went. CalDAV apps move an event by PUTting it under
a name of their own, which does not tell its UID."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_two_way_e2e import MOVED, SUBJECT, _mirror, registered
from two_way_support import POLL_SECONDS, SWEEP_SECONDS, CalDAVCalendars, GoogleCalendars, Mirror

from storage import sessions
from storage.models import CLI

# An event followed into a calendar that went out of the person's reach, written again in the connected one.
WRITTEN_AGAIN = ("CalendarEventMoved", "lena", "WrittenAgain", "CalendarOutOfReach")


@pytest.fixture
def caldav(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mirror]:
    yield from _mirror(request, tmp_path, "CalDAV")


def _app_moves(calendars: CalDAVCalendars, person: str, url: str, slug: str, name: str) -> None:
    """As a CalDAV app moves an event: PUT the same object (same UID) under a name of its own into calendar
    `slug`, then DELETE the original."""
    env = calendars.envs[person]
    data = env.person("GET", urlsplit(url).path).body
    answer = env.person("PUT", f"/{env.username}/{slug}/{name}", data, {"Content-Type": "text/calendar"})
    assert answer.status == 201, answer
    env.delete_as_person(url)


def _moved(mirror: Mirror, move: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Lena registered, her event moved to another of her calendars (by `move(event id)`, else to "Personal")
    and the mirror run once the move could be noticed: (session id, her enrollment id)."""
    session_id, lena = registered(mirror)
    (event,) = mirror.calendars.events("lena")
    (move or (lambda event_id: mirror.calendars.move("lena", event_id)))(event.id)
    mirror.notice()
    mirror.rounds()
    return session_id, lena


def _written_again_at_home(mirror: Mirror, lena: str) -> None:
    """After one sweep (CalDAV: poll) the event is back in Lena's connected calendar, logged as written again,
    and she is still registered."""
    interval = POLL_SECONDS if mirror.calendars.provider == "CalDAV" else SWEEP_SECONDS
    mirror.world.advance(seconds=interval + 1)
    mirror.rounds()
    assert mirror.status(lena) != "Cancelled"
    assert mirror.decisions() == [MOVED, WRITTEN_AGAIN]
    assert [h.subject for h in mirror.calendars.events("lena")] == [SUBJECT]


def test_caldav_an_event_moved_back_under_a_name_of_the_apps_is_followed_back_not_taken_for_a_deletion(
    caldav: Mirror,
) -> None:
    calendars = caldav.calendars
    assert isinstance(calendars, CalDAVCalendars)
    session_id, lena = _moved(caldav)
    assert caldav.decisions() == [MOVED]
    (moved,) = calendars.moved_events("lena")
    _app_moves(calendars, "lena", moved.id, "training", "back-by-app.ics")
    caldav.world.advance(seconds=POLL_SECONDS + 1)
    caldav.rounds()
    assert caldav.status(lena) != "Cancelled"
    assert caldav.decisions()[-1] == ("CalendarEventMoved", "lena", "Followed", "MovedBackToConnectedCalendar")
    sessions.update(caldav.db, CLI, session_id, {"Title": "Renamed"})
    caldav.rounds()
    caldav.notice()
    caldav.rounds()
    assert [h.subject for h in calendars.events("lena")] == ["First aid: Renamed"]
    assert calendars.moved_events("lena") == []


def test_caldav_an_event_moved_on_to_a_third_calendar_is_followed_there(caldav: Mirror) -> None:
    calendars = caldav.calendars
    assert isinstance(calendars, CalDAVCalendars)
    _, lena = _moved(caldav)
    (moved,) = calendars.moved_events("lena")
    calendars.envs["lena"].make_calendar("work", "Work")
    _app_moves(calendars, "lena", moved.id, "work", "again-by-app.ics")
    caldav.world.advance(seconds=POLL_SECONDS + 1)
    caldav.rounds()
    assert caldav.status(lena) != "Cancelled"
    assert caldav.decisions() == [MOVED, MOVED]


def test_caldav_an_event_moved_on_before_a_session_edit_is_still_read_where_it_went(caldav: Mirror) -> None:
    """The session edit finds the event moved on (put follows it by UID): it is still outside the connected
    calendar, so it is still read every poll, and deleting it there unregisters the learner."""
    calendars = caldav.calendars
    assert isinstance(calendars, CalDAVCalendars)
    session_id, lena = _moved(caldav)
    (moved,) = calendars.moved_events("lena")
    env = calendars.envs["lena"]
    env.make_calendar("work", "Work")
    _app_moves(calendars, "lena", moved.id, "work", "again-by-app.ics")
    sessions.update(caldav.db, CLI, session_id, {"Title": "Renamed"})
    caldav.rounds()
    assert calendars.events("lena") == [] and calendars.moved_events("lena") == []
    env.delete_as_person(f"{calendars.proxy.url}/{env.username}/work/again-by-app.ics")
    caldav.world.advance(seconds=POLL_SECONDS + 1)
    caldav.rounds()
    assert caldav.status(lena) == "Cancelled"


@pytest.fixture
def google(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mirror]:
    yield from _mirror(request, tmp_path, "Google")


def test_google_a_moved_event_whose_calendar_is_unshared_is_written_again_not_taken_for_a_deletion(
    google: Mirror,
) -> None:
    """Lena moves the event to a calendar shared with her, and its owner stops sharing it: the event is out of
    her reach, not deleted by her. She stays registered and the event is written again in her own calendar."""
    calendars = google.calendars
    assert isinstance(calendars, GoogleCalendars)
    _, lena = _moved(google)
    assert google.decisions() == [MOVED]
    account = calendars.accounts["lena"]
    with calendars.fake.lock:
        del calendars.fake.calendars[f"personal.{account}"].roles[account]  # the owner unshares it
    _written_again_at_home(google, lena)


def test_caldav_a_moved_event_whose_calendar_is_deleted_is_written_again_not_taken_for_a_deletion(
    caldav: Mirror,
) -> None:
    """Deleting a whole calendar is not leaving a session, for the calendar an event was moved to as for the
    connected one: the event comes back to the connected calendar and the learner stays registered."""
    calendars = caldav.calendars
    assert isinstance(calendars, CalDAVCalendars)
    _, lena = _moved(caldav)
    assert caldav.decisions() == [MOVED]
    env = calendars.envs["lena"]
    assert env.person("DELETE", f"/{env.username}/personal/").status in (200, 204)
    _written_again_at_home(caldav, lena)


ADDRESS_BOOK = (
    b'<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>'
    b"<D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"
)


@pytest.mark.parametrize("remade", ["task list", "address book"])
def test_caldav_a_moved_event_whose_calendar_is_no_longer_one_of_events_is_written_again_not_taken_for_a_deletion(
    caldav: Mirror, remade: str
) -> None:
    """The calendar the event was moved to is deleted and something else made at its address (a task list, an
    address book): the collection still answers, but it holds no events, so the event is out of reach rather
    than deleted by Lena. She stays registered and the event is written again in her own calendar."""
    calendars = caldav.calendars
    assert isinstance(calendars, CalDAVCalendars)
    _, lena = _moved(caldav)
    assert caldav.decisions() == [MOVED]
    env = calendars.envs["lena"]
    path = f"/{env.username}/personal/"
    assert env.person("DELETE", path).status in (200, 204)
    if remade == "task list":
        env.make_calendar("personal", "Personal", ("VTODO",))
    else:
        answer = env.person("MKCOL", path, ADDRESS_BOOK, {"Content-Type": "application/xml"})
        assert answer.status == 201, answer
    _written_again_at_home(caldav, lena)


def test_google_a_moved_event_whose_calendar_is_reduced_to_free_busy_is_written_again_not_taken_for_a_deletion(
    google: Mirror,
) -> None:
    """Lena moves the event to a colleague's calendar she may write to; the colleague "unshares" it, which in a
    Google Workspace domain usually leaves her the domain's default free/busy access. calendars.get still
    answers 200 to her, events.get 404: the event is out of her reach, not deleted by her. She stays registered
    and the event is written again in her own calendar."""
    calendars = google.calendars
    assert isinstance(calendars, GoogleCalendars)
    fake, team = calendars.fake, "c_team.colleague@group.calendar.google.com"
    moved: list[str] = []

    def to_team(event_id: str) -> None:
        fake.add_calendar("colleague@example.com", calendar_id=team, summary="Team")
        fake.add_calendar(calendars.accounts["lena"], calendar_id=team, role="writer")
        moved.append(event_id)
        fake.person_moves(calendars.accounts["lena"], event_id, team)

    _, lena = _moved(google, to_team)
    assert google.decisions() == [MOVED]
    account = calendars.accounts["lena"]
    with fake.lock:
        fake.calendars[team].roles[account] = "freeBusyReader"  # the colleague stops sharing it with her
    _written_again_at_home(google, lena)
    assert [e["id"] for e in fake.stored(team)] == moved  # still in the colleague's calendar, out of her sight
