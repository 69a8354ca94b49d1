"""The pieces every check shares: a Problem and the Report that collects them, walking a JSON document,
resolving local `$ref`s, and the operations of a Swagger 2.0 document with their parameters and responses."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
Json = Any


METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
# A {variable} of a path template.
TEMPLATE_VARIABLE = re.compile(r"\{([^{}/]*)\}")


@dataclass(frozen=True)
class Problem:
    """One finding: `rule` names the check (Power Platform's error code where it has one)."""

    rule: str
    where: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.rule} at {self.where}: {self.message}"


class Report:
    """Collects problems; checks call `error` or `warn`."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, rule: str, where: str, message: str) -> None:
        """Record an error: the file fails the check."""
        self.problems.append(Problem(rule, where, message, "error"))

    def warn(self, rule: str, where: str, message: str) -> None:
        """Record a warning: reported, but the file passes."""
        self.problems.append(Problem(rule, where, message, "warning"))


# What a rule meets in a document too malformed for it (a list where an object belongs, a number for a name).
MALFORMED = (AttributeError, IndexError, KeyError, TypeError, ValueError, RecursionError)


def guarded(report: Report, what: str, check: Callable[[], None]) -> None:
    """Run `check` (one group of rules adding to `report`). When the document is too malformed for it, the
    group stops with a `CheckStopped` error naming `what` instead of a traceback; problems the group
    found before stopping stay reported."""
    try:
        check()
    except MALFORMED as exc:
        report.error(
            "CheckStopped",
            what,
            f"these checks could not read the document ({type(exc).__name__}: {exc}); fix the errors above first",
        )


def pointer(path: Iterator[Any] | list[Any]) -> str:
    """A document position as `a/b/0` (`(root)` for the document itself)."""
    return "/".join(str(p) for p in path) or "(root)"


def walk(node: Json, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Json]]:
    """Every value of a JSON document with its path, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, i))


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (checks read malformed documents too)."""
    return value if isinstance(value, dict) else {}


def lookup(doc: Json, ref: str) -> Json | None:
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


def resolve(doc: Json, node: Json) -> Json:
    """Follow `$ref` chains (at most 32 hops, so loops end); a missing target resolves to {}."""
    for _ in range(32):
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
            return node
        node = lookup(doc, node["$ref"]) or {}
    return {}


def enter(doc: Json, node: Json, stack: tuple[str, ...]) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """Step into a schema for a recursive walk: resolve its `$ref` and add it to `stack`; None for a
    reference already being expanded (a recursive schema) or for anything that is not an object."""
    ref = node.get("$ref") if isinstance(node, dict) else None
    if isinstance(ref, str):
        if ref in stack:
            return None, stack
        stack = (*stack, ref)
    resolved = resolve(doc, node)
    return (resolved if isinstance(resolved, dict) else None), stack


def schema_type(schema: Json) -> str | None:
    """A schema's `type`, or `object`/`array` when it has properties/items without saying so; else None."""
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
        node, stack = enter(doc, node, stack)
        if node is None:
            return
        if path:
            out[path] = {
                "type": schema_type(node),
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


@dataclass(frozen=True)
class Operation:
    """One operation of a document: its `path`, `method` (lower case), the operation object (`node`) and the
    path item holding it (`item`)."""

    path: str
    method: str
    node: dict[str, Any]
    item: dict[str, Any]

    @property
    def where(self) -> str:
        """`GET /odata/v2/Courses`, for messages."""
        return f"{self.method.upper()} {self.path}"

    @property
    def operation_id(self) -> str:
        """The operationId, or an empty string when it has none."""
        return str(self.node.get("operationId") or "")


def list_operations(doc: Json) -> list[Operation]:
    """Every operation of a Swagger 2.0 document, in document order (none for a malformed `paths`)."""
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, dict):
        return []
    return [
        Operation(path, method, item[method], item)
        for path, item in paths.items()
        if path.startswith("/") and isinstance(item, dict)
        for method in METHODS
        if isinstance(item.get(method), dict)
    ]


def operation_parameters(doc: Json, op: Operation) -> list[dict[str, Any]]:
    """The operation's parameters with `$ref`s resolved; operation ones override path-level ones."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for source in (op.item.get("parameters") or [], op.node.get("parameters") or []):
        for raw in source:
            param = resolve(doc, raw)
            if isinstance(param, dict):
                merged[(str(param.get("name")), str(param.get("in")))] = param
    return list(merged.values())


def operation_responses(doc: Json, op: Operation) -> dict[str, dict[str, Any]]:
    """Status code -> response object, `$ref`s resolved; `x-` extensions left out."""
    responses = op.node.get("responses")
    if not isinstance(responses, dict):
        return {}
    return {str(code): resolve(doc, r) for code, r in responses.items() if not str(code).startswith("x-")}


def success_schema(doc: Json, op: Operation) -> Json | None:
    """The schema of the lowest 2xx response that has one, resolved; None when none has."""
    for code, response in sorted(operation_responses(doc, op).items()):
        if code.startswith("2") and isinstance(response, dict) and "schema" in response:
            return resolve(doc, response["schema"])
    return None


def body_parameter(doc: Json, op: Operation) -> dict[str, Any] | None:
    """The operation's body parameter, resolved, or None."""
    return next((p for p in operation_parameters(doc, op) if p.get("in") == "body"), None)
