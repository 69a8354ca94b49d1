"""The values a `$filter` is made of: typed SQL expressions, literals checked against the property they meet,
comparisons with OData's two-valued logic, and property lookup in the whitelist (storage.odata.fields)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from odata_query import ast

from storage import ids
from storage.db import iso
from storage.odata.fields import Collection, Field, FieldType
from storage.odata.grammar import MATCH_FUNCTIONS, dotted, invalid
from storage.odata.model import ReadContext

MAX_PARAMS = 1000
_INT64 = 2**63


class Sql(NamedTuple):
    """A piece of SQL and its parameters, in order."""

    text: str
    params: tuple[object, ...]


@dataclass(frozen=True)
class Value:
    """A typed value expression; `field` is set when it is a bare property (so `to_db` applies)."""

    sql: str
    params: tuple[object, ...]
    type: FieldType
    label: str
    field: Field | None = None


@dataclass(frozen=True)
class Lit:
    """A literal as written, typed only when it meets a property."""

    node: ast._Literal


@dataclass(frozen=True)
class Scope:
    """What names mean where the compiler is: the entity's fields, or a lambda variable's.

    `ctx` binds the fields' context values; `names` collects the entity's own properties that are compared
    with a boolean literal outside any lambda (`IsDeleted eq true`, `false ne IsDeleted`): how `IsDeleted` is
    found to be constrained (storage.odata.fields.visible).
    """

    fields: Mapping[str, Field]
    collections: Mapping[str, Collection]
    entity: str
    ctx: ReadContext
    var: str | None = None
    var_fields: Mapping[str, Field] | None = None
    var_collection: str | None = None
    joins: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)

    def bind(self, found: Field) -> tuple[object, ...]:
        """The parameters of a field's own `?` marks (the clock, the base URL), recording the joins it needs."""
        self.joins.extend(found.joins)
        return tuple(self.ctx.value(name) for name in found.context)


TYPE_TEXT: dict[str, str] = {
    "string": "a string (quoted, like 'text')",
    "guid": "an id (like '3f2c5b8e-0d1a-4c6e-9f00-2b7d1c9e4a10')",
    "int": "an integer (like 5)",
    "float": "a number (like 1.5)",
    "bool": "a boolean (true or false)",
    "datetime": "a date-time (unquoted, like 2024-01-01T00:00:00Z or 2024-01-01)",
}

