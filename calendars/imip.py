"""iMIP e-mails for one session day (RFC 6047): the invitation (METHOD:REQUEST) and its cancellation.

The e-mail fallback sends these to people without an active calendar connection. Shape, as RFC 6047 §2 and
the CalConnect iMIP interoperability practice describe, and as Cronofy's Smart Invites send them:

    multipart/mixed
      multipart/alternative
        text/plain
        text/html
        text/calendar; method=REQUEST|CANCEL; charset=UTF-8     (the iTIP object, read by mail clients)
      application/ics; name=invite.ics|cancel.ics              (the same object as a base64 attachment)

One iTIP object per e-mail. The sender (COURSEWIRE_MAIL_FROM) is also the ORGANIZER: Outlook and Gmail refuse
or show as a plain attachment an invitation whose ORGANIZER differs from the sender, and they update the
existing entry (same UID, higher SEQUENCE) only when ORGANIZER is there (RFC 5546 §2.1.4-2.1.5;
../shared/reference/notes/calendar-sync.md §2.4). The recipient is the ATTENDEE with RSVP=FALSE: coursewire
processes no replies.
"""

from __future__ import annotations

import html
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from calendars.ical import event_calendar, to_bytes
from calendars.model import CalendarItem

CONNECT_TEXT = "Add your sessions to Outlook or Google Calendar automatically:"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def request_message(
    item: CalendarItem,
    *,
    sequence: int,
    dtstamp: datetime,
    sender: str,
    recipient: str,
    recipient_name: str | None,
    connect_link: str | None,
) -> EmailMessage:
    """The invitation for one session day: an e-mail carrying `METHOD:REQUEST` (RFC 5546 §3.2.2).

    sequence: the event's SEQUENCE, 0 for the first invitation and raised on every change, so clients
    replace the entry with the same UID (`item.uid`) instead of adding one. dtstamp: aware, now; it is the
    iCalendar DTSTAMP (in UTC) and the Date header. sender: COURSEWIRE_MAIL_FROM, a bare address or
    `Name <address>`; From and ORGANIZER. recipient/recipient_name: the person (To and ATTENDEE).
    connect_link: the signed calendar page link, shown as "Add your sessions to Outlook or Google
    Calendar automatically: <link>"; None leaves the sentence out.

    Returns the message, Subject "Invitation: <title> (<date>, <start>-<end> <zone>)". Raises ValueError
    for a sender or recipient that is not one e-mail address, a naive dtstamp or a negative sequence.
    """
    return _message(
        item,
        "REQUEST",
        sequence=sequence,
        dtstamp=dtstamp,
        sender=sender,
        recipient=recipient,
        recipient_name=recipient_name,
        connect_link=connect_link,
    )


def cancel_message(
    item: CalendarItem,
    *,
    sequence: int,
    dtstamp: datetime,
    sender: str,
    recipient: str,
    recipient_name: str | None,
    connect_link: str | None,
) -> EmailMessage:
    """The cancellation of one session day: an e-mail carrying `METHOD:CANCEL` with STATUS:CANCELLED
    (RFC 5546 §3.2.5), which removes the entry an earlier invitation created.

    The arguments are those of `request_message`; sequence must be higher than that of the last
    invitation sent for this item (RFC 5546 §2.1.4: SEQUENCE rises on every CANCEL). Subject
    "Cancelled: <title> (<when>)". Raises ValueError as `request_message` does.
    """
    return _message(
        item,
        "CANCEL",
        sequence=sequence,
        dtstamp=dtstamp,
        sender=sender,
        recipient=recipient,
        recipient_name=recipient_name,
        connect_link=connect_link,
    )


def when(item: CalendarItem) -> str:
    """The session day in its own zone, in English whatever the server's locale:
    "Tue 10 Mar 2026, 09:00-17:00 Europe/Berlin" (with an en dash); both dates when it ends on another day."""
    zone = ZoneInfo(item.time_zone)
    start, end = item.start.astimezone(zone), item.end.astimezone(zone)
    if start.date() == end.date():
        return f"{_date(start)}, {start:%H:%M}\N{EN DASH}{end:%H:%M} {item.time_zone}"
    return f"{_date(start)}, {start:%H:%M} \N{EN DASH} {_date(end)}, {end:%H:%M} {item.time_zone}"


def _date(moment: datetime) -> str:
    return f"{_WEEKDAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]} {moment.year}"


def _one_line(text: str) -> str:
    """Header text: line breaks and runs of white space become one space (a title typed with a line break
    would otherwise make the message unbuildable, RFC 5322 §2.2)."""
    return " ".join(text.split())


