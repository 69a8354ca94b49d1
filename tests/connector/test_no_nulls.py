"""No action response carries `null`: a property without a value is left out (connector/wire.py).

Power Apps shows an empty data table when any property of a connector response is null. Every kind of
answer is covered here: single entities, lists, nested `$expand` values, the inner answers of both
"Send an HTTP request" operations, webhook listings, uploads and errors.
"""

from __future__ import annotations

import decimal
import json
import time
from pathlib import Path
from typing import Any

from support import Api, build_world, error
from wirecheck import nulls

from connector.wire import JSONIFIER


def test_no_response_of_any_operation_kind_carries_null(api: Api) -> None:
    """Users, a category, a course, sessions and enrollments with no value for their optional properties,
    read every way the API answers: each body is free of null, and the properties of the issue's examples
    (StartDate, City, ParentCategoryId, LongDescription, DirectoryObjectId, SiteId) are left out."""
    world = build_world(api)
    category = api.ok(
        "POST", "/odata/v2/CourseCategories", json={"Name": "Ops", "CourseCatalogId": world.catalog["Id"]}
    )
    course = world.course["Id"]
    learner = world.uid("cid")
    enrolled = api.ok(
        "POST",
        f"/odata/v2/Courses({course})/Enroll",
        json={"userLoginName": world.login("cid"), "courseSessionId": world.session["Id"]},
    )
    queued = api.ok(
        "POST",
        "/odata/v2/Courses",
        json={
            "CourseCatalogId": world.catalog["Id"],
            "CourseType": "ELearning",
            "Title": "Not provisioned yet",
            "Description": "d",
            "Culture": "en-US",
            "UICulture": "en-US",
            "Url": "later",
        },
    )
    api.ok("POST", "/webhooks/subscribe/UserCreated", 201, json={"WebHookUri": "https://hooks.example/flow"})
    answers = {
        "GetUserById": api.ok("GET", f"/odata/v2/Users({learner})"),
        "GetUsers": api.ok("GET", "/odata/v2/Users", params={"$top": "50"}),
        "CreateCourseCategory": category,
        "GetCourseCategories": api.ok("GET", "/odata/v2/CourseCategories"),
        "GetCourseInfo": api.ok("GET", f"/odata/v2/Courses({course})"),
        "CreateCourse": queued,
        "GetCourseProvisioningStatus": api.ok("GET", "/odata/v2/Courses/IncludeNotCreated"),
        "GetCourses deep": api.ok(
            "GET",
            "/odata/v2/Courses",
            params={"$expand": "CourseSessions($expand=Instructors,Registrations),Categories,Admins,SharepointWeb"},
        ),
        "GetCoursesFromCatalog": api.ok("GET", f"/odata/v2/CourseCatalogs({world.catalog['Id']})"),
        "GetCourseSessionById": api.ok("GET", f"/odata/v2/CourseSessions({world.session['Id']})"),
        "EnrollUserToCourse": enrolled,
        "GetEnrollments expanded": api.ok(
            "GET", "/odata/v2/Enrollments", params={"$expand": "User,Course,CourseSession,Registrations"}
        ),
        "GetEnrollmentById": api.ok("GET", f"/odata/v2/Enrollments({enrolled['Id']})"),
        "HttpRequest": api.ok("POST", "/httprequest", json={"method": "GET", "uri": f"Users({learner})"}),
        "HttpRequest_v2": api.ok(
            "POST", "/v2/httprequest", json={"method": "GET", "uri": f"odata/v2/Enrollments({enrolled['Id']})"}
        ),
        "GetWebhookSubscriptions": api.ok("GET", "/webhooks/subscriptions"),
        "FileUpload": api.ok("POST", "/files/a.txt", files={"File": ("a.txt", b"x", "text/plain")}),
    }
    found = {name: nulls(body) for name, body in answers.items()}
    assert {name: where for name, where in found.items() if where} == {}
    assert "City" not in answers["GetUserById"] and "DirectoryObjectId" not in answers["GetUserById"]
    assert "ParentCategoryId" not in answers["CreateCourseCategory"]
    assert "LongDescription" not in answers["GetCourseInfo"]
    assert "StartDate" not in answers["GetEnrollmentById"]
    [not_yet] = [c for c in answers["GetCourseProvisioningStatus"]["value"] if c["Id"] == queued["Id"]]
    assert "SiteId" not in not_yet["SharepointWeb"]
    assert "SiteId" not in answers["HttpRequest"] and "City" not in answers["HttpRequest"]


