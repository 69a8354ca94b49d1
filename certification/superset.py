"""The LMS365 superset: a document keeps every path, operation, parameter, body property, status code and
response or notification property that callers of the certified LMS365 connector rely on."""

from __future__ import annotations

from certification.document import (
    Json,
    Operation,
    Problem,
    Report,
    flatten_schema,
    list_operations,
    operation_parameters,
    operation_responses,
)

# Differences from LMS365 that docs/design.md documents: (operationId, status, property) -> why.
FORMAT_EXCEPTIONS = {
    ("GetUsers", "200", "value[].Office"): "Office is an office name; the reference's date-time is a mistake",
}


def check_superset(doc: Json, reference: Json) -> list[Problem]:
    """Check that `doc` keeps everything callers of `reference` rely on; return what is missing or changed.

    Compared: paths, methods, operationIds, triggers, visibility, api annotations; parameters (name, in,
    required, type, default); body property paths, types, enums and required-ness; response status
    codes; response and notification property paths, types and formats (except FORMAT_EXCEPTIONS; a
    notification field may gain a format the reference did not state).
    """
    report = Report()
    if not isinstance(doc, dict) or not isinstance(reference, dict):
        report.error("SpecificationNotObject", "(root)", "both documents must be JSON objects")
        return report.problems
    ours = {(op.path, op.method): op for op in list_operations(doc)}
    for theirs in list_operations(reference):
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


def _compare_operation(doc: Json, reference: Json, op: Operation, theirs: Operation, report: Report) -> None:
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

    mine_params = {(str(p.get("name")), str(p.get("in"))): p for p in operation_parameters(doc, op)}
    for param in operation_parameters(reference, theirs):
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

    mine_responses = operation_responses(doc, op)
    for code, response in operation_responses(reference, theirs).items():
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


def _compare_body(doc: Json, reference: Json, mine: Json, theirs: Json, where: str, report: Report) -> None:
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
    report: Report,
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
