"""The certification rules for an apiDefinition.swagger.json document (`check_definition`), and those on
the connector as a whole: title, description, contact, metadata, host, references, security, paths and
operation families. Operation and trigger rules are in operations.py and triggers.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from certification import operations, triggers
from certification.document import (
    TEMPLATE_VARIABLE,
    Json,
    Operation,
    Problem,
    Report,
    as_dict,
    guarded,
    list_operations,
    lookup,
    pointer,
    walk,
)
from certification.placeholders import reserved_host, warn_placeholder
from certification.schemas import check_definition_schema, check_schema_nodes
from certification.wording import EMAIL_PATTERN, product_name, valid_url

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


SCHEMA_HOST_PATTERN = re.compile(r"^[^{}/ :\\]+(?::\d+)?$")  # the Power Platform schema's own pattern


def check_definition(doc: Json, *, size: int | None = None) -> list[Problem]:
    """Check an apiDefinition.swagger.json document; return every problem found (empty when it passes).

    Covers the Power Platform JSON schema and the certification rules that can be checked offline.
    `size` is the file's size in bytes; when omitted, the size of the document written with indent=2.
    """
    report = Report()
    if not isinstance(doc, dict):
        report.error("SpecificationNotObject", "(root)", "the definition must be a JSON object")
        return report.problems
    found: list[Operation] = []
    steps: list[tuple[str, Callable[[], None]]] = [
        ("schema", lambda: check_definition_schema(doc, report)),
        ("connector", lambda: _check_connector(doc, report, size)),
        ("references", lambda: _check_references(doc, report)),
        ("security", lambda: _check_security(doc, report)),
        ("paths", lambda: _check_paths(doc, report)),
        ("operations", lambda: found.extend(list_operations(doc))),
        ("operations", lambda: operations.check_operations(doc, found, report)),
        ("triggers", lambda: triggers.check_triggers(doc, found, report)),
        ("families", lambda: _check_families(doc, found, report)),
        ("schema objects", lambda: check_schema_nodes(doc, report)),
    ]
    for what, step in steps:
        guarded(report, what, step)
    return report.problems


def _check_connector(doc: dict[str, Any], report: Report, size: int | None) -> None:
    if doc.get("swagger") != "2.0":
        report.error("SpecificationVersionIncorrect", "swagger", "only Swagger (OpenAPI) 2.0 is supported")
    info = as_dict(doc.get("info"))
    title = info.get("title")
    if not isinstance(title, str) or not title.strip():
        report.error("TitleMissing", "info.title", "the connector needs a title")
    else:
        if len(title) > 30:
            report.error("TitleTooLong", "info.title", f"{len(title)} characters; at most 30 are allowed")
        if re.search(r"\b(api|connector)\b", title, re.I) or product_name(title):
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
    elif product_name(description):
        report.error(
            "ConnectorDescriptionProductName",
            "info.description",
            f"must not name a Power Platform product ({product_name(description)})",
        )
    _check_contact(info.get("contact"), report)
    _check_metadata(doc.get("x-ms-connector-metadata"), report)

    host = doc.get("host")
    if not isinstance(host, str) or not SCHEMA_HOST_PATTERN.match(host):
        report.error("HostNameNotValid", "host", "needs a host name with an optional port, without scheme or path")
    elif reserved_host(host):
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
    count = len(list_operations(doc))
    if count > MAX_OPERATIONS:
        report.error("TotalOperationsCountExceedsMaxAllowed", "paths", f"{count} operations; at most {MAX_OPERATIONS}")


def _check_contact(contact: Any, report: Report) -> None:
    if not isinstance(contact, dict):
        report.error("ContactMissing", "info.contact", "give the support team's name, url and email")
        return
    for key in ("name", "url", "email"):
        if not isinstance(contact.get(key), str) or not contact[key].strip():
            report.error("ContactMissing", f"info.contact.{key}", f"the contact needs a {key}")
    if isinstance(contact.get("email"), str) and not EMAIL_PATTERN.match(contact["email"]):
        report.error("ContactEmailNotValid", "info.contact.email", f"{contact['email']!r} is not an email address")
    if isinstance(contact.get("url"), str) and not valid_url(contact["url"]):
        report.error("UrlNotValid", "info.contact.url", f"{contact['url']!r} is not an http(s) URL")
    for key in ("name", "url", "email"):
        if isinstance(contact.get(key), str) and contact[key].strip():
            warn_placeholder(report, f"contact_{key}", contact[key])


def _check_metadata(metadata: Any, report: Report) -> None:
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
        if entries.get(name) and not valid_url(entries[name]):
            report.error("UrlNotValid", f"{where}.{name}", f"{entries[name]!r} is not an http(s) URL")
        elif entries.get(name):
            warn_placeholder(report, name.lower().replace(" ", "_"), entries[name])
    if entries.get("Categories"):
        categories = [c.strip() for c in entries["Categories"].split(";") if c.strip()]
        if len(categories) > 2:
            report.error("TooManyConnectorCategories", f"{where}.Categories", "at most two categories are allowed")
        for category in categories:
            if category not in CATEGORIES:
                report.error("InvalidConnectorCategory", f"{where}.Categories", f"{category!r} is not a category")


def _check_references(doc: dict[str, Any], report: Report) -> None:
    for path, node in walk(doc):
        if not isinstance(node, dict) or "$ref" not in node:
            continue
        where = pointer(list(path))
        ref = node["$ref"]
        if len(path) == 2 and path[0] == "paths":
            report.error("PathItemRefNotSupported", where, "a path item cannot be a $ref")
        if len(node) > 1:
            extra = ", ".join(sorted(k for k in node if k != "$ref"))
            report.error("RefWithSiblings", where, f"keys next to $ref are ignored: {extra}")
        if not isinstance(ref, str) or lookup(doc, ref) is None:
            report.error("RefNotFound", where, f"{ref!r} points at nothing in this document")
    # $ref loops between definitions: the designer cannot expand them.
    definitions = as_dict(doc.get("definitions"))
    edges = {
        name: {
            n["$ref"].rsplit("/", 1)[-1]
            for _, n in walk(schema)
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


def _check_security(doc: dict[str, Any], report: Report) -> None:
    definitions = as_dict(doc.get("securityDefinitions"))
    requirements: list[tuple[str, Any]] = [("security", doc.get("security"))]
    requirements += [(f"{op.where} security", op.node.get("security")) for op in list_operations(doc)]
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


def _path_shape(path: str) -> str:
    return TEMPLATE_VARIABLE.sub("{}", path).lower()


def _check_paths(doc: dict[str, Any], report: Report) -> None:
    paths = as_dict(doc.get("paths"))
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
    for op in list_operations(doc):
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


def _check_families(doc: Json, found: list[Operation], report: Report) -> None:
    info = as_dict(doc.get("info"))
    connector_status = (info.get("x-ms-api-annotation") or {}).get("status", "Production")
    families: dict[str, list[tuple[Operation, dict[str, Any]]]] = {}
    for op in found:
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
