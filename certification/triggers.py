"""Certification rules for triggers and webhooks: x-ms-trigger, the notification URL of a subscription's
body, x-ms-notification-content and x-ms-notification."""

from __future__ import annotations

from typing import Any

from certification.document import Json, Operation, Report, as_dict, body_parameter, enter, pointer, walk


def check_triggers(doc: Json, found: list[Operation], report: Report) -> None:
    """Report what breaks the trigger and webhook rules in the operations `found` in `doc`."""
    for op in found:
        _check_trigger(op, report)
    _check_notifications(doc, found, report)


def _check_trigger(op: Operation, report: Report) -> None:
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


def notification_urls(doc: Json, body: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool, bool]]:
    """(path, schema, internal somewhere on the chain, required all along the chain) per notification URL."""
    found = []

    def visit(node: Json, path: str, internal: bool, required: bool, stack: tuple[str, ...]) -> None:
        node, stack = enter(doc, node, stack)
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


def _check_notifications(doc: Json, found: list[Operation], report: Report) -> None:
    webhook_paths: set[str] = set()
    webhook_ids: set[str] = set()
    for op in found:
        body = body_parameter(doc, op)
        urls = notification_urls(doc, body) if body else []
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
    for op in found:
        notification = op.node.get("x-ms-notification")
        if isinstance(notification, dict) and notification.get("operationId") not in webhook_ids:
            report.error("NotificationOperationNotWebhook", op.where, "x-ms-notification must name a webhook operation")
    for path, item in as_dict(doc.get("paths")).items():
        if isinstance(item, dict) and "x-ms-notification-content" in item and path not in webhook_paths:
            report.warn(
                "NotificationContentWithoutWebhook",
                path,
                "x-ms-notification-content without a webhook operation on this path is never used",
            )
    # x-ms-notification-url belongs in input bodies only.
    for position, node in walk(doc):
        if isinstance(node, dict) and "x-ms-notification-url" in node and _outside_input_body(position):
            report.error(
                "NotificationUrlNotAllowedInThisPosition",
                pointer(list(position)),
                "x-ms-notification-url is allowed on input body properties only",
            )


def _outside_input_body(path: tuple[Any, ...]) -> bool:
    """True for a document position in a response, a notification payload or a non-body parameter."""
    in_parameter = len(path) >= 5 and path[0] == "paths" and path[3] == "parameters" and "schema" not in path
    return "responses" in path or "x-ms-notification-content" in path or in_parameter
