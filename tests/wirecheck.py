"""Judge what coursewire sends against the connector documents: ours and the certified LMS365 definition.

Both documents' Swagger schemas are read as JSON Schema draft 4, where a `null` is a value of the wrong
type (Swagger's `x-nullable` is not JSON Schema), so a null anywhere is a failure; nulls are also reported
on their own, by path. Against our document an object may carry no property its schema does not
declare (what is posted must match the trigger's schema, and a response its operation's), and a
`date-time` must be one. The LMS365 definition is read from the vendored copy in openapi/schemas (so a
fresh clone has it), else from the shared reference folder beside the checkout.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator, FormatChecker

ROOT = Path(__file__).resolve().parents[1]
OURS = ROOT / "openapi" / "apiDefinition.swagger.json"
# As certification/loading.py finds the certified definition: the vendored copy first, then ../shared.
REFERENCE_CANDIDATES = (
    ROOT / "openapi" / "schemas" / "lms365.reference.swagger.json",
    ROOT.parent / "shared" / "reference" / "lms365.apiDefinition.swagger.json",
)
METHODS = ("get", "post", "patch", "put", "delete")

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def reference_path() -> Path:
    """The certified LMS365 definition; raises FileNotFoundError when neither copy exists."""
    for candidate in REFERENCE_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no LMS365 definition at {' or '.join(map(str, REFERENCE_CANDIDATES))}")


def nulls(value: Any, path: str = "") -> list[str]:
    """Where a parsed JSON value holds null: `value[0].StartDate`, `Notifications[1].Room.Title`."""
    if value is None:
        return [path or "(body)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
    return []


def _closed(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its properties."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


class Document:
    """One connector document: operations by method and path, response and notification validators."""

    def __init__(self, path: Path, *, strict: bool) -> None:
        self.name = "coursewire" if strict else "LMS365"
        self.doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.strict = strict
        self.routes = []
        for template, item in self.doc["paths"].items():
            # FileUploadUrl is a relative path with slashes (connector/app.py routes it as `format: path`).
            pattern = "".join(
                (".+" if part == "{FileUploadUrl}" else "[^/]+") if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[^}]+\})", template)
            )
            for method in METHODS:
                if method in item:
                    self.routes.append((re.compile(f"^{pattern}$"), method, template, item[method]["operationId"]))
        # The upload catch-all matches everything: try it last.
        self.routes.sort(key=lambda r: r[2] == "/{FileUploadUrl}")

    def operation(self, method: str, path: str) -> tuple[str, str] | None:
        """(path template, operationId) of a request, or None when the document has no such operation."""
        for pattern, m, template, operation_id in self.routes:
            if m == method.lower() and pattern.match(path):
                return template, operation_id
        return None

    def operation_by_id(self, operation_id: str) -> tuple[str, str] | None:
        """(path template, method) of an operationId, or None."""
        for _, m, template, found in self.routes:
            if found == operation_id:
                return template, m
        return None

    @cache  # noqa: B019 (a handful of documents, alive for the test session)
    def validator(self, key: tuple[str, ...]) -> Draft4Validator | None:
        """A validator for `("response", template, method, status)` or `("notification", template)`; None
        when the document gives no schema there (or an empty one)."""
        if key[0] == "response":
            _, template, method, status = key
            responses = self.doc["paths"][template][method].get("responses", {})
            schema = (responses.get(status) or {}).get("schema")
        else:
            content = self.doc["paths"][key[1]].get("x-ms-notification-content") or {}
            schema = content.get("schema")
        if not schema:
            return None
        whole = {**schema, "definitions": self.doc.get("definitions", {})}
        if self.strict:
            return Draft4Validator(_closed(whole), format_checker=_FORMATS)
        return Draft4Validator(whole)

    def problems(self, validator: Draft4Validator | None, value: Any, where: str) -> list[str]:
        if validator is None:
            return []
        found = []
        for e in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
            location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
            found.append(f"{where}: {self.name} schema: {location or '(body)'}: {e.message[:300]}")
        return found


@cache
def documents() -> tuple[Document, Document]:
    """Ours (strict: no undeclared property, date-times checked) and the certified LMS365 definition."""
    return Document(OURS, strict=True), Document(reference_path(), strict=False)


def check_response(method: str, path: str, status: int, body: Any) -> list[str]:
    """What is wrong with one response body: nulls, then its schema in our document and in LMS365's.

    `path` is the request path without the query. Error bodies (4xx/5xx) must be the OData error shape.
    """
    where = f"{method} {path} {status}"
    problems = [f"{where}: null at {p}" for p in nulls(body)]
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) and set(body) == {"error"} else None
        if not isinstance(error, dict) or not {"code", "message"} <= set(error) <= {"code", "message", "target"}:
            problems.append(f"{where}: not an OData error body: {body!r}")
        elif not all(isinstance(v, str) and v for v in error.values()):
            problems.append(f"{where}: error members must be non-empty strings: {error!r}")
        return problems
    for document in documents():
        found = document.operation(method, path)
        if found is None:
            continue
        template, _ = found
        status_key = (
            str(status) if str(status) in document.doc["paths"][template][method.lower()]["responses"] else "default"
        )
        validator = document.validator(("response", template, method.lower(), status_key))
        problems += document.problems(validator, body, where)
    return problems


def check_notification(trigger: str, body: Any) -> list[str]:
    """What is wrong with one delivery POSTed for `trigger`: nulls, then the trigger's
    `x-ms-notification-content` in our document and (for its triggers) in LMS365's."""
    where = f"{trigger} notification"
    problems = [f"{where}: null at {p}" for p in nulls(body)]
    for document in documents():
        template = f"/webhooks/subscribe/{trigger}"
        if template not in document.doc["paths"]:
            continue
        problems += document.problems(document.validator(("notification", template)), body, where)
    return problems
