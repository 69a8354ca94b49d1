"""End to end against a real `coursewire serve` subprocess: a flow-like scenario over HTTP.

Every response of the scenario and every notification the server's own delivery worker posts to a
receiver on 127.0.0.1 is checked against the certified LMS365 connector's schemas and our own document
(tests/wirecheck.py), a null anywhere counting as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import wirecheck
from receiver import Receiver, receiving
from serving import Server, start

from webhooks.registry import EVENTS

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve` with two worker processes, delivering webhooks to 127.0.0.1 without batching."""
    env = {"COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "COURSEWIRE_WEBHOOK_BATCH_WINDOW": "off"}
    yield from start(tmp_path_factory.mktemp("serve") / "data", "--workers", "2", env=env)


class Recorded:
    """The server, with every answer kept for checking: (method, path, status, parsed body or None)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.answers: list[tuple[str, str, int, Any]] = []
        self.inner: list[tuple[str, str, Any]] = []  # HttpRequest: (method, inner path, body)

    def call(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        response = self.server.session.request(method, self.server.base + path, timeout=30, **kw)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        body = response.json() if response.content else None
        self.answers.append((method, urlsplit(path).path, response.status_code, body))
        return body

    def proxied(self, operation: str, method: str, uri: str) -> Any:
        """ "Send an HTTP request" (HttpRequest relative to /odata/v2/, HttpRequest_v2 to /)."""
        path = "/httprequest" if operation == "HttpRequest" else "/v2/httprequest"
        body = self.call("POST", path, json={"method": method, "uri": uri})
        inner = ("/odata/v2/" if operation == "HttpRequest" else "/") + urlsplit(uri).path
        self.inner.append((method, inner, body))
        return body

    def problems(self) -> list[str]:
        found = [
            p
            for m, path, status, body in self.answers
            if body is not None
            for p in wirecheck.check_response(m, path, status, body)
        ]
        for method, path, body in self.inner:
            found += [f"(inside HttpRequest) {p}" for p in wirecheck.check_response(method, path, 200, body)]
        return found


def wait_for(check, timeout: float = 15.0):
    """Poll a condition the server's background worker makes true (provisioning runs every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_flow_like_scenario(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    """Flows subscribed to every trigger; catalog, users, ILT course, session with a room, enroll, waitlist,
    cancel, promote, approve, start, attendance, complete, retake, session change and delete, HttpRequest,
    FileUpload, unpublish and deletes, all over real HTTP against `coursewire serve` with two worker
    processes. Every response and every notification is valid against the LMS365 definition and our own,
    with no null; all 18 triggers fire."""
    s = Recorded(server)
    for event in EVENTS:
        s.call("POST", f"/webhooks/subscribe/{event}", 201, json={"WebHookUri": f"{receiver.url}/{event}"})
    people = {
        n: s.call(
            "POST",
            "/odata/v2/Users",
            json={
                "LoginName": f"{n}@e2e.example",
                "Email": f"{n}@e2e.example",
                "Title": n.title(),
                **({"ManagerLoginName": "boss@e2e.example"} if n != "boss" else {}),
            },
        )
        for n in ("boss", "ann", "bob", "cid", "gone")
    }
    catalog = s.call("POST", "/odata/v2/CourseCatalogs", json={"Title": "E2E Academy"})
    category = s.call("POST", "/odata/v2/CourseCategories", json={"Name": "Safety", "CourseCatalogId": catalog["Id"]})
    s.call("POST", "/odata/v2/CourseTags", json={"Name": "forklift", "CourseCatalogId": catalog["Id"]})
    course = s.call(
        "POST",
        "/odata/v2/Courses",
        json={
            "CourseCatalogId": catalog["Id"],
            "CourseType": "ClassRoom",
            "Title": "Forklift safety",
            "Description": "Practical",
            "Culture": "en-US",
            "UICulture": "en-US",
            "Url": "forklift",
            "Categories": [{"Id": category["Id"]}],
        },
    )
    cid = course["Id"]
    created = wait_for(
        lambda: s.call("GET", "/odata/v2/Courses/IncludeNotCreated", params={"$filter": f"Id eq '{cid}'"})["value"][0][
            "ProvisioningProgress"
        ]
        == "Created"
    )
    assert created, "the in-process worker did not provision the course"
    session = s.call(
        "POST",
        f"/odata/v2/Courses({cid})/CourseSessions",
        json={
            "Title": "Tuesday",
            "StartDate": "2031-05-06T09:00:00",
            "EndDate": "2031-05-06T15:00:00",
            "TimeZone": "GMT Standard Time",
            "MaxAttendees": "1",
            "Room": {"Title": "Yard 3", "Source": "Unknown"},
        },
    )
    assert session["StartDate"] == "2031-05-06T08:00:00.000Z"  # BST wall clock -> UTC
    assert session["Room"] == {"Title": "Yard 3", "Source": "Unknown"}

    def enroll(name: str):
        return s.call(
            "POST",
            f"/odata/v2/Courses({cid})/Enroll",
            json={"userLoginName": f"{name}@e2e.example", "courseSessionId": session["Id"]},
        )

    ann, bob = enroll("ann"), enroll("bob")
    assert (ann["EnrollmentStatusText"], bob["EnrollmentStatusText"]) == ("NotStarted", "Waitlisted")
    s.call("POST", f"/odata/v2/Enrollments({ann['Id']})/Cancel", 204, json={"message": "Cannot make it"})
    assert s.call("GET", f"/odata/v2/Enrollments({bob['Id']})")["EnrollmentStatusText"] == "NotStarted"

    s.call("PATCH", f"/odata/v2/Courses({cid})", json={"EnrollmentFlow": "LineManagerApproval"})
    request = s.call(
        "POST",
        f"/odata/v2/Courses({cid})/Enroll",
        json={"userLoginName": "cid@e2e.example"},
        headers={"LMS365-User-Id": people["cid"]["Id"]},
    )
    assert request["EnrollmentStatusText"] == "PendingApproval"
    s.call(
        "POST", f"/odata/v2/Enrollments({request['Id']})/Approve", 204, headers={"LMS365-User-Id": people["boss"]["Id"]}
    )
    assert s.call("GET", f"/odata/v2/Enrollments({request['Id']})")["EnrollmentStatusText"] == "NotStarted"

    s.call("POST", f"/odata/v2/Enrollments({bob['Id']})/Start", 204)
    day = session["Days"][0]["Id"]
    s.call(
        "POST",
        f"/odata/v2/CourseSessions({session['Id']})/Attendance",
        json={"Attendance": [{"UserLoginName": "bob@e2e.example", "CourseSessionDayId": day, "Status": "Attended"}]},
    )
    s.call("POST", f"/odata/v2/Enrollments({bob['Id']})/Complete", 204)
    s.call("POST", f"/odata/v2/Enrollments({bob['Id']})/Retake", 204, json={})
    assert s.call("GET", f"/odata/v2/Enrollments({bob['Id']})")["EnrollmentStatusText"] == "NotStarted"

    # A session read and sent back unchanged, then changed: the PATCH takes what the GET returned.
    read = s.call("GET", f"/odata/v2/CourseSessions({session['Id']})")
    s.call("PATCH", f"/odata/v2/CourseSessions({session['Id']})", json={"MaxAttendees": read["MaxAttendees"]})
    s.call("PATCH", f"/odata/v2/CourseSessions({session['Id']})", json={"MaxAttendees": 4, "MeetingUrl": None})

    proxied = s.proxied("HttpRequest", "GET", f"Enrollments({bob['Id']})")
    assert proxied["UserLoginName"] == "bob@e2e.example"
    s.proxied("HttpRequest_v2", "GET", f"odata/v2/Users({people['ann']['Id']})")
    absolute = server.session.post(
        server.base + "/httprequest", json={"method": "GET", "uri": "http://169.254.169.254/"}
    )
    assert absolute.status_code == 400

    uploaded = s.call(
        "POST",
        f"/certificates/{bob['Id']}/upload",
        files={"File": ("certificate.pdf", b"%PDF-1.7 e2e", "application/pdf")},
    )
    assert uploaded["Size"] == len(b"%PDF-1.7 e2e")

    listed = s.call("GET", "/odata/v2/Enrollments", params={"$filter": f"CourseId eq '{cid}'", "$count": "true"})
    assert listed["@odata.count"] == 3
    s.call("GET", "/odata/v2/Enrollments", params={"$expand": "User,Course,CourseSession,Registrations,Attendance"})
    s.call("GET", f"/odata/v2/Courses({cid})")
    s.call("GET", f"/odata/v2/Courses({cid})/CourseSessions", params={"$expand": "Instructors,Registrations"})
    s.call("GET", f"/odata/v2/CourseCatalogs({catalog['Id']})")
    for listing in ("Courses", "CourseCatalogs", "CourseCategories", "CourseTags", "Users"):
        s.call("GET", f"/odata/v2/{listing}")
    s.call("GET", "/webhooks/subscriptions")
    s.call("GET", "/odata/v2/Nope", 404)
    s.call("POST", "/odata/v2/Users", 400, json={"LoginName": ""})

    s.call("DELETE", f"/odata/v2/CourseSessions({session['Id']})", 204)
    s.call("POST", f"/odata/v2/Courses({cid})/Unpublish", 204)
    s.call("DELETE", f"/odata/v2/Courses({cid})", 204)
    s.call("DELETE", f"/odata/v2/Users({people['gone']['Id']})", 204)

    def fired() -> set[str]:
        return {r.path.strip("/") for r in receiver.received}

    # A connected calendar losing its authorization needs a calendar server refusing the worker; that trigger is
    # fired by a real worker in tests/webhooks/test_delivery.py and end to end in tests/mirror/test_engine.py.
    expected = set(EVENTS) - {"CalendarConnectionNeedsReauthorization"}
    assert wait_for(lambda: fired() >= expected, timeout=30), f"never fired: {expected - fired()}"
    notified = [p for r in list(receiver.received) for p in wirecheck.check_notification(r.path.strip("/"), r.body)]
    assert [*s.problems(), *notified] == []
    rooms = [n["Room"] for r in receiver.received if r.path == "/CourseSessionCreated" for n in r.body["Notifications"]]
    assert rooms == [{"Title": "Yard 3", "Source": "Unknown"}]


def test_concurrent_enrollments_never_exceed_max_attendees(server: Server) -> None:
    """Twenty learners enroll at once through two server processes into a three-seat session:
    exactly three get seats, the rest are waitlisted in the order their registrations committed."""
    s = server
    catalog = s.call("POST", "/odata/v2/CourseCatalogs", json={"Title": "Rush"})
    course = s.call(
        "POST",
        "/odata/v2/Courses",
        json={
            "CourseCatalogId": catalog["Id"],
            "CourseType": "ClassRoom",
            "Title": "Popular",
            "Description": "Few seats",
            "Culture": "en-US",
            "UICulture": "en-US",
            "Url": "popular",
        },
    )
    session = s.call(
        "POST",
        f"/odata/v2/Courses({course['Id']})/CourseSessions",
        json={
            "Title": "Only one",
            "StartDate": "2031-06-02T09:00:00",
            "EndDate": "2031-06-02T12:00:00",
            "TimeZone": "UTC",
            "MaxAttendees": "3",
        },
    )
    logins = [f"rush{i}@e2e.example" for i in range(20)]
    for login in logins:
        s.call("POST", "/odata/v2/Users", json={"LoginName": login})

    def enroll(login: str) -> dict:
        return s.call(
            "POST",
            f"/odata/v2/Courses({course['Id']})/Enroll",
            json={"userLoginName": login, "courseSessionId": session["Id"]},
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(enroll, logins))
    statuses = [r["EnrollmentStatusText"] for r in results]
    assert statuses.count("NotStarted") == 3
    assert statuses.count("Waitlisted") == 17
    after = s.call("GET", f"/odata/v2/CourseSessions({session['Id']})")
    assert (after["AttendeesCount"], after["WaitlistCount"]) == (3, 17)

    # Freeing a seat promotes exactly one waitlisted learner.
    seated = next(r for r in results if r["EnrollmentStatusText"] == "NotStarted")
    s.call("POST", f"/odata/v2/Enrollments({seated['Id']})/Cancel", 204, json={"message": "Sick"})
    after = s.call("GET", f"/odata/v2/CourseSessions({session['Id']})")
    assert (after["AttendeesCount"], after["WaitlistCount"]) == (3, 16)
