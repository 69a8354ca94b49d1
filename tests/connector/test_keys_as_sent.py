"""GUID keys as clients send them: in any case, bare, quoted or in braces, in paths, bodies, headers, query
parameters and the inner requests of "Send an HTTP request"; ids come back in one form, lower case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from receiver import Receiver, receiving
from support import Api, World, build_world, error

from connector import app as app_module
from storage import calendar, ids
from storage.models import CLI
from storage.secrets import SecretBox
from webhooks.worker import Worker


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def spellings(guid: str) -> list[str]:
    """How clients write one id: SQL Server and .NET print upper case, SharePoint and registry tools add braces."""
    upper = guid.upper()
    return [upper, "{" + upper + "}", "{" + guid + "}", f"'{upper}'", f"'{{{upper}}}'", f"guid'{upper}'"]


def test_the_issue_example_an_upper_case_id_in_a_path_names_the_course(api: Api) -> None:
    """The issue's example: `Courses(66220A70-...)` was a 404 while `$filter` found the course; now it is the
    course, with its Id as stored."""
    world = build_world(api)
    course_id = world.course["Id"]
    assert course_id == course_id.lower()
    upper = api.ok("GET", f"/odata/v2/Courses({course_id.upper()})")
    assert upper["Id"] == course_id
    assert upper == api.ok("GET", f"/odata/v2/Courses({course_id})")
    assert api.ok("GET", "/odata/v2/Courses", params={"$filter": f"Id eq '{course_id.upper()}'"})["value"][0]["Id"] == (
        course_id
    )


def test_filter_reads_an_id_in_braces_as_paths_and_bodies_do(api: Api) -> None:
    """`$filter=Id eq '{66220A70-...}'` found nothing while the same id in braces named the course in a path."""
    world = build_world(api)
    course_id = world.course["Id"]
    for literal in (f"'{{{course_id.upper()}}}'", f"'{{{course_id}}}'", f"' {course_id.upper()} '"):
        found = api.ok("GET", "/odata/v2/Courses", params={"$filter": f"Id eq {literal}"})["value"]
        assert [c["Id"] for c in found] == [course_id], literal
    catalog_id = world.catalog["Id"]
    in_catalog = api.ok(
        "GET", "/odata/v2/Courses", params={"$filter": f"CourseCatalogId eq '{{{catalog_id.upper()}}}'"}
    )["value"]
    assert course_id in {c["Id"] for c in in_catalog}


def _read_paths(world: World, enrollment_id: str, subscription_id: str, delivery_id: str) -> list[tuple[str, str]]:
    """Every GET of the document that takes a key in its path, with the key it is given here."""
    return [
        ("/odata/v2/Courses({})", world.course["Id"]),
        ("/odata/v2/CourseCatalogs({})", world.catalog["Id"]),
        ("/odata/v2/Courses({})/CourseSessions", world.course["Id"]),
        ("/odata/v2/CourseSessions({})", world.session["Id"]),
        ("/odata/v2/Enrollments({})", enrollment_id),
        ("/odata/v2/Users({})", world.uid("ann")),
        ("/odata/v2/Users({})/CalendarConnection", world.uid("ann")),
        ("/webhooks/subscriptions({})", subscription_id),
        ("/webhooks/deliveries({})", delivery_id),
    ]


def _delivery(api: Api, receiver: Receiver) -> tuple[str, str]:
    """A subscription and one delivery to it (run by a real worker to a real receiver)."""
    subscription = api.ok("POST", "/webhooks/subscribe/UserCreated", 201, json={"WebHookUri": receiver.url})
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "late@x.example"})
    worker = Worker(api.db, SecretBox.for_database(api.db.path), api.settings.delivery)

    async def run() -> None:
        async with worker:
            await worker.run_until_idle()

    asyncio.run(run())
    (delivery,) = api.ok("GET", "/webhooks/deliveries")["value"]
    return subscription["Id"], delivery["Id"]


def _connect_calendar(api: Api, user_id: str) -> None:
    """A CalDAV calendar connected for the user, as the calendar page leaves it."""
    calendar.update_settings(api.db, CLI, {"CalDAVEnabled": True})
    sealed = SecretBox.for_database(api.db.path).seal(json.dumps({"username": "ann", "password": "p"}))
    calendar.connect(
        api.db, CLI, user_id, "CalDAV", account="ann@dav.example", calendar="https://dav.example/c/", credentials=sealed
    )


def test_every_key_in_every_path_is_read_in_any_spelling(api: Api, receiver: Receiver) -> None:
    """Every read by key answers the same for every spelling of the key: upper case, braces, OData quotes and
    the OData v2 `guid'...'` literal; a key that is no GUID at all is still the 404 it was."""
    world = build_world(api)
    enrollment = api.ok(
        "POST", f"/odata/v2/Courses({world.course['Id']})/Enroll", json={"userLoginName": world.login("ann")}
    )
    subscription_id, delivery_id = _delivery(api, receiver)
    _connect_calendar(api, world.uid("ann"))
    paths = _read_paths(world, enrollment["Id"], subscription_id, delivery_id)
    templates = {template for template, _ in paths}
    documented = {
        path.replace("{CourseId}", "{}")
        .replace("{CourseCatalogId}", "{}")
        .replace("{courseId}", "{}")
        .replace("{EnrollmentId}", "{}")
        .replace("{Id}", "{}")
        for path, item in app_module.load_spec()["paths"].items()
        if "get" in item and "{" in path
    }
    assert templates == documented, "a GET with a key in its path is missing here"
    for template, key in paths:
        expected = api.ok("GET", template.format(key))
        for spelling in spellings(key):
            response = api.get(template.format(spelling))
            assert response.status_code == 200, (template, spelling, response.text)
            assert response.json() == expected, (template, spelling)
        missing = api.get(template.format("no-such-id"))
        assert missing.status_code == 404, (template, missing.text)


def test_writes_by_key_take_any_spelling_and_links_show_the_stored_one(api: Api) -> None:
    """PATCH, bound actions and nested lists by an upper-case or braced key act on the entity, and the links
    the server builds from the path (`@odata.nextLink`) carry the stored spelling."""
    world = build_world(api)
    ann = world.uid("ann")
    renamed = api.ok("PATCH", f"/odata/v2/Users({{{ann.upper()}}})", json={"Title": "Ann B."})
    assert renamed["Id"] == ann and renamed["Title"] == "Ann B."
    enrollment = api.ok(
        "POST",
        f"/odata/v2/Courses('{world.course['Id'].upper()}')/Enroll",
        json={"userLoginName": world.login("ann")},
    )
    assert enrollment["CourseId"] == world.course["Id"]
    api.ok("POST", f"/odata/v2/Enrollments({enrollment['Id'].upper()})/Start", 204)
    assert api.ok("GET", f"/odata/v2/Enrollments({enrollment['Id']})")["EnrollmentStatus"] == 2
    for i in range(6):
        api.ok(
            "POST",
            f"/odata/v2/Courses({world.course['Id']})/CourseSessions",
            json={
                "Title": f"Extra {i}",
                "StartDate": f"2030-05-0{i + 1}T09:00:00Z",
                "EndDate": f"2030-05-0{i + 1}T10:00:00Z",
                "TimeZone": "UTC",
            },
        )
    page = api.ok("GET", f"/odata/v2/Courses({{{world.course['Id'].upper()}}})/CourseSessions")
    assert world.course["Id"] in page["@odata.nextLink"] and world.course["Id"].upper() not in page["@odata.nextLink"]


def test_a_persons_calendar_is_written_by_any_spelling_of_their_key(api: Api) -> None:
    """Users({Id})/CalendarConnection and /CalendarConnectionLink in upper case, braces or quotes act on the
    person's own calendar and answer with their Id as stored."""
    ann = build_world(api).uid("ann")
    _connect_calendar(api, ann)
    path = "/odata/v2/Users({})/CalendarConnection"
    paused = api.ok("PATCH", path.format("{" + ann.upper() + "}"), json={"SyncEnabled": False})
    assert (paused["UserId"], paused["SyncEnabled"]) == (ann, False)
    assert api.ok("GET", path.format(ann))["SyncEnabled"] is False
    assert api.ok("POST", f"/odata/v2/Users('{ann.upper()}')/CalendarConnectionLink")["Url"]
    api.ok("DELETE", path.format(f"guid'{ann.upper()}'"), 204)
    assert api.ok("GET", path.format(ann))["Status"] == "NotConnected"


