"""Offline checks of the connector files: Power Platform schemas, certification rules, LMS365 superset."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import jsonschema
from jsonschema.exceptions import best_match

Severity = Literal["error", "warning"]
Json = Any

REPO = Path(__file__).resolve().parents[1]
DEFINITION_PATH = REPO / "openapi" / "apiDefinition.swagger.json"
PROPERTIES_PATH = REPO / "apiProperties.json"
VENDORED_DIR = REPO / "openapi" / "schemas"
SHARED_REFERENCE_DIR = REPO.parent / "shared" / "reference"

DEFINITION_SCHEMA = "powerplatform.apiDefinition.schema.json"
PROPERTIES_SCHEMA = "powerplatform.apiProperties.schema.json"
# The LMS365 definition is vendored under another name so it is not mistaken for ours.
REFERENCE_NAMES = {"vendored": "lms365.reference.swagger.json", "shared": "lms365.apiDefinition.swagger.json"}

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
MAX_FILE_BYTES = 1_000_000  # "smaller than 1 MB": the decimal megabyte is the safe reading
MAX_OPERATIONS = 256
CATEGORIES = frozenset(
    {
        "AI",
        "Business Management",
        "Business Intelligence",
        "Collaboration",
        "Commerce",
        "Communication",
        "Content and Files",
        "Finance",
        "Data",
        "Human Resources",
        "Internet of Things",
        "IT Operations",
        "Lifestyle and Entertainment",
        "Marketing",
        "Productivity",
        "Sales and CRM",
        "Security",
        "Social Media",
        "Website",
    }
)
PRODUCT_NAMES = (
    "power apps",
    "powerapps",
    "power automate",
    "microsoft flow",
    "logic apps",
    "power bi",
    "power platform",
    "power virtual agents",
    "copilot studio",
)
MEDIA_TYPES = frozenset({"application/json", "text/plain", "multipart/form-data", "application/x-www-form-urlencoded"})
DYNAMIC_EXTENSIONS = ("x-ms-dynamic-values", "x-ms-dynamic-schema", "x-ms-dynamic-list", "x-ms-dynamic-properties")
NEXT_LINK_NAMES = frozenset({"@odata.nextLink", "nextLink"})
FORBIDDEN_ICON_COLORS = frozenset({"#007ee5", "#ffffff"})
CAPABILITIES = frozenset({"actions", "triggers"})
SMALL_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "per", "the", "to", "via", "with"}
)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1"})
HOST_PATTERN = re.compile(
    r"^(?=.{1,253}(?::|$))[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(?::(\d{1,5}))?$"
)
SCHEMA_HOST_PATTERN = re.compile(r"^[^{}/ :\\]+(?::\d+)?$")  # the Power Platform schema's own pattern
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Differences from LMS365 that docs/design.md documents: (operationId, status, property) -> why.
FORMAT_EXCEPTIONS = {
    ("GetUsers", "200", "value[].Office"): "Office is an office name; the reference's date-time is a mistake",
}


@dataclass(frozen=True)
class Problem:
    """One finding: `rule` names the check (Power Platform's error code where it has one)."""

    rule: str
    where: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.rule} at {self.where}: {self.message}"


class _Report:
    """Collects problems; checks call `error` or `warn`."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, rule: str, where: str, message: str) -> None:
        self.problems.append(Problem(rule, where, message, "error"))

    def warn(self, rule: str, where: str, message: str) -> None:
        self.problems.append(Problem(rule, where, message, "warning"))


# --------------------------------------------------------------------------------------------- files


def load_json(path: Path) -> Json:
    """Parse a JSON file; raises OSError or json.JSONDecodeError."""
    return json.loads(path.read_text(encoding="utf-8"))


def reference_file(kind: str) -> Path:
    """The path of a reference file: `definition-schema`, `properties-schema` or `lms365`.

    The vendored copy in openapi/schemas/ comes first, so the project works without ../shared/;
    raises FileNotFoundError when neither copy exists.
    """
    vendored, shared = {
        "definition-schema": (DEFINITION_SCHEMA, DEFINITION_SCHEMA),
        "properties-schema": (PROPERTIES_SCHEMA, PROPERTIES_SCHEMA),
        "lms365": (REFERENCE_NAMES["vendored"], REFERENCE_NAMES["shared"]),
    }[kind]
    for candidate in (VENDORED_DIR / vendored, SHARED_REFERENCE_DIR / shared):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {kind} file in {VENDORED_DIR} or {SHARED_REFERENCE_DIR}")


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = load_json(reference_file(kind))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


# --------------------------------------------------------------------------------------------- JSON helpers


def _pointer(path: Iterator[Any] | list[Any]) -> str:
    return "/".join(str(p) for p in path) or "(root)"


def _walk(node: Json, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Json]]:
    """Every value of a JSON document with its path, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, i))


def _dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (checks read malformed documents too)."""
    return value if isinstance(value, dict) else {}


def _lookup(doc: Json, ref: str) -> Json | None:
    """The target of a local `#/...` reference, or None when it does not exist."""
    if not ref.startswith("#/"):
        return None
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _resolve(doc: Json, node: Json) -> Json:
    """Follow `$ref` chains (at most 32 hops, so loops end); a missing target resolves to {}."""
    for _ in range(32):
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
            return node
        node = _lookup(doc, node["$ref"]) or {}
    return {}


def _enter(doc: Json, node: Json, stack: tuple[str, ...]) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """Step into a schema for a recursive walk: resolve its `$ref` and add it to `stack`; None for a
    reference already being expanded (a recursive schema) or for anything that is not an object."""
    ref = node.get("$ref") if isinstance(node, dict) else None
    if isinstance(ref, str):
        if ref in stack:
            return None, stack
        stack = (*stack, ref)
    resolved = _resolve(doc, node)
    return (resolved if isinstance(resolved, dict) else None), stack


def _schema_type(schema: Json) -> str | None:
    if not isinstance(schema, dict):
        return None
    if "type" in schema:
        return str(schema["type"])
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def flatten_schema(doc: Json, schema: Json, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Property paths of a schema like the LMS365 inventory: `a.b` for members, `a[]` for array items.

    Returns {path: {"type", "format", "required", "node"}}; `$ref`s are followed, recursion stops at a
    reference that is already being expanded.
    """
    out: dict[str, dict[str, Any]] = {}

    def visit(node: Json, path: str, required: bool, stack: tuple[str, ...]) -> None:
        node, stack = _enter(doc, node, stack)
        if node is None:
            return
        if path:
            out[path] = {
                "type": _schema_type(node),
                "format": node.get("format"),
                "required": required,
                "node": node,
            }
        properties = node.get("properties")
        if isinstance(properties, dict):
            needed = set(node.get("required") or [])
            for name, child in properties.items():
                visit(child, f"{path}.{name}" if path else name, name in needed, stack)
        items = node.get("items")
        if isinstance(items, dict):
            visit(items, f"{path}[]", False, stack)

    visit(schema, prefix, False, ())
    return out


