"""Enrollment actions through the served document: enroll, waitlist, cancel, approve, complete, retake."""

from __future__ import annotations

from support import Api, build_world, error, relative

from storage import events


def enroll(api: Api, world, name: str, session: bool = True, **kw):
    body = {"userLoginName": world.login(name)}
    if session:
        body["courseSessionId"] = world.session["Id"]
    return api.post(f"/odata/v2/Courses({world.course['Id']})/Enroll", json=body, **kw)


def status(api: Api, enrollment_id: str) -> str:
    return api.ok("GET", f"/odata/v2/Enrollments({enrollment_id})")["EnrollmentStatusText"]


def test_enroll_returns_the_reference_enrollment_shape(api: Api) -> None:
    """EnrollUserToCourse answers 200 with every property of the certified connector's Enrollment that has a
    value; those without one (a new enrollment has no start, completion, certificate, due date, end or
    cancellation) are left out, never null."""
    world = build_world(api)
    body = enroll(api, world, "ann").json()
    reference = {
        "@odata.context",
        "Id",
        "CourseId",
        "UserId",
        "UserLoginName",
        "Roles",
        "RegistrationDate",
        "StartDate",
        "CompletionDate",
        "RegistrationStatus",
        "CoursePassingStatus",
        "CertificateId",
        "CEU",
        "DecimalCEU",
        "DueDate",
        "EndDate",
        "IsPartOfTrainingPlan",
        "CanUnenroll",
        "CancellationReason",
        "courseSessionId",
    }
    unset = {"StartDate", "CompletionDate", "CertificateId", "DueDate", "EndDate", "CancellationReason"}
    assert reference - set(body) == unset
    assert None not in body.values()
    assert body["UserLoginName"] == "ann@x.example"
    assert body["courseSessionId"] == world.session["Id"]
    assert (body["EnrollmentStatus"], body["EnrollmentStatusText"], body["RegistrationStatus"]) == (
        1,
        "NotStarted",
        "Registered",
    )


def test_full_session_waitlists_and_cancel_promotes_first_in_line(api: Api) -> None:
    """Past MaxAttendees learners wait in order; a cancellation promotes the earliest waiting learner."""
    world = build_world(api, max_attendees="2")
    ids = {n: enroll(api, world, n).json()["Id"] for n in ("ann", "bob", "cid", "dee")}
    assert [status(api, ids[n]) for n in ("ann", "bob", "cid", "dee")] == [
        "NotStarted",
        "NotStarted",
        "Waitlisted",
        "Waitlisted",
    ]
    assert api.ok("GET", f"/odata/v2/Enrollments({ids['dee']})")["WaitlistPosition"] == 2

    api.ok("POST", f"/odata/v2/Enrollments({ids['ann']})/Cancel", 204, json={"message": "Sick"})

    cancelled = api.ok("GET", f"/odata/v2/Enrollments({ids['ann']})")
    assert (cancelled["EnrollmentStatusText"], cancelled["CancellationReason"]) == ("Cancelled", "Sick")
    assert status(api, ids["cid"]) == "NotStarted"
    assert status(api, ids["dee"]) == "Waitlisted"
    session = api.ok("GET", f"/odata/v2/CourseSessions({world.session['Id']})")
    assert (session["AttendeesCount"], session["WaitlistCount"]) == (2, 1)
    assert [e.type for e in events.latest(api.db, limit=3)] == [
        "SessionUnregistered",
        "WaitlistPromoted",
        "EnrollmentCancelled",
    ]


def test_enrolling_twice_is_a_conflict_that_says_what_to_do(api: Api) -> None:
    """A second Enroll of the same learner is 409 naming the existing enrollment, and writes nothing."""
    world = build_world(api)
    first = enroll(api, world, "ann").json()
    before = len(events.latest(api.db, limit=1000))
    response = enroll(api, world, "ann")
    assert response.status_code == 409
    assert first["Id"] in error(response)["message"]
    assert len(events.latest(api.db, limit=1000)) == before


def test_enrollment_deadline_is_enforced(api: Api, clock) -> None:
    """Enrolling into a session after its EnrollmentDeadline is refused with 409 naming the session field."""
    world = build_world(api)
    clock.advance(days=30)
    response = enroll(api, world, "ann")
    assert response.status_code == 409
    assert error(response)["target"] == "courseSessionId"


def test_line_manager_approval_flow(api: Api) -> None:
    """Under LineManagerApproval a learner's own request waits; only their manager (or admins) decide."""
    world = build_world(api, flow="LineManagerApproval")
    api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Publish", 204)
    request = enroll(api, world, "ann", user=world.uid("ann")).json()
    assert (request["EnrollmentStatus"], request["RegistrationStatus"]) == (0, "PendingApproval")
    assert request["courseSessionId"] == world.session["Id"]

    hidden = api.post(f"/odata/v2/Enrollments({request['Id']})/Approve", user=world.uid("cid"))
    assert hidden.status_code == 404  # cid may not even see Ann's request
    refused = api.post(f"/odata/v2/Enrollments({request['Id']})/Approve", user=world.uid("ann"))
    assert refused.status_code == 403  # Ann sees her request but may not decide it
    assert "manager" in error(refused)["message"]

    api.ok("POST", f"/odata/v2/Enrollments({request['Id']})/Approve", 204, user=world.uid("boss"))
    approved = api.ok("GET", f"/odata/v2/Enrollments({request['Id']})")
    assert approved["EnrollmentStatusText"] == "NotStarted"
    assert approved["CourseSessionIds"] == [world.session["Id"]]

    again = api.post(f"/odata/v2/Enrollments({request['Id']})/Approve")
    assert again.status_code == 409


