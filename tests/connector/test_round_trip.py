"""What a response says can be sent back: every entity with a PATCH takes the values its GET returned, unchanged.

A maker copies an output of "Get a session" into "Update a session"; if the two disagree on a property's
type (`MaxAttendees` integer out, text in) the flow fails. The operations are found in the document, so an
entity that gains a PATCH is covered without touching this file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import Api, World, build_world

from storage import calendar
from storage.models import CLI

SPEC = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "apiDefinition.swagger.json").read_text())
# Properties a PATCH may not change at all once set, sent back as read: the server must take them unchanged.
CHANGED_BY_EVERY_WRITE = {"ModifiedAt"}


def patch_operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """UpdateX -> (path template, GetX operationId, the PATCH body's properties), for every path with a PATCH."""
    found = {}
    for path, item in SPEC["paths"].items():
        if "patch" not in item:
            continue
        body = next(p for p in item["patch"]["parameters"] if p.get("in") == "body")["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        found[item["patch"]["operationId"]] = (
            path,
            item["get"]["operationId"],
            SPEC["definitions"][name]["properties"],
        )
    return found


PATCHES = patch_operations()


def full_world(api: Api) -> tuple[World, dict[str, str]]:
    """A world whose course, session and user have a value for every optional property their bodies take."""
    world = build_world(api)
    course = world.course["Id"]
    api.ok(
        "PATCH",
        f"/odata/v2/Courses({course})",
        json={
            "LongDescription": "All day, outdoors",
            "CourseID": "FA-101",
            "Duration": "PT6H",
            "ImageUrl": "https://img.example/first-aid.png",
            "CertificateTemplateId": "cert-1",
            "CourseLayoutId": "layout-1",
            "CEU": 3,
            "ShowInCatalog": True,
            "Categories": [{"Name": "Safety", "IsNew": True}],
            "Tags": [{"TagName": "outdoor", "IsNew": True}],
            "LearningModules": ["Bandages"],
        },
    )
    session = api.ok(
        "POST",
        f"/odata/v2/Courses({course})/CourseSessions",
        json={
            "Title": "Two days",
            "Days": [
                {"StartDate": "2030-05-06T09:00:00Z", "EndDate": "2030-05-06T12:00:00Z"},
                {"StartDate": "2030-05-07T09:00:00Z", "EndDate": "2030-05-07T12:00:00Z"},
            ],
            "StartDate": "2030-05-06T09:00:00Z",
            "EndDate": "2030-05-07T12:00:00Z",
            "TimeZone": "W. Europe Standard Time",
            "EnrollmentDeadline": "2030-05-01T00:00:00Z",
            "Room": {"EmailAddress": "room@x.example", "Title": "Room 1", "Location": "HQ", "Source": "Exchange"},
            "MeetingUrl": "https://meet.example/j/1",
            "MaxAttendees": "12",
            "Details": "Bring boots",
            "InstructorLogins": [world.login("teacher")],
        },
    )
    user = api.ok(
        "POST",
        "/odata/v2/Users",
        json={
            "LoginName": "full@x.example",
            "Email": "full@x.example",
            "Title": "Full Person",
            "Department": "Ops",
            "ManagerLoginName": world.login("boss"),
            "City": "Oslo",
            "Country": "Norway",
            "Office": "North",
            "JobTitle": "Medic",
            "IsExternal": True,
            "DirectoryObjectId": "0b5ae4b1-7a64-4c5f-9a3e-4b1a9d7f1c21",
            "UserFieldValues": [{"FieldTitle": "Shoe size", "Value": "44"}],
        },
    )
    ids = {"UpdateCourse": course, "UpdateCourseSession": session["Id"], "UpdateUser": user["Id"]}
    sparse = {"UpdateCourseSession": world.session["Id"], "UpdateUser": world.uid("cid")}
    return world, {**{f"{k} (full)": v for k, v in ids.items()}, **{f"{k} (sparse)": v for k, v in sparse.items()}}


def test_the_patch_operations_are_found() -> None:
    """The PATCH operations of the document are under test (so the loops below cannot test nothing)."""
    assert set(PATCHES) == {
        "UpdateCourse",
        "UpdateCourseSession",
        "UpdateUser",
        "UpdateCalendarSettings",
        "UpdateCalendarConnection",
    }


def test_the_calendar_patches_take_back_what_their_get_returned(api: Api) -> None:
    """CalendarSettings and a person's CalendarConnection, read and sent back whole (read-only members such as
    Status, Provider and ModifiedAt included): 200, nothing changed."""
    calendar.update_settings(api.db, CLI, {"CalDAVEnabled": True})
    user = api.ok("POST", "/odata/v2/Users", json={"LoginName": "cal@x.example"})["Id"]
    calendar.connect(api.db, CLI, user, "CalDAV", account="cal", calendar="https://dav.example/cal/", credentials="-")
    for path in ("/odata/v2/CalendarSettings", f"/odata/v2/Users({user})/CalendarConnection"):
        before = api.ok("GET", path)
        api.ok("PATCH", path, json={k: v for k, v in before.items() if not k.startswith("@")})
        after = api.ok("GET", path)
        before.pop("ModifiedAt", None), after.pop("ModifiedAt", None)
        assert after == before, path


@pytest.mark.parametrize("which", ["full", "sparse"])
def test_every_patch_takes_back_what_its_get_returned(api: Api, which: str) -> None:
    """GET each entity with a PATCH, send back every property the PATCH body defines with the value as read:
    200, and a GET afterwards shows nothing changed (ModifiedAt aside)."""
    _, ids = full_world(api)
    tested = 0
    for label, entity_id in ids.items():
        operation, kind = label.split(" ")
        if kind != f"({which})":
            continue
        template, _, accepted = PATCHES[operation]
        path = re.sub(r"\{[^}]+\}", entity_id, template)
        before = api.ok("GET", path)
        body = {name: before[name] for name in accepted if name in before}
        assert len(body) >= 4, (label, body)
        answered = api.ok("PATCH", path, json=body)
        after = api.ok("GET", path)
        for name in CHANGED_BY_EVERY_WRITE:
            before.pop(name, None), after.pop(name, None), answered.pop(name, None)
        assert after == before, label
        assert {k: v for k, v in before.items() if k in answered} == answered, label
        tested += 1
    assert tested == (3 if which == "full" else 2)


def test_max_attendees_read_from_a_session_is_taken_by_its_patch(api: Api) -> None:
    """The example of the issue: GetCourseSessionById answers MaxAttendees 2 (an integer), and
    UpdateCourseSession takes 2 back (it refused it as not a string); null still removes the limit."""
    world = build_world(api, max_attendees="2")
    path = f"/odata/v2/CourseSessions({world.session['Id']})"
    read = api.ok("GET", path)["MaxAttendees"]
    assert read == 2
    assert api.ok("PATCH", path, json={"MaxAttendees": read})["MaxAttendees"] == 2
    assert api.ok("PATCH", path, json={"MaxAttendees": 5})["MaxAttendees"] == 5
    assert "MaxAttendees" not in api.ok("PATCH", path, json={"MaxAttendees": None})
