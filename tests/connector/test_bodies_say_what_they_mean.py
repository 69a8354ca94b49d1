"""Bodies that say what they mean: a property an operation does not define is a 400 naming it, at every level of
every body; what the certified LMS365 connector sends is always defined; a PATCH may carry back what a GET
returned (read-only properties are ignored, the Id must be the entity's own)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Api, build_world, error
from test_field_limits import (  # noqa: F401 (fixtures: CalDAV on 127.0.0.1)
    REQUESTS,
    Request,
    Scene,
    dav,
    send,
    settings,
)

from connector import app as app_module
from connector import bodies
from connector.validation import pointer

UNKNOWN = "Unexpected"


def test_the_issue_example_a_misspelt_property_is_a_400_naming_it(api: Api) -> None:
    """The issue's example: `PATCH Users({id})` with `{"Titel": ...}` answered 200 and changed nothing. Now it is a
    400 naming Titel and suggesting Title, and nothing is written."""
    world = build_world(api)
    ann = world.uid("ann")
    response = api.patch(f"/odata/v2/Users({ann})", json={"Titel": "Dr. Ann"})
    assert response.status_code == 400, response.text
    problem = error(response)
    assert problem["target"] == "Titel"
    assert "'Titel'" in problem["message"] and "'Title'" in problem["message"], problem
    assert api.ok("GET", f"/odata/v2/Users({ann})")["Title"] == "Ann"


def test_a_shortened_name_is_answered_with_the_name_it_shortens(api: Api) -> None:
    """The README's own example, `Days[0].Start`, got no suggestion: a prefix of a defined name suggests it."""
    world = build_world(api)
    body = {"Title": "T", "Days": [{"Start": "2030-01-01T09:00:00Z", "EndDate": "2030-01-01T10:00:00Z"}]}
    response = api.post(f"/odata/v2/Courses({world.course['Id']})/CourseSessions", json=body)
    assert response.status_code == 400, response.text
    problem = error(response)
    assert problem["target"] == "Days[0].Start"
    assert "did you mean 'StartDate'" in problem["message"], problem


@pytest.mark.parametrize(
    ("sent", "hint"),
    [
        ("Europe/Copenhagen", "'Romance Standard Time'"),
        ("America/Los_Angeles", "'Pacific Standard Time'"),
        ("Pacific Standard Tim", "'Pacific Standard Time'"),
        ("utc", "'UTC'"),
    ],
)
def test_a_time_zone_refusal_names_the_closest_ids_not_a_list_cut_mid_name(api: Api, sent: str, hint: str) -> None:
    """A wrong TimeZone listed the 140 Windows ids alphabetically, cut at the message limit mid-name, so most
    valid ids never appeared; an IANA name (what most makers know) is answered with the Windows id for it."""
    world = build_world(api)
    body = {"Title": "T", "TimeZone": sent, "StartDate": "2030-01-01T09:00:00", "EndDate": "2030-01-01T10:00:00"}
    response = api.post(f"/odata/v2/Courses({world.course['Id']})/CourseSessions", json=body)
    assert response.status_code == 400, response.text
    problem = error(response)
    assert problem["target"] == "TimeZone"
    assert "Windows time zone ids" in problem["message"] and hint in problem["message"], problem
    assert "Afghanistan Standard Time" not in problem["message"]


def test_a_null_is_called_null_in_a_type_error(api: Api) -> None:
    """`"MaxAttendees": null` was answered "None is not of type 'string'": the client wrote JSON, not Python."""
    world = build_world(api)
    body = {"Title": "T", "TimeZone": "UTC", "MaxAttendees": None, "StartDate": "2030-01-01T09:00:00Z"}
    body["EndDate"] = "2030-01-01T10:00:00Z"
    response = api.post(f"/odata/v2/Courses({world.course['Id']})/CourseSessions", json=body)
    assert response.status_code == 400, response.text
    problem = error(response)
    assert problem["target"] == "MaxAttendees"
    assert "null is not of type" in problem["message"] and "None" not in problem["message"], problem