def test_reject_keeps_the_message(api: Api) -> None:
    """Reject moves a pending request to Rejected with the message as CancellationReason."""
    world = build_world(api, flow="LMSAdministratorsApproval")
    api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Publish", 204)
    request = enroll(api, world, "bob", user=world.uid("bob")).json()
    api.ok("POST", f"/odata/v2/Enrollments({request['Id']})/Reject", 204, json={"message": "Course is full"})
    rejected = api.ok("GET", f"/odata/v2/Enrollments({request['Id']})")
    assert (rejected["EnrollmentStatusText"], rejected["CancellationReason"]) == ("Rejected", "Course is full")


def test_start_complete_retake_into_another_session(api: Api) -> None:
    """Start, Complete and Retake move the status; Retake with a session moves the learner's seat."""
    world = build_world(api)
    enrollment = enroll(api, world, "ann").json()
    eid = enrollment["Id"]
    api.ok("POST", f"/odata/v2/Enrollments({eid})/Start", 204, user=world.uid("ann"))
    assert status(api, eid) == "InProgress"
    api.ok("POST", f"/odata/v2/Enrollments({eid})/Complete", 204, user=world.uid("teacher"))
    done = api.ok("GET", f"/odata/v2/Enrollments({eid})")
    assert (done["EnrollmentStatusText"], done["CoursePassingStatus"]) == ("Completed", "Passed")
    assert done["CompletionDate"] is not None

    later = api.ok(
        "POST",
        f"/odata/v2/Courses({world.course['Id']})/CourseSessions",
        json={
            "Title": "Afternoon",
            "StartDate": "2030-04-02T13:00:00Z",
            "EndDate": "2030-04-02T16:00:00Z",
            "TimeZone": "UTC",
        },
    )
    api.ok("POST", f"/odata/v2/Enrollments({eid})/Retake", 204, json={"courseSessionId": later["Id"]})
    retaken = api.ok("GET", f"/odata/v2/Enrollments({eid})")
    assert retaken["EnrollmentStatusText"] == "NotStarted"
    assert (retaken.get("CompletionDate"), retaken["courseSessionId"]) == (None, later["Id"])
    assert api.ok("GET", f"/odata/v2/CourseSessions({world.session['Id']})")["AttendeesCount"] == 0


def test_learner_may_enroll_and_cancel_only_themself(api: Api) -> None:
    """A learner acting through LMS365-User-Id may enroll and cancel themself, not someone else."""
    world = build_world(api)
    api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Publish", 204)
    assert enroll(api, world, "bob", user=world.uid("ann")).status_code == 403
    mine = enroll(api, world, "ann", user=world.uid("ann"))
    assert mine.status_code == 200, mine.text
    other = enroll(api, world, "bob").json()
    assert api.post(f"/odata/v2/Enrollments({other['Id']})/Cancel", user=world.uid("ann")).status_code == 404
    api.ok("POST", f"/odata/v2/Enrollments({mine.json()['Id']})/Cancel", 204, user=world.uid("ann"))


def test_attendance_is_recorded_per_day(api: Api) -> None:
    """RecordAttendance marks a seated learner per session day and answers the rows."""
    world = build_world(api)
    enrollment = enroll(api, world, "ann").json()
    rows = api.ok(
        "POST",
        f"/odata/v2/CourseSessions({world.session['Id']})/Attendance",
        json={"Attendance": [{"UserLoginName": "ann@x.example", "Status": "Attended"}]},
        user=world.uid("teacher"),
    )["value"]
    assert [(r["EnrollmentId"], r["Status"]) for r in rows] == [(enrollment["Id"], "Attended")]
    waiting = api.post(
        f"/odata/v2/CourseSessions({world.session['Id']})/Attendance",
        json={"Attendance": [{"UserLoginName": "bob@x.example", "Status": "Attended"}]},
    )
    assert waiting.status_code == 400
    assert error(waiting)["target"] == "Attendance[0].UserLoginName"


def test_list_enrollments_filters_orders_and_pages(api: Api) -> None:
    """GetEnrollments filters by status text, orders, counts and pages with @odata.nextLink."""
    world = build_world(api, max_attendees="10")
    for name in ("ann", "bob", "cid", "dee", "boss", "teacher"):
        enroll(api, world, name)
    page = api.ok(
        "GET",
        "/odata/v2/Enrollments",
        params={
            "$filter": f"CourseId eq '{world.course['Id']}' and EnrollmentStatusText eq 'NotStarted'",
            "$orderby": "UserLoginName desc",
            "$count": "true",
        },
    )
    assert page["@odata.count"] == 6
    assert len(page["value"]) == 5  # page size 5 in the test settings
    assert page["value"][0]["UserLoginName"] == "teacher@x.example"
    rest = api.ok("GET", relative(page["@odata.nextLink"]))
    assert [e["UserLoginName"] for e in rest["value"]] == ["ann@x.example"]
    assert "@odata.nextLink" not in rest
