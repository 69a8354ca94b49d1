"""Certification rules for each operation: operationIds, summaries and descriptions, parameters, responses,
paging, internal required inputs and dynamic values."""

from __future__ import annotations

import re
from typing import Any

from certification.document import (
    TEMPLATE_VARIABLE,
    Json,
    Operation,
    Report,
    as_dict,
    flatten_schema,
    lookup,
    operation_parameters,
    operation_responses,
    pointer,
    resolve,
    schema_type,
    success_schema,
    walk,
)
from certification.triggers import notification_urls
from certification.wording import check_x_ms_summary, looks_title_case, plain, product_name

MEDIA_TYPES = frozenset({"application/json", "text/plain", "multipart/form-data", "application/x-www-form-urlencoded"})
DYNAMIC_EXTENSIONS = ("x-ms-dynamic-values", "x-ms-dynamic-schema", "x-ms-dynamic-list", "x-ms-dynamic-properties")
NEXT_LINK_NAMES = frozenset({"@odata.nextLink", "nextLink"})


def check_operations(doc: dict[str, Any], found: list[Operation], report: Report) -> None:
    """Report what breaks the operation rules in the operations `found` in `doc`."""
    _check_operation_ids(found, report)
    for op in found:
        _check_operation_text(op, report)
        _check_parameters(doc, op, report)
        _check_responses(doc, op, report)
        _check_pageable(doc, op, report)
        _check_internal_required(doc, op, report)
    _check_dynamic_values(doc, found, report)


def _check_operation_ids(found: list[Operation], report: Report) -> None:
    seen: dict[str, str] = {}
    for op in found:
        op_id = op.node.get("operationId")
        if not isinstance(op_id, str) or not op_id:
            report.error("OperationIdMissing", op.where, "every operation needs an operationId")
            continue
        if op_id in seen:
            report.error("OperationIdNotUnique", op.where, f"{op_id!r} is also used by {seen[op_id]}")
        seen[op_id] = op.where
        annotation = as_dict(op.node.get("x-ms-api-annotation"))
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


def _check_operation_text(op: Operation, report: Report) -> None:
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
        if looks_title_case(summary):
            report.warn("SummaryNotSentenceCase", op.where, f"{summary!r} should be in sentence case")
        if product_name(summary):
            report.warn("ProductNameInText", op.where, f"the summary names {product_name(summary)!r}")
    if not isinstance(description, str) or not description.strip():
        report.error("DescriptionMissing", op.where, "every operation needs a description")
    else:
        if description.rstrip()[-1] not in ".!?":
            report.warn(
                "DescriptionNotSentence",
                op.where,
                "the description should be a sentence ending in punctuation",
            )
        if isinstance(summary, str) and plain(summary) == plain(description):
            report.warn("DescriptionSameAsSummary", op.where, "the description should say more than the summary")
        if product_name(description):
            report.warn("ProductNameInText", op.where, f"the description names {product_name(description)!r}")


def _check_parameters(doc: Json, op: Operation, report: Report) -> None:
    raw = [*(op.item.get("parameters") or []), *(op.node.get("parameters") or [])]
    seen: set[tuple[str, str]] = set()
    for entry in op.node.get("parameters") or []:
        param = resolve(doc, entry)
        key = (str(param.get("name")), str(param.get("in")))
        if key in seen:
            report.error("DuplicateParameter", op.where, f"{key[0]!r} in {key[1]} is defined twice")
        seen.add(key)
    if any(isinstance(p, dict) and "$ref" in p and not lookup(doc, p["$ref"]) for p in raw):
        return  # RefNotFound already reported
    params = operation_parameters(doc, op)
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
            check_x_ms_summary(summary, where, report)
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


def _check_responses(doc: Json, op: Operation, report: Report) -> None:
    responses = operation_responses(doc, op)
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
        schema = resolve(doc, responses[code]["schema"])
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


def _check_pageable(doc: Json, op: Operation, report: Report) -> None:
    pageable = op.node.get("x-ms-pageable")
    if pageable is None:
        return
    name = pageable.get("nextLinkName") if isinstance(pageable, dict) else None
    if name not in NEXT_LINK_NAMES:
        report.error("InvalidNextLinkNameValue", op.where, f"nextLinkName {name!r} must be @odata.nextLink or nextLink")
        return
    schema = success_schema(doc, op)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or name not in properties:
        report.error("NextLinkPropertyMissing", op.where, f"the 2xx response schema has no {name!r} property")


def _check_internal_required(doc: Json, op: Operation, report: Report) -> None:
    """Internal inputs are never shown, so a required one must carry a default to be sent at all."""
    for param in operation_parameters(doc, op):
        where = f"{op.where} parameter {param.get('name')}"
        if param.get("in") == "body":
            if notification_urls(doc, param):
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


def _check_dynamic_values(doc: Json, found: list[Operation], report: Report) -> None:
    by_id = {op.operation_id: op for op in found}
    for path, node in walk(doc):
        if not isinstance(node, dict):
            continue
        for key in DYNAMIC_EXTENSIONS:
            ext = node.get(key)
            if not isinstance(ext, dict) or "operationId" not in ext:
                continue
            where = pointer([*path, key])
            target = by_id.get(ext["operationId"])
            if target is None:
                report.error("DynamicOperationNotFound", where, f"no operation {ext['operationId']!r}")
                continue
            if key != "x-ms-dynamic-values":
                continue
            schema = success_schema(doc, target)
            collection = ext.get("value-collection")
            if collection:
                for part in str(collection).split("/"):
                    properties = schema.get("properties") if isinstance(schema, dict) else None
                    schema = resolve(doc, properties.get(part)) if isinstance(properties, dict) else None
            if schema_type(schema) != "array":
                report.error(
                    "InvokedOperationShouldProduceArray",
                    where,
                    f"{ext['operationId']} does not answer an array at {collection or 'the root'!r}",
                )
