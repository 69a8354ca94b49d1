"""Request body rules, derived once per operation from the document: which properties exist, which hold ids,
and what a PATCH may carry back from a GET.

- **Unknown properties.** A body property the operation does not define is a 400 naming it, at every level
  (`Titel`, `Days[0].Start`, `Room.Capacity`): it would otherwise be dropped without a word. Objects the
  document leaves open on purpose (`additionalProperties`, such as HttpRequest's `headers`) stay open.
- **Ids.** A string property with `format: uuid` holds a GUID; it is read in any case and with or without
  braces and passed on in the stored form (storage.ids.canonical).
- **PATCH bodies copied from a GET.** A client that reads an entity, changes a field and sends it back also
  sends what it cannot change (`Id`, `CreatedAt`, `@odata.context`, `Days[].Id`, the counts). Those are the
  properties the operation's success response has where its body has none; OData v4.0 Part 1 §11.4.3 (Update
  an Entity) says a service MUST ignore values for key and other non-updatable properties in an update, and
  coursewire does, with one exception: the entity's own `Id`, which must name the entity the path names (a
  different one says the client is updating the wrong entity). The same section says a service MUST fail
  when it cannot persist a property it was sent, which is what an unknown property is. Creation bodies
  (POST) get no such tolerance: nothing has been read yet.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from connexion.json_schema import Draft4RequestValidator
from jsonschema import FormatChecker

from storage import ids

Json = Any
# Body schemas nest a few levels (CourseInput.Categories[].Id); a response schema may be recursive through
# `$ref`s (a course's catalog lists courses), so both walks stop here.
MAX_DEPTH = 16
# The formats JSON Schema checks in request bodies and parameters, named so they do not depend on what else is
# installed: jsonschema checks `date-time`, `uri` and others only when optional packages (rfc3339-validator, ...)
# are importable, and with them a wall-clock session StartDate was a 400 on one install and accepted on another.
# Dates are the handlers' to judge.
FORMAT_CHECKER = FormatChecker(("email", "idn-email", "ipv4", "ipv6", "regex"))


@dataclass(frozen=True)
class Shape:
    """What a body holds at one place: a GUID (`is_id`), object members with their shapes, the read-only
    members a PATCH may carry back (dropped before the handler), array items. Only places that hold ids or
    read-only members below them are kept, so most bodies are walked in a few steps."""

    is_id: bool = False
    members: Mapping[str, Shape] = field(default_factory=dict)
    read_only: frozenset[str] = frozenset()
    items: Shape | None = None

    def __bool__(self) -> bool:
        return self.is_id or bool(self.members) or bool(self.read_only) or self.items is not None


@dataclass(frozen=True)
class BodyRules:
    """The rules of one operation's JSON body: the strict validator and the shape to normalize with."""

    validator: Any  # a Draft4RequestValidator over the strict schema
    shape: Shape
    key_checked: bool  # a PATCH: a top-level `Id` must name the entity of the path

    def normalize(self, body: Json) -> bool:
        """Put every GUID of `body` in its stored form, in place; True when something changed."""
        return bool(self.shape) and _canonical(self.shape, body)

    def drop_read_only(self, body: Json) -> bool:
        """Remove the read-only members a PATCH carried back, in place; True when something was removed."""
        return bool(self.shape) and _drop(self.shape, body)


def _is_guid_schema(node: Mapping[str, Any]) -> bool:
    return node.get("type") == "string" and node.get("format") == "uuid"


def _resolve(doc: Json, node: Json, stack: tuple[str, ...]) -> tuple[Json, tuple[str, ...]]:
    """Follow `$ref`s of `node` within `doc`; (None, stack) for a reference already being expanded."""
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in stack or not ref.startswith("#/"):
            return None, stack
        stack = (*stack, ref)
        target: Json = doc
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        node = target
    return node, stack