def test_ids_in_bodies_are_read_in_any_spelling_and_stored_in_one(api: Api) -> None:
    """The issue's second example: an upper-case CourseCatalogId was a 400 in a body. Every id property of every
    body (catalog, parent category, category and tag ids, sessions, enrollments, session days, directory ids)
    takes any spelling, and the entity comes back with the id as stored."""
    world = build_world(api)
    catalog = world.catalog["Id"]
    parent = api.ok("POST", "/odata/v2/CourseCategories", json={"CourseCatalogId": catalog.upper(), "Name": "Parent"})
    assert parent["CourseCatalogId"] == catalog
    child = api.ok(
        "POST",
        "/odata/v2/CourseCategories",
        json={
            "CourseCatalogId": "{" + catalog.upper() + "}",
            "Name": "Child",
            "ParentCategoryId": parent["Id"].upper(),
        },
    )
    assert child["ParentCategoryId"] == parent["Id"]
    tag = api.ok("POST", "/odata/v2/CourseTags", json={"CourseCatalogId": f"{{{catalog}}}", "Name": "Braced"})
    assert tag["CourseCatalogId"] == catalog
    course = api.ok(
        "POST",
        "/odata/v2/Courses",
        json={
            "CourseCatalogId": catalog.upper(),
            "CourseType": "ClassRoom",
            "Title": "Ids",
            "Description": "x",
            "Culture": "en-US",
            "UICulture": "en-US",
            "Url": "ids",
            "Categories": [{"Id": child["Id"].upper()}],
            "Tags": [{"Id": "{" + tag["Id"].upper() + "}"}],
        },
    )
    assert course["CourseCatalogId"] == catalog
    expanded = api.ok("GET", f"/odata/v2/Courses({course['Id']})", params={"$expand": "Categories,Tags"})
    assert [c["Id"] for c in expanded["Categories"]] == [child["Id"]]
    assert [t["Id"] for t in expanded["Tags"]] == [tag["Id"]]

    session = world.session["Id"]
    enrollment = api.ok(
        "POST",
        f"/odata/v2/Courses({world.course['Id']})/Enroll",
        json={"userLoginName": world.login("bob"), "courseSessionId": session.upper()},
    )
    assert enrollment["courseSessionId"] == session
    day = api.ok("GET", f"/odata/v2/CourseSessions({session})")["Days"][0]["Id"]
    (recorded,) = api.ok(
        "POST",
        f"/odata/v2/CourseSessions({session})/Attendance",
        json={
            "Attendance": [
                {
                    "EnrollmentId": enrollment["Id"].upper(),
                    "CourseSessionDayId": f"{{{day.upper()}}}",
                    "Status": "Attended",
                }
            ]
        },
    )["value"]
    assert (recorded["EnrollmentId"], recorded["CourseSessionDayId"]) == (enrollment["Id"], day)

    directory_id = "6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e6f"
    user = api.ok(
        "POST",
        "/odata/v2/Users",
        json={"LoginName": "eve@x.example", "DirectoryObjectId": f"{{{directory_id.upper()}}}"},
    )
    assert user["DirectoryObjectId"] == directory_id