def test_an_expanded_navigation_without_a_value_is_left_out(api: Api) -> None:
    """An enrollment without a session, expanded with $expand=CourseSession, has no CourseSession property
    (it was null)."""
    world = build_world(api)
    enrolled = api.ok(
        "POST", f"/odata/v2/Courses({world.course['Id']})/Enroll", json={"userLoginName": world.login("dee")}
    )
    read = api.ok("GET", f"/odata/v2/Enrollments({enrolled['Id']})", params={"$expand": "CourseSession,User"})
    assert "CourseSession" not in read and "courseSessionId" not in read
    assert read["User"]["Id"] == world.uid("dee")
    assert nulls(read) == []


def test_errors_leave_target_out_rather_than_null(api: Api) -> None:
    """An error not about one field has code and message only; one about a field names it in target."""
    missing = api.get("/odata/v2/Users(00000000-0000-4000-8000-000000000000)")
    assert missing.status_code == 404
    unknown_path = api.get("/odata/v2/Nope")
    assert set(error(unknown_path)) == {"code", "message"}
    bad = api.post("/odata/v2/Users", json={"LoginName": ""})
    assert bad.status_code == 400 and error(bad)["target"] == "LoginName"
    for response in (missing, unknown_path, bad):
        assert nulls(response.json()) == []


def test_leaving_nulls_out_costs_less_than_json_dumps_did_on_a_full_page() -> None:
    """Writing a 1,000-row page (30 properties each, a third without a value, and a nested user) the way every
    response is written takes less CPU than `json.dumps` alone took for it before nulls were left out."""
    row: dict[str, Any] = {f"P{i}": (None if i % 3 == 0 else f"value {i}") for i in range(30)}
    row["User"] = {"Id": "u", "Email": None, "UserFieldValues": [{"FieldId": "f", "Value": None}]}
    page = {"@odata.context": "x", "value": [dict(row, Id=str(n)) for n in range(1000)]}

    def cpu(write: Any) -> float:
        times = []
        for _ in range(15):
            started = time.thread_time()
            write(page)
            times.append(time.thread_time() - started)
        return min(times)

    before = cpu(lambda p: json.dumps(p, separators=(",", ":"), ensure_ascii=False))
    now = cpu(JSONIFIER.dumps)
    assert b"null" not in JSONIFIER.dumps(page)
    assert json.loads(JSONIFIER.dumps(page))["value"][0] == {
        k: v for k, v in row.items() if v is not None and k != "User"
    } | {"Id": "0", "User": {"Id": "u", "UserFieldValues": [{"FieldId": "f"}]}}
    assert now < before, f"{now * 1000:.1f} ms against json.dumps' {before * 1000:.1f} ms"


def test_values_orjson_refuses_are_still_written_without_nulls() -> None:
    """An integer past 64 bits (orjson refuses it) is written by json instead, nulls still left out; a Decimal
    is a number as connexion wrote it."""
    assert (
        JSONIFIER.dumps({"big": 2**70, "gone": None, "items": [None, 1]})
        == b'{"big":1180591620717411303424,"items":[1]}\n'
    )
    assert JSONIFIER.dumps({"ceu": decimal.Decimal("1.5")}) == b'{"ceu":1.5}\n'


def test_no_response_or_notification_schema_requires_a_property() -> None:
    """Any response property may be left out (it has no value, or `$select` left it out), so no response or
    trigger schema of the document lists a `required` property: a client generated from it would refuse a body
    that follows the no-null rule."""
    spec = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "apiDefinition.swagger.json").read_text())
    definitions = spec["definitions"]
    found: list[str] = []
    seen: set[str] = set()

    def walk(schema: Any, where: str) -> None:
        if isinstance(schema, list):
            for i, item in enumerate(schema):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(schema, dict):
            return
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                walk(definitions[name], f"definitions/{name}")
            return
        if isinstance(schema.get("required"), list):
            found.append(f"{where}: {schema['required']}")
        for key, value in schema.items():
            if key != "required":
                walk(value, f"{where}.{key}")

    for path, item in spec["paths"].items():
        walk(item.get("x-ms-notification-content"), f"{path} notification")
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                for status, response in operation["responses"].items():
                    walk(response.get("schema"), f"{method.upper()} {path} {status}")
    assert len(seen) >= 20  # the walk reached the entity definitions
    assert found == []