# --------------------------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class _Operation:
    path: str
    method: str
    node: dict[str, Any]
    item: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def operation_id(self) -> str:
        return str(self.node.get("operationId") or "")


def _operations(doc: Json) -> list[_Operation]:
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, dict):
        return []
    return [
        _Operation(path, method, item[method], item)
        for path, item in paths.items()
        if path.startswith("/") and isinstance(item, dict)
        for method in METHODS
        if isinstance(item.get(method), dict)
    ]


def _parameters(doc: Json, op: _Operation) -> list[dict[str, Any]]:
    """The operation's parameters with `$ref`s resolved; operation ones override path-level ones."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for source in (op.item.get("parameters") or [], op.node.get("parameters") or []):
        for raw in source:
            param = _resolve(doc, raw)
            if isinstance(param, dict):
                merged[(str(param.get("name")), str(param.get("in")))] = param
    return list(merged.values())


def _responses(doc: Json, op: _Operation) -> dict[str, dict[str, Any]]:
    responses = op.node.get("responses")
    if not isinstance(responses, dict):
        return {}
    return {str(code): _resolve(doc, r) for code, r in responses.items() if not str(code).startswith("x-")}


def _success_schema(doc: Json, op: _Operation) -> Json | None:
    for code, response in sorted(_responses(doc, op).items()):
        if code.startswith("2") and isinstance(response, dict) and "schema" in response:
            return _resolve(doc, response["schema"])
    return None


def _body(doc: Json, op: _Operation) -> dict[str, Any] | None:
    return next((p for p in _parameters(doc, op) if p.get("in") == "body"), None)


# ------------------------------------------------------------------------------------- definition checks


def check_definition(doc: Json, *, size: int | None = None) -> list[Problem]:
    """Check an apiDefinition.swagger.json document; return every problem found (empty when it passes).

    Covers the Power Platform JSON schema and the certification rules that can be checked offline.
    `size` is the file's size in bytes; when omitted, the size of the document written with indent=2.
    """
    report = _Report()
    if not isinstance(doc, dict):
        report.error("SpecificationNotObject", "(root)", "the definition must be a JSON object")
        return report.problems
    _check_definition_schema(doc, report)
    _check_connector(doc, report, size)
    _check_references(doc, report)
    _check_security(doc, report)
    _check_paths(doc, report)
    operations = _operations(doc)
    _check_operation_ids(doc, operations, report)
    for op in operations:
        _check_operation_text(op, report)
        _check_parameters(doc, op, report)
        _check_responses(doc, op, report)
        _check_pageable(doc, op, report)
        _check_trigger(doc, op, report)
        _check_internal_required(doc, op, report)
    _check_notifications(doc, operations, report)
    _check_dynamic_values(doc, operations, report)
    _check_families(doc, operations, report)
    _check_schema_nodes(doc, report)
    return report.problems


def _check_definition_schema(doc: dict[str, Any], report: _Report) -> None:
    # The certified LMS365 connector puts `x-ms-editor: dictionary` on HttpRequest's headers, which
    # Power Platform accepts but its published JSON schema does not list: drop it before schema
    # validation; `_check_schema_nodes` checks that it only sits on dictionary-shaped objects.
    stripped = copy.deepcopy(doc)
    for _, node in _walk(stripped):
        if isinstance(node, dict):
            node.pop("x-ms-editor", None)
    for err in _validator("definition-schema").iter_errors(stripped):
        report.error("Schema", _pointer(list(err.absolute_path)), _schema_message(err))


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.context:
        err = best_match(err.context)
    message = str(err.message)
    return message if len(message) <= 240 else message[:237] + "..."


def _check_connector(doc: dict[str, Any], report: _Report, size: int | None) -> None:
    if doc.get("swagger") != "2.0":
        report.error("SpecificationVersionIncorrect", "swagger", "only Swagger (OpenAPI) 2.0 is supported")
    info = _dict(doc.get("info"))
    title = info.get("title")
    if not isinstance(title, str) or not title.strip():
        report.error("TitleMissing", "info.title", "the connector needs a title")
    else:
        if len(title) > 30:
            report.error("TitleTooLong", "info.title", f"{len(title)} characters; at most 30 are allowed")
        if re.search(r"\b(api|connector)\b", title, re.I) or _product_name(title):
            report.error(
                "TitleRestrictedWords",
                "info.title",
                "must not contain 'API', 'Connector' or a Power Platform product name",
            )
        if not title[-1].isalnum():
            report.error("TitleEndsWithNonAlphanumeric", "info.title", "must end with a letter or digit")
    description = info.get("description")
    if not isinstance(description, str) or not 30 <= len(description) <= 500:
        length = len(description) if isinstance(description, str) else 0
        report.error("ConnectorDescriptionLength", "info.description", f"needs 30 to 500 characters, has {length}")
    elif _product_name(description):
        report.error(
            "ConnectorDescriptionProductName",
            "info.description",
            f"must not name a Power Platform product ({_product_name(description)})",
        )
    _check_contact(info.get("contact"), report)
    _check_metadata(doc.get("x-ms-connector-metadata"), report)

    host = doc.get("host")
    if not isinstance(host, str) or not SCHEMA_HOST_PATTERN.match(host):
        report.error("HostNameNotValid", "host", "needs a host name with an optional port, without scheme or path")
    elif _is_placeholder_host(host):
        report.warn(
            "HostNotProduction",
            "host",
            f"{host!r} is not a production host; export the connector for the real host before certifying",
        )
    base_path = doc.get("basePath")
    if base_path is not None and (not isinstance(base_path, str) or not base_path.startswith("/")):
        report.error("BasePathNotValid", "basePath", "must start with '/'")
    schemes = doc.get("schemes")
    if not isinstance(schemes, list) or not schemes:
        report.error("SchemesArrayEmpty", "schemes", "list at least one of http, https")
    else:
        for scheme in schemes:
            if scheme not in ("http", "https"):
                report.error("SchemeNotSupported", "schemes", f"{scheme!r}: only http and https are supported")

    measured = size if size is not None else len(json.dumps(doc, indent=2, ensure_ascii=False).encode())
    if measured >= MAX_FILE_BYTES:
        report.error("SwaggerTooLarge", "(file)", f"{measured} bytes; the file must stay under {MAX_FILE_BYTES}")
    count = len(_operations(doc))
    if count > MAX_OPERATIONS:
        report.error("TotalOperationsCountExceedsMaxAllowed", "paths", f"{count} operations; at most {MAX_OPERATIONS}")


def _product_name(text: str) -> str | None:
    lowered = text.lower()
    return next((name for name in PRODUCT_NAMES if name in lowered), None)


def _is_placeholder_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0].lower()
    return (
        name in LOOPBACK_HOSTS
        or name.startswith("127.")
        or name == "0.0.0.0"  # noqa: S104
        or name.endswith((".local", ".localhost", ".test", ".invalid", ".example"))
    )


def _valid_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and " " not in value


def _check_contact(contact: Any, report: _Report) -> None:
    if not isinstance(contact, dict):
        report.error("ContactMissing", "info.contact", "give the support team's name, url and email")
        return
    for key in ("name", "url", "email"):
        if not isinstance(contact.get(key), str) or not contact[key].strip():
            report.error("ContactMissing", f"info.contact.{key}", f"the contact needs a {key}")
    if isinstance(contact.get("email"), str) and not EMAIL_PATTERN.match(contact["email"]):
        report.error("ContactEmailNotValid", "info.contact.email", f"{contact['email']!r} is not an email address")
    if isinstance(contact.get("url"), str) and not _valid_url(contact["url"]):
        report.error("UrlNotValid", "info.contact.url", f"{contact['url']!r} is not an http(s) URL")


def _check_metadata(metadata: Any, report: _Report) -> None:
    where = "x-ms-connector-metadata"
    entries: dict[str, str] = {
        str(e.get("propertyName")): e["propertyValue"].strip()
        for e in (metadata if isinstance(metadata, list) else [])
        if isinstance(e, dict) and isinstance(e.get("propertyValue"), str)
    }
    for name in ("Website", "Privacy policy", "Categories"):
        if not entries.get(name):
            report.error("ConnectorMetadataPropertiesMissing", where, f"needs a {name!r} entry")
    for name in ("Website", "Privacy policy"):
        if entries.get(name) and not _valid_url(entries[name]):
            report.error("UrlNotValid", f"{where}.{name}", f"{entries[name]!r} is not an http(s) URL")
    if entries.get("Categories"):
        categories = [c.strip() for c in entries["Categories"].split(";") if c.strip()]
        if len(categories) > 2:
            report.error("TooManyConnectorCategories", f"{where}.Categories", "at most two categories are allowed")
        for category in categories:
            if category not in CATEGORIES:
                report.error("InvalidConnectorCategory", f"{where}.Categories", f"{category!r} is not a category")


def _check_references(doc: dict[str, Any], report: _Report) -> None:
    for path, node in _walk(doc):
        if not isinstance(node, dict) or "$ref" not in node:
            continue
        where = _pointer(list(path))
        ref = node["$ref"]
        if len(path) == 2 and path[0] == "paths":
            report.error("PathItemRefNotSupported", where, "a path item cannot be a $ref")
        if len(node) > 1:
            extra = ", ".join(sorted(k for k in node if k != "$ref"))
            report.error("RefWithSiblings", where, f"keys next to $ref are ignored: {extra}")
        if not isinstance(ref, str) or _lookup(doc, ref) is None:
            report.error("RefNotFound", where, f"{ref!r} points at nothing in this document")
    # $ref loops between definitions: the designer cannot expand them.
    definitions = _dict(doc.get("definitions"))
    edges = {
        name: {
            n["$ref"].rsplit("/", 1)[-1]
            for _, n in _walk(schema)
            if isinstance(n, dict) and isinstance(n.get("$ref"), str) and n["$ref"].startswith("#/definitions/")
        }
        for name, schema in definitions.items()
    }
    reported: set[frozenset[str]] = set()
    for start in edges:
        cycle = _find_cycle(start, edges)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            report.error("RefLoop", f"definitions/{start}", "definitions refer to each other: " + " -> ".join(cycle))


def _find_cycle(start: str, edges: Mapping[str, set[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for nxt in edges.get(node, ()):
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def _check_security(doc: dict[str, Any], report: _Report) -> None:
    definitions = _dict(doc.get("securityDefinitions"))
    requirements: list[tuple[str, Any]] = [("security", doc.get("security"))]
    requirements += [(f"{op.where} security", op.node.get("security")) for op in _operations(doc)]
    for where, security in requirements:
        for requirement in security if isinstance(security, list) else []:
            for name, scopes in requirement.items() if isinstance(requirement, dict) else []:
                scheme = definitions.get(name)
                if not isinstance(scheme, dict):
                    report.error("SecurityDefinitionMissing", where, f"{name!r} is not in securityDefinitions")
                elif scheme.get("type") != "oauth2" and scopes:
                    report.error("SecurityScopesNotAllowed", where, f"{name!r} is not OAuth: its requirement is []")
                elif scheme.get("type") == "oauth2":
                    for scope in scopes or []:
                        if scope not in (scheme.get("scopes") or {}):
                            report.error("SecurityScopeNotDefined", where, f"scope {scope!r} of {name!r} is undefined")


TEMPLATE_VARIABLE = re.compile(r"\{([^{}/]*)\}")


def _path_shape(path: str) -> str:
    return TEMPLATE_VARIABLE.sub("{}", path).lower()


def _check_paths(doc: dict[str, Any], report: _Report) -> None:
    paths = _dict(doc.get("paths"))
    shapes: dict[str, str] = {}
    for path in paths:
        if path.startswith("x-"):
            continue
        if not path.startswith("/"):
            report.error("PathMustStartWithSlash", path, "paths start with '/'")
        if any(c in path for c in "?#*"):
            report.error("PathContainsInvalidCharacters", path, "paths cannot contain '?', '#' or '*'")
        for segment in path.split("/"):
            if segment.count("{") != segment.count("}") or re.search(r"\{\}", segment):
                report.error(
                    "PathTemplateNotValid",
                    path,
                    f"segment {segment!r}: a {{variable}} sits inside one segment",
                )
        shape = _path_shape(path)
        if shape in shapes:
            report.error("PathRedefined", path, f"duplicates {shapes[shape]!r} (ignoring case and variable names)")
        else:
            shapes[shape] = path
    # A variable segment that also matches a literal path of the same method shadows it in routers
    # that try templates in order (Power Platform warns: PartialDuplicateOperationPath).
    by_method: dict[str, list[str]] = {}
    for op in _operations(doc):
        by_method.setdefault(op.method, []).append(op.path)
    for method, templates in by_method.items():
        for template in templates:
            if not TEMPLATE_VARIABLE.search(template):
                continue
            pattern = _template_regex(template)
            for other in templates:
                if other != template and pattern.match(other):
                    report.warn(
                        "PartialDuplicateOperationPath",
                        f"{method.upper()} {template}",
                        f"the variable part also matches {other!r}; keep the template after it",
                    )


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the concrete paths of a path template, one segment per variable."""
    parts = re.split(r"(\{[^{}/]*\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def _check_operation_ids(doc: dict[str, Any], operations: list[_Operation], report: _Report) -> None:
    seen: dict[str, str] = {}
    for op in operations:
        op_id = op.node.get("operationId")
        if not isinstance(op_id, str) or not op_id:
            report.error("OperationIdMissing", op.where, "every operation needs an operationId")
            continue
        if op_id in seen:
            report.error("OperationIdNotUnique", op.where, f"{op_id!r} is also used by {seen[op_id]}")
        seen[op_id] = op.where
        annotation = _dict(op.node.get("x-ms-api-annotation"))
        revision = annotation.get("revision")
        family_id = re.fullmatch(r"([A-Za-z0-9]+)_v(\d+)", op_id)
        is_family_revision = bool(
            family_id and annotation.get("family") == family_id.group(1) and revision == int(family_id.group(2))
        )
        base = family_id.group(1) if is_family_revision and family_id else op_id
        if not base.isalnum() or not base.isascii():
            report.error(
                "OperationIdSanitized",
                op.where,
                f"{op_id!r} must be letters and digits only (a family revision may end in _v<revision>)",
            )
        elif not re.fullmatch(r"[A-Z][A-Za-z0-9]*", base):
            report.warn("OperationIdNotPascalCase", op.where, f"{op_id!r} should be PascalCase")
        if isinstance(revision, int) and revision > 1 and not op_id.endswith(str(revision)):
            report.error(
                "OperationIdShouldEndWithRevision",
                op.where,
                f"{op_id!r} must end with its revision {revision}",
            )


def _check_operation_text(op: _Operation, report: _Report) -> None:
    summary = op.node.get("summary")
    description = op.node.get("description")
    if not isinstance(summary, str) or not summary.strip():
        report.error("SummaryMissing", op.where, "every operation needs a summary")
    else:
        if len(summary) > 120:
            report.error("OperationSummaryTooLong", op.where, f"{len(summary)} characters; the validator stops at 120")
        elif len(summary) > 80:
            report.warn("SummaryTooLong", op.where, f"{len(summary)} characters; keep summaries to 80")
        if not summary[-1].isalnum() and summary[-1] != ")":
            report.warn("SummaryEndsWithPunctuation", op.where, f"{summary!r} must not end with punctuation or space")
        if "/" in summary:
            report.warn("SummaryContainsSlash", op.where, f"{summary!r} must not contain '/'")
        if re.search(r"[^A-Za-z0-9 ()]", summary):
            report.warn(
                "SummaryRestrictedCharacters",
                op.where,
                f"{summary!r}: use only letters, digits, spaces and parentheses",
            )
        if _looks_title_case(summary):
            report.warn("SummaryNotSentenceCase", op.where, f"{summary!r} should be in sentence case")
        if _product_name(summary):
            report.warn("ProductNameInText", op.where, f"the summary names {_product_name(summary)!r}")
    if not isinstance(description, str) or not description.strip():
        report.error("DescriptionMissing", op.where, "every operation needs a description")
    else:
        if description.rstrip()[-1] not in ".!?":
            report.warn(
                "DescriptionNotSentence",
                op.where,
                "the description should be a sentence ending in punctuation",
            )
        if isinstance(summary, str) and _plain(summary) == _plain(description):
            report.warn("DescriptionSameAsSummary", op.where, "the description should say more than the summary")
        if _product_name(description):
            report.warn("ProductNameInText", op.where, f"the description names {_product_name(description)!r}")


def _plain(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _looks_title_case(summary: str) -> bool:
    """True when every later word is capitalised, as in 'Upload File' (acronyms such as HTTP do not count)."""
    words = [w for w in summary.split()[1:] if w[:1].isalpha() and w.lower() not in SMALL_WORDS]
    plain = [w for w in words if not (w.isupper() or any(c.isdigit() for c in w))]
    return bool(plain) and all(w[0].isupper() for w in plain)


def _is_title_case(text: str) -> bool:
    """True when every word starts with a capital, small words such as 'of' inside the phrase aside."""
    words = re.findall(r"[A-Za-z][A-Za-z0-9']*", text)
    return all(w[0].isupper() or (i > 0 and w in SMALL_WORDS) for i, w in enumerate(words))


def _check_parameters(doc: Json, op: _Operation, report: _Report) -> None:
    raw = [*(op.item.get("parameters") or []), *(op.node.get("parameters") or [])]
    seen: set[tuple[str, str]] = set()
    for entry in op.node.get("parameters") or []:
        param = _resolve(doc, entry)
        key = (str(param.get("name")), str(param.get("in")))
        if key in seen:
            report.error("DuplicateParameter", op.where, f"{key[0]!r} in {key[1]} is defined twice")
        seen.add(key)
    if any(isinstance(p, dict) and "$ref" in p and not _lookup(doc, p["$ref"]) for p in raw):
        return  # RefNotFound already reported
    params = _parameters(doc, op)
    template_vars = set(TEMPLATE_VARIABLE.findall(op.path))
    consumes = op.node.get("consumes", doc.get("consumes")) or []
    body = [p for p in params if p.get("in") == "body"]
    form = [p for p in params if p.get("in") == "formData"]
    for param in params:
        name, place = str(param.get("name")), param.get("in")
        where = f"{op.where} parameter {name}"
        if name.lower() == "connectionid":
            report.error("ReservedParameterName", where, "connectionId is reserved by the platform")
        if place == "path":
            if param.get("required") is not True:
                report.error("PathParameterMustBeRequired", where, "path parameters must be required")
            if name not in template_vars:
                report.error("PathParameterNotDefinedInTemplate", where, f"{{{name}}} is not in the path")
            if "x-ms-url-encoding" not in param:
                report.warn("PathParameterMissingEncoding", where, "say x-ms-url-encoding: single (or double)")
        elif "x-ms-url-encoding" in param:
            rule = "QueryParameterEncodingNotSupported" if place == "query" else "UrlEncodingOnlyOnPathParameters"
            report.error(rule, where, "x-ms-url-encoding applies to path parameters only")
        if place != "body" and "schema" in param:
            report.error("NonBodyParameterWithSchema", where, "only body parameters have a schema")
        if param.get("type") == "file" and place != "formData":
            report.error("FileParameterNotInFormData", where, "file parameters must be in formData")
        if place == "body" and ("x-ms-dynamic-values" in param or "x-ms-dynamic-schema" in param):
            report.error(
                "DynamicExtensionDefinitionNotAllowedInParameter",
                where,
                "put dynamic extensions on the body schema, not on the body parameter",
            )
        summary = param.get("x-ms-summary")
        if isinstance(summary, str):
            _check_x_ms_summary(summary, where, report)
            if re.search(r"[^A-Za-z0-9 ()]", summary):
                report.warn(
                    "SummaryRestrictedCharacters",
                    where,
                    f"{summary!r}: use only letters, digits, spaces and parentheses",
                )
    for var in template_vars - {str(p.get("name")) for p in params if p.get("in") == "path"}:
        report.error("OperationMissingPathParameter", op.where, f"{{{var}}} has no path parameter")
    if len(body) > 1:
        report.error("MultipleBodyParameters", op.where, "an operation takes at most one body parameter")
    if body and form:
        report.error("BodyAndFormDataParameters", op.where, "use either a body or formData parameters, not both")
    if op.method == "get" and (body or form):
        report.error("BodyNotAllowedOnGet", op.where, "GET operations cannot take a body or formData")
    if (body or form) and not consumes:
        report.error("ConsumesMissing", op.where, "operations with a body or formData must list consumes")
    for media in consumes:
        if media not in MEDIA_TYPES:
            report.error("ConsumesNotValid", op.where, f"{media!r} is not a supported media type")
    files = [p for p in form if p.get("type") == "file"]
    if files and "multipart/form-data" not in consumes:
        report.error("FileRequiresMultipart", op.where, "file uploads need consumes multipart/form-data")
    if "application/x-www-form-urlencoded" in consumes and any(
        p.get("type") == "file" or p.get("format") == "binary" for p in form
    ):
        report.error("UrlEncodedBinaryNotAllowed", op.where, "binary data cannot be sent form-urlencoded")


def _check_x_ms_summary(summary: str, where: str, report: _Report) -> None:
    if len(summary) > 80:
        report.warn("XMsSummaryTooLong", where, f"x-ms-summary has {len(summary)} characters; keep it to 80")
    if not _is_title_case(summary):
        report.warn("XMsSummaryNotTitleCase", where, f"x-ms-summary {summary!r} should be in Title Case")


def _check_responses(doc: Json, op: _Operation, report: _Report) -> None:
    responses = _responses(doc, op)
    if not responses:
        report.error("OperationMustHaveResponse", op.where, "declare at least one response")
        return
    for code in responses:
        if not re.fullmatch(r"[1-5]\d\d|default", code):
            report.error("ResponseCodeNotValid", op.where, f"{code!r} is neither an HTTP status nor 'default'")
    if not any(code.startswith("2") for code in responses):
        report.error("OperationShouldHaveSuccessfulResponse", op.where, "declare a 2xx response")
    if "schema" in responses.get("default", {}):
        report.error("DefaultResponseHasSchema", op.where, "the default response must not have a schema")
    with_schema = sorted(code for code, r in responses.items() if "schema" in r)
    if len(with_schema) > 1:
        report.error(
            "OperationHasManyResponsesWithSchema",
            op.where,
            f"only one response may have a schema, found {', '.join(with_schema)}",
        )
    for code in with_schema:
        schema = _resolve(doc, responses[code]["schema"])
        if (
            code.startswith("2")
            and isinstance(schema, dict)
            and not (set(schema) & {"type", "properties", "items", "allOf", "x-ms-dynamic-schema"})
        ):
            report.warn(
                "EmptyResponseSchema",
                f"{op.where} response {code}",
                "an empty schema is allowed only when the response is truly dynamic",
            )


def _check_pageable(doc: Json, op: _Operation, report: _Report) -> None:
    pageable = op.node.get("x-ms-pageable")
    if pageable is None:
        return
    name = pageable.get("nextLinkName") if isinstance(pageable, dict) else None
    if name not in NEXT_LINK_NAMES:
        report.error("InvalidNextLinkNameValue", op.where, f"nextLinkName {name!r} must be @odata.nextLink or nextLink")
        return
    schema = _success_schema(doc, op)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or name not in properties:
        report.error("NextLinkPropertyMissing", op.where, f"the 2xx response schema has no {name!r} property")


def _check_trigger(doc: Json, op: _Operation, report: _Report) -> None:
    trigger = op.node.get("x-ms-trigger")
    if trigger is None:
        if "x-ms-notification" in op.node:
            report.error("NotificationNotOnTrigger", op.where, "x-ms-notification belongs on triggers only")
        return
    if trigger not in ("single", "batch"):
        report.error("InvalidTriggerValue", op.where, f"x-ms-trigger {trigger!r} must be single or batch")
    summary, description = op.node.get("summary"), op.node.get("description")
    if isinstance(summary, str) and not summary.startswith("When "):
        report.warn("TriggerSummaryStyle", op.where, "trigger summaries read 'When a ...'")
    if isinstance(description, str) and not description.startswith("This operation triggers when"):
        report.warn(
            "TriggerDescriptionStyle",
            op.where,
            "trigger descriptions read 'This operation triggers when ...'",
        )


def _notification_urls(doc: Json, body: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool, bool]]:
    """(path, schema, internal somewhere on the chain, required all along the chain) per notification URL."""
    found = []

    def visit(node: Json, path: str, internal: bool, required: bool, stack: tuple[str, ...]) -> None:
        node, stack = _enter(doc, node, stack)
        if node is None:
            return
        internal = internal or node.get("x-ms-visibility") == "internal"
        if node.get("x-ms-notification-url") is True:
            found.append((path or "(body)", node, internal, required))
        needed = set(node.get("required") or [])
        for name, child in (node.get("properties") or {}).items():
            visit(child, f"{path}.{name}" if path else name, internal, required and name in needed, stack)

    internal, required = body.get("x-ms-visibility") == "internal", body.get("required") is True
    visit(body.get("schema") or {}, "", internal, required, ())
    return found


def _check_notifications(doc: Json, operations: list[_Operation], report: _Report) -> None:
    webhook_paths: set[str] = set()
    webhook_ids: set[str] = set()
    for op in operations:
        body = _body(doc, op)
        urls = _notification_urls(doc, body) if body else []
        for path, node, internal, required in urls:
            where = f"{op.where} body {path}"
            if node.get("type") != "string":
                report.error("NotificationUrlNotString", where, "the notification URL must be a string")
            if not internal:
                report.error("NotificationUrlNotInternal", where, "the notification URL (or a parent) must be internal")
            if not required:
                report.error(
                    "NotificationUrlNotRequired",
                    where,
                    "the notification URL must be required all the way up",
                )
        if urls:
            webhook_paths.add(op.path)
            webhook_ids.add(op.operation_id)
            content = op.item.get("x-ms-notification-content")
            if not isinstance(content, dict) or "schema" not in content:
                report.error(
                    "OperationMustHaveNotificationContentExtension",
                    op.path,
                    "a webhook trigger's path needs x-ms-notification-content with a schema",
                )
        elif op.node.get("x-ms-trigger") and op.method == "post" and "x-ms-notification-content" in op.item:
            report.error(
                "WebhookOperationsMissingNotificationUrlProperty",
                op.where,
                "a webhook trigger needs a body property marked x-ms-notification-url",
            )
    for op in operations:
        notification = op.node.get("x-ms-notification")
        if isinstance(notification, dict) and notification.get("operationId") not in webhook_ids:
            report.error("NotificationOperationNotWebhook", op.where, "x-ms-notification must name a webhook operation")
    for path, item in _dict(doc.get("paths")).items():
        if isinstance(item, dict) and "x-ms-notification-content" in item and path not in webhook_paths:
            report.warn(
                "NotificationContentWithoutWebhook",
                path,
                "x-ms-notification-content without a webhook operation on this path is never used",
            )
    # x-ms-notification-url belongs in input bodies only.
    for position, node in _walk(doc):
        if isinstance(node, dict) and "x-ms-notification-url" in node and _outside_input_body(position):
            report.error(
                "NotificationUrlNotAllowedInThisPosition",
                _pointer(list(position)),
                "x-ms-notification-url is allowed on input body properties only",
            )


def _outside_input_body(path: tuple[Any, ...]) -> bool:
    """True for a document position in a response, a notification payload or a non-body parameter."""
    in_parameter = len(path) >= 5 and path[0] == "paths" and path[3] == "parameters" and "schema" not in path
    return "responses" in path or "x-ms-notification-content" in path or in_parameter


def _check_internal_required(doc: Json, op: _Operation, report: _Report) -> None:
    """Internal inputs are never shown, so a required one must carry a default to be sent at all."""
    for param in _parameters(doc, op):
        where = f"{op.where} parameter {param.get('name')}"
        if param.get("in") == "body":
            if _notification_urls(doc, param):
                continue  # the platform fills the notification URL
            if param.get("x-ms-visibility") == "internal" and param.get("required") and "default" not in param:
                report.error("InternalRequiredWithoutDefault", where, "an internal required input needs a default")
            for path, info in flatten_schema(doc, param.get("schema") or {}).items():
                node = info["node"]
                if (
                    info["required"]
                    and node.get("x-ms-visibility") == "internal"
                    and "default" not in node
                    and not node.get("x-ms-notification-url")
                ):
                    report.error(
                        "InternalRequiredWithoutDefault",
                        f"{op.where} body {path}",
                        "an internal required property needs a default",
                    )
        elif param.get("x-ms-visibility") == "internal" and param.get("required") and "default" not in param:
            report.error("InternalRequiredWithoutDefault", where, "an internal required input needs a default")


def _check_dynamic_values(doc: Json, operations: list[_Operation], report: _Report) -> None:
    by_id = {op.operation_id: op for op in operations}
    for path, node in _walk(doc):
        if not isinstance(node, dict):
            continue
        for key in DYNAMIC_EXTENSIONS:
            ext = node.get(key)
            if not isinstance(ext, dict) or "operationId" not in ext:
                continue
            where = _pointer([*path, key])
            target = by_id.get(ext["operationId"])
            if target is None:
                report.error("DynamicOperationNotFound", where, f"no operation {ext['operationId']!r}")
                continue
            if key != "x-ms-dynamic-values":
                continue
            schema = _success_schema(doc, target)
            collection = ext.get("value-collection")
            if collection:
                for part in str(collection).split("/"):
                    properties = schema.get("properties") if isinstance(schema, dict) else None
                    schema = _resolve(doc, properties.get(part)) if isinstance(properties, dict) else None
            if _schema_type(schema) != "array":
                report.error(
                    "InvokedOperationShouldProduceArray",
                    where,
                    f"{ext['operationId']} does not answer an array at {collection or 'the root'!r}",
                )


def _check_families(doc: Json, operations: list[_Operation], report: _Report) -> None:
    info = _dict(doc.get("info"))
    connector_status = (info.get("x-ms-api-annotation") or {}).get("status", "Production")
    families: dict[str, list[tuple[_Operation, dict[str, Any]]]] = {}
    for op in operations:
        annotation = op.node.get("x-ms-api-annotation")
        if not isinstance(annotation, dict):
            continue
        if annotation.get("status") == "Production" and connector_status == "Preview":
            report.error(
                "OperationStatusAheadOfConnector",
                op.where,
                "a Preview connector has no Production operations",
            )
        if "replacement" in annotation and not op.node.get("deprecated"):
            report.error("ReplacementWithoutDeprecated", op.where, "replacement is only for deprecated operations")
        if "family" in annotation:
            families.setdefault(str(annotation["family"]), []).append((op, annotation))
    for family, members in families.items():
        live = [(op, a) for op, a in members if not op.node.get("deprecated")]
        if len(live) > 2:
            report.error("FamilyTooManyOperations", family, "at most two operations of a family may be live")
        if sum(1 for _, a in live if a.get("status", connector_status) == "Production") > 1:
            report.error("FamilyTooManyProduction", family, "only one live operation of a family may be Production")
        revisions = [a.get("revision") for _, a in members]
        if len(revisions) != len(set(map(str, revisions))):
            report.error("FamilyRevisionNotUnique", family, "revisions of a family must differ")


def _schema_roots(doc: Json) -> Iterator[tuple[str, Json]]:
    """(where, schema) for every schema written in the document: definitions, bodies, responses, payloads."""
    for name, schema in (doc.get("definitions") or {}).items():
        yield f"definitions/{name}", schema
    for op in _operations(doc):
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


def _check_schema_nodes(doc: Json, report: _Report) -> None:
    for root, schema in _schema_roots(doc):
        for path, node in _schema_nodes(schema):
            where = f"{root}{path}"
            required = node.get("required")
            if isinstance(required, list):
                properties = _dict(node.get("properties"))
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
                _check_x_ms_summary(summary, where, report)


def _schema_nodes(schema: Json, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """The schema objects written inside `schema`; $refs are not followed (definitions are checked alone)."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, child in _dict(schema.get("properties")).items():
        yield from _schema_nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schema_nodes(schema["additionalProperties"], f"{path}{{*}}")
    for i, child in enumerate(schema.get("allOf") or []):
        yield from _schema_nodes(child, f"{path}.allOf[{i}]")


# --------------------------------------------------------------------------------------------- declared limits

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
    kind = _dict(node).get("type")
    return "string" if kind == "string" else "array" if kind == "array" else None


def _schema_limit_nodes(section: str, schema: Json, where: str, path: str = "") -> Iterator[LimitNode]:
    """Limit nodes written inside `schema`; `$ref`s are not followed (each definition is its own section)."""
    if not isinstance(schema, dict) or "$ref" in schema:
        return
    kind = _limit_kind(schema)
    if kind:
        yield LimitNode(section, path or "(value)", kind, schema, f"{where} {path}".rstrip())
    for name, child in _dict(schema.get("properties")).items():
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
    for name, schema in _dict(doc.get("definitions")).items():
        yield from _schema_limit_nodes(f"definitions/{name}", schema, f"definitions/{name}")
    for key, param in _dict(doc.get("parameters")).items():
        yield from _parameter_limit_nodes(f"parameters/{key}", param, f"parameters/{key}")
    for op in _operations(doc):
        sources = [*(op.item.get("parameters") or []), *(op.node.get("parameters") or [])]
        for param in sources:
            label = param.get("name") if isinstance(param, dict) else None
            yield from _parameter_limit_nodes(f"{op.operation_id} body", param, f"{op.where} parameter {label}")
        for code, response in _dict(op.node.get("responses")).items():
            response = _dict(response)
            yield from _schema_limit_nodes(
                f"{op.operation_id} response {code}", response.get("schema"), f"{op.where} response {code}"
            )
            for header, spec in _dict(response.get("headers")).items():
                kind = _simple_kind(spec)
                if kind:
                    where = f"{op.where} response {code} header {header}"
                    yield LimitNode("response headers", header, kind, spec, where)
    for path, item in _dict(doc.get("paths")).items():
        content = _dict(item).get("x-ms-notification-content")
        if isinstance(content, dict):
            yield from _schema_limit_nodes(f"{path} notification", content.get("schema"), f"{path} notification")


def check_limits(doc: Json) -> list[Problem]:
    """Report every string without `maxLength`, array without `maxItems` and free-form object without
    `maxProperties` (see `limit_nodes`): coursewire declares a limit for every value a client sends or
    receives, so makers see it and validation enforces it (docs/limits.md gives each one's reason)."""
    report = _Report()
    for found in limit_nodes(doc):
        if found.limit is None:
            report.error(
                LIMIT_RULES[found.kind],
                found.where,
                f"declare {found.keyword} (a positive integer) and give its reason in docs/limits.md",
            )
    return report.problems


# --------------------------------------------------------------------------------------------- apiProperties


def check_properties(doc: Json, definition: Json | None = None) -> list[Problem]:
    """Check an apiProperties.json document; return every problem found (empty when it passes).

    With `definition`, also check that the connection parameters fit its security scheme and that
    pageable operations have the `updatenextlink` policy.
    """
    report = _Report()
    for err in _validator("properties-schema").iter_errors(doc):
        report.error("Schema", _pointer(list(err.absolute_path)), _schema_message(err))
    properties = _dict(_dict(doc).get("properties"))
    color = properties.get("iconBrandColor")
    if not isinstance(color, str):
        report.error("IconBrandColorMissing", "properties.iconBrandColor", "set the brand color of the icon")
    elif not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
        report.error("IconBrandColorNotValid", "properties.iconBrandColor", f"{color!r} is not a #rrggbb color")
    elif color.lower() in FORBIDDEN_ICON_COLORS:
        report.error(
            "IconBrandColorNotAllowed",
            "properties.iconBrandColor",
            f"{color} is reserved; pick your brand color",
        )
    for key in ("publisher", "stackOwner"):
        value = properties.get(key)
        if not isinstance(value, str) or not value.strip():
            report.error("PublisherMissing", f"properties.{key}", f"certified connectors need {key}")
        # "Alphanumeric" as certified connectors use it: words of letters and digits (LMS365's has a space).
        elif not re.fullmatch(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*", value):
            report.error("PublisherNotAlphanumeric", f"properties.{key}", f"{value!r} must be letters and digits")
    for capability in properties.get("capabilities") or []:
        if capability not in CAPABILITIES:
            report.warn("CapabilityNotValid", "properties.capabilities", f"{capability!r} is not actions or triggers")
    if isinstance(definition, dict):
        _check_properties_against_definition(properties, definition, report)
    return report.problems


def _check_properties_against_definition(
    properties: dict[str, Any], definition: dict[str, Any], report: _Report
) -> None:
    parameters = properties.get("connectionParameters") or {}
    schemes = definition.get("securityDefinitions") or {}
    if any(isinstance(s, dict) and s.get("type") == "basic" for s in schemes.values()):
        for name in ("username", "password"):
            if (parameters.get(name) or {}).get("type") not in ("string", "securestring"):
                report.error(
                    "BasicAuthParameterMissing",
                    f"properties.connectionParameters.{name}",
                    "basic authentication needs username and password connection parameters",
                )
    next_links = {
        str(op.node["x-ms-pageable"].get("nextLinkName"))
        for op in _operations(definition)
        if isinstance(op.node.get("x-ms-pageable"), dict)
    }
    rewritten = {
        (policy.get("parameters") or {}).get("x-ms-apimTemplateParameter.nextLinkPropertyName")
        for policy in properties.get("policyTemplateInstances") or []
        if isinstance(policy, dict) and policy.get("templateId") == "updatenextlink"
    }
    for name in sorted(next_links - rewritten):
        report.warn(
            "UpdateNextLinkPolicyMissing",
            "properties.policyTemplateInstances",
            f"pageable operations use {name!r}: add the updatenextlink policy so the platform rewrites it",
        )


# --------------------------------------------------------------------------------------------- superset


def check_superset(doc: Json, reference: Json) -> list[Problem]:
    """Check that `doc` keeps everything callers of `reference` rely on; return what is missing or changed.

    Compared: paths, methods, operationIds, triggers, visibility, api annotations; parameters (name, in,
    required, type, default); body property paths, types, enums and required-ness; response status
    codes; response and notification property paths, types and formats (except FORMAT_EXCEPTIONS; a
    notification field may gain a format the reference did not state).
    """
    report = _Report()
    ours = {(op.path, op.method): op for op in _operations(doc)}
    for theirs in _operations(reference):
        op = ours.get((theirs.path, theirs.method))
        if op is None:
            report.error("OperationMissing", theirs.where, f"{theirs.operation_id} is gone")
            continue
        _compare_operation(doc, reference, op, theirs, report)
    for name in reference.get("definitions") or {}:
        if name not in (doc.get("definitions") or {}):
            report.error("DefinitionMissing", f"definitions/{name}", "a reference definition was removed")
    for path, item in (reference.get("paths") or {}).items():
        content = item.get("x-ms-notification-content") if isinstance(item, dict) else None
        if not isinstance(content, dict):
            continue
        mine = ((doc.get("paths") or {}).get(path) or {}).get("x-ms-notification-content")
        if not isinstance(mine, dict):
            report.error("NotificationContentMissing", path, "the notification payload schema is gone")
            continue
        # A notification field may gain a format the reference left out (a date-time is still a
        # string to existing flows); formats the reference states must stay.
        _compare_properties(
            doc,
            reference,
            mine.get("schema") or {},
            content.get("schema") or {},
            f"{path} notification",
            report,
            allow_added_format=True,
        )
    return report.problems


def _compare_operation(doc: Json, reference: Json, op: _Operation, theirs: _Operation, report: _Report) -> None:
    where = theirs.where
    if op.operation_id != theirs.operation_id:
        report.error("OperationIdChanged", where, f"{theirs.operation_id!r} became {op.operation_id!r}")
    for extension in ("x-ms-trigger", "x-ms-visibility"):
        before, after = theirs.node.get(extension), op.node.get(extension)
        if before != after:
            report.error("OperationChanged", where, f"{extension} {before!r} became {after!r}")
    theirs_annotation = theirs.node.get("x-ms-api-annotation") or {}
    mine_annotation = op.node.get("x-ms-api-annotation") or {}
    for key, value in theirs_annotation.items():
        if mine_annotation.get(key) != value:
            report.error("ApiAnnotationChanged", where, f"x-ms-api-annotation.{key} {value!r} changed")

    mine_params = {(str(p.get("name")), str(p.get("in"))): p for p in _parameters(doc, op)}
    for param in _parameters(reference, theirs):
        key = (str(param.get("name")), str(param.get("in")))
        label = f"{where} parameter {key[0]}"
        mine = mine_params.get(key)
        if mine is None:
            report.error("ParameterMissing", label, f"{key[0]!r} in {key[1]} is gone")
            continue
        if bool(mine.get("required")) != bool(param.get("required")):
            report.error("ParameterRequiredChanged", label, f"required {bool(param.get('required'))} changed")
        if key[1] != "body":
            for attr in ("type", "default"):
                if mine.get(attr) != param.get(attr):
                    report.error("ParameterChanged", label, f"{attr} {param.get(attr)!r} became {mine.get(attr)!r}")
            continue
        _compare_body(doc, reference, mine.get("schema") or {}, param.get("schema") or {}, label, report)

    mine_responses = _responses(doc, op)
    for code, response in _responses(reference, theirs).items():
        key = (op.operation_id, code)
        label = f"{where} response {code}"
        if code not in mine_responses:
            report.error("ResponseMissing", label, f"status {code} is no longer declared")
            continue
        if "schema" in response:
            _compare_properties(
                doc,
                reference,
                mine_responses[code].get("schema") or {},
                response["schema"],
                label,
                report,
                format_exempt={path for op_id, status, path in FORMAT_EXCEPTIONS if (op_id, status) == key},
            )


def _compare_body(doc: Json, reference: Json, mine: Json, theirs: Json, where: str, report: _Report) -> None:
    our_flat = flatten_schema(doc, mine)
    their_flat = flatten_schema(reference, theirs)
    for path, info in their_flat.items():
        label = f"{where} body {path}"
        ours = our_flat.get(path)
        if ours is None:
            report.error("BodyPropertyMissing", label, "a reference body property is gone")
            continue
        if info["type"] and ours["type"] != info["type"]:
            report.error("BodyPropertyTypeChanged", label, f"type {info['type']!r} became {ours['type']!r}")
        their_enum, our_enum = info["node"].get("enum"), ours["node"].get("enum")
        if isinstance(their_enum, list) and isinstance(our_enum, list):
            lost = [v for v in their_enum if v not in our_enum]
            if lost:
                report.error("BodyEnumValueMissing", label, f"enum values removed: {lost}")
        if (
            "x-ms-dynamic-values" in info["node"]
            and ours["node"].get("x-ms-dynamic-values") != info["node"]["x-ms-dynamic-values"]
        ):
            report.error("DynamicValuesChanged", label, "x-ms-dynamic-values changed")
    # A newly required property breaks callers that never sent it.
    for path, info in our_flat.items():
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        known_parent = parent == "" or parent in their_flat
        if info["required"] and known_parent and not (their_flat.get(path) or {}).get("required"):
            report.error("BodyPropertyNewlyRequired", f"{where} body {path}", "callers of the reference do not send it")


def _compare_properties(
    doc: Json,
    reference: Json,
    mine: Json,
    theirs: Json,
    where: str,
    report: _Report,
    *,
    format_exempt: set[str] | None = None,
    allow_added_format: bool = False,
) -> None:
    """Report reference properties missing from `mine` or changed in type or format.

    `format_exempt` lists property paths whose format may differ; `allow_added_format` lets a property
    gain a format where the reference has none.
    """
    our_flat = flatten_schema(doc, mine)
    for path, info in flatten_schema(reference, theirs).items():
        label = f"{where} {path}"
        ours = our_flat.get(path)
        if ours is None:
            report.error("ResponsePropertyMissing", label, "a reference property is gone")
            continue
        if info["type"] and ours["type"] != info["type"]:
            report.error("ResponsePropertyTypeChanged", label, f"type {info['type']!r} became {ours['type']!r}")
        elif (
            ours["format"] != info["format"]
            and path not in (format_exempt or set())
            and not (allow_added_format and info["format"] is None)
        ):
            report.error("ResponsePropertyFormatChanged", label, f"format {info['format']!r} became {ours['format']!r}")


# --------------------------------------------------------------------------------------------- all at once


def check_all(definition_path: Path = DEFINITION_PATH, properties_path: Path = PROPERTIES_PATH) -> list[Problem]:
    """Run every check on the project's two connector files (certification rules, declared limits) and
    the LMS365 superset; return the problems.

    Raises OSError or json.JSONDecodeError when a file cannot be read or parsed.
    """
    definition = load_json(definition_path)
    problems = check_definition(definition, size=definition_path.stat().st_size)
    problems += check_properties(load_json(properties_path), definition)
    problems += check_limits(definition)
    problems += check_superset(definition, load_json(reference_file("lms365")))
    return problems


# --------------------------------------------------------------------------------------------- export


def export_connector(host: str, base_path: str, out_dir: Path) -> list[Path]:
    """Write apiDefinition.swagger.json and apiProperties.json for `host` and `base_path` into `out_dir`.

    Schemes become ["http"] for localhost or 127.0.0.1 and ["https"] otherwise. Returns the two paths
    written; raises ValueError when the host or base path is not valid.
    """
    host = host.strip()
    match = HOST_PATTERN.match(host)
    if not match or not SCHEMA_HOST_PATTERN.match(host):
        raise ValueError(
            f"host {host!r} is not valid: give a host name with an optional port, without scheme or path, "
            "for example lms.contoso.com or lms.contoso.com:8443"
        )
    if match.group(1) is not None and not 1 <= int(match.group(1)) <= 65535:
        raise ValueError(f"host {host!r}: the port must be between 1 and 65535")
    base_path = base_path.strip() or "/"
    if not base_path.startswith("/") or any(c in base_path for c in "?#{} \\"):
        raise ValueError(f"base path {base_path!r} is not valid: it starts with '/' and has no query, for example /lms")
    if len(base_path) > 1:
        base_path = base_path.rstrip("/")

    definition = load_json(DEFINITION_PATH)
    definition["host"] = host
    definition["basePath"] = base_path
    definition["schemes"] = ["http"] if host.rsplit(":", 1)[0].lower() in LOOPBACK_HOSTS else ["https"]
    properties = load_json(PROPERTIES_PATH)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in (("apiDefinition.swagger.json", definition), ("apiProperties.json", properties)):
        target = out_dir / name
        target.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written
