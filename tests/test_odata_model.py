"""The entity definitions (storage.odata.MODEL) hold together and agree with the served document."""

from __future__ import annotations

from typing import Any

import pytest

from connector.app import load_spec
from storage.odata import MODEL, PRIMITIVES, EntitySet, Property

SPEC = load_spec()
DEFINITIONS: dict[str, Any] = SPEC["definitions"]

# The JSON Schema of each EDM type in the document.
SCHEMA_OF = {
    "Edm.String": ("string", None),
    "Edm.Guid": ("string", None),
    "Edm.Int32": ("integer", "int32"),
    "Edm.Int64": ("integer", "int64"),
    "Edm.Double": ("number", "double"),
    "Edm.Boolean": ("boolean", None),
    "Edm.DateTimeOffset": ("string", "date-time"),
}
# Date-times the certified LMS365 definition declares as plain strings (its names and types cannot change):
# they hold the same ISO instants, and $filter compares them as date-times.
PLAIN_STRING_DATES = {
    ("Enrollment", "CompletionDate"),
    ("Enrollment", "EndDate"),
    ("CourseDueDate", "FixedDate"),
    ("CoursePublishing", "EndDate"),
    ("CourseCertificateExpiry", "FixedDate"),
    ("Quiz", "PublishingStartDate"),
    ("Quiz", "PublishingEndDate"),
}
# The document's definition of each entity type, where its name differs from the type's.
DOCUMENT_NAME: dict[str, str] = {}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = DEFINITIONS[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _wire_properties(schema: dict[str, Any]) -> dict[str, Any]:
    """A response schema's properties without the `@odata` annotations."""
    return {name: value for name, value in _resolve(schema)["properties"].items() if "@" not in name}


def _check_property(owner: str, prop: Property, schema: dict[str, Any], problems: list[str]) -> None:
    where = f"{owner}.{prop.name}"
    schema = _resolve(schema)
    if prop.collection:
        if schema.get("type") != "array":
            problems.append(f"{where}: a collection in the model, {schema.get('type')} in the document")
            return
        schema = _resolve(schema["items"])
    if prop.type in PRIMITIVES:
        kind, fmt = SCHEMA_OF[prop.type]
        if (owner, prop.name) in PLAIN_STRING_DATES and prop.type == "Edm.DateTimeOffset":
            fmt = None
        found = (schema.get("type"), schema.get("format"))
        if found != (kind, fmt):
            problems.append(f"{where}: {prop.type} is {(kind, fmt)} but the document says {found}")
        return
    complex_type = MODEL.complex_type(prop.type)
    if schema.get("type") not in ("object", None) or "properties" not in schema:
        problems.append(f"{where}: complex type {prop.type} but the document has no object there")
        return
    _check_members(complex_type.name, complex_type.properties, _wire_properties(schema), problems)


def _check_members(owner: str, props: tuple[Property, ...], wire: dict[str, Any], problems: list[str]) -> None:
    names = [p.name for p in props]
    if sorted(names) != sorted(wire):
        problems.append(f"{owner}: model {sorted(set(names) - set(wire))}, document {sorted(set(wire) - set(names))}")
    for prop in props:
        if prop.name in wire:
            _check_property(owner, prop, wire[prop.name], problems)


def _check_entity(es: EntitySet, schema: dict[str, Any], problems: list[str]) -> None:
    wire = _wire_properties(schema)
    model = {p.name for p in es.properties} | {n.name for n in es.navigations}
    if model != set(wire):
        problems.append(f"{es.name}: model {sorted(model - set(wire))}, document {sorted(set(wire) - model)}")
    for prop in es.properties:
        if prop.name in wire:
            _check_property(es.type_name, prop, wire[prop.name], problems)
    for nav in es.navigations:
        if nav.name not in wire:
            continue
        target = MODEL.entity_set(nav.target)
        found = _resolve(wire[nav.name])
        if nav.many != (found.get("type") == "array"):
            problems.append(f"{es.name}.{nav.name}: many={nav.many}, document type {found.get('type')}")
            continue
        item = _resolve(found["items"]) if nav.many else found
        # Navigations may show a summary of their target (CourseCatalogSummary): a subset, same types.
        item_names = set(_wire_properties(item))
        target_props = {p.name: p for p in target.properties}
        if not item_names <= set(target_props) | {n.name for n in target.navigations}:
            problems.append(f"{es.name}.{nav.name}: {sorted(item_names - set(target_props))} not in {target.name}")
        for name in item_names & set(target_props):
            _check_property(target.type_name, target_props[name], _wire_properties(item)[name], problems)


def test_every_definition_holds_together() -> None:
    """Keys are properties, navigation targets and complex types exist, names are unique per type."""
    for es in MODEL.entity_sets:
        names = [p.name for p in es.properties] + [n.name for n in es.navigations]
        assert len(names) == len(set(names)), es.name
        assert set(es.key) <= {p.name for p in es.properties}, es.name
        for prop in es.properties:
            assert prop.type in PRIMITIVES or MODEL.complex_type(prop.type), (es.name, prop.name)
            assert prop.sql is not None or prop.load is not None, (es.name, prop.name)
        for nav in es.navigations:
            assert MODEL.entity_set(nav.target), (es.name, nav.name)
    for complex_type in MODEL.complex_types:
        for prop in complex_type.properties:
            assert prop.type in PRIMITIVES or MODEL.complex_type(prop.type), (complex_type.name, prop.name)


# Operations under /odata/v2/ that answer something other than an entity of a set: the calendar settings (one
# object, no set) and a link to a person's calendar page.
NOT_ENTITIES = {
    "GetCalendarSettings",
    "UpdateCalendarSettings",
    "CreateCalendarConnectionLink",
    "GetCalendarSyncHealth",
    "GetCalendarTenant",
    "ConnectCalendarTenant",
}


def _response_schemas() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Entity set -> (operation, entity schema) for every GET, POST and PATCH answering entities of it."""
    by_set: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path, item in SPEC["paths"].items():
        if not path.startswith("/odata/v2/"):
            continue
        for method, op in item.items():
            if method not in ("get", "post", "patch"):
                continue
            response = op["responses"].get("200") or op["responses"].get("201") or {}
            if "schema" not in response:
                continue
            schema = _resolve(response["schema"])
            if "value" in schema.get("properties", {}):
                schema = schema["properties"]["value"]["items"]
            segment = path[len("/odata/v2/") :].split("(")[0].split("/")[0]
            tail = path.rsplit("/", 1)[-1]
            set_name = next((es.name for es in MODEL.entity_sets if es.name == tail), None) or segment
            if op["operationId"] in NOT_ENTITIES:
                continue
            if op["operationId"] == "RecordAttendance":
                set_name = "Attendance"
            elif op["operationId"] in ("GetCalendarConnection", "UpdateCalendarConnection"):
                set_name = "CalendarConnections"
            elif op["operationId"] == "EnrollUserToCourse":
                set_name = "Enrollments"
            by_set.setdefault(set_name, []).append((op["operationId"], schema))
    return by_set


RESPONSES = _response_schemas()


def test_every_listed_set_has_responses_in_the_document() -> None:
    """Each entity set with a list operation is answered somewhere, so the check below covers it."""
    assert {es.name for es in MODEL.entity_sets if es.listed} <= set(RESPONSES)


@pytest.mark.parametrize("set_name", sorted(RESPONSES))
def test_document_response_schemas_agree_with_the_definitions(set_name: str) -> None:
    """Every response schema of an entity set names the definition's properties and navigations with its
    types (ProvisioningStatus, a view of Courses, names a subset with the same types)."""
    es = MODEL.entity_set(set_name)
    problems: list[str] = []
    for operation_id, schema in RESPONSES[set_name]:
        if operation_id == "GetCourseProvisioningStatus":
            wire = _wire_properties(schema)
            props = {p.name: p for p in es.properties}
            assert set(wire) <= set(props), sorted(set(wire) - set(props))
            for name, value in wire.items():
                _check_property(es.type_name, props[name], value, problems)
        else:
            _check_entity(es, schema, problems)
    assert problems == []


def test_the_agreement_check_can_fail() -> None:
    """A renamed property or a changed type in the document is reported."""
    es = MODEL.entity_set("Users")
    schema = {"type": "object", "properties": dict(_wire_properties({"$ref": "#/definitions/User"}))}
    schema["properties"]["Titel"] = schema["properties"].pop("Title")
    schema["properties"]["IsExternal"] = {"type": "string"}
    problems: list[str] = []
    _check_entity(es, schema, problems)
    assert any("Titel" in p for p in problems)
    assert any("IsExternal" in p for p in problems)