COMPARE_SQL: dict[type[ast._Comparator], str] = {
    ast.Eq: "=",
    ast.NotEq: "IS NOT",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
FLIPPED: dict[type[ast._Comparator], ast._Comparator] = {
    ast.Eq: ast.Eq(),
    ast.NotEq: ast.NotEq(),
    ast.Lt: ast.Gt(),
    ast.LtE: ast.GtE(),
    ast.Gt: ast.Lt(),
    ast.GtE: ast.LtE(),
}
OP_NAMES: dict[type[ast._Comparator], str] = {
    ast.Eq: "eq",
    ast.NotEq: "ne",
    ast.Lt: "lt",
    ast.LtE: "le",
    ast.Gt: "gt",
    ast.GtE: "ge",
    ast.In: "in",
}

_PLAIN_SQL = re.compile(r"[a-z_]+(\.[a-z_]+)?")
LIKE_ESCAPE = "ESCAPE '\\'"


def wrap(sql: str) -> str:
    return sql if _PLAIN_SQL.fullmatch(sql) else f"({sql})"


def is_text(kind: FieldType) -> bool:
    return kind in ("string", "guid")


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def render(node: ast._Node) -> str:
    """A literal as it was written (shortened), for messages only."""
    if isinstance(node, ast.String):
        text = "'" + node.val.replace("'", "''") + "'"
    elif isinstance(node, ast.Null):
        text = "null"
    elif isinstance(node, ast.Duration):
        text = f"duration'{node.val}'"
    elif isinstance(node, ast.Geography):
        text = f"geography'{node.val}'"
    elif isinstance(node, ast.List):
        text = "(" + ", ".join(render(v) for v in node.val) + ")"
    else:
        text = str(getattr(node, "val", type(node).__name__))
    return text if len(text) <= 60 else text[:57] + "..."


def _datetime_text(node: ast.DateTime | ast.Date) -> str:
    """The stored ISO form of a date-time or date literal; a naive one, or a bare date, is UTC."""
    try:
        if isinstance(node, ast.Date):
            value = datetime.combine(node.py_val, datetime.min.time(), tzinfo=UTC)
        else:
            value = node.py_val
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
        text = iso(value)
    except (ValueError, OverflowError):
        raise invalid(f"{node.val} is not a valid date-time") from None
    assert text is not None
    return text


def _checked_int(node: ast.Integer) -> int:
    value = node.py_val
    if not -_INT64 <= value < _INT64:
        raise invalid(f"integer {render(node)} is out of range")
    return value


def _checked_float(node: ast.Float) -> float:
    value = node.py_val
    if not math.isfinite(value):
        raise invalid(f"number {render(node)} is out of range")
    return value


def _coerce(node: ast._Literal, kind: FieldType, label: str) -> object:
    """Check a literal against the type of the property it is compared with; return the SQL value."""
    if kind == "string" and isinstance(node, ast.String):
        return node.val
    if kind == "guid" and isinstance(node, ast.String | ast.GUID):
        # Ids are stored in lower case, so they compare exactly (and use indexes); braces as SQL Server and
        # SharePoint write GUIDs are dropped the way the edge drops them from paths and bodies.
        return ids.canonical(str(node.val)).lower()
    if kind in ("int", "float") and isinstance(node, ast.Integer):
        return _checked_int(node)
    if kind in ("int", "float") and isinstance(node, ast.Float):
        return _checked_float(node)
    if kind == "bool" and isinstance(node, ast.Boolean):
        return int(node.py_val)
    if kind == "datetime" and isinstance(node, ast.DateTime | ast.Date):
        return _datetime_text(node)
    raise invalid(f"{label} is {TYPE_TEXT[kind]}; it cannot be compared with {render(node)}")


def to_db(value: Value, node: ast._Literal) -> tuple[object, ...]:
    """The SQL value(s) a literal stands for next to `value`: several when a text means several codes."""
    converted = _coerce(node, value.type, value.label)
    if value.field is None or value.field.to_db is None:
        return (converted,)
    try:
        result = value.field.to_db(converted)
    except ValueError as exc:
        raise invalid(f"{value.label} {exc}") from None
    return tuple(result) if isinstance(result, tuple) else (result,)


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


def negate(cond: Sql) -> Sql:
    # `IS NOT 1` turns SQL's unknown into true, so `not` follows OData's two-valued logic.
    return Sql(f"({cond.text}) IS NOT 1", cond.params)


def is_match(node: ast._Node) -> bool:
    return isinstance(node, ast.Call) and not node.func.namespace and node.func.name in MATCH_FUNCTIONS


def is_condition(node: ast._Node) -> bool:
    if isinstance(node, ast.Compare | ast.BoolOp | ast.CollectionLambda):
        return True
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.Not)
    return is_match(node)


def is_text_value(value: Value) -> bool:
    """Compared as text (case-insensitively), as opposed to a code standing for a text or an id."""
    return value.type == "string" and (value.field is None or value.field.to_db is None)


def _as_text(value: Value) -> Value:
    """A coded property (a status held as an int) as its wire text, for functions and ordering."""
    if value.field is not None and value.field.text_sql is not None:
        return Value(value.field.text_sql, value.params, "string", value.label)
    return value


def text_arg(node: ast.Call, arg: Value | Lit) -> Value:
    """A string argument of a string function, as a value."""
    if isinstance(arg, Lit):
        if not isinstance(arg.node, ast.String):
            raise invalid(f"{node.func.name}() needs strings; {render(arg.node)} is not a string")
        return Value("?", (arg.node.val,), "string", render(arg.node))
    arg = _as_text(arg)
    if not is_text(arg.type):
        raise invalid(f"{node.func.name}() needs strings; {arg.label} is {TYPE_TEXT[arg.type]}")
    return arg


_LITERAL_TYPES: tuple[tuple[type[ast._Literal], FieldType], ...] = (
    (ast.String, "string"),
    (ast.GUID, "guid"),
    (ast.Integer, "int"),
    (ast.Float, "float"),
    (ast.Boolean, "bool"),
    (ast.DateTime, "datetime"),
    (ast.Date, "datetime"),
)