def _address(text: str, role: str) -> Address:
    """One address from `addr` or `Name <addr>`; raises ValueError naming the role otherwise."""
    found = getaddresses([text])
    if len(found) != 1 or "@" not in found[0][1] or any(c in found[0][1] for c in " <>,\r\n"):
        raise ValueError(f"the {role} is not one e-mail address")
    name, addr = found[0]
    local, _, domain = addr.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _message(
    item: CalendarItem,
    method: str,
    *,
    sequence: int,
    dtstamp: datetime,
    sender: str,
    recipient: str,
    recipient_name: str | None,
    connect_link: str | None,
) -> EmailMessage:
    if dtstamp.tzinfo is None or dtstamp.utcoffset() is None:
        raise ValueError("dtstamp must be an aware datetime")
    origin = _address(sender, "sender")
    target = _address(recipient, "recipient")
    if recipient_name:
        target = Address(display_name=_one_line(recipient_name), username=target.username, domain=target.domain)
    calendar = event_calendar(
        item,
        sequence=sequence,
        dtstamp=dtstamp,
        method=method,
        organizer=origin.addr_spec,
        organizer_name=origin.display_name or None,
        attendee=target.addr_spec,
        attendee_name=target.display_name or None,
    )
    ical = to_bytes(calendar)

    message = EmailMessage()
    label = "Invitation" if method == "REQUEST" else "Cancelled"
    message["Subject"] = f"{label}: {_one_line(item.subject)} ({when(item)})"
    message["From"] = origin
    message["To"] = target
    message["Date"] = format_datetime(dtstamp)
    message["Message-ID"] = make_msgid(domain=origin.domain)  # a domain given: no DNS lookup of our own name
    # RFC 3834 §5: machine-sent, so out-of-office and other auto-replies stay away from the organizer address.
    message["Auto-Submitted"] = "auto-generated"

    text, page = _bodies(item, method, connect_link)
    message.set_content(text)
    message.add_alternative(page, subtype="html")
    # RFC 6047 §2.4: the method parameter equals METHOD; charset because SUMMARY and CN may be non-ASCII.
    # 7bit when it can be (the CalConnect practice); Exchange's own invitations use base64 otherwise.
    message.add_alternative(
        ical,
        maintype="text",
        subtype="calendar",
        cte="7bit" if ical.isascii() else "base64",
        params={"method": method, "charset": "UTF-8"},
    )
    filename = "invite.ics" if method == "REQUEST" else "cancel.ics"
    message.add_attachment(
        ical, maintype="application", subtype="ics", cte="base64", filename=filename, params={"name": filename}
    )
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]  # the email package repeats it on parts; RFC 2045 §4 wants it once, on top
    return message


def _bodies(item: CalendarItem, method: str, connect_link: str | None) -> tuple[str, str]:
    """The text/plain and text/html bodies. item.body_html is the engine's HTML (already escaped);
    everything else is escaped here."""
    moment = when(item)
    # The engine's body usually names the room and the meeting URL; say them here only when it does not.
    room = item.location if item.location and item.location not in item.body_text else None
    meeting = item.meeting_url if item.meeting_url and item.meeting_url not in item.body_text else None
    if method == "REQUEST":
        lead = "You are registered for this session day; it is in the calendar file attached."
    else:
        lead = (
            "This session day is cancelled, or you are no longer registered for it; it is removed from your calendar."
        )

    lines = [item.subject, "", lead, "", f"When: {moment}"]
    if room:
        lines.append(f"Where: {room}")
    if meeting:
        lines.append(f"Join online: {meeting}")
    if item.body_text.strip():
        lines += ["", item.body_text.strip()]
    if connect_link:
        lines += ["", f"{CONNECT_TEXT} {connect_link}"]
    text = "\n".join(lines) + "\n"

    e = html.escape
    rows = [f'<tr><th scope="row">When</th><td>{e(moment)}</td></tr>']
    if room:
        rows.append(f'<tr><th scope="row">Where</th><td>{e(room)}</td></tr>')
    if meeting:
        rows.append(f'<tr><th scope="row">Join online</th><td>{_link(meeting)}</td></tr>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(item.subject)}</title></head>",
        '<body style="font-family: sans-serif; line-height: 1.4">',
        f'<h1 style="font-size: 1.3em">{e(item.subject)}</h1>',
        f"<p>{e(lead)}</p>",
        f'<table style="text-align: left">{"".join(rows)}</table>',
    ]
    if item.body_html.strip():
        parts.append(f"<div>{item.body_html}</div>")
    if connect_link:
        parts.append(f"<p>{e(CONNECT_TEXT)} {_link(connect_link)}</p>")
    parts.append("</body></html>")
    return text, "\n".join(parts) + "\n"


def _link(url: str) -> str:
    """An anchor for http(s) URLs; any other scheme (javascript:, data:) is shown as text only."""
    if urlsplit(url).scheme.lower() in ("http", "https"):
        return f'<a href="{html.escape(url, quote=True)}">{html.escape(url)}</a>'
    return html.escape(url)
