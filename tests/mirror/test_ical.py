"""One session day as an iCalendar object: the stored (CalDAV) form, time zones a reader without the IANA database
resolves to the right instants in any year, and text that round-trips."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from icalendar import Calendar, Event

from calendars.ical import KEY_PROPERTY, event_calendar, to_bytes
from calendars.model import CalendarItem

DTSTAMP = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def session_day(start: datetime, end: datetime, time_zone: str = "Europe/Berlin", **changes: str) -> CalendarItem:
    values = {
        "subject": "Fire safety",
        "body_text": "Instructors: Ann Lee",
        "body_html": "<p>Instructors: Ann Lee</p>",
        "location": "Building 4, room 12",
    }
    values.update(changes)
    return CalendarItem(
        user_id="u-7", session_id="s-1", day_id="d-1", start=start, end=end, time_zone=time_zone, **values
    )


def parsed(item: CalendarItem, **options: object) -> tuple[Calendar, Event]:
    text = to_bytes(event_calendar(item, sequence=0, dtstamp=DTSTAMP, **options))  # type: ignore[arg-type]
    assert b"\r\n" in text and all(len(line) <= 75 for line in text.split(b"\r\n"))  # RFC 5545 §3.1
    cal = Calendar.from_ical(text)
    (event,) = cal.walk("VEVENT")
    return cal, event


def carried_instant(cal: Calendar, event: Event, name: str) -> datetime:
    """DTSTART/DTEND as a reader without the IANA database resolves it: with the object's own VTIMEZONE."""
    value = event.decoded(name)
    if "TZID" in event[name].params:
        (vtimezone,) = [tz for tz in cal.walk("VTIMEZONE") if tz["TZID"] == event[name].params["TZID"]]
        value = value.replace(tzinfo=vtimezone.to_tz(lookup_tzid=False))
    return value.astimezone(UTC)  # type: ignore[no-any-return]


def test_a_stored_object_has_no_method_and_no_participants() -> None:
    """The CalDAV form (method None) has no METHOD (RFC 4791 §4.1) and no ORGANIZER or ATTENDEE, so
    scheduling servers send no invitations of their own; it carries our UID and key and its VTIMEZONE."""
    item = session_day(datetime(2026, 6, 2, 7, tzinfo=UTC), datetime(2026, 6, 2, 15, tzinfo=UTC))
    cal, event = parsed(item)
    assert "METHOD" not in cal
    assert "ORGANIZER" not in event and "ATTENDEE" not in event
    assert event["UID"] == item.uid
    assert event[KEY_PROPERTY] == item.key
    assert event["STATUS"] == "CONFIRMED"
    assert [tz["TZID"] for tz in cal.walk("VTIMEZONE")] == ["Europe/Berlin"]
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        # July 2041 is summer time (+02:00), past the end of icalendar's default VTIMEZONE range (2038).
        (datetime(2041, 7, 2, 7, tzinfo=UTC), datetime(2041, 7, 2, 15, tzinfo=UTC)),
        # New Year's Eve to New Year's Day: the definition covers both years.
        (datetime(2026, 12, 31, 21, tzinfo=UTC), datetime(2027, 1, 1, 1, tzinfo=UTC)),
        # Across the spring change (22:00 CET to 06:00 CEST).
        (datetime(2026, 3, 28, 21, tzinfo=UTC), datetime(2026, 3, 29, 4, tzinfo=UTC)),
    ],
)
def test_the_vtimezone_gives_the_right_instants_in_any_year(start: datetime, end: datetime) -> None:
    """Read with the VTIMEZONE it carries, the session day starts and ends when it really does, also after
    2038; and the definition is short (the years of the session day, not 68 years of transitions)."""
    cal, event = parsed(session_day(start, end))
    assert carried_instant(cal, event, "DTSTART") == start
    assert carried_instant(cal, event, "DTEND") == end
    (vtimezone,) = cal.walk("VTIMEZONE")
    assert len(vtimezone.to_ical()) < 1000


def test_the_second_pass_through_a_repeated_hour_is_written_in_utc() -> None:
    """New York repeats 01:00-02:00 on 1 November 2026. A local time with TZID means the first pass (RFC 5545
    §3.3.5), so an end at the second 01:30 is written in UTC and the session keeps its two hours."""
    start, end = datetime(2026, 11, 1, 4, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    cal, event = parsed(session_day(start, end, "America/New_York"))
    assert event["DTSTART"].params["TZID"] == "America/New_York"  # 00:30 EDT is unambiguous
    assert event["DTEND"].to_ical().endswith(b"Z")
    assert carried_instant(cal, event, "DTSTART") == start
    assert carried_instant(cal, event, "DTEND") == end


def test_a_utc_session_needs_no_vtimezone() -> None:
    """Sessions in UTC are written with the Z suffix; UTC needs no VTIMEZONE (RFC 5545 §3.2.19)."""
    start, end = datetime(2026, 6, 2, 7, tzinfo=UTC), datetime(2026, 6, 2, 15, tzinfo=UTC)
    cal, event = parsed(session_day(start, end, "UTC"))
    assert event["DTSTART"].to_ical().endswith(b"Z")
    assert event.decoded("DTSTART") == start
    assert cal.walk("VTIMEZONE") == []


def test_text_round_trips() -> None:
    """Commas, semicolons, backslashes, line breaks and non-ASCII letters in the title, body and room come
    back exactly as written (RFC 5545 §3.3.11 escaping)."""
    text = {
        "subject": "Q&A; part 1, \\intro\\ — Zoë",
        "body_text": "Line one, with; punctuation\nLine two: 消防訓練",
        "location": "Room 4; Annex, floor 2",
    }
    item = session_day(datetime(2026, 6, 2, 7, tzinfo=UTC), datetime(2026, 6, 2, 15, tzinfo=UTC), **text)
    _, event = parsed(item)
    assert str(event["SUMMARY"]) == text["subject"]
    assert str(event["DESCRIPTION"]) == text["body_text"]
    assert str(event["LOCATION"]) == text["location"]


@pytest.mark.parametrize(("options", "reason"), [({"dtstamp": datetime(2026, 3, 1)}, "aware"), ({"sequence": -1}, "0")])
def test_unusable_stamps_are_refused(options: dict[str, object], reason: str) -> None:
    """DTSTAMP must be a real instant (written in UTC) and SEQUENCE a non-negative integer."""
    item = session_day(datetime(2026, 6, 2, 7, tzinfo=UTC), datetime(2026, 6, 2, 15, tzinfo=UTC))
    arguments: dict[str, object] = {"sequence": 0, "dtstamp": DTSTAMP}
    arguments.update(options)
    with pytest.raises(ValueError, match=reason):
        event_calendar(item, **arguments)  # type: ignore[arg-type]