def strict_schema(doc: Json, body: Json, response: Json | None) -> tuple[dict[str, Any], Shape]:
    """The body schema with every object closed (`additionalProperties: false` unless the document set it)
    and, when `response` is given, the response's extra members at each place allowed as anything; and the
    Shape that says where ids and those read-only members are.

    `$ref`s are followed against `doc`; each place gets its own copy, so a definition used twice can be
    closed differently at each. Raises nothing: schemas the walk does not understand are kept as they are.
    """

    def build(node: Json, guide: Json, stack: tuple[str, ...], guide_stack: tuple[str, ...], depth: int) -> Any:
        node, stack = _resolve(doc, node, stack)
        guide, guide_stack = _resolve(doc, guide, guide_stack)
        if not isinstance(node, Mapping) or depth > MAX_DEPTH:
            return (dict(node) if isinstance(node, Mapping) else {}), Shape()
        out = {k: v for k, v in node.items() if k not in ("properties", "items")}
        guide = guide if isinstance(guide, Mapping) else {}
        members: dict[str, Shape] = {}
        read_only: set[str] = set()
        if isinstance(node.get("properties"), Mapping):
            properties: dict[str, Any] = {}
            for name, child in node["properties"].items():
                properties[name], shape = build(
                    child, (guide.get("properties") or {}).get(name), stack, guide_stack, depth + 1
                )
                if shape:
                    members[name] = shape
            for name in guide.get("properties") or {}:
                if name not in properties:
                    properties[name] = {}
                    read_only.add(name)
            out["properties"] = properties
            out.setdefault("additionalProperties", False)
        items = None
        if isinstance(node.get("items"), Mapping):
            out["items"], items_shape = build(node["items"], guide.get("items"), stack, guide_stack, depth + 1)
            items = items_shape or None
        return out, Shape(_is_guid_schema(node), members, frozenset(read_only), items)

    schema, shape = build(body, response, (), (), 0)
    return schema, shape


def _canonical(shape: Shape, value: Json) -> bool:
    changed = False
    if isinstance(value, dict):
        for name, member in shape.members.items():
            if name not in value:
                continue
            item = value[name]
            if member.is_id and isinstance(item, str):
                stored = ids.canonical(item)
                if stored != item:
                    value[name] = stored
                    changed = True
            elif isinstance(item, dict | list):
                changed = _canonical(member, item) or changed
    elif isinstance(value, list) and shape.items is not None:
        for i, item in enumerate(value):
            if shape.items.is_id and isinstance(item, str):
                stored = ids.canonical(item)
                if stored != item:
                    value[i] = stored
                    changed = True
            elif isinstance(item, dict | list):
                changed = _canonical(shape.items, item) or changed
    return changed


def _drop(shape: Shape, value: Json) -> bool:
    changed = False
    if isinstance(value, dict):
        for name in shape.read_only:
            if name in value:
                del value[name]
                changed = True
        for name, member in shape.members.items():
            if isinstance(value.get(name), dict | list):
                changed = _drop(member, value[name]) or changed
    elif isinstance(value, list) and shape.items is not None:
        for item in value:
            if isinstance(item, dict | list):
                changed = _drop(shape.items, item) or changed
    return changed


def _operation(doc: Json, operation_id: str) -> tuple[str, Json] | None:
    for item in (doc.get("paths") or {}).values():
        for method, op in item.items():
            if isinstance(op, Mapping) and op.get("operationId") == operation_id:
                return method.upper(), op
    return None


def _body_parameter(doc: Json, op: Json) -> Json | None:
    for parameter in op.get("parameters") or []:
        parameter, _ = _resolve(doc, parameter, ())
        if isinstance(parameter, Mapping) and parameter.get("in") == "body":
            return parameter.get("schema")
    return None


def _success_schema(op: Json) -> Json | None:
    for code in ("200", "201"):
        response = (op.get("responses") or {}).get(code)
        if isinstance(response, Mapping) and "schema" in response:
            return response["schema"]
    return None


def rules_from(doc: Json, operation_id: str) -> BodyRules | None:
    """The body rules of `operation_id` in the document `doc`, or None when it has no JSON body."""
    found = _operation(doc, operation_id)
    if found is None:
        return None
    method, op = found
    body = _body_parameter(doc, op)
    if body is None:
        return None
    patch = method == "PATCH"
    schema, shape = strict_schema(doc, body, _success_schema(op) if patch else None)
    validator = Draft4RequestValidator(schema, format_checker=FORMAT_CHECKER)
    return BodyRules(validator, shape, key_checked=patch and "Id" in shape.read_only)


@cache
def _document() -> Json:
    from connector.app import load_spec  # the app imports this module's user (connector.validation)

    return load_spec()


@cache
def rules(operation_id: str) -> BodyRules | None:
    """The body rules of an operation of the served document (built once per operation)."""
    return rules_from(_document(), operation_id)


def suggestion(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'Title'?)` for a misspelt property name, or ''. Names differing in case only come first:
    property names are case-sensitive, as in JSON and OData."""
    known = list(known)
    for candidate in known:
        if candidate.lower() == name.lower():
            return f" (property names are case-sensitive: did you mean {candidate!r}?)"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if not close and len(name) >= 3:  # a shortened name: Start for StartDate, Max for MaxAttendees
        close = [c for c in known if c.lower().startswith(name.lower())][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""
