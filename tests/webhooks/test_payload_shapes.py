"""One shape per thing: an entity in a trigger payload has the shape (and the values) the actions give it.

A flow that reads a session's `Room` from a trigger and one that reads it from "Get a session" must meet
the same object; a notification must also carry no null (webhooks/payloads.without_nulls).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hooks import deliver, make_worker, subscribe
from receiver import Receiver
from support import Api, build_world

from storage.models import Event
from webhooks import payloads

SPEC = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "apiDefinition.swagger.json").read_text())
DEFINITIONS = SPEC["definitions"]

# (notification definition, path to the entity inside one notification, action definition, renamed properties
# {name in the notification: name in the action}). Properties with the same name must have the same shape.
ENTITIES = [
    ("SessionNotificationPayload", (), "CourseSession", {"CourseSessionId": "Id"}),
    ("SessionNotificationPayload", ("Instructors", "[]"), "User", {}),
    ("SessionNotificationPayload", ("Course",), "Course", {"Published": "IsPublished"}),
    ("RegistrationNotificationPayload", ("User",), "User", {}),
    ("RegistrationNotificationPayload", ("Course",), "Course", {"Published": "IsPublished"}),
    ("AttendanceNotificationPayload", ("User",), "User", {}),
    ("AttendanceNotificationPayload", ("Course",), "Course", {"Published": "IsPublished"}),
    ("EnrollmentNotificationPayload", ("Users", "[]"), "User", {}),
    ("EnrollmentNotificationPayload", ("Course",), "Course", {"Published": "IsPublished"}),
    ("CourseNotificationPayload", (), "Course", {"Published": "IsPublished"}),
    ("UserNotificationPayload", (), "User", {"UserId": "Id"}),
]


def _deref(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return DEFINITIONS[ref.rsplit("/", 1)[1]] if ref else schema


def shape(schema: dict[str, Any]) -> Any:
    """A schema reduced to what a flow meets: type and format, items' shape, properties' shapes."""
    schema = _deref(schema)
    kind = schema.get("type")
    if kind == "array":
        return ["array", shape(schema["items"])]
    if kind == "object" and "properties" in schema:
        return {name: shape(sub) for name, sub in schema["properties"].items()}
    return (kind, schema.get("format"))


def common(left: Any, right: Any) -> Any:
    """The part of two shapes a flow could meet in both: objects compared on the properties they share."""
    if isinstance(left, dict) and isinstance(right, dict):
        return {k: common(left[k], right[k]) for k in left.keys() & right.keys()}, {
            k: common(right[k], left[k]) for k in left.keys() & right.keys()
        }
    return left, right


def _entity_schema(definition: str, path: tuple[str, ...]) -> dict[str, Any]:
    schema = DEFINITIONS[definition]["properties"]["Notifications"]["items"]
    for step in path:
        schema = _deref(schema)
        schema = schema["items"] if step == "[]" else schema["properties"][step]
    return _deref(schema)


@pytest.mark.parametrize(("definition", "path", "entity", "renamed"), ENTITIES)
def test_entities_in_trigger_schemas_have_the_action_shapes(
    definition: str, path: tuple[str, ...], entity: str, renamed: dict[str, str]
) -> None:
    """Every property an entity has both in a trigger's schema and in the action's has the same type, format and
    nested shape there (a session's Room is an object in both, MaxAttendees an int32 in both)."""
    notified = shape(_entity_schema(definition, path))
    notified = {renamed.get(k, k): v for k, v in notified.items() if k not in ("Action", "TimeStamp")}
    acted = shape(DEFINITIONS[entity])
    shared = notified.keys() & acted.keys()
    assert len(shared) >= 4, shared
    for name in sorted(shared):
        mine, theirs = (notified[name], acted[name])
        if isinstance(mine, dict):
            mine, theirs = (
                {k: mine[k] for k in mine.keys() & theirs.keys()},
                {k: theirs[k] for k in mine.keys() & theirs.keys()},
            )
        if isinstance(mine, list) and isinstance(mine[1], dict):
            keys = mine[1].keys() & theirs[1].keys()
            mine, theirs = ["array", {k: mine[1][k] for k in keys}], ["array", {k: theirs[1][k] for k in keys}]
        assert mine == theirs, f"{definition} {'.'.join(path)}.{name}: {mine} in the trigger, {theirs} in {entity}"


def test_the_session_room_is_an_object_in_both() -> None:
    """The example of the issue: Room was JSON text in session notifications and an object in the actions."""
    room = _entity_schema("SessionNotificationPayload", ())["properties"]["Room"]
    assert shape(room) == shape(DEFINITIONS["CourseSession"]["properties"]["Room"])
    assert room["type"] == "object"


def test_notifications_carry_the_values_the_actions_return(api: Api, receiver: Receiver) -> None:
    """A session created with a room and an instructor, a learner enrolled into it and the session changed: the
    session, course and user in the notifications equal what GetCourseSessionById, GetCourseInfo and GetUserById
    return for every property they share, and no notification carries a null."""
    for event in ("CourseSessionCreated", "CourseSessionUpdated", "SessionRegistration", "CourseEnrollment"):
        subscribe(api, event, f"{receiver.url}/{event}")
    subscribe(api, "UserCreated", f"{receiver.url}/UserCreated")
    world = build_world(api)
    session = api.ok(
        "POST",
        f"/odata/v2/Courses({world.course['Id']})/CourseSessions",
        json={
            "Title": "Roomy",
            "StartDate": "2030-06-03T09:00:00Z",
            "EndDate": "2030-06-03T12:00:00Z",
            "TimeZone": "UTC",
            "Room": {"Title": "Hall 2", "Source": "Unknown"},
            "MaxAttendees": "8",
            "InstructorLogins": [world.login("teacher")],
        },
    )
    api.ok(
        "POST",
        f"/odata/v2/Courses({world.course['Id']})/Enroll",
        json={"userLoginName": world.login("ann"), "courseSessionId": session["Id"]},
    )
    api.ok("PATCH", f"/odata/v2/CourseSessions({session['Id']})", json={"MaxAttendees": 9, "Room": {"Title": "Hall 3"}})
    deliver(make_worker(api))

    notes = receiver.notifications()
    assert "null" not in json.dumps(notes)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for note in notes:
        by_action.setdefault(note["Action"], []).append(note)
    read_session = api.ok("GET", f"/odata/v2/CourseSessions({session['Id']})")
    [updated] = [n for n in by_action["CourseSessionUpdated"] if n["CourseSessionId"] == session["Id"]]
    [created] = [n for n in by_action["CourseSessionCreated"] if n["CourseSessionId"] == session["Id"]]
    assert (created["MaxAttendees"], updated["MaxAttendees"], read_session["MaxAttendees"]) == (8, 9, 9)
    assert created["Room"] == {"Title": "Hall 2", "Source": "Unknown"}
    _same(updated, read_session, {"CourseSessionId": "Id"}, ignore={"Instructors"})
    changes = {c["Property"]: c for c in updated["Changes"]}
    assert changes["MaxAttendees"] == {"Property": "MaxAttendees", "Before": "8", "After": "9"}
    assert json.loads(changes["Room"]["Before"]) == {"Title": "Hall 2", "Source": "Unknown"}
    assert json.loads(changes["Room"]["After"]) == read_session["Room"] == {"Title": "Hall 3", "Source": "Unknown"}
    teacher = api.ok("GET", f"/odata/v2/Users({world.uid('teacher')})")
    [instructor] = updated["Instructors"]
    _same(instructor, teacher, {})

    course = api.ok("GET", f"/odata/v2/Courses({world.course['Id']})", params={"$expand": "SharepointWeb"})
    flat_course = {
        **course,
        "SiteId": course["SharepointWeb"].get("SiteId"),
        "WebId": course["SharepointWeb"].get("Id"),
    }
    _same(updated["Course"], flat_course, {"Published": "IsPublished"})

    ann = api.ok("GET", f"/odata/v2/Users({world.uid('ann')})")
    [registered] = by_action["SessionRegistration"]
    _same(registered["User"], ann, {})
    [enrolled] = by_action["CourseEnrollment"]
    _same({k: v for k, v in enrolled["Users"][0].items() if k != "EnrollmentId"}, ann, {})
    created_users = {n["UserId"]: n for n in by_action["UserCreated"]}
    _same(created_users[ann["Id"]], ann, {"UserId": "Id"})


def _same(
    notified: dict[str, Any], read: dict[str, Any], renamed: dict[str, str], ignore: set[str] = frozenset()
) -> None:
    """Every property of the notification that the action also returns has the action's value; a property the
    action leaves out (no value) is left out of the notification too."""
    compared = 0
    for name, value in notified.items():
        other = renamed.get(name, name)
        if other in ignore or name in ("Action", "TimeStamp"):
            continue
        if other in read:
            assert value == read[other], f"{name}: {value!r} notified, {read[other]!r} read"
            compared += 1
    assert compared >= 3, (notified, read)


def test_without_nulls_leaves_out_nulls_at_every_depth() -> None:
    """The one rule of the wire: members and array items that are None go, empty arrays and falsy values stay."""
    value = {"a": None, "b": [None, {"c": None, "d": 0}, []], "e": {"f": None}, "g": "", "h": False, "i": []}
    assert payloads.without_nulls(value) == {"b": [{"d": 0}, []], "e": {}, "g": "", "h": False, "i": []}
    assert value["a"] is None  # the input is not changed


def test_a_session_notification_built_from_a_sparse_snapshot_has_no_null() -> None:
    """A session without room, meeting link, seats limit or deadline, and a course not yet provisioned (no SiteId,
    WebId): the notification leaves those properties out rather than sending null."""
    session = {
        "Id": "s",
        "Title": "T",
        "StartDate": "2030-01-01T09:00:00.000Z",
        "EndDate": "2030-01-01T10:00:00.000Z",
        "TimeZone": "UTC",
        "Days": [],
        "Room": None,
        "MeetingUrl": None,
        "MaxAttendees": None,
        "EnrollmentDeadline": None,
        "Instructors": [{"Id": "u", "LoginName": "u@x", "Email": None, "Title": None}],
    }
    course = {"Id": "c", "Title": "C", "Url": "https://x/c", "CourseType": "ClassRoom", "SiteId": None, "WebId": None}
    event = Event(
        seq=1,
        id="e",
        type="CourseSessionCreated",
        occurred_at="2030-01-01T08:00:00.000Z",
        actor={},
        catalog_id=None,
        course_id="c",
        session_id="s",
        enrollment_id=None,
        user_id=None,
        data={"session": session, "course": course},
    )
    built = payloads.notification(event)
    assert built is not None
    trigger, item = built
    assert "null" not in json.dumps(item)
    assert {"Room", "MeetingUrl", "MaxAttendees", "EnrollmentDeadline"}.isdisjoint(item)
    assert item["Instructors"] == [{"Id": "u", "LoginName": "u@x"}]
    assert payloads.validate(trigger, item) == []