def literal_value(lit: Lit) -> Value:
    """A non-null literal standing where a property would, as a `?` value of its own type."""
    for kind_of_node, kind in _LITERAL_TYPES:
        if isinstance(lit.node, kind_of_node):
            return Value("?", (_coerce(lit.node, kind, render(lit.node)),), kind, render(lit.node))
    raise invalid(f"literal {render(lit.node)} is not supported here")


def property_value(node: ast.Identifier | ast.Attribute, scope: Scope) -> Value:
    """The field a property path names in this scope, as a value (binding its context parameters).

    Raises Invalid naming the unknown property and listing what may be named instead.
    """
    path = path_of(node)
    label = "/".join(path)
    if scope.var is not None and path[0] == scope.var:
        assert scope.var_fields is not None
        rest = "/".join(path[1:])
        found = scope.var_fields.get(rest)
        if found is None:
            if not rest:
                raise invalid(f"use {scope.var}/<property> inside the lambda, e.g. {scope.var}/Name")
            raise invalid(
                f"unknown property {rest!r} of {scope.var_collection}; its properties: "
                + ", ".join(sorted(scope.var_fields))
            )
        return Value(found.sql, scope.bind(found), found.type, label, found)
    found = scope.fields.get(label)
    if found is not None:
        return Value(found.sql, scope.bind(found), found.type, label, found)
    if label in scope.collections:
        raise invalid(f"{label} is a collection; filter it with {label}/any(x: x/<property> eq ...)")
    collections = sorted(scope.collections)
    raise invalid(
        f"unknown property {label!r} of {scope.entity}; filterable properties: "
        + ", ".join(sorted(scope.fields))
        + (f"; collections (any/all): {', '.join(collections)}" if collections else "")
    )


def compare_values(left: Value, comparator: ast._Comparator, right: Value) -> Sql:
    left, right = _as_text(left), _as_text(right)
    compatible = (
        left.type == right.type
        or {left.type, right.type} <= {"int", "float"}
        or (is_text(left.type) and is_text(right.type))
    )
    if not compatible:
        raise invalid(
            f"{left.label} is {TYPE_TEXT[left.type]} and {right.label} is {TYPE_TEXT[right.type]};"
            " they cannot be compared"
        )
    op = COMPARE_SQL[type(comparator)]
    if op == "=":
        op = "IS"  # two nulls are equal in OData
    collate = " COLLATE NOCASE" if is_text(left.type) else ""
    return Sql(f"{wrap(left.sql)} {op} {wrap(right.sql)}{collate}", left.params + right.params)


def compare_literal(value: Value, comparator: ast._Comparator, node: ast._Literal) -> Sql:
    name = OP_NAMES[type(comparator)]
    if isinstance(node, ast.Null):
        if isinstance(comparator, ast.Eq | ast.NotEq):
            test = "IS NULL" if isinstance(comparator, ast.Eq) else "IS NOT NULL"
            return Sql(f"{wrap(value.sql)} {test}", value.params)
        raise invalid(f"`{value.label} {name} null` is never true; use `eq null` or `ne null`")
    ordering = not isinstance(comparator, ast.Eq | ast.NotEq)
    if ordering:
        value = _as_text(value)
    codes = to_db(value, node)
    sql = wrap(value.sql)
    if len(codes) > 1:
        if ordering:
            raise invalid(f"{value.label} supports only eq, ne and in")
        match = Sql(f"{sql} IN ({placeholders(len(codes))})", value.params + codes)
        return match if isinstance(comparator, ast.Eq) else negate(match)
    collate = " COLLATE NOCASE" if is_text_value(value) else ""
    return Sql(f"{sql} {COMPARE_SQL[type(comparator)]} ?{collate}", value.params + codes)


def path_of(node: ast._Node) -> list[str]:
    """`A/B/C` as ["A", "B", "C"], walking the owner chain without recursion."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.owner
    if not isinstance(node, ast.Identifier):
        raise invalid("a property path must start with a property name")
    parts.append(dotted(node))
    return parts[::-1]


# --- parsing ------------------------------------------------------------------------------------------