def test_the_acting_user_header_takes_any_spelling_of_an_id_or_directory_id(api: Api) -> None:
    """LMS365-User-Id names the same user in upper case or braces (a user Id or a DirectoryObjectId), on the
    request and inside "Send an HTTP request"; an Id that names no one is still a 400."""
    world = build_world(api)
    ann = world.uid("ann")
    directory_id = "0e7a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b"
    api.ok("PATCH", f"/odata/v2/Users({ann})", json={"DirectoryObjectId": directory_id})
    api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Enroll", json={"userLoginName": world.login("ann")})
    api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Enroll", json={"userLoginName": world.login("bob")})
    own = api.ok("GET", "/odata/v2/Enrollments", user=ann)["value"]
    assert [e["UserId"] for e in own] == [ann]
    for spelling in (ann.upper(), f"{{{ann.upper()}}}", f" {{{ann}}} ", directory_id.upper(), f"{{{directory_id}}}"):
        assert api.ok("GET", "/odata/v2/Enrollments", user=spelling)["value"] == own, spelling
        inner = api.ok(
            "POST",
            "/httprequest",
            user=ann,
            json={"method": "GET", "uri": "Enrollments", "headers": {"LMS365-User-Id": spelling}},
        )
        assert inner["value"] == own, spelling
    nobody = api.get("/odata/v2/Enrollments", user="{0B9B3A4E-8D7F-4C2A-9E1D-5F6A7B8C9D0E}")
    assert nobody.status_code == 400 and error(nobody)["target"] == "LMS365-User-Id"


