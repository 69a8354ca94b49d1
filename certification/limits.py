"""Declared limits: every string, array and free-form object of the document states its maxLength,
maxItems or maxProperties (docs/limits.md gives each one's reason)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from certification.document import Json, Problem, Report, as_dict, list_operations

LimitKind = Literal["string", "array", "object"]
LIMIT_KEYWORDS: dict[LimitKind, str] = {"string": "maxLength", "array": "maxItems", "object": "maxProperties"}
LIMIT_RULES: dict[LimitKind, str] = {
    "string": "StringWithoutMaxLength",
    "array": "ArrayWithoutMaxItems",
    "object": "ObjectWithoutMaxProperties",
}


@dataclass(frozen=True)
class LimitNode:
    """A string, array or free-form object written in the document, which must declare its limit.

    `section` and `path` name it as docs/limits.md does: `definitions/Course` and `Room.Title`
    (`[]` for array items, `{}` for the values of a free-form object, `(value)` for the root), or
    `parameters` and `$filter (query)`, or `response headers` and `Location`. `where` is its place in
    the document, for messages.
    """

    section: str
    path: str
    kind: LimitKind
    node: dict[str, Any]
    where: str

    @property
    def keyword(self) -> str:
        """`maxLength`, `maxItems` or `maxProperties`."""
        return LIMIT_KEYWORDS[self.kind]

    @property
    def limit(self) -> int | None:
        """The declared limit, or None when it is missing or not a positive integer."""
        value = self.node.get(self.keyword)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _limit_kind(schema: dict[str, Any]) -> LimitKind | None:
    kind = schema.get("type")
    if kind == "string":
        return "string"
    if kind == "array":
        return "array"
    extra = schema.get("additionalProperties")
    if kind == "object" or "additionalProperties" in schema:
        if extra is True or isinstance(extra, dict):
            return "object"
        if kind == "object" and extra is None and not schema.get("properties") and not schema.get("allOf"):
            return "object"  # no properties and nothing said: any members at all
    return None


def _simple_kind(node: Json) -> LimitKind | None:
    """The kind of a non-body parameter or a header (they are never objects)."""
    kind = as_dict(node).get("type")
    return "string" if kind == "string" else "array" if kind == "array" else None


def _schema_limit_nodes(section: str, schema: Json, where: str, path: str = "") -> Iterator[LimitNode]:
    """Limit nodes written inside `schema`; `$ref`s are not followed (each definition is its own section)."""
    if not isinstance(schema, dict) or "$ref" in schema:
        return
    kind = _limit_kind(schema)
    if kind:
        yield LimitNode(section, path or "(value)", kind, schema, f"{where} {path}".rstrip())
    for name, child in as_dict(schema.get("properties")).items():
        yield from _schema_limit_nodes(section, child, where, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from _schema_limit_nodes(section, schema["items"], where, f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schema_limit_nodes(section, schema["additionalProperties"], where, f"{path}{{}}")
    for child in schema.get("allOf") or []:
        yield from _schema_limit_nodes(section, child, where, path)


def _parameter_limit_nodes(key: str, param: Json, where: str) -> Iterator[LimitNode]:
    """A non-body parameter (and its items) as limit nodes of the `parameters` section; body parameters'
    schemas as the section `key`."""
    if not isinstance(param, dict) or "$ref" in param:
        return
    if param.get("in") == "body":
        yield from _schema_limit_nodes(key, param.get("schema"), where)
        return
    name = f"{param.get('name')} ({param.get('in')})"
    node: Json = param
    while isinstance(node, dict):
        kind = _simple_kind(node)
        if kind:
            yield LimitNode("parameters", name, kind, node, where)
        node = node.get("items") if kind == "array" else None
        name += "[]"


def limit_nodes(doc: Json) -> Iterator[LimitNode]:
    """Every string, array and free-form object of an apiDefinition document, everywhere a limit can
    be written: definitions, shared and operation parameters, inline body and response schemas,
    response headers and inline notification schemas. Shared definitions are visited once, where
    they are defined."""
    if not isinstance(doc, dict):
        return
    for name, schema in as_dict(doc.get("definitions")).items():
        yield from _schema_limit_nodes(f"definitions/{name}", schema, f"definitions/{name}")
    for key, param in as_dict(doc.get("parameters")).items():
        yield from _parameter_limit_nodes(f"parameters/{key}", param, f"parameters/{key}")
    for op in list_operations(doc):
        sources = [*(op.item.get("parameters") or []), *(op.node.get("parameters") or [])]
        for param in sources:
            label = param.get("name") if isinstance(param, dict) else None
            yield from _parameter_limit_nodes(f"{op.operation_id} body", param, f"{op.where} parameter {label}")
        for code, response in as_dict(op.node.get("responses")).items():
            response = as_dict(response)
            yield from _schema_limit_nodes(
                f"{op.operation_id} response {code}", response.get("schema"), f"{op.where} response {code}"
            )
            for header, spec in as_dict(response.get("headers")).items():
                kind = _simple_kind(spec)
                if kind:
                    where = f"{op.where} response {code} header {header}"
                    yield LimitNode("response headers", header, kind, spec, where)
    for path, item in as_dict(doc.get("paths")).items():
        content = as_dict(item).get("x-ms-notification-content")
        if isinstance(content, dict):
            yield from _schema_limit_nodes(f"{path} notification", content.get("schema"), f"{path} notification")


def check_limits(doc: Json) -> list[Problem]:
    """Report every string without `maxLength`, array without `maxItems` and free-form object without
    `maxProperties` (see `limit_nodes`): coursewire declares a limit for every value a client sends or
    receives, so makers see it and validation enforces it (docs/limits.md gives each one's reason)."""
    report = Report()
    for found in limit_nodes(doc):
        if found.limit is None:
            report.error(
                LIMIT_RULES[found.kind],
                found.where,
                f"declare {found.keyword} (a positive integer) and give its reason in docs/limits.md",
            )
    return report.problems
