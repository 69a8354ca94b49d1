"""`/odata/v2/$metadata` and the service document describe every entity set, property, key and navigation the
lists serve, as OData clients (Excel and Power BI "OData feed", python-odata) read them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from csdl_support import Document, Structured, element_type, entity_fits, parse, resolve_context, schema_errors
from support import Api, World, basic, build_world, error

from connector import shaping
from connector.app import load_spec
from storage.odata import fields

BASE = "http://testserver"
META = f"{BASE}/odata/v2/$metadata"
# Swagger 2.0 type (and format) -> the EDM types that carry such values. A string without a format may be
# any type JSON writes as a string (the certified definition types some date-times as plain strings); the
# values served are checked against the EDM type itself below.
COMPATIBLE = {
    ("string", None): {"Edm.String", "Edm.Guid", "Edm.DateTimeOffset", "Edm.Date"},
    ("string", "date-time"): {"Edm.DateTimeOffset"},
    ("string", "date"): {"Edm.Date"},
    ("integer", "int32"): {"Edm.Int32"},
    ("integer", "int64"): {"Edm.Int64"},
    ("number", "double"): {"Edm.Double"},
    ("number", None): {"Edm.Double", "Edm.Decimal"},
    ("boolean", None): {"Edm.Boolean"},
}


@pytest.fixture
def doc(api: Api) -> Document:
    response = api.get("/odata/v2/$metadata")
    assert response.status_code == 200, response.text
    return parse(response.content)


def test_metadata_is_csdl_xml_the_oasis_schema_accepts(api: Api) -> None:
    """$metadata answers CSDL XML 4.0 with OData-Version 4.0, valid against the OASIS EDMX/EDM schemas."""
    response = api.get("/odata/v2/$metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/xml"
    assert response.headers["odata-version"] == "4.0"
    assert response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<edmx:Edmx Version="4.0"')
    assert schema_errors(response.content) == []


def test_a_value_only_expand_computes_is_nullable(doc: Document) -> None:
    """Lists leave ProvisioningProgress out unless `$expand` names it, so $metadata must not promise it."""
    _type, nullable = doc.type_of_set("Courses").properties["ProvisioningProgress"]
    assert nullable is True


def test_metadata_and_service_document_need_an_api_key(api: Api, read_api: Api) -> None:
    """Both answer only with Basic auth (a Read Only key will do); HEAD has the headers, other methods 405."""
    for path in ("/odata/v2/$metadata", "/odata/v2/", "/odata/v2"):
        anonymous = api.client.get(path)
        assert anonymous.status_code == 401
        assert error(anonymous)["code"] == "Unauthorized"
        assert anonymous.headers["www-authenticate"] == 'Basic realm="coursewire"'
        wrong = api.client.get(path, headers=basic("cw_not_a_key"))
        assert wrong.status_code == 401
        assert read_api.get(path).status_code == 200
        got, head = api.get(path), api.request("HEAD", path)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(got.content))
        refused = api.post(path, json={})
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"


def test_the_service_document_lists_the_sets_a_client_can_read(api: Api, doc: Document) -> None:
    """The service document (JSON Format 4.0 section 5) names exactly the entity sets whose URL lists them."""
    for root in ("/odata/v2/", "/odata/v2"):
        response = api.get(root)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json;odata.metadata=minimal"
        assert response.headers["odata-version"] == "4.0"
        body = response.json()
        assert body["@odata.context"] == META
    listed = {item["name"] for item in body["value"]}
    assert {item["kind"] for item in body["value"]} == {"EntitySet"}
    assert all(item["url"] == item["name"] for item in body["value"])
    assert listed == {name for name, (_, _, shown) in doc.entity_sets.items() if shown}
    for name in doc.entity_sets:
        page = api.get(f"/odata/v2/{name}")
        assert (page.status_code == 200) == (name in listed), name
        if name in listed:
            assert page.json()["@odata.context"] == f"{META}#{name}"


def test_links_follow_the_public_url(api: Api) -> None:
    """The service document's context follows the request's host like every other link."""
    body = api.ok("GET", "/odata/v2/", headers={"Host": "lms.example:8443"})
    assert body["@odata.context"] == "http://lms.example:8443/odata/v2/$metadata"


def test_every_odata_answer_says_its_odata_version(api: Api) -> None:
    """Lists, entities and writes under /odata/v2/ carry OData-Version 4.0, by which clients read the payload."""
    catalog = api.post("/odata/v2/CourseCatalogs", json={"Title": "Academy", "AdminLogins": []})
    answers = [api.get("/odata/v2/Courses"), api.get(f"/odata/v2/CourseCatalogs({catalog.json()['Id']})"), catalog]
    assert [(a.status_code, a.headers.get("odata-version")) for a in answers] == [(200, "4.0")] * 3
    assert "odata-version" not in api.get("/webhooks/subscriptions").headers  # not part of the OData service


# --- the document's lists and the query whitelists against $metadata ---------------------------------------


def _swagger_kind(schema: dict[str, Any]) -> tuple[str | None, str | None]:
    return schema.get("type"), schema.get("format")


def _check_schema(
    doc: Document,
    definitions: dict[str, Any],
    structured: Structured,
    schema: dict[str, Any],
    where: str,
    seen: set[tuple[str, str]],
) -> list[str]:
    """Every property of a response schema is a member of `structured` with a type that carries its values."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if (name, structured.name) in seen:
            return []
        seen.add((name, structured.name))
        schema = definitions[name]
    faults = []
    for prop, prop_schema in schema.get("properties", {}).items():
        if "@" in prop:
            continue  # annotations (@odata.context, Nav@odata.context)
        here = f"{where}.{prop}"
        if prop in structured.properties:
            declared, nullable = structured.properties[prop]
            if prop_schema.get("x-nullable") and not nullable:
                faults.append(f"{here}: x-nullable in the document, Nullable=false in $metadata")
        elif prop in structured.navigations:
            declared = structured.navigations[prop][0]
        else:
            faults.append(f"{here}: not declared in $metadata ({structured.name})")
            continue
        faults += _check_value(doc, definitions, declared, prop_schema, here, seen)
    return faults