def test_a_misspelt_required_property_is_named_as_unknown_not_as_missing(api: Api) -> None:
    """A typo in a required property name says what is wrong with it (and what was meant), not only that the
    required one is missing; names are case-sensitive, and the message says so."""
    response = api.post("/odata/v2/Users", json={"loginName": "x@x.example"})
    assert response.status_code == 400
    problem = error(response)
    assert problem["target"] == "loginName"
    assert "case-sensitive" in problem["message"] and "'LoginName'" in problem["message"], problem


def _objects(body: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every JSON object of a body with its path, except free-form maps (HttpRequest's headers)."""
    if isinstance(body, dict):
        yield path, body
        for name, value in body.items():
            if name != "headers":
                yield from _objects(value, (*path, name))
    elif isinstance(body, list):
        for i, value in enumerate(body):
            yield from _objects(value, (*path, i))


def _node(body: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


@pytest.mark.parametrize("op_id", sorted(REQUESTS))
def test_every_operation_refuses_an_unknown_property_at_every_level(
    api: Api, request: pytest.FixtureRequest, op_id: str
) -> None:
    """For every operation with a JSON body, a property it does not define is a 400 naming it by its path
    (`Unexpected`, `Room.Unexpected`, `Days[0].Unexpected`), wherever in the body it is; the body without it
    is accepted (tests/connector/test_field_limits.py; ConnectCalendar against a CalDAV server on 127.0.0.1)."""
    scene = Scene(api, request.getfixturevalue("dav"))
    base = REQUESTS[op_id](scene).body
    places = [path for path, _ in _objects(base)]
    assert places, op_id
    for path in places:
        request = REQUESTS[op_id](scene)
        body = copy.deepcopy(request.body)
        _node(body, path)[UNKNOWN] = "x"
        response = send(scene, Request(request.method, request.path, body))
        assert response.status_code == 400, (op_id, path, response.text)
        problem = error(response)
        assert problem["target"] == pointer([*path, UNKNOWN]), (op_id, problem)
        assert f"'{UNKNOWN}' is not a property this operation defines" in problem["message"], problem


REPO = Path(__file__).resolve().parents[2]
VENDORED = REPO / "openapi" / "schemas" / "lms365.reference.swagger.json"
SHARED = REPO.parent / "shared" / "reference" / "lms365.apiDefinition.swagger.json"


def _reference() -> list[dict[str, Any]]:
    """The certified LMS365 definitions kept with the project (vendored) and beside it (shared), when present."""
    return [json.loads(path.read_text()) for path in (VENDORED, SHARED) if path.is_file()]


def _sample(doc: Any, schema: Any, depth: int = 0) -> Any:
    """A value holding every property the schema names, each with a value of its type."""
    schema, _ = bodies._resolve(doc, schema, ())
    if not isinstance(schema, dict) or depth > 8:
        return "x"
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type") or ("object" if "properties" in schema else "array" if "items" in schema else "string")
    if kind == "object":
        return {name: _sample(doc, child, depth + 1) for name, child in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample(doc, schema.get("items") or {}, depth + 1)]
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return 1
    return "2030-01-01T00:00:00Z" if schema.get("format") == "date-time" else "x"


def _reference_bodies() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for doc in _reference():
        for item in doc["paths"].values():
            for op in item.values():
                if not isinstance(op, dict) or "operationId" not in op:
                    continue
                schema = bodies._body_parameter(doc, op)
                if schema is not None:
                    yield op["operationId"], json.dumps(_sample(doc, schema)), doc.get("info", {}).get("title", "")


REFERENCE_BODIES = list(_reference_bodies())


def test_the_reference_is_there_to_compare_with() -> None:
    """The vendored copy of the certified definition ships with the project, so the superset tests below run."""
    assert VENDORED.is_file()
    assert len({op_id for op_id, _, _ in REFERENCE_BODIES}) >= 20


@pytest.mark.parametrize(("op_id", "body"), sorted({(op_id, body) for op_id, body, _ in REFERENCE_BODIES}))
def test_every_property_the_certified_connector_sends_is_defined_for_its_operation(op_id: str, body: str) -> None:
    """Every property (at every level) of every operation's body in the certified LMS365 definition is defined
    by ours for the same operation, so no flow built on that connector meets an unknown-property 400."""
    rules = bodies.rules(op_id)
    assert rules is not None, f"{op_id} has no JSON body here"
    instance = json.loads(body)
    rules.normalize(instance)
    unknown = [
        f"{pointer(e.absolute_path)}: {sorted(set(e.instance) - set(e.schema.get('properties', {})))}"
        for e in rules.validator.iter_errors(instance)
        if e.validator == "additionalProperties"
    ]
    assert unknown == [], f"{op_id}: the certified connector sends properties we do not define"


def test_the_certified_connectors_bodies_meet_no_unknown_property_over_http(api: Api) -> None:
    """The same, through the API: each operation's reference body, sent as the certified connector would, is
    never refused for a property (other refusals, for made-up values, are fine here)."""
    scene = Scene(api)
    seen = set()
    for op_id, body, _ in REFERENCE_BODIES:
        if op_id not in REQUESTS or (op_id, body) in seen:
            continue
        seen.add((op_id, body))
        request = REQUESTS[op_id](scene)
        response = send(scene, Request(request.method, request.path, json.loads(body)))
        if response.status_code == 400:
            assert "is not a property this operation defines" not in error(response)["message"], (op_id, response.text)
    assert len(seen) >= 15


# --------------------------------------------------------------------------------------------- PATCH as read


def _as_read(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity as a null-free response shows it (Power Apps and flows see no nulls: values without one are
    left out), which is what a read-modify-write client sends back."""
    if isinstance(entity, dict):
        return {k: _as_read(v) for k, v in entity.items() if v is not None}
    if isinstance(entity, list):
        return [_as_read(v) for v in entity]
    return entity


def test_a_user_read_and_sent_back_with_one_change_is_accepted(api: Api) -> None:
    """A user read with GET (Id, CreatedAt, IsDeleted, @odata.context, UserFieldValues[].FieldId included) and sent
    back with a new Title updates the Title; what cannot change is ignored, as OData v4.0 Part 1 §11.4.3 says."""
    world = build_world(api)
    ann = world.uid("ann")
    api.ok("PATCH", f"/odata/v2/Users({ann})", json={"UserFieldValues": [{"FieldTitle": "Badge", "Value": "7"}]})
    read = _as_read(api.ok("GET", f"/odata/v2/Users({ann})"))
    assert {"Id", "CreatedAt", "IsDeleted", "@odata.context"} <= set(read) and read["UserFieldValues"][0]["FieldId"]
    changed = api.ok("PATCH", f"/odata/v2/Users({ann})", json={**read, "Title": "Ann B.", "CreatedAt": "2001-01-01"})
    assert changed["Title"] == "Ann B."
    assert {k: v for k, v in changed.items() if k not in ("Title",)} == {
        k: v for k, v in api.ok("GET", f"/odata/v2/Users({ann})").items() if k != "Title"
    }
    assert changed["CreatedAt"] != "2001-01-01"
    upper = api.ok("PATCH", f"/odata/v2/Users({ann})", json={"Id": "{" + ann.upper() + "}", "Title": "Ann C."})
    assert upper["Title"] == "Ann C."


def test_a_session_read_and_sent_back_with_one_change_is_accepted(api: Api) -> None:
    """A session read with GET (Days with their Ids, the counts, CourseId) and sent back with a new Title keeps
    its days (and their ids) and changes the Title."""
    world = build_world(api)
    path = f"/odata/v2/CourseSessions({world.session['Id']})"
    read = _as_read(api.ok("GET", path))
    read.pop("MaxAttendees")  # read as an integer, written as a string: i9-wire gives it one shape
    changed = api.ok("PATCH", path, json={**read, "Title": "Late morning"})
    assert changed["Title"] == "Late morning"
    assert changed["Days"] == read["Days"]


def test_a_course_read_with_its_categories_and_tags_and_sent_back_is_accepted(api: Api) -> None:
    """A course read with its categories and tags expanded, sent back with a new Title, keeps them."""
    world = build_world(api)
    catalog = world.catalog["Id"]
    tag = api.ok("POST", "/odata/v2/CourseTags", json={"CourseCatalogId": catalog, "Name": "Outdoor"})
    category = api.ok("POST", "/odata/v2/CourseCategories", json={"CourseCatalogId": catalog, "Name": "Safety"})
    path = f"/odata/v2/Courses({world.course['Id']})"
    api.ok("PATCH", path, json={"Tags": [{"Id": tag["Id"]}], "Categories": [{"Id": category["Id"]}]})
    read = _as_read(api.ok("GET", path, params={"$expand": "Categories,Tags"}))
    back = {k: v for k, v in read.items() if k not in ("LearningModules", "Quizzes")}  # titles in, objects out
    changed = api.ok("PATCH", path, json={**back, "Title": "First aid, again"})
    assert changed["Title"] == "First aid, again"
    again = api.ok("GET", path, params={"$expand": "Categories,Tags"})
    assert [t["Id"] for t in again["Tags"]] == [tag["Id"]]
    assert [c["Id"] for c in again["Categories"]] == [category["Id"]]


def test_a_patch_whose_id_names_another_entity_is_refused(api: Api) -> None:
    """An Id in a PATCH body must be the entity's own: another one says the client is updating the wrong entity."""
    world = build_world(api)
    ann, bob = world.uid("ann"), world.uid("bob")
    response = api.patch(f"/odata/v2/Users({ann})", json={"Id": bob, "Title": "Bob?"})
    assert response.status_code == 400
    assert error(response)["target"] == "Id" and ann in error(response)["message"]
    assert api.ok("GET", f"/odata/v2/Users({ann})")["Title"] == "Ann"


def test_creation_bodies_take_no_read_only_properties(api: Api) -> None:
    """POST bodies create: an Id, CreatedAt or @odata.context there is refused like any other unknown property."""
    for extra in ({"Id": "6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e6f"}, {"CreatedAt": "2030-01-01T00:00:00Z"}):
        response = api.post("/odata/v2/Users", json={"LoginName": "new@x.example", **extra})
        assert response.status_code == 400 and error(response)["target"] == next(iter(extra)), response.text


def test_every_patch_body_defines_what_its_read_only_rules_drop() -> None:
    """The PATCH rules are derived from the document: each PATCH operation tolerates exactly the members its
    success response has beyond its body, and checks the Id."""
    spec = app_module.load_spec()
    patches = [op["operationId"] for item in spec["paths"].values() for method, op in item.items() if method == "patch"]
    keyed = ["UpdateCourse", "UpdateCourseSession", "UpdateUser"]
    assert sorted(patches) == sorted([*keyed, "UpdateCalendarConnection", "UpdateCalendarSettings"])
    # GET then PATCH back: the calendar's read-only members are dropped too (they have no Id to check).
    calendar_rules = bodies.rules("UpdateCalendarConnection")
    assert calendar_rules is not None and {"Status", "Provider", "UserId"} <= calendar_rules.shape.read_only
    settings_rules = bodies.rules("UpdateCalendarSettings")
    assert settings_rules is not None and settings_rules.shape.read_only == {"ModifiedAt"}
    for op_id in keyed:
        rules = bodies.rules(op_id)
        assert rules is not None and rules.key_checked, op_id
        assert {"Id", "@odata.context"} <= rules.shape.read_only, op_id
    for op_id in ("CreateUser", "CreateCourse", "CreateCourseSession"):
        rules = bodies.rules(op_id)
        assert rules is not None and not rules.key_checked and not rules.shape.read_only, op_id
