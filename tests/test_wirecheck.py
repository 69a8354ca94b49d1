"""The checker the end-to-end test relies on (tests/wirecheck.py) finds what it is there to find."""

from __future__ import annotations

import wirecheck

USER = {"Id": "6f1c4c1e-3c39-4d1b-9f57-2f4f3a0e8d11", "LoginName": "ann@x.example", "IsExternal": False}
NOTIFICATION = {
    "Id": "d",
    "Attempt": 1,
    "Properties": {"SubscriptionId": "s", "Event": "UserCreated"},
    "Notifications": [
        {
            "Action": "UserCreated",
            "UserId": USER["Id"],
            "LoginName": "ann@x.example",
            "IsDeleted": False,
            "UserFieldValues": [],
            "TimeStamp": "2030-01-01T00:00:00.000Z",
        }
    ],
}


def test_the_reference_definition_is_found_without_the_shared_folder() -> None:
    """The vendored copy comes first, so a fresh clone without ../shared checks against LMS365 too."""
    assert wirecheck.reference_path() == wirecheck.REFERENCE_CANDIDATES[0]
    ours, lms365 = wirecheck.documents()
    assert lms365.operation("GET", "/odata/v2/Users") == ("/odata/v2/Users", "GetUsers")
    assert ours.operation("PATCH", f"/odata/v2/Users({USER['Id']})") == ("/odata/v2/Users({Id})", "UpdateUser")
    assert ours.operation("POST", "/certificates/x/a.pdf") == ("/{FileUploadUrl}", "FileUpload")


def test_a_valid_response_passes_and_a_null_fails_against_both_documents() -> None:
    """A user list without nulls passes; the same with `City: null` fails as a null, and against LMS365's and our
    schema (draft 4 has no x-nullable)."""
    assert wirecheck.check_response("GET", "/odata/v2/Users", 200, {"value": [USER]}) == []
    problems = wirecheck.check_response("GET", "/odata/v2/Users", 200, {"value": [{**USER, "City": None}]})
    assert "GET /odata/v2/Users 200: null at value[0].City" in problems
    assert any(p.startswith("GET /odata/v2/Users 200: LMS365 schema: .value[0].City") for p in problems)
    assert any(p.startswith("GET /odata/v2/Users 200: coursewire schema: .value[0].City") for p in problems)


def test_undeclared_properties_wrong_types_and_bad_dates_fail_against_our_document() -> None:
    """What our document does not declare, a string where it says integer and a date-time that is not one."""
    body = {**USER, "Nickname": "A", "CreatedAt": "yesterday"}
    problems = wirecheck.check_response("GET", f"/odata/v2/Users({USER['Id']})", 200, body)
    assert any("Additional properties are not allowed ('Nickname'" in p for p in problems), problems
    assert any(".CreatedAt: 'yesterday' is not a 'date-time'" in p for p in problems), problems
    session = {"Id": "s", "MaxAttendees": "3"}
    problems = wirecheck.check_response("GET", "/odata/v2/CourseSessions(s)", 200, session)
    assert any(".MaxAttendees: '3' is not of type 'integer'" in p for p in problems), problems


def test_errors_must_be_the_odata_error_shape() -> None:
    """An error body is {"error": {code, message, target?}} with non-empty strings; a null target is a failure."""
    ok = {"error": {"code": "NotFound", "message": "no such user"}}
    assert wirecheck.check_response("GET", "/odata/v2/Users(x)", 404, ok) == []
    null_target = {"error": {"code": "NotFound", "message": "no such user", "target": None}}
    assert wirecheck.check_response("GET", "/odata/v2/Users(x)", 404, null_target) != []
    assert wirecheck.check_response("GET", "/odata/v2/Users(x)", 404, {"message": "x"}) != []


def test_notifications_are_checked_against_the_trigger_schemas() -> None:
    """A UserCreated delivery passes; with `Email: null`, a Room-like string where an object belongs, or an
    undeclared property, it fails."""
    assert wirecheck.check_notification("UserCreated", NOTIFICATION) == []
    item = NOTIFICATION["Notifications"][0]
    with_null = {**NOTIFICATION, "Notifications": [{**item, "Email": None}]}
    problems = wirecheck.check_notification("UserCreated", with_null)
    assert "UserCreated notification: null at Notifications[0].Email" in problems
    assert any("LMS365 schema: .Notifications[0].Email" in p for p in problems)
    extra = {**NOTIFICATION, "Notifications": [{**item, "Surprise": 1}]}
    assert any("Additional properties" in p for p in wirecheck.check_notification("UserCreated", extra))
    session_item = {"Action": "CourseSessionCreated", "CourseSessionId": "s", "Title": "T", "Room": '{"Title":"x"}'}
    session = {**NOTIFICATION, "Notifications": [session_item]}
    assert any(".Room: '{" in p for p in wirecheck.check_notification("CourseSessionCreated", session))
