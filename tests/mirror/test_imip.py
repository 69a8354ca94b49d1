"""The e-mail fallback's invitations and cancellations, as a real SMTP server receives them and a mail client
parses them: the MIME shape of RFC 6047 and the CalConnect practice, the iTIP properties RFC 5546 requires,
time zones that clients resolve to the right instants, non-ASCII text and escaped HTML."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from html.parser import HTMLParser

import pytest
from icalendar import Calendar, Event
from smtp_support import SmtpServer, smtp_server_fixture  # noqa: F401 (the smtp_server fixture)

from calendars.imip import cancel_message, request_message
from calendars.mail import Mailer
from calendars.model import CalendarItem

SENDER = "training@contoso.com"
RECIPIENT = "zoe.unal@contoso.com"
DTSTAMP = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
LINK = "https://lms.contoso.com/calendar?token=a1&user=u-7"


def session_day(**changes: object) -> CalendarItem:
    """Fire safety, Sunday 29 March 2026 09:00-17:00 in Berlin (the day clocks go forward at 02:00)."""
    values: dict[str, object] = {
        "user_id": "u-7",
        "session_id": "s-1",
        "day_id": "d-1",
        "subject": "Fire safety",
        "start": datetime(2026, 3, 29, 7, 0, tzinfo=UTC),
        "end": datetime(2026, 3, 29, 15, 0, tzinfo=UTC),
        "time_zone": "Europe/Berlin",
        "body_text": "Instructors: Ann Lee, Bo Chen\nBring safety shoes.",
        "body_html": "<p>Instructors: Ann Lee, Bo Chen</p><p>Bring safety shoes.</p>",
        "location": "Building 4, room 12",
        "meeting_url": "https://meet.contoso.com/j/42?pwd=x&lang=en",
    }
    values.update(changes)
    return CalendarItem(**values)  # type: ignore[arg-type]


def deliver(server: SmtpServer, message: EmailMessage) -> EmailMessage:
    """Send through the real SMTP server and return the message as the server received it, parsed."""
    before = len(server.received())
    asyncio.run(Mailer(server.settings()).send(message))
    received = server.received()
    assert len(received) == before + 1
    return received[-1].message()


def invite(item: CalendarItem | None = None, **options: object) -> EmailMessage:
    arguments: dict[str, object] = {
        "sequence": 0,
        "dtstamp": DTSTAMP,
        "sender": SENDER,
        "recipient": RECIPIENT,
        "recipient_name": "Zoe Unal",
        "connect_link": LINK,
    }
    arguments.update(options)
    return request_message(item or session_day(), **arguments)  # type: ignore[arg-type]


def cancel(item: CalendarItem | None = None, **options: object) -> EmailMessage:
    arguments: dict[str, object] = {
        "sequence": 1,
        "dtstamp": DTSTAMP,
        "sender": SENDER,
        "recipient": RECIPIENT,
        "recipient_name": "Zoe Unal",
        "connect_link": LINK,
    }
    arguments.update(options)
    return cancel_message(item or session_day(), **arguments)  # type: ignore[arg-type]


def calendar_part(message: EmailMessage) -> EmailMessage:
    parts = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1
    return parts[0]  # type: ignore[return-value]


def itip(message: EmailMessage) -> tuple[Calendar, Event]:
    """The iTIP object of the text/calendar part and its one VEVENT."""
    cal = Calendar.from_ical(calendar_part(message).get_content())
    events = cal.walk("VEVENT")
    assert len(events) == 1  # one iTIP object, one event per e-mail
    return cal, events[0]


def text_body(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def html_body(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def test_invitation_has_the_interoperable_mime_shape(smtp_server: SmtpServer) -> None:
    """multipart/mixed holds multipart/alternative (text, HTML, text/calendar with method) and the same
    object as a base64 application/ics attachment: the shape Outlook, Gmail and Apple Mail all act on."""
    received = deliver(smtp_server, invite())

    assert received.get_content_type() == "multipart/mixed"
    alternative, attachment = received.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html", "text/calendar"]
    inline = calendar_part(received)
    assert inline.get_param("method") == "REQUEST"
    assert str(inline.get_param("charset")).upper() == "UTF-8"
    assert inline.get_content_disposition() is None

    assert attachment.get_content_type() == "application/ics"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_content() == inline.get_content().encode()  # the same iTIP object twice


def test_invitation_carries_what_rfc_5546_requires_of_a_request(smtp_server: SmtpServer) -> None:
    """METHOD:REQUEST with ATTENDEE, DTSTAMP in UTC, DTSTART, ORGANIZER, SUMMARY, UID and SEQUENCE
    (RFC 5546 §3.2.2); the organizer is the sender and the attendee the recipient, who is not asked to reply."""
    item = session_day()
    received = deliver(smtp_server, invite(item, sequence=3))
    cal, event = itip(received)

    assert cal["METHOD"] == "REQUEST" == calendar_part(received).get_param("method")
    assert event["UID"] == item.uid
    assert event["SEQUENCE"] == 3
    assert event["SUMMARY"] == "Fire safety"
    assert event["STATUS"] == "CONFIRMED"
    assert event.decoded("DTSTAMP") == DTSTAMP
    assert event["DTSTAMP"].to_ical().endswith(b"Z")  # RFC 5545 §3.8.7.2: UTC
    assert event.decoded("DTSTART").astimezone(UTC) == item.start
    assert event.decoded("DTEND").astimezone(UTC) == item.end
    assert event["LOCATION"] == "Building 4, room 12"

    organizer = event["ORGANIZER"]
    assert str(organizer) == f"mailto:{SENDER}"
    assert parseaddr(received["From"])[1] == SENDER  # clients refuse invitations whose sender is not ORGANIZER
    attendee = event["ATTENDEE"]
    assert str(attendee) == f"mailto:{RECIPIENT}"
    assert attendee.params["PARTSTAT"] == "NEEDS-ACTION"
    assert attendee.params["RSVP"] == "FALSE"
    assert attendee.params["CN"] == "Zoe Unal"
    assert parseaddr(received["To"]) == ("Zoe Unal", RECIPIENT)
    assert smtp_server.received()[-1].rcpt_tos == [RECIPIENT]
    assert smtp_server.received()[-1].mail_from == SENDER


def test_an_update_keeps_the_uid_and_raises_the_sequence(smtp_server: SmtpServer) -> None:
    """A moved session day is sent again under the same UID with a higher SEQUENCE and a later DTSTAMP, so
    the client replaces its entry (RFC 5546 §2.1.5) instead of adding a second one."""
    first = deliver(smtp_server, invite(sequence=0))
    moved = session_day(start=datetime(2026, 3, 29, 8, 0, tzinfo=UTC), end=datetime(2026, 3, 29, 16, 0, tzinfo=UTC))
    later = DTSTAMP + timedelta(hours=2)
    second = deliver(smtp_server, invite(moved, sequence=1, dtstamp=later))

    _, before = itip(first)
    _, after = itip(second)
    assert after["UID"] == before["UID"]
    assert after["SEQUENCE"] > before["SEQUENCE"]
    assert after.decoded("DTSTAMP") > before.decoded("DTSTAMP")
    assert after.decoded("DTSTART").astimezone(UTC) == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)
    assert "10:00\N{EN DASH}18:00" in second["Subject"]


def test_cancellation_removes_the_same_event(smtp_server: SmtpServer) -> None:
    """METHOD:CANCEL with STATUS:CANCELLED, the invitation's UID and a higher SEQUENCE, DTSTAMP, ORGANIZER
    and the attendee removed (RFC 5546 §3.2.5), in the same MIME shape, subject "Cancelled: ..."."""
    item = session_day()
    request = deliver(smtp_server, invite(item, sequence=4))
    cancellation = deliver(smtp_server, cancel(item, sequence=5))

    cal, event = itip(cancellation)
    _, invited = itip(request)
    assert cal["METHOD"] == "CANCEL" == calendar_part(cancellation).get_param("method")
    assert event["STATUS"] == "CANCELLED"
    assert event["UID"] == invited["UID"] == item.uid
    assert event["SEQUENCE"] == 5 > invited["SEQUENCE"]
    assert event["DTSTAMP"].to_ical().endswith(b"Z")
    assert str(event["ORGANIZER"]) == f"mailto:{SENDER}"
    assert str(event["ATTENDEE"]) == f"mailto:{RECIPIENT}"
    assert cancellation["Subject"] == "Cancelled: Fire safety (Sun 29 Mar 2026, 09:00\N{EN DASH}17:00 Europe/Berlin)"
    attachment = list(cancellation.iter_attachments())
    assert [a.get_filename() for a in attachment] == ["cancel.ics"]
    assert "no longer registered" in text_body(cancellation)


def test_the_time_zone_travels_with_the_event(smtp_server: SmtpServer) -> None:
    """DTSTART and DTEND name the session's zone and the object defines it (VTIMEZONE with that TZID),
    as clients that do not know IANA names (Outlook) need."""
    received = deliver(smtp_server, invite())
    cal, event = itip(received)

    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert event["DTEND"].params["TZID"] == "Europe/Berlin"
    assert [tz["TZID"] for tz in cal.walk("VTIMEZONE")] == ["Europe/Berlin"]
    assert cal.get_missing_tzids() == set()
    assert "Sun 29 Mar 2026, 09:00\N{EN DASH}17:00 Europe/Berlin" in received["Subject"]


@pytest.mark.parametrize(
    ("zone", "start", "end"),
    [
        # Berlin springs forward at 02:00 on 29 March 2026: 22:00 CET to 06:00 CEST is 7 hours.
        ("Europe/Berlin", datetime(2026, 3, 28, 21, 0, tzinfo=UTC), datetime(2026, 3, 29, 4, 0, tzinfo=UTC)),
        # New York falls back at 02:00 on 1 November 2026: 00:30 EDT to 01:30 EST (the second 01:30).
        ("America/New_York", datetime(2026, 11, 1, 4, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),
    ],
)
def test_a_session_day_across_a_dst_change_keeps_its_instants(
    smtp_server: SmtpServer, zone: str, start: datetime, end: datetime
) -> None:
    """A session day that spans a daylight-saving change starts and ends at the right instants when read
    with the VTIMEZONE the e-mail carries (as a client without the IANA database reads it)."""
    item = session_day(start=start, end=end, time_zone=zone)
    cal, event = itip(deliver(smtp_server, invite(item)))

    (vtimezone,) = cal.walk("VTIMEZONE")
    carried = vtimezone.to_tz(lookup_tzid=False)  # built from the e-mail's definition, not the system's

    def instant(name: str) -> datetime:
        value = event.decoded(name)
        if "TZID" in event[name].params:
            value = value.replace(tzinfo=carried)
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    assert instant("DTSTART") == start
    assert instant("DTEND") == end
    assert event.decoded("DTSTART").astimezone(UTC) == start  # and with the IANA database
    assert event.decoded("DTEND").astimezone(UTC) == end


def test_non_ascii_titles_and_names_survive(smtp_server: SmtpServer) -> None:
    """Accents and other scripts in the title, the recipient's and the sender's names arrive intact in the
    headers (RFC 2047), the bodies and the iCalendar object (UTF-8)."""
    item = session_day(subject="Sécurité incendie \N{EM DASH} 消防訓練")
    message = invite(item, recipient_name="Zoë Ünal", sender="Équipe Formation <training@contoso.com>")
    received = deliver(smtp_server, message)

    assert received["Subject"] == (
        "Invitation: Sécurité incendie \N{EM DASH} 消防訓練 (Sun 29 Mar 2026, 09:00\N{EN DASH}17:00 Europe/Berlin)"
    )
    raw_headers = smtp_server.received()[-1].data.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()  # encoded words, no raw UTF-8 in the header
    assert received["To"].addresses[0].display_name == "Zoë Ünal"
    assert received["From"].addresses[0].display_name == "Équipe Formation"
    assert "Sécurité incendie \N{EM DASH} 消防訓練" in text_body(received)
    assert "Sécurité incendie \N{EM DASH} 消防訓練" in html_body(received)
    _, event = itip(received)
    assert event["SUMMARY"] == "Sécurité incendie \N{EM DASH} 消防訓練"
    assert event["ATTENDEE"].params["CN"] == "Zoë Ünal"
    assert event["ORGANIZER"].params["CN"] == "Équipe Formation"
    assert str(event["ORGANIZER"]) == "mailto:training@contoso.com"


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "a":
            self.links += [value or "" for name, value in attrs if name == "href"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_body_escapes_what_people_typed(smtp_server: SmtpServer) -> None:
    """A title, room or URL holding `<`, `&` or quotes shows as typed in the HTML body and adds no markup;
    only http(s) URLs become links."""
    item = session_day(
        subject='<script>alert("x")</script> Q&A <b>',
        location='Room <12> & "Annex"',
        meeting_url='https://meet.contoso.com/j/42?pwd=x&lang=en"><img src=x>',
        body_text="Instructors: Ann",
        body_html="<p>Instructors: Ann</p>",
    )
    received = deliver(smtp_server, invite(item))
    page = _Html()
    page.feed(html_body(received))
    page.close()

    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    text = "".join(page.text)
    assert '<script>alert("x")</script> Q&A <b>' in text
    assert 'Room <12> & "Annex"' in text
    assert 'https://meet.contoso.com/j/42?pwd=x&lang=en"><img src=x>' in page.links
    assert LINK in page.links

    hostile = session_day(meeting_url="javascript:alert(1)", body_text="", body_html="")
    page = _Html()
    page.feed(html_body(deliver(smtp_server, invite(hostile))))
    assert "javascript:alert(1)" not in page.links
    assert "javascript:alert(1)" in "".join(page.text)


def test_bodies_say_when_where_who_and_how_to_connect_a_calendar(smtp_server: SmtpServer) -> None:
    """Text and HTML give the session, its date and time in the session's zone, the room, the meeting URL,
    the instructors (from the engine's body) and the link to connect a calendar."""
    received = deliver(smtp_server, invite())
    for body in (text_body(received), html_body(received)):
        assert "Fire safety" in body
        assert "Sun 29 Mar 2026, 09:00\N{EN DASH}17:00 Europe/Berlin" in body
        assert "Building 4, room 12" in body
        assert "Instructors: Ann Lee, Bo Chen" in body
    text = text_body(received)
    assert "https://meet.contoso.com/j/42?pwd=x&lang=en" in text
    assert f"Add your sessions to Outlook or Google Calendar automatically: {LINK}" in text
    page = _Html()
    page.feed(html_body(received))
    assert {"https://meet.contoso.com/j/42?pwd=x&lang=en", LINK} <= set(page.links)
    assert "Add your sessions to Outlook or Google Calendar automatically:" in "".join(page.text)

    without = deliver(smtp_server, invite(connect_link=None))
    assert "Add your sessions" not in text_body(without)
    assert "Add your sessions" not in html_body(without)


def test_headers_identify_the_message(smtp_server: SmtpServer) -> None:
    """Date is the moment given (the engine's clock), Message-ID is unique and in the sender's domain, and
    the message says it is machine-sent so out-of-office replies stay away (RFC 3834)."""
    first = deliver(smtp_server, invite())
    second = deliver(smtp_server, invite())
    assert parsedate_to_datetime(first["Date"]) == DTSTAMP
    assert first["Message-ID"].endswith("@contoso.com>")
    assert first["Message-ID"] != second["Message-ID"]
    assert first["Auto-Submitted"] == "auto-generated"
    assert first["Subject"] == "Invitation: Fire safety (Sun 29 Mar 2026, 09:00\N{EN DASH}17:00 Europe/Berlin)"


def test_line_breaks_in_titles_and_names_stay_out_of_the_headers(smtp_server: SmtpServer) -> None:
    """A title or name typed with a line break gives a one-line Subject and To, and adds no header."""
    item = session_day(subject="Fire safety\r\nBcc: everyone@contoso.com")
    received = deliver(smtp_server, invite(item, recipient_name="Zoe\nUnal"))
    assert received["Subject"].startswith("Invitation: Fire safety Bcc: everyone@contoso.com (")
    assert received["Bcc"] is None
    assert received["To"].addresses[0].display_name == "Zoe Unal"
    assert smtp_server.received()[-1].rcpt_tos == [RECIPIENT]


@pytest.mark.parametrize(
    "options",
    [
        {"sender": "not an address"},
        {"recipient": "a@contoso.com, b@contoso.com"},
        {"recipient": "zoe@contoso.com\r\nBcc: all@contoso.com"},
        {"dtstamp": datetime(2026, 3, 1, 9, 30)},
        {"sequence": -1},
    ],
)
def test_unusable_arguments_are_refused(options: dict[str, object]) -> None:
    """Two recipients, a header injection, a naive time or a negative SEQUENCE never make a message."""
    with pytest.raises(ValueError):
        invite(**options)