def test_send_an_http_request_reads_ids_in_its_uri_and_body_as_the_api_does(api: Api) -> None:
    """The inner request of "Send an HTTP request" is held to the same rules: an upper-case key in its uri and
    a braced id in its body name the entity."""
    world = build_world(api)
    inner = api.ok("POST", "/httprequest", json={"method": "GET", "uri": f"Courses({world.course['Id'].upper()})"})
    assert inner["Id"] == world.course["Id"]
    created = api.ok(
        "POST",
        "/v2/httprequest",
        json={
            "method": "POST",
            "uri": "odata/v2/CourseTags",
            "body": json.dumps({"CourseCatalogId": "{" + world.catalog["Id"].upper() + "}", "Name": "Inner"}),
        },
    )
    assert created["CourseCatalogId"] == world.catalog["Id"]


def test_a_subscription_id_query_parameter_takes_any_spelling(api: Api, receiver: Receiver) -> None:
    """GetWebhookDeliveries' SubscriptionId filter finds the subscription's deliveries in upper case and braces."""
    build_world(api)
    subscription_id, delivery_id = _delivery(api, receiver)
    for spelling in (subscription_id, subscription_id.upper(), f"{{{subscription_id.upper()}}}"):
        listed = api.ok("GET", "/webhooks/deliveries", params={"SubscriptionId": spelling})["value"]
        assert [d["Id"] for d in listed] == [delivery_id], spelling


GUIDS = st.uuids().map(str)


@given(GUIDS, st.sampled_from(["{}", "{{{}}}", " {} ", "'{}'", "guid'{}'", "'{{{}}}'"]), st.booleans())
def test_a_key_in_any_spelling_is_the_stored_guid(guid: str, shape: str, upper: bool) -> None:
    """canonical_key gives the stored (lower-case, bare) GUID for every spelling clients use."""
    written = shape.format(guid.upper() if upper else guid)
    assert ids.canonical_key(written) == guid
    if "'" not in shape:
        assert ids.canonical(written) == guid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "66220a707c4d4e5b9a0f3b2c1d0e9f8a",
        "{66220a70-7c4d-4e5b-9a0f-3b2c1d0e9f8a",
        "66220a70-7c4d-4e5b-9a0f-3b2c1d0e9f8",
    ],
)
def test_text_that_is_no_guid_is_left_as_it_is(text: str) -> None:
    """Ids are never guessed at: 32 hex digits without hyphens, unbalanced braces and short GUIDs stay as sent."""
    assert ids.canonical(text) == text
    assert ids.canonical_key(text) == text
