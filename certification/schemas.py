"""Schema checks: the document against Power Platform's JSON schema, and the rules on each schema object
written in it (required, enum, pattern, min/max, x-ms-editor, x-ms-enum-values, x-ms-summary)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from certification.document import Json, Report, as_dict, list_operations, pointer, walk
from certification.loading import validator
from certification.wording import check_x_ms_summary


def check_definition_schema(doc: dict[str, Any], report: Report) -> None:
    """Report each place where the definition breaks Power Platform's JSON schema (rule `Schema`)."""
    # The certified LMS365 connector puts `x-ms-editor: dictionary` on HttpRequest's headers, which
    # Power Platform accepts but its published JSON schema does not list: drop it before schema
    # validation; `check_schema_nodes` checks that it only sits on dictionary-shaped objects.
    stripped = copy.deepcopy(doc)
    for _, node in walk(stripped):
        if isinstance(node, dict):
            node.pop("x-ms-editor", None)
    for err in validator("definition-schema").iter_errors(stripped):
        report.error("Schema", pointer(list(err.absolute_path)), schema_message(err))


def schema_message(err: jsonschema.ValidationError) -> str:
    """A validation error in one line of at most 240 characters (the most relevant sub-error of a oneOf)."""
    if err.context:
        err = best_match(err.context)
    message = str(err.message)
    return message if len(message) <= 240 else message[:237] + "..."


def _schema_roots(doc: Json) -> Iterator[tuple[str, Json]]:
    """(where, schema) for every schema written in the document: definitions, bodies, responses, payloads."""
    for name, schema in (doc.get("definitions") or {}).items():
        yield f"definitions/{name}", schema
    for op in list_operations(doc):
        for param in op.node.get("parameters") or []:
            if isinstance(param, dict) and "schema" in param:
                yield f"{op.where} parameter {param.get('name')}", param["schema"]
        for code, response in (op.node.get("responses") or {}).items():
            if isinstance(response, dict) and "schema" in response:
                yield f"{op.where} response {code}", response["schema"]
    for path, item in (doc.get("paths") or {}).items():
        content = item.get("x-ms-notification-content") if isinstance(item, dict) else None
        if isinstance(content, dict) and "schema" in content:
            yield f"{path} notification", content["schema"]


def check_schema_nodes(doc: Json, report: Report) -> None:
    """Report the rules each schema object written in the document breaks (required, enum, pattern, min/max
    consistency, x-ms-editor, x-ms-enum-values, x-ms-summary); `$ref`s are not followed."""
    for root, schema in _schema_roots(doc):
        for path, node in _schema_nodes(schema):
            where = f"{root}{path}"
            required = node.get("required")
            if isinstance(required, list):
                properties = as_dict(node.get("properties"))
                if not required:
                    report.error("RequiredEmpty", where, "'required' must list at least one property")
                for name in required:
                    if name not in properties:
                        report.error("RequiredPropertyNotDefined", where, f"required {name!r} is not a property")
            enum = node.get("enum")
            if isinstance(enum, list) and len({json.dumps(v) for v in enum}) != len(enum):
                report.error("EnumDuplicateValue", where, "enum values must be unique")
            if isinstance(node.get("pattern"), str):
                try:
                    re.compile(node["pattern"])
                except re.error as exc:
                    report.error("PatternNotValid", where, f"pattern does not compile: {exc}")
            for low, high in (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems")):
                if (
                    isinstance(node.get(low), int | float)
                    and isinstance(node.get(high), int | float)
                    and node[low] > node[high]
                ):
                    report.error("MinMaxInconsistent", where, f"{low} is greater than {high}")
            if "x-ms-editor" in node and not (
                node["x-ms-editor"] == "dictionary" and node.get("type") == "object" and "additionalProperties" in node
            ):
                report.error(
                    "EditorNotAllowed",
                    where,
                    "x-ms-editor: dictionary needs an object with additionalProperties",
                )
            enum_values = node.get("x-ms-enum-values")
            if isinstance(enum_values, list):
                for entry in enum_values:
                    if (
                        not isinstance(entry, dict)
                        or "displayName" not in entry
                        or (isinstance(enum, list) and entry.get("value") not in enum)
                    ):
                        report.error(
                            "EnumValuesNotValid",
                            where,
                            "x-ms-enum-values need a displayName and an enum value",
                        )
            summary = node.get("x-ms-summary")
            if isinstance(summary, str):
                check_x_ms_summary(summary, where, report)


def _schema_nodes(schema: Json, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """The schema objects written inside `schema`; $refs are not followed (definitions are checked alone)."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, child in as_dict(schema.get("properties")).items():
        yield from _schema_nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schema_nodes(schema["additionalProperties"], f"{path}{{*}}")
    for i, child in enumerate(schema.get("allOf") or []):
        yield from _schema_nodes(child, f"{path}.allOf[{i}]")