def _check_value(
    doc: Document, definitions: dict[str, Any], declared: str, schema: dict[str, Any], where: str, seen: set[Any]
) -> list[str]:
    element, many = element_type(declared)
    if schema.get("type") == "array":
        if not many:
            return [f"{where}: an array in the document, {declared} in $metadata"]
        return _check_value(doc, definitions, element, schema["items"], where + "[]", seen)
    if many:
        return [f"{where}: {declared} in $metadata, not an array in the document"]
    if "$ref" in schema or schema.get("type") == "object":
        if element not in doc.types:
            return [f"{where}: an object in the document, {declared} in $metadata"]
        return _check_schema(doc, definitions, doc.types[element], schema, where, seen)
    allowed = COMPATIBLE.get(_swagger_kind(schema), set())
    return [] if element in allowed else [f"{where}: {_swagger_kind(schema)} in the document, {declared} in $metadata"]


def _list_operations(spec: dict[str, Any]) -> Iterator[tuple[str, list[str], dict[str, Any]]]:
    """(path, its segments below /odata/v2, the item schema) of every GET whose answer is a `value` list."""
    definitions = spec["definitions"]
    for path, item in spec["paths"].items():
        if not path.startswith("/odata/v2/") or "get" not in item:
            continue
        schema = item["get"]["responses"]["200"].get("schema", {})
        if "$ref" in schema:
            schema = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        value = schema.get("properties", {}).get("value")
        if value and value.get("type") == "array":
            yield path, path[len("/odata/v2/") :].split("/"), value["items"]


def _set_of(doc: Document, segments: list[str]) -> str:
    """The entity set a list path reads: `Courses`, `Courses/IncludeNotCreated`, `Courses({id})/CourseSessions`."""
    current = segments[0].split("(")[0]
    for segment in segments[1:]:
        bindings = doc.entity_sets[current][1]
        current = bindings.get(segment, current)  # a function such as IncludeNotCreated keeps the set
    return current


