"""The issue's "done when", as a user runs it: `coursewire serve --demo` with the calendar mirror in-process, a
real Radicale calendar connected through the API, a real SMTP server for the e-mail fallback. A registration
puts the session's event in the calendar, a session edit moves it, cancelling removes it; a person without a
calendar receives the REQUEST and then the CANCEL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from icalendar import Calendar
from serving import Server, eventually, start

sys.path.insert(0, str(Path(__file__).parents[1] / "mirror"))  # the calendar tests' real servers
import radicale_support
from radicale_support import RadicaleServer, mkcalendar_body
from smtp_support import SmtpServer, smtp_server_fixture  # noqa: F401

pytestmark = [pytest.mark.system, pytest.mark.slow]
radicale = radicale_support.radicale


@pytest.fixture
def served(tmp_path: Path, smtp_server: SmtpServer) -> Iterator[Server]:
    env = {
        "COURSEWIRE_SMTP_URL": f"smtp://127.0.0.1:{smtp_server.port}",
        "COURSEWIRE_MAIL_FROM": "Training <training@contoso.example>",
        "COURSEWIRE_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    yield from start(tmp_path / "data", "--demo", "--workers", "1", env=env)


def user_id(server: Server, login: str) -> str:
    found = server.call("GET", f"/odata/v2/Users?$filter=LoginName eq '{login}'")["value"]
    return str(found[0]["Id"])


def calendar_events(radicale: RadicaleServer, user: str) -> list[Calendar]:
    folder = radicale.storage / "collection-root" / user / "training"
    return [Calendar.from_ical(p.read_bytes()) for p in sorted(folder.glob("*.ics"))]


def test_a_connected_calendar_and_an_email_follow_registration_edit_and_cancellation(
    served: Server, radicale: RadicaleServer, smtp_server: SmtpServer
) -> None:
    name, password = radicale.new_user()
    made = radicale.request(
        "MKCALENDAR", f"/{name}/training/", name, password, mkcalendar_body("Training", ("VEVENT",))
    )
    assert made.status == 201
    served.call("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    sara = user_id(served, "sara.learner@contoso.example")
    connection = served.call(
        "PUT",
        f"/odata/v2/Users({sara})/CalendarConnection",
        json={"Provider": "CalDAV", "Url": f"{radicale.url}/{name}/", "Username": name, "Password": password},
    )
    assert connection["Status"] == "Connected"
    assert "Password" not in connection

    course = served.call("GET", "/odata/v2/Courses?$filter=Title eq 'First aid at work'")["value"][0]
    sessions = served.call("GET", f"/odata/v2/Courses({course['Id']})/CourseSessions")["value"]
    session = next(s for s in sessions if s["Title"] == "First aid, two mornings")
    enrolled = served.call(
        "POST",
        f"/odata/v2/Courses({course['Id']})/Enroll",
        json={"userLoginName": "sara.learner@contoso.example", "courseSessionId": session["Id"]},
    )
    held = eventually("two events in Radicale", lambda: len(calendar_events(radicale, name)) == 2)
    assert held
    starts = sorted(e.walk("VEVENT")[0].decoded("DTSTART") for e in calendar_events(radicale, name))
    assert [s.astimezone().isoformat() for s in starts] == [
        datetime.fromisoformat(d["StartDate"]).astimezone().isoformat() for d in session["Days"]
    ]

    # A session edit moves the events (one hour later) in the calendar.
    later = [
        {
            "StartDate": (datetime.fromisoformat(d["StartDate"]) + timedelta(hours=1)).isoformat(),
            "EndDate": (datetime.fromisoformat(d["EndDate"]) + timedelta(hours=1)).isoformat(),
        }
        for d in session["Days"]
    ]
    served.call("PATCH", f"/odata/v2/CourseSessions({session['Id']})", json={"Days": later})

    def moved() -> bool:
        found = sorted(e.walk("VEVENT")[0].decoded("DTSTART") for e in calendar_events(radicale, name))
        return len(found) == 2 and found[0] == datetime.fromisoformat(later[0]["StartDate"])

    eventually("the events moved an hour later", moved)

    # Cancelling removes the calendar's events.
    served.call("POST", f"/odata/v2/Enrollments({enrolled['Id']})/Cancel", 204, json={})
    eventually("the events removed", lambda: calendar_events(radicale, name) == [])

    # A person without a calendar gets an invitation per session day by e-mail, then the cancellation.
    maria = served.call(
        "POST",
        f"/odata/v2/Courses({course['Id']})/Enroll",
        json={"userLoginName": "maria.manager@contoso.example", "courseSessionId": session["Id"]},
    )

    def mails(method: str) -> list[Calendar]:
        out = []
        for received in smtp_server.received():
            if received.rcpt_tos != ["maria.manager@contoso.example"]:
                continue
            for part in received.message().walk():
                if part.get_content_type() == "text/calendar" and part.get_param("method") == method:
                    out.append(Calendar.from_ical(part.get_payload(decode=True)))
        return out

    requests = eventually("two REQUESTs to maria", lambda: len(mails("REQUEST")) == 2 and mails("REQUEST"))
    assert requests
    served.call("POST", f"/odata/v2/Enrollments({maria['Id']})/Cancel", 204, json={})
    eventually("two CANCELs to maria", lambda: len(mails("CANCEL")) == 2)
    asked = {e.walk("VEVENT")[0]["UID"]: e.walk("VEVENT")[0]["SEQUENCE"] for e in mails("REQUEST")}
    cancelled = {e.walk("VEVENT")[0]["UID"]: e.walk("VEVENT")[0]["SEQUENCE"] for e in mails("CANCEL")}
    assert set(asked) == set(cancelled)
    assert all(cancelled[uid] > asked[uid] for uid in asked)
