"""End to end against a real `coursewire serve` subprocess: a flow-like scenario over HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serving import Server

pytestmark = pytest.mark.system


def wait_for(check, timeout: float = 15.0):
    """Poll a condition the server's background worker makes true (provisioning runs every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_flow_like_scenario(server: Server, tmp_path: Path) -> None:
    """Catalog, users, ILT course, session, enroll, waitlist, cancel, promote, approve, complete, retake,
    HttpRequest and FileUpload, all over real HTTP against `coursewire serve` with two worker processes."""
    s = server
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
        for n in ("boss", "ann", "bob", "cid")
    }
    catalog = s.call("POST", "/odata/v2/CourseCatalogs", json={"Title": "E2E Academy"})
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
        },
    )
    assert session["StartDate"] == "2031-05-06T08:00:00.000Z"  # BST wall clock -> UTC

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

    s.call("POST", f"/odata/v2/Enrollments({bob['Id']})/Complete", 204)
    s.call("POST", f"/odata/v2/Enrollments({bob['Id']})/Retake", 204, json={})
    assert s.call("GET", f"/odata/v2/Enrollments({bob['Id']})")["EnrollmentStatusText"] == "NotStarted"

    proxied = s.call("POST", "/httprequest", json={"method": "GET", "uri": f"Enrollments({bob['Id']})"})
    assert proxied["UserLoginName"] == "bob@e2e.example"
    absolute = s.session.post(s.base + "/httprequest", json={"method": "GET", "uri": "http://169.254.169.254/"})
    assert absolute.status_code == 400

    uploaded = s.call(
        "POST",
        f"/certificates/{bob['Id']}/upload",
        files={"File": ("certificate.pdf", b"%PDF-1.7 e2e", "application/pdf")},
    )
    assert uploaded["Size"] == len(b"%PDF-1.7 e2e")

    listed = s.call("GET", "/odata/v2/Enrollments", params={"$filter": f"CourseId eq '{cid}'", "$count": "true"})
    assert listed["@odata.count"] == 3
    assert s.session.get(s.base + "/odata/v2/Nope").json()["error"]["code"] == "NotFound"


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
