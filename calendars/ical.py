"""iCalendar objects for one session day (RFC 5545), as stored in a CalDAV calendar or sent by iMIP.

One VCALENDAR with one VEVENT and the VTIMEZONE its TZID needs (RFC 4791 §4.1: a VTIMEZONE for every TZID
used; RFC 5545 §3.6.5). The UID is `CalendarItem.uid`, the same for the session day across updates and across
channels, so a CANCEL by e-mail and a CalDAV copy name the same event (RFC 5546 §2.1.5).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress, vText

from calendars.model import CalendarItem

PRODID = "-//coursewire//ILT calendar mirror//EN"
KEY_PROPERTY = "X-COURSEWIRE-KEY"
ORGANIZER_NAME = "coursewire"


def event_calendar(
    item: CalendarItem,
    *,
    sequence: int,
    dtstamp: datetime,
    method: str | None = None,
    organizer: str | None = None,
    attendee: str | None = None,
    attendee_name: str | None = None,
    organizer_name: str | None = None,
) -> Calendar:
    """The item as an iCalendar object.

    method: None for a stored calendar object resource (CalDAV forbids METHOD there, RFC 4791 §4.1);
    "REQUEST" or "CANCEL" for iMIP (RFC 5546 §3.2.2, §3.2.5: ORGANIZER and ATTENDEE required, CANCEL carries
    STATUS:CANCELLED). organizer/attendee: bare e-mail addresses (mailto: is added); organizer_name and
    attendee_name become their CN (organizer_name defaults to "coursewire"). The attendee gets
    PARTSTAT=NEEDS-ACTION and RSVP=FALSE: coursewire processes no replies.

    sequence: the RFC 5545 §3.8.7.4 revision, >= 0, raised by the caller on every change (RFC 5546 §2.1.4).
    dtstamp must be aware; it is written in UTC (RFC 5545 §3.8.7.2). DTSTART/DTEND are in the session's
    zone (item.time_zone, IANA) with a VTIMEZONE covering the years the session day falls in, so the
    object stays small and works after 2038; a time in the repeated hour of a fall-back night that a local
    time cannot name is written in UTC. Raises ValueError for a naive dtstamp or a negative sequence,
    zoneinfo.ZoneInfoNotFoundError for an unknown zone.
    """
    if dtstamp.tzinfo is None or dtstamp.utcoffset() is None:
        raise ValueError("dtstamp must be an aware datetime")
    if sequence < 0:
        raise ValueError("sequence must be 0 or more")
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    if method:
        cal.add("method", method)
    zone = ZoneInfo(item.time_zone)
    start, end = _local(item.start, zone), _local(item.end, zone)
    event = Event()
    event.add("uid", item.uid)
    event.add("dtstamp", dtstamp.astimezone(UTC))
    event.add("sequence", sequence)
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("summary", item.subject)
    event.add("description", item.body_text)
    if item.location:
        event.add("location", item.location)
    if item.meeting_url or item.link:
        event.add("url", item.meeting_url or item.link)
    event.add("transp", "OPAQUE")
    event.add("class", "PUBLIC")
    event.add(KEY_PROPERTY, vText(item.key))
    if organizer:
        event.add("organizer", vCalAddress(f"mailto:{organizer}"), parameters={"CN": organizer_name or ORGANIZER_NAME})
    if attendee:
        params = {"CUTYPE": "INDIVIDUAL", "ROLE": "REQ-PARTICIPANT", "PARTSTAT": "NEEDS-ACTION", "RSVP": "FALSE"}
        if attendee_name:
            params["CN"] = attendee_name
        event.add("attendee", vCalAddress(f"mailto:{attendee}"), parameters=params)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    cal.add_component(event)
    # icalendar's default range (1970-2038) lists every transition of 68 years (~3 KB per zone, ~25 ms) and
    # ends in 2038; the years of the session day are all a reader needs (RFC 5545 §3.6.5).
    cal.add_missing_timezones(first_date=date(start.year, 1, 1), last_date=date(end.year + 1, 1, 1))
    return cal


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    """The moment in the session's zone, or in UTC when the local time names two instants (the repeated
    hour when clocks go back) and the moment is the second: a TZID local time means the first one (RFC 5545
    §3.3.5), so the second can only be written in UTC."""
    local = moment.astimezone(zone)
    if local.replace(fold=0).astimezone(UTC) != moment.astimezone(UTC):
        return moment.astimezone(UTC)
    return local


def to_bytes(cal: Calendar) -> bytes:
    """The object as iCalendar text (CRLF line ends, folded at 75 octets, RFC 5545 §3.1)."""
    return bytes(cal.to_ical())
