"""End to end against a real `coursewire serve` subprocess: a flow-like scenario over HTTP."""

from __future__ import annotations

import time
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