def test_every_list_of_the_document_is_declared_with_compatible_types(doc: Document) -> None:
    """Each property of each list response (and what its navigations expand to) is in $metadata, typed to fit."""
    spec = load_spec()
    faults: list[str] = []
    operations = list(_list_operations(spec))
    assert len(operations) >= 7  # Courses, IncludeNotCreated, catalogs, categories, tags, sessions, users, ...
    for path, segments, items in operations:
        set_name = _set_of(doc, segments)
        assert set_name in doc.entity_sets, f"{path}: no entity set {set_name} in $metadata"
        faults += _check_schema(doc, spec["definitions"], doc.type_of_set(set_name), items, f"GET {path}", set())
    assert faults == [], "\n".join(faults)


def test_the_compatibility_check_can_fail(doc: Document) -> None:
    """A document property missing from $metadata or with another type is reported, so the check above bites."""
    course = doc.type_of_set("Courses")
    schema = {"properties": {"Title": {"type": "integer", "format": "int32"}, "Nope": {"type": "string"}}}
    assert _check_schema(doc, {}, course, schema, "Course", set()) == [
        "Course.Title: ('integer', 'int32') in the document, Edm.String in $metadata",
        "Course.Nope: not declared in $metadata (Course)",
    ]


def test_select_expand_filter_and_orderby_names_are_declared(doc: Document) -> None:
    """What $select, $expand, $filter and $orderby accept for each set are members of its type in $metadata."""
    faults = []
    for set_name in doc.entity_sets:
        structured = doc.type_of_set(set_name)
        members = set(structured.properties) | set(structured.navigations)
        faults += [f"{set_name} $select {n}" for n in shaping.selectable(set_name) - members]
        for nav, inner in shaping.expandable(set_name).items():
            if nav not in structured.navigations:
                # A value LMS365 lets $expand compute that is a plain value (ProvisioningProgress).
                if nav not in structured.properties or inner:
                    faults.append(f"{set_name} $expand {nav}")
                continue
            target = doc.types[element_type(structured.navigations[nav][0])[0]]
            inside = set(target.properties) | set(target.navigations)
            faults += [f"{set_name} $expand {nav}($select={n})" for n in inner - inside]
        entity_map = fields.entity_map(set_name)
        for path in entity_map.fields:
            faults += _path_faults(doc, structured, path, f"{set_name} $filter")
        for name in entity_map.collections:
            faults += _path_faults(doc, structured, name, f"{set_name} $filter any/all")
    assert faults == [], "\n".join(faults)


def _path_faults(doc: Document, structured: Structured, path: str, where: str) -> list[str]:
    head, _, rest = path.partition("/")
    if head in structured.properties and not rest:
        return []
    member = structured.navigations.get(head) or structured.properties.get(head)
    if member is None or not rest:
        return [] if member else [f"{where} {path}"]
    target = doc.types.get(element_type(member[0])[0])
    return _path_faults(doc, target, rest, where) if target else [f"{where} {path}"]


# --- what the server serves fits $metadata ---------------------------------------------------------------


def _world(api: Api) -> World:
    """The shared world with a tagged, categorised course, a session with a room, enrollments and attendance."""
    world = build_world(api, max_attendees="1")
    course_id = world.course["Id"]
    api.ok(
        "PATCH",
        f"/odata/v2/Courses({course_id})",
        json={
            "Tags": [{"TagName": "safety"}],
            "Categories": [{"Name": "Health"}],
            # Dates as makers type them: date only, local time with an offset; they must come back as the
            # Edm.DateTimeOffset values $metadata declares.
            "DueDateSettings": {"IsEnabled": True, "FixedDate": "2030-06-30", "DaysAfterEnrollment": "30"},
            "PublishingSettings": {"IsEnabled": True, "EndDate": "2031-01-01T09:00:00+02:00"},
            "ExpirySettings": {"IsEnabled": True, "FixedDate": "2032-01-01T00:00:00Z"},
            "LongDescription": "Two hours",
        },
    )
    api.ok(
        "PATCH",
        f"/odata/v2/CourseSessions({world.session['Id']})",
        json={"Room": {"Title": "Hall", "Source": "Unknown"}, "InstructorLogins": ["teacher@x.example"]},
    )
    for name in ("ann", "bob"):  # bob is waitlisted: one seat
        body = {"userLoginName": f"{name}@x.example", "courseSessionId": world.session["Id"]}
        api.ok("POST", f"/odata/v2/Courses({course_id})/Enroll", json=body)
    ann = api.ok("GET", "/odata/v2/Enrollments", params={"$filter": f"UserId eq {world.uid('ann')}"})["value"][0]
    api.ok("POST", f"/odata/v2/Enrollments({ann['Id']})/Complete", 204)
    api.ok(
        "POST",
        f"/odata/v2/CourseSessions({world.session['Id']})/Attendance",
        json={"Attendance": [{"UserLoginName": "ann@x.example", "Status": "Attended"}]},
    )
    return world


