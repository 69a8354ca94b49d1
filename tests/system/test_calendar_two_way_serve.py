"""The two-way mirror's "done when" (issue 11), as a user runs it: `coursewire serve --demo` with the calendar
worker in-process and COURSEWIRE_CALDAV_POLL_SECONDS=5, a real Radicale calendar connected through the API.
Deleting the session's event in Radicale unregisters the learner within the poll interval, with the reason; an
event the person moved to another calendar changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving import BIN, Server, eventually, start

sys.path.insert(0, str(Path(__file__).parents[1] / "mirror"))  # the calendar tests' real servers
import radicale_support
from radicale_support import RadicaleServer, mkcalendar_body

pytestmark = [pytest.mark.system, pytest.mark.slow]
radicale = radicale_support.radicale

POLL_SECONDS = 5
DEADLINE = 20.0  # seconds: four poll intervals, for a loaded machine; it bounds a failure only


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    env = {"COURSEWIRE_ALLOWED_NETWORKS": "127.0.0.0/8", "COURSEWIRE_CALDAV_POLL_SECONDS": str(POLL_SECONDS)}
    yield from start(tmp_path / "data", "--demo", "--workers", "1", env=env)


class Person:
    """A demo user with a Radicale calendar "Training" connected through the API."""

    def __init__(self, server: Server, radicale: RadicaleServer, login: str) -> None:
        self.radicale = radicale
        self.name, self.password = radicale.new_user()
        assert self.dav("MKCALENDAR", "training", mkcalendar_body("Training", ("VEVENT",))).status == 201
        self.id = server.call("GET", f"/odata/v2/Users?$filter=LoginName eq '{login}'")["value"][0]["Id"]
        self.login = login
        connection = server.call(
            "PUT",
            f"/odata/v2/Users({self.id})/CalendarConnection",
            json={"Provider": "CalDAV", "Url": f"{radicale.url}/{self.name}/", "Username": self.name,
                  "Password": self.password},
        )  # fmt: skip
        assert connection["Status"] == "Connected"

    def dav(self, method: str, path: str, body: bytes | None = None) -> radicale_support.Answer:
        """A request straight to Radicale as the person's calendar app would send it."""
        headers = {"Content-Type": "text/calendar"} if method == "PUT" else None
        return self.radicale.request(method, f"/{self.name}/{path}", self.name, self.password, body, headers)

    def files(self, calendar: str = "training") -> dict[str, bytes]:
        folder = self.radicale.storage / "collection-root" / self.name / calendar
        return {p.name: p.read_bytes() for p in sorted(folder.glob("*.ics"))}


def logged(data: Path, kind: str, user_id: str) -> list[dict[str, Any]]:
    """The events of type `kind` about the user in the event log, as `coursewire events --json` prints them."""
    env = {**os.environ, "COURSEWIRE_DATA_DIR": str(data)}
    printed = subprocess.run(
        [str(BIN), "events", "--type", kind, "--user", user_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in printed.splitlines() if line.strip()]


def test_deleting_the_event_in_radicale_unregisters_the_learner_and_a_moved_event_changes_nothing(
    served: Server, radicale: RadicaleServer, tmp_path: Path
) -> None:
    served.call("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    sara = Person(served, radicale, "sara.learner@contoso.example")
    course = served.call("GET", "/odata/v2/Courses?$filter=Title eq 'First aid at work'")["value"][0]
    sessions = served.call("GET", f"/odata/v2/Courses({course['Id']})/CourseSessions")["value"]
    session = next(s for s in sessions if s["Title"] == "First aid, two mornings")

    def enroll(person: Person) -> str:
        body = {"userLoginName": person.login, "courseSessionId": session["Id"]}
        return str(served.call("POST", f"/odata/v2/Courses({course['Id']})/Enroll", json=body)["Id"])

    enrollment = enroll(sara)
    eventually("sara's two events in Radicale", lambda: len(sara.files()) == 2)

    # Sara deletes the first morning's event in her calendar app.
    first = sorted(sara.files())[0]
    assert sara.dav("DELETE", f"training/{first}").status in (200, 204)
    deleted_at = time.monotonic()

    def cancelled() -> dict[str, Any] | None:
        shown = served.call("GET", f"/odata/v2/Enrollments({enrollment})")
        return shown if shown["EnrollmentStatusText"] == "Cancelled" else None

    shown = eventually("sara's enrollment cancelled", cancelled)
    assert time.monotonic() - deleted_at < DEADLINE
    assert "deleted from the person's CalDAV calendar" in shown["CancellationReason"]
    eventually("the second morning's event removed too", lambda: sara.files() == {})
    data = tmp_path / "data"
    (decision,) = logged(data, "CalendarEventDeleted", sara.id)
    assert (decision["data"]["Decision"], decision["data"]["Reason"]) == ("Unregistered", "DeletedFromCalendar")

    # Maria moves one of her events to another calendar: the mirror follows it and unregisters nobody.
    maria = Person(served, radicale, "maria.manager@contoso.example")
    hers = enroll(maria)
    eventually("maria's two events in Radicale", lambda: len(maria.files()) == 2)
    assert maria.dav("MKCALENDAR", "personal", mkcalendar_body("Personal", ("VEVENT",))).status == 201
    name, data_of_event = sorted(maria.files().items())[0]
    assert maria.dav("PUT", "personal/moved-by-app.ics", data_of_event).status == 201
    assert maria.dav("DELETE", f"training/{name}").status in (200, 204)

    (moved,) = eventually("the move noticed", lambda: logged(data, "CalendarEventMoved", maria.id))
    assert (moved["data"]["Decision"], moved["data"]["Reason"]) == ("Followed", "MovedToAnotherCalendar")
    assert served.call("GET", f"/odata/v2/Enrollments({hers})")["EnrollmentStatusText"] != "Cancelled"
    assert logged(data, "CalendarEventDeleted", maria.id) == []
    assert len(maria.files()) == 1  # the moved event is not written back into the connected calendar
    assert list(maria.files("personal")) == ["moved-by-app.ics"]