def _check_response(doc: Document, body: dict[str, Any], faults: list[str], where: str) -> None:
    """Every entity of a response fits its declared type, and every @odata.context in it resolves."""
    try:
        declared = resolve_context(doc, body["@odata.context"], META)
    except AssertionError as exc:
        faults.append(f"{where}: {exc}")
        return
    element, many = element_type(declared)
    for entity in body["value"] if many else [body]:
        why = entity_fits(doc, doc.types[element], entity)
        if why:
            faults.append(f"{where}: {why}")
        _nested_contexts(doc, entity, faults, where)


def _nested_contexts(doc: Document, value: Any, faults: list[str], where: str) -> None:
    if isinstance(value, list):
        for item in value:
            _nested_contexts(doc, item, faults, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("@odata.context"):
                try:
                    resolve_context(doc, item, META)
                except AssertionError as exc:
                    faults.append(f"{where}: {exc}")
            else:
                _nested_contexts(doc, item, faults, where)


def test_what_the_lists_serve_fits_metadata_and_every_context_resolves(api: Api, doc: Document) -> None:
    """Lists and single entities, expanded every way, hold only declared members of fitting types, and every
    `@odata.context` in them, top-level or nested, names something $metadata declares."""
    world = _world(api)
    course_id, session_id = world.course["Id"], world.session["Id"]
    enrollment_id = api.ok("GET", "/odata/v2/Enrollments")["value"][0]["Id"]
    reads = [
        "/odata/v2/Courses",
        "/odata/v2/Courses/IncludeNotCreated",
        f"/odata/v2/Courses({course_id})",
        f"/odata/v2/Courses({course_id})/CourseSessions",
        f"/odata/v2/CourseSessions({session_id})",
        f"/odata/v2/CourseCatalogs({world.catalog['Id']})",
        f"/odata/v2/Enrollments({enrollment_id})",
        f"/odata/v2/Users({world.uid('ann')})",
        "/odata/v2/Courses?$select=Id,Title",
        "/odata/v2/Courses?$select=Title&$expand=Tags($select=Name),SharepointWeb($select=Url)",
        # Power Query expanding a column: the navigation named in $select too, its columns in a nested $select.
        "/odata/v2/Courses?$select=Id,Title,Tags,DueDate&$expand=Tags($select=Id,Name),DueDate($select=IsEnabled)",
    ]
    set_of_path = {"Courses": "Courses", "CourseSessions": "CourseSessions", "Enrollments": "Enrollments"}
    for set_name in doc.entity_sets:
        if not doc.entity_sets[set_name][2]:
            continue
        reads.append(f"/odata/v2/{set_name}")
        expandable = ",".join(shaping.expandable(set_name))
        if expandable:
            reads.append(f"/odata/v2/{set_name}?$expand={expandable}")
    for set_name, path in set_of_path.items():
        expandable = ",".join(shaping.expandable(set_name))
        entity = {"Courses": course_id, "CourseSessions": session_id, "Enrollments": enrollment_id}[set_name]
        reads.append(f"/odata/v2/{path}({entity})?$expand={expandable}")
    faults: list[str] = []
    for path in reads:
        _check_response(doc, api.ok("GET", path), faults, path)
    assert faults == [], "\n".join(faults)
