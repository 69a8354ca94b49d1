"""OData `$filter` and `$orderby` compiled to parameterized SQLite over a whitelist of properties per entity.

Nothing from the request reaches the SQL text: identifiers come only from the `EntityMap` whitelist and
every literal becomes a `?` parameter. Comparisons follow OData's two-valued logic (a comparison with
null is false, `ne` is true against null), and strings compare case-insensitively like LMS365's SQL
Server collation does.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from odata_query import ast
from odata_query import exceptions as odata_errors
from odata_query.grammar import ODataLexer, ODataParser
from sly.lex import Token

from storage.db import iso
from storage.errors import Invalid
from storage.models import EnrollmentStatus

FieldType = Literal["string", "int", "float", "bool", "datetime", "guid"]

# Bounds that keep any accepted filter well inside SQLite's limits (expression depth 1000, host
# parameters) and Python's recursion limit.
MAX_FILTER_LENGTH = 8000
MAX_DEPTH = 32
MAX_TERMS = 200
MAX_PARAMS = 1000

_INT64 = 2**63


@dataclass(frozen=True)
class Field:
    """A filterable, sortable property.

    `sql` is a column expression over the entity's FROM clause. `to_db` converts a checked literal to
    what `sql` holds; it may return a tuple meaning "any of these" (a text status that stands for
    several codes) and raises ValueError for a value outside its domain. `text_sql`, when `sql` holds a
    code, gives the wire text; ordering, ordering comparisons and string functions use it.
    """

    sql: str
    type: FieldType
    to_db: Callable[[Any], Any] | None = None
    text_sql: str | None = None


@dataclass(frozen=True)
class Collection:
    """A to-many navigation for `any`/`all`: `exists_sql` holds `{cond}`; `fields` are its items'."""

    exists_sql: str
    fields: Mapping[str, Field]


@dataclass(frozen=True)
class EntityMap:
    """The whitelist of one entity set; nested single-valued properties are `/` keys (`SharepointWeb/Url`)."""

    name: str
    from_sql: str
    key_sql: str
    fields: Mapping[str, Field]
    collections: Mapping[str, Collection] = field(default_factory=dict)
    default_order: str = ""


# --- compiling --------------------------------------------------------------------------------------


class _Sql(NamedTuple):
    text: str
    params: tuple[object, ...]


@dataclass(frozen=True)
class _Value:
    """A typed value expression; `field` is set when it is a bare property (so `to_db` applies)."""

    sql: str
    params: tuple[object, ...]
    type: FieldType
    label: str
    field: Field | None = None


@dataclass(frozen=True)
class _Lit:
    node: ast._Literal


@dataclass(frozen=True)
class _Scope:
    fields: Mapping[str, Field]
    collections: Mapping[str, Collection]
    entity: str
    var: str | None = None
    var_fields: Mapping[str, Field] | None = None
    var_collection: str | None = None


_TYPE_TEXT: dict[str, str] = {
    "string": "a string (quoted, like 'text')",
    "guid": "an id (like '3f2c5b8e-0d1a-4c6e-9f00-2b7d1c9e4a10')",
    "int": "an integer (like 5)",
    "float": "a number (like 1.5)",
    "bool": "a boolean (true or false)",
    "datetime": "a date-time (unquoted, like 2024-01-01T00:00:00Z or 2024-01-01)",
}

_COMPARE_SQL: dict[type[ast._Comparator], str] = {
    ast.Eq: "=",
    ast.NotEq: "IS NOT",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_FLIPPED: dict[type[ast._Comparator], ast._Comparator] = {
    ast.Eq: ast.Eq(),
    ast.NotEq: ast.NotEq(),
    ast.Lt: ast.Gt(),
    ast.LtE: ast.GtE(),
    ast.Gt: ast.Lt(),
    ast.GtE: ast.LtE(),
}
_OP_NAMES: dict[type[ast._Comparator], str] = {
    ast.Eq: "eq",
    ast.NotEq: "ne",
    ast.Lt: "lt",
    ast.LtE: "le",
    ast.Gt: "gt",
    ast.GtE: "ge",
    ast.In: "in",
}

_STRING_FUNCTIONS = {"tolower": "lower", "toupper": "upper", "trim": "trim"}
_DATE_PARTS = {"year": (1, 4), "month": (6, 2), "day": (9, 2)}
_MATCH_FUNCTIONS = {"contains": ("%", "%"), "startswith": ("", "%"), "endswith": ("%", "")}
SUPPORTED_FUNCTIONS = tuple(sorted([*_STRING_FUNCTIONS, "length", *_DATE_PARTS, *_MATCH_FUNCTIONS]))

_PLAIN_SQL = re.compile(r"[a-z_]+(\.[a-z_]+)?")
_LIKE_ESCAPE = "ESCAPE '\\'"


def _invalid(message: str) -> Invalid:
    return Invalid(message, target="$filter")


def _wrap(sql: str) -> str:
    return sql if _PLAIN_SQL.fullmatch(sql) else f"({sql})"


def _is_text(kind: FieldType) -> bool:
    return kind in ("string", "guid")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _render(node: ast._Node) -> str:
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
        text = "(" + ", ".join(_render(v) for v in node.val) + ")"
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
        raise _invalid(f"{node.val} is not a valid date-time") from None
    assert text is not None
    return text


def _checked_int(node: ast.Integer) -> int:
    value = node.py_val
    if not -_INT64 <= value < _INT64:
        raise _invalid(f"integer {_render(node)} is out of range")
    return value


def _checked_float(node: ast.Float) -> float:
    value = node.py_val
    if not math.isfinite(value):
        raise _invalid(f"number {_render(node)} is out of range")
    return value


def _coerce(node: ast._Literal, kind: FieldType, label: str) -> object:
    """Check a literal against the type of the property it is compared with; return the SQL value."""
    if kind == "string" and isinstance(node, ast.String):
        return node.val
    if kind == "guid" and isinstance(node, ast.String | ast.GUID):
        return str(node.val).lower()  # ids are stored in lower case, so they compare exactly (and use indexes)
    if kind in ("int", "float") and isinstance(node, ast.Integer):
        return _checked_int(node)
    if kind in ("int", "float") and isinstance(node, ast.Float):
        return _checked_float(node)
    if kind == "bool" and isinstance(node, ast.Boolean):
        return int(node.py_val)
    if kind == "datetime" and isinstance(node, ast.DateTime | ast.Date):
        return _datetime_text(node)
    raise _invalid(f"{label} is {_TYPE_TEXT[kind]}; it cannot be compared with {_render(node)}")


def _to_db(value: _Value, node: ast._Literal) -> tuple[object, ...]:
    """The SQL value(s) a literal stands for next to `value`: several when a text means several codes."""
    converted = _coerce(node, value.type, value.label)
    if value.field is None or value.field.to_db is None:
        return (converted,)
    try:
        result = value.field.to_db(converted)
    except ValueError as exc:
        raise _invalid(f"{value.label} {exc}") from None
    return tuple(result) if isinstance(result, tuple) else (result,)


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


class _Compiler:
    """One compilation: walks the AST, enforcing depth and size bounds."""

    def __init__(self) -> None:
        self.depth = 0
        self.terms = 0

    @contextmanager
    def _nested(self) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _invalid(f"$filter is nested more than {MAX_DEPTH} levels deep")
        try:
            yield
        finally:
            self.depth -= 1

    def _term(self) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _invalid(f"$filter has more than {MAX_TERMS} conditions; use `in (...)` for long lists")

    # -- conditions: SQL that is true, false or null, where null counts as false --

    def condition(self, node: ast._Node, scope: _Scope) -> _Sql:
        with self._nested():
            if isinstance(node, ast.BoolOp):
                return self._bool_op(node, scope)
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                return _negate(self.condition(node.operand, scope))
            self._term()
            if isinstance(node, ast.Compare):
                return self._compare(node, scope)
            if isinstance(node, ast.CollectionLambda):
                return self._lambda(node, scope)
            if _is_match(node):
                assert isinstance(node, ast.Call)
                return self._match(node, scope)
            if isinstance(node, ast.Boolean):
                return _Sql("1" if node.py_val else "0", ())
            value = self.operand(node, scope)
            if isinstance(value, _Value) and value.type == "bool":
                return _Sql(f"{_wrap(value.sql)} = 1", value.params)
            label = value.label if isinstance(value, _Value) else _render(value.node)
            raise _invalid(f"{label} is not a condition; compare it, e.g. `... eq ...`")

    def _bool_op(self, node: ast.BoolOp, scope: _Scope) -> _Sql:
        # Chains like `a or b or c ...` arrive left-nested; flatten them so long chains cost no depth.
        kind = type(node.op)
        operands: list[ast._Node] = []
        stack: list[ast._Node] = [node]
        while stack:
            current = stack.pop()
            if isinstance(current, ast.BoolOp) and isinstance(current.op, kind):
                stack.extend((current.right, current.left))
            else:
                operands.append(current)
        parts = [self.condition(operand, scope) for operand in operands]
        joiner = " AND " if kind is ast.And else " OR "
        return _Sql(joiner.join(f"({p.text})" for p in parts), tuple(x for p in parts for x in p.params))

    def _compare(self, node: ast.Compare, scope: _Scope) -> _Sql:
        if isinstance(node.comparator, ast.In):
            return self._in(node, scope)
        if _is_condition(node.left) or _is_condition(node.right):
            return self._compare_condition(node, scope)
        comparator = node.comparator
        left, right = self.operand(node.left, scope), self.operand(node.right, scope)
        if isinstance(left, _Lit) and isinstance(right, _Lit):
            if isinstance(left.node, ast.Null) and isinstance(right.node, ast.Null):
                if isinstance(comparator, ast.Eq | ast.NotEq):
                    return _Sql("1" if isinstance(comparator, ast.Eq) else "0", ())
                raise _invalid(f"`null {_OP_NAMES[type(comparator)]} null` is never true")
            if isinstance(left.node, ast.Null):
                left, right, comparator = right, left, _FLIPPED[type(comparator)]
            left = _literal_value(left)
        elif isinstance(left, _Lit):
            left, right, comparator = right, left, _FLIPPED[type(comparator)]
        assert isinstance(left, _Value)
        if isinstance(right, _Value):
            return _compare_values(left, comparator, right)
        return _compare_literal(left, comparator, right.node)

    def _compare_condition(self, node: ast.Compare, scope: _Scope) -> _Sql:
        """`contains(Title,'x') eq true`: a condition compared with a boolean literal."""
        cond_node, other = (node.left, node.right) if _is_condition(node.left) else (node.right, node.left)
        if not isinstance(other, ast.Boolean) or not isinstance(node.comparator, ast.Eq | ast.NotEq):
            raise _invalid("a condition can only be compared with true or false, using eq or ne")
        inner = self.condition(cond_node, scope)
        return inner if other.py_val == isinstance(node.comparator, ast.Eq) else _negate(inner)

    def _in(self, node: ast.Compare, scope: _Scope) -> _Sql:
        if not isinstance(node.right, ast.List):
            raise _invalid("`in` needs a parenthesized list of values, like `Role in ('Learner', 'Administrator')`")
        items = node.right.val
        if any(not isinstance(item, ast._Literal) or isinstance(item, ast.List) for item in items):
            raise _invalid("the list after `in` may hold only literal values")
        if len(items) > MAX_PARAMS:
            raise _invalid(f"the list after `in` has more than {MAX_PARAMS} values")
        with_null = any(isinstance(item, ast.Null) for item in items)
        literals = [item for item in items if not isinstance(item, ast.Null)]
        left = self.operand(node.left, scope)
        if isinstance(left, _Lit):
            if isinstance(left.node, ast.Null):
                return _Sql("1" if with_null else "0", ())
            left = _literal_value(left)
        sql = _wrap(left.sql)
        codes: list[object] = []
        for item in literals:
            codes.extend(_to_db(left, item))
        parts: list[_Sql] = []
        if codes:
            collate = " COLLATE NOCASE" if _is_text_value(left) else ""
            parts.append(_Sql(f"{sql}{collate} IN ({_placeholders(len(codes))})", left.params + tuple(codes)))
        if with_null:
            parts.append(_Sql(f"{sql} IS NULL", left.params))
        if not parts:
            return _Sql("0", ())
        return _Sql(" OR ".join(p.text for p in parts), tuple(x for p in parts for x in p.params))

    def _match(self, node: ast.Call, scope: _Scope) -> _Sql:
        """contains/startswith/endswith as LIKE, with `%`, `_` and `\\` in the searched text escaped."""
        haystack, needle = self._args(node, 2, scope)
        before, after = _MATCH_FUNCTIONS[node.func.name]
        text = _text_arg(node, haystack)
        if isinstance(needle, _Lit):
            if not isinstance(needle.node, ast.String):
                raise _invalid(f"{node.func.name}() needs strings; {_render(needle.node)} is not a string")
            pattern = before + _escape_like(needle.node.val) + after
            return _Sql(f"{_wrap(text.sql)} LIKE ? {_LIKE_ESCAPE}", (*text.params, pattern))
        other = _text_arg(node, needle)
        escaped = f"replace(replace(replace({other.sql}, '\\', '\\\\'), '%', '\\%'), '_', '\\_')"
        pattern_sql = " || ".join(p for p in ("'%'" if before else "", escaped, "'%'" if after else "") if p)
        return _Sql(f"{_wrap(text.sql)} LIKE {pattern_sql} {_LIKE_ESCAPE}", text.params + other.params)

    def _lambda(self, node: ast.CollectionLambda, scope: _Scope) -> _Sql:
        name = "/".join(_path(node.owner))
        if scope.var is not None:
            raise _invalid(f"any/all inside another any/all ({name}) is not supported")
        collection = scope.collections.get(name)
        if collection is None:
            raise _invalid(
                f"{name} is not a collection of {scope.entity}; any/all work on: "
                + (", ".join(sorted(scope.collections)) or "(none)")
            )
        if node.lambda_ is None:
            cond = _Sql("1", ())
        else:
            variable = node.lambda_.identifier
            if variable.namespace:
                raise _invalid(f"lambda variable {_dotted(variable)} must be a simple name like x")
            inner = _Scope(scope.fields, scope.collections, scope.entity, variable.name, collection.fields, name)
            cond = self.condition(node.lambda_.expression, inner)
        if isinstance(node.operator, ast.All):
            return _Sql("NOT " + collection.exists_sql.replace("{cond}", _negate(cond).text), cond.params)
        return _Sql(collection.exists_sql.replace("{cond}", f"({cond.text})"), cond.params)

    # -- values --

    def operand(self, node: ast._Node, scope: _Scope) -> _Value | _Lit:
        with self._nested():
            if isinstance(node, ast.Identifier | ast.Attribute):
                return _property(node, scope)
            if isinstance(node, ast.List):
                raise _invalid(f"a list {_render(node)} is only allowed after `in`")
            if isinstance(node, ast._Literal):
                if isinstance(node, ast.Time | ast.Duration | ast.Geography):
                    raise _invalid(f"literal {_render(node)} is not supported in $filter")
                return _Lit(node)
            if isinstance(node, ast.Call):
                return self._function(node, scope)
            if isinstance(node, ast.BinOp):
                raise _invalid(f"arithmetic ({type(node.op).__name__.lower()}) is not supported in $filter")
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
                raise _invalid("negation (-) of a property is not supported in $filter")
            raise _invalid("a condition cannot be used as a value here; compare properties with literals")

    def _function(self, node: ast.Call, scope: _Scope) -> _Value:
        name = _dotted(node.func)
        if node.func.namespace or name not in SUPPORTED_FUNCTIONS:
            raise _invalid(
                f"function {name!r} is not supported in $filter; supported: {', '.join(SUPPORTED_FUNCTIONS)}"
            )
        if name in _MATCH_FUNCTIONS:
            raise _invalid(f"{name}() is a condition, not a value; use it alone or with `eq true`")
        (arg,) = self._args(node, 1, scope)
        if name in _DATE_PARTS:
            if isinstance(arg, _Lit):
                arg = _literal_value(arg)
            if arg.type != "datetime":
                raise _invalid(f"{name}() needs a date-time; {arg.label} is {_TYPE_TEXT[arg.type]}")
            start, length = _DATE_PARTS[name]
            return _Value(f"CAST(substr({arg.sql}, {start}, {length}) AS INTEGER)", arg.params, "int", f"{name}()")
        text = _text_arg(node, arg)
        if name == "length":
            return _Value(f"length({text.sql})", text.params, "int", "length()")
        return _Value(f"{_STRING_FUNCTIONS[name]}({text.sql})", text.params, "string", f"{name}()")

    def _args(self, node: ast.Call, count: int, scope: _Scope) -> list[_Value | _Lit]:
        name = node.func.name
        if len(node.args) != count:
            raise _invalid(f"{name}() takes {count} argument{'s' if count > 1 else ''}, got {len(node.args)}")
        if any(isinstance(arg, ast.NamedParam) for arg in node.args):
            raise _invalid(f"{name}() takes positional arguments only")
        return [self.operand(arg, scope) for arg in node.args]


def _dotted(identifier: ast.Identifier) -> str:
    """An identifier with its namespace (`geo.distance`); odata-query's own full_name() is untyped."""
    return ".".join((*identifier.namespace, identifier.name))


def _negate(cond: _Sql) -> _Sql:
    # `IS NOT 1` turns SQL's unknown into true, so `not` follows OData's two-valued logic.
    return _Sql(f"({cond.text}) IS NOT 1", cond.params)


def _is_match(node: ast._Node) -> bool:
    return isinstance(node, ast.Call) and not node.func.namespace and node.func.name in _MATCH_FUNCTIONS


def _is_condition(node: ast._Node) -> bool:
    if isinstance(node, ast.Compare | ast.BoolOp | ast.CollectionLambda):
        return True
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.Not)
    return _is_match(node)


def _is_text_value(value: _Value) -> bool:
    """Compared as text (case-insensitively), as opposed to a code standing for a text or an id."""
    return value.type == "string" and (value.field is None or value.field.to_db is None)


def _as_text(value: _Value) -> _Value:
    """A coded property (a status held as an int) as its wire text, for functions and ordering."""
    if value.field is not None and value.field.text_sql is not None:
        return _Value(value.field.text_sql, value.params, "string", value.label)
    return value


def _text_arg(node: ast.Call, arg: _Value | _Lit) -> _Value:
    """A string argument of a string function, as a value."""
    if isinstance(arg, _Lit):
        if not isinstance(arg.node, ast.String):
            raise _invalid(f"{node.func.name}() needs strings; {_render(arg.node)} is not a string")
        return _Value("?", (arg.node.val,), "string", _render(arg.node))
    arg = _as_text(arg)
    if not _is_text(arg.type):
        raise _invalid(f"{node.func.name}() needs strings; {arg.label} is {_TYPE_TEXT[arg.type]}")
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


def _literal_value(lit: _Lit) -> _Value:
    """A non-null literal standing where a property would, as a `?` value of its own type."""
    for kind_of_node, kind in _LITERAL_TYPES:
        if isinstance(lit.node, kind_of_node):
            return _Value("?", (_coerce(lit.node, kind, _render(lit.node)),), kind, _render(lit.node))
    raise _invalid(f"literal {_render(lit.node)} is not supported here")


def _property(node: ast.Identifier | ast.Attribute, scope: _Scope) -> _Value:
    path = _path(node)
    label = "/".join(path)
    if scope.var is not None and path[0] == scope.var:
        assert scope.var_fields is not None
        rest = "/".join(path[1:])
        found = scope.var_fields.get(rest)
        if found is None:
            if not rest:
                raise _invalid(f"use {scope.var}/<property> inside the lambda, e.g. {scope.var}/Name")
            raise _invalid(
                f"unknown property {rest!r} of {scope.var_collection}; its properties: "
                + ", ".join(sorted(scope.var_fields))
            )
        return _Value(found.sql, (), found.type, label, found)
    found = scope.fields.get(label)
    if found is not None:
        return _Value(found.sql, (), found.type, label, found)
    if label in scope.collections:
        raise _invalid(f"{label} is a collection; filter it with {label}/any(x: x/<property> eq ...)")
    collections = sorted(scope.collections)
    raise _invalid(
        f"unknown property {label!r} of {scope.entity}; filterable properties: "
        + ", ".join(sorted(scope.fields))
        + (f"; collections (any/all): {', '.join(collections)}" if collections else "")
    )


def _compare_values(left: _Value, comparator: ast._Comparator, right: _Value) -> _Sql:
    left, right = _as_text(left), _as_text(right)
    compatible = (
        left.type == right.type
        or {left.type, right.type} <= {"int", "float"}
        or (_is_text(left.type) and _is_text(right.type))
    )
    if not compatible:
        raise _invalid(
            f"{left.label} is {_TYPE_TEXT[left.type]} and {right.label} is {_TYPE_TEXT[right.type]};"
            " they cannot be compared"
        )
    op = _COMPARE_SQL[type(comparator)]
    if op == "=":
        op = "IS"  # two nulls are equal in OData
    collate = " COLLATE NOCASE" if _is_text(left.type) else ""
    return _Sql(f"{_wrap(left.sql)} {op} {_wrap(right.sql)}{collate}", left.params + right.params)


def _compare_literal(value: _Value, comparator: ast._Comparator, node: ast._Literal) -> _Sql:
    name = _OP_NAMES[type(comparator)]
    if isinstance(node, ast.Null):
        if isinstance(comparator, ast.Eq | ast.NotEq):
            test = "IS NULL" if isinstance(comparator, ast.Eq) else "IS NOT NULL"
            return _Sql(f"{_wrap(value.sql)} {test}", value.params)
        raise _invalid(f"`{value.label} {name} null` is never true; use `eq null` or `ne null`")
    ordering = not isinstance(comparator, ast.Eq | ast.NotEq)
    if ordering:
        value = _as_text(value)
    codes = _to_db(value, node)
    sql = _wrap(value.sql)
    if len(codes) > 1:
        if ordering:
            raise _invalid(f"{value.label} supports only eq, ne and in")
        match = _Sql(f"{sql} IN ({_placeholders(len(codes))})", value.params + codes)
        return match if isinstance(comparator, ast.Eq) else _negate(match)
    collate = " COLLATE NOCASE" if _is_text_value(value) else ""
    return _Sql(f"{sql} {_COMPARE_SQL[type(comparator)]} ?{collate}", value.params + codes)


def _path(node: ast._Node) -> list[str]:
    """`A/B/C` as ["A", "B", "C"], walking the owner chain without recursion."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.owner
    if not isinstance(node, ast.Identifier):
        raise _invalid("a property path must start with a property name")
    parts.append(_dotted(node))
    return parts[::-1]


# --- parsing ------------------------------------------------------------------------------------------


def _tokens(text: str) -> list[Token]:
    """Lex with odata-query's lexer, smoothing two gaps between it and the OData grammar."""
    tokens = list(ODataLexer().tokenize(text))
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        following = tokens[i + 1].type if i + 1 < len(tokens) else None
        # `not(...)` lexes as a call of a function named `not`: the lexer wants a space after `not`.
        if tok.type == "ODATA_IDENTIFIER" and _dotted(tok.value).lower() == "not" and following == "(":
            tok.type, tok.value = "NOT", ast.Not()
        # odata-query reads `in ('a')` as a parenthesized value and only takes `('a',)` as a list.
        if tok.type == "IN" and following == "(":
            _add_list_comma(tokens, i + 1)
        i += 1
    return tokens


def _add_list_comma(tokens: list[Token], open_at: int) -> None:
    """Insert a comma before the `)` closing the group at `open_at` when it holds one item and no comma."""
    depth = 0
    for j in range(open_at + 1, len(tokens)):
        kind = tokens[j].type
        if kind == "," and depth == 0:
            return
        if kind == "(":
            depth += 1
        elif kind == ")" and depth > 0:
            depth -= 1
        elif kind == ")":
            if any(t.type != "WS" for t in tokens[open_at + 1 : j]):
                comma = Token()
                comma.type, comma.value, comma.lineno, comma.index = ",", ",", 1, tokens[j].index
                tokens.insert(j, comma)
            return


def parse_filter(expr: str) -> ast._Node:
    """Parse `$filter` text into odata-query's AST; raises Invalid (target `$filter`) saying where."""
    if len(expr) > MAX_FILTER_LENGTH:
        raise _invalid(f"$filter is longer than {MAX_FILTER_LENGTH} characters")
    stripped = expr.strip()
    offset = len(expr) - len(expr.lstrip())
    try:
        tokens = _tokens(stripped)
        return ODataParser().parse(iter(tokens))  # type: ignore[no-any-return]
    except odata_errors.TokenizingException as exc:
        position = exc.token.index
        char = stripped[position] if position < len(stripped) else ""
        hint = ""
        if char == "'":
            hint = " (an unclosed string? write a quote inside a string twice: 'O''Brien')"
        elif char == '"':
            hint = " (strings take single quotes: 'text')"
        raise _invalid(
            f"$filter has an unexpected character {char!r} at position {offset + position + 1}{hint}"
        ) from None
    except odata_errors.ParsingException as exc:
        if exc.token is None:
            raise _invalid("$filter ends too early: an operand, a closing parenthesis or a value is missing") from None
        position = exc.token.index
        near = stripped[position : position + 20]
        raise _invalid(f"$filter has a syntax error at position {offset + position + 1}, near {near!r}") from None
    except odata_errors.UnknownFunctionException as exc:
        raise _invalid(
            f"function {exc.function_name!r} is not supported in $filter; supported: " + ", ".join(SUPPORTED_FUNCTIONS)
        ) from None
    except odata_errors.ODataException as exc:
        raise _invalid(f"$filter is not valid: {exc}") from None
    except Exception:
        # The parser has crash paths of its own (AttributeError on 3+ named arguments, RecursionError on
        # very long property paths); for the client these are all malformed filters.
        raise _invalid("$filter could not be parsed; check its syntax") from None


def compile_filter(entity: EntityMap, expr: str | None) -> tuple[str, list[object]]:
    """Compile `$filter` text into a SQL condition over `entity.from_sql` and its parameters.

    Returns `("1=1", [])` for an empty filter. Raises Invalid (target `$filter`) naming the property,
    function or position at fault.
    """
    if expr is None or not expr.strip():
        return "1=1", []
    try:
        expr.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("$filter is not valid text") from None
    node = parse_filter(expr)
    scope = _Scope(entity.fields, entity.collections, entity.name)
    result = _Compiler().condition(node, scope)
    if len(result.params) > MAX_PARAMS:
        raise _invalid(f"$filter has more than {MAX_PARAMS} values")
    return result.text, list(result.params)


def compile_orderby(entity: EntityMap, items: Sequence[tuple[str, bool]]) -> str:
    """The ORDER BY list (without the keyword) for `(property, descending)` items, ending with the key.

    Raises Invalid (target `$orderby`) for a property that cannot be sorted on.
    """
    parts: list[str] = []
    for name, descending in items:
        found = entity.fields.get(name)
        if found is None:
            raise Invalid(
                f"cannot order {entity.name} by {name!r}; sortable properties: " + ", ".join(sorted(entity.fields)),
                target="$orderby",
            )
        sql = _wrap(found.text_sql or found.sql)
        if found.text_sql or _is_text(found.type):
            sql += " COLLATE NOCASE"
        parts.append(sql + (" DESC" if descending else ""))
    if not parts and entity.default_order:
        parts.append(entity.default_order)
    # The key last makes the order total, so $skip paging never repeats or drops a row.
    parts.append(entity.key_sql)
    return ", ".join(parts)


def select_page(
    conn: sqlite3.Connection,
    entity: EntityMap,
    *,
    where: str,
    params: Sequence[object],
    order_by: str,
    limit: int,
    offset: int,
    count: bool,
    extra_where: str | None = None,
    extra_params: Sequence[object] = (),
) -> tuple[list[str], int | None]:
    """Return the keys of one page in order, and the number of matching rows when `count` is true.

    `where`/`order_by` come from `compile_filter`/`compile_orderby`; `extra_where` is a trusted
    condition of the caller (a parent key, hiding deleted rows) with its own parameters.
    """
    condition = f"({where})" + (f" AND ({extra_where})" if extra_where else "")
    values = [*params, *extra_params]
    # S608: every piece is whitelist SQL or caller SQL; request values are only ever `?` parameters.
    page_sql = f"SELECT {entity.key_sql} FROM {entity.from_sql} WHERE {condition} ORDER BY {order_by}"  # noqa: S608
    rows = conn.execute(page_sql + " LIMIT ? OFFSET ?", [*values, limit, offset]).fetchall() if limit > 0 else []
    total = None
    if count:
        count_sql = f"SELECT count(*) FROM {entity.from_sql} WHERE {condition}"  # noqa: S608
        total = conn.execute(count_sql, values).fetchone()[0]
    return [row[0] for row in rows], total


# --- entity maps -------------------------------------------------------------------------------------


def _f(sql: str, kind: FieldType = "string") -> Field:
    return Field(sql, kind)


def _coded(sql: str, text_of: Callable[[EnrollmentStatus], str]) -> Field:
    """A text property stored as the status code: the text means the codes that show it."""
    groups: dict[str, list[int]] = {}
    for status in EnrollmentStatus:
        groups.setdefault(text_of(status), []).append(int(status))
    codes = {text.lower(): tuple(values) for text, values in groups.items()}

    def to_db(text: object) -> tuple[int, ...]:
        try:
            return codes[str(text).lower()]
        except KeyError:
            raise ValueError(f"must be one of {', '.join(groups)}") from None

    cases = " ".join(f"WHEN {int(s)} THEN '{text_of(s)}'" for s in EnrollmentStatus)
    return Field(sql, "string", to_db, f"CASE {sql} {cases} END")


def _prefixed(prefix: str, fields: Mapping[str, Field]) -> dict[str, Field]:
    return {f"{prefix}/{name}": value for name, value in fields.items()}


def _user_fields(t: str, manager: str) -> dict[str, Field]:
    """User properties over table alias `t`, with the manager row joined as `manager`."""
    return {
        "Id": _f(f"{t}.id", "guid"),
        "LoginName": _f(f"{t}.login_name"),
        "Email": _f(f"{t}.email"),
        "Title": _f(f"{t}.title"),
        "Department": _f(f"{t}.department"),
        "ManagerId": _f(f"{t}.manager_id", "guid"),
        "ManagerLoginName": _f(f"{manager}.login_name"),
        "City": _f(f"{t}.city"),
        "Country": _f(f"{t}.country"),
        "DirectoryObjectId": _f(f"{t}.directory_object_id", "guid"),
        "Office": _f(f"{t}.office"),
        "JobTitle": _f(f"{t}.job_title"),
        "IsExternal": _f(f"{t}.is_external", "bool"),
        "Role": _f(f"{t}.role"),
        "IsDeleted": _f(f"{t}.is_deleted", "bool"),
        "CreatedAt": _f(f"{t}.created_at", "datetime"),
    }


def _person_fields(t: str) -> dict[str, Field]:
    return {
        "Id": _f(f"{t}.id", "guid"),
        "LoginName": _f(f"{t}.login_name"),
        "Email": _f(f"{t}.email"),
        "Title": _f(f"{t}.title"),
        "Department": _f(f"{t}.department"),
        "DirectoryObjectId": _f(f"{t}.directory_object_id", "guid"),
    }


def _course_fields(t: str) -> dict[str, Field]:
    """Course properties (with nested single-valued ones as `A/B`) over table alias `t`."""
    url = f"COALESCE({t}.site_url, {t}.url)"  # the wire Url: the reserved site Url once provisioning set it
    return {
        "Id": _f(f"{t}.id", "guid"),
        "CourseCatalogId": _f(f"{t}.catalog_id", "guid"),
        "Title": _f(f"{t}.title"),
        "Description": _f(f"{t}.description"),
        "LongDescription": _f(f"{t}.long_description"),
        "CEU": _f(f"CAST({t}.ceu AS INTEGER)", "int"),
        "DecimalCEU": _f(f"{t}.ceu", "float"),
        "ShowInCatalog": _f(f"{t}.show_in_catalog", "bool"),
        "IsRequired": _f(f"{t}.is_required", "bool"),
        "IsPublished": _f(f"{t}.is_published", "bool"),
        # As readmodel computes it, against the wall clock in the stored ISO form.
        "IsEnded": _f(
            f"({t}.publishing_enabled = 1 AND {t}.publishing_end IS NOT NULL"
            f" AND {t}.publishing_end < strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            "bool",
        ),
        "CourseID": _f(f"{t}.course_code"),
        "Duration": _f(f"{t}.duration"),
        "CourseType": _f(f"{t}.course_type"),
        "ImageUrl": _f(f"{t}.image_url"),
        "CertificateTemplateId": _f(f"{t}.certificate_template_id"),
        "EnrollmentFlow": _f(f"{t}.enrollment_flow"),
        "IsDeleted": _f(f"{t}.is_deleted", "bool"),
        "CourseSessionEnrollmentType": _f(f"{t}.session_enrollment_type"),
        "CreatedAt": _f(f"{t}.created_at", "datetime"),
        "ModifiedAt": _f(f"{t}.modified_at", "datetime"),
        "CourseLayoutId": _f(f"{t}.course_layout_id"),
        "Culture": _f(f"{t}.culture"),
        "UICulture": _f(f"{t}.ui_culture"),
        "Url": _f(url),
        "ProvisioningProgress": _f(f"{t}.provisioning"),
        "ProvisioningError": _f(f"{t}.provisioning_error"),
        "SharepointWeb/Url": _f(url),
        "SharepointWeb/SiteId": _f(f"{t}.site_id"),
        "SharepointWeb/Id": _f(f"{t}.web_id"),
        "Publishing/Id": _f(f"{t}.id", "guid"),
        "Publishing/IsEnabled": _f(f"{t}.publishing_enabled", "bool"),
        "Publishing/StartDate": _f(f"{t}.publishing_start", "datetime"),
        "Publishing/EndDate": _f(f"{t}.publishing_end", "datetime"),
        "DueDate/CourseId": _f(f"{t}.id", "guid"),
        "DueDate/IsEnabled": _f(f"{t}.due_enabled", "bool"),
        "DueDate/FixedDate": _f(f"{t}.due_fixed_date", "datetime"),
        "DueDate/DaysAfterEnrollment": _f(f"{t}.due_days_after_enrollment", "int"),
        "CertificateExpiry/CourseId": _f(f"{t}.id", "guid"),
        "CertificateExpiry/IsEnabled": _f(f"{t}.expiry_enabled", "bool"),
        "CertificateExpiry/FixedDate": _f(f"{t}.expiry_fixed_date", "datetime"),
        "CertificateExpiry/DaysAfterCompletion": _f(f"{t}.expiry_days_after_completion", "int"),
        "CourseCatalog/Id": _f(f"{t}.catalog_id", "guid"),
        "CourseCatalog/Title": _f(f"(SELECT cat.title FROM catalogs cat WHERE cat.id = {t}.catalog_id)"),  # noqa: S608
    }


def _people(t: str, role: str) -> Collection:
    return Collection(
        "EXISTS (SELECT 1 FROM course_people cp JOIN users pu ON pu.id = cp.user_id"  # noqa: S608
        f" WHERE cp.course_id = {t}.id AND cp.role = '{role}' AND {{cond}})",
        _person_fields("pu"),
    )


def _course_collections(t: str) -> dict[str, Collection]:
    """Course to-many navigations usable in any/all, correlated with table alias `t`."""
    return {
        "Categories": Collection(
            "EXISTS (SELECT 1 FROM course_categories cc JOIN categories c ON c.id = cc.category_id"  # noqa: S608
            f" WHERE cc.course_id = {t}.id AND {{cond}})",
            {
                "Id": _f("c.id", "guid"),
                "Name": _f("c.name"),
                "ParentCategoryId": _f("c.parent_id", "guid"),
                "CourseCatalogId": _f("c.catalog_id", "guid"),
            },
        ),
        "Tags": Collection(
            "EXISTS (SELECT 1 FROM course_tags ct JOIN tags tg ON tg.id = ct.tag_id"  # noqa: S608
            f" WHERE ct.course_id = {t}.id AND {{cond}})",
            {
                "Id": _f("tg.id", "guid"),
                "Name": _f("tg.name"),
                "CourseCatalogId": _f("tg.catalog_id", "guid"),
            },
        ),
        "CourseSessions": Collection(
            f"EXISTS (SELECT 1 FROM course_sessions cs WHERE cs.course_id = {t}.id"  # noqa: S608
            " AND cs.is_deleted = 0 AND {cond})",
            {
                "Id": _f("cs.id", "guid"),
                "Title": _f("cs.title"),
                "StartDate": _f("cs.start_at", "datetime"),
                "EndDate": _f("cs.end_at", "datetime"),
                "TimeZone": _f("cs.time_zone"),
                "MaxAttendees": _f("cs.max_attendees", "int"),
                "EnrollmentDeadline": _f("cs.enrollment_deadline", "datetime"),
            },
        ),
        "Trainers": _people(t, "Trainer"),
        "Teachers": _people(t, "Teacher"),
        "Admins": _people(t, "Admin"),
    }


def _session_fields(t: str) -> dict[str, Field]:
    def seats(status: str) -> Field:
        return _f(
            f"(SELECT count(*) FROM session_registrations sr WHERE sr.session_id = {t}.id"  # noqa: S608
            f" AND sr.status = '{status}')",
            "int",
        )

    return {
        "Id": _f(f"{t}.id", "guid"),
        "CourseId": _f(f"{t}.course_id", "guid"),
        "Title": _f(f"{t}.title"),
        "StartDate": _f(f"{t}.start_at", "datetime"),
        "EndDate": _f(f"{t}.end_at", "datetime"),
        "TimeZone": _f(f"{t}.time_zone"),
        "Details": _f(f"{t}.details"),
        "MeetingUrl": _f(f"{t}.meeting_url"),
        "MaxAttendees": _f(f"{t}.max_attendees", "int"),
        "EnrollmentDeadline": _f(f"{t}.enrollment_deadline", "datetime"),
        "AttendeesCount": seats("Registered"),
        "WaitlistCount": seats("Waitlisted"),
        "Room/Title": _f(f"json_extract({t}.room, '$.Title')"),
        "Room/Location": _f(f"json_extract({t}.room, '$.Location')"),
        "Room/EmailAddress": _f(f"json_extract({t}.room, '$.EmailAddress')"),
        "CreatedAt": _f(f"{t}.created_at", "datetime"),
        "ModifiedAt": _f(f"{t}.modified_at", "datetime"),
    }


def _enrollment_fields() -> dict[str, Field]:
    e = "enrollments"
    completed = int(EnrollmentStatus.Completed)
    can_unenroll = ", ".join(
        str(int(s))
        for s in (
            EnrollmentStatus.PendingApproval,
            EnrollmentStatus.NotStarted,
            EnrollmentStatus.InProgress,
            EnrollmentStatus.Waitlisted,
        )
    )
    return {
        "Id": _f(f"{e}.id", "guid"),
        "CourseId": _f(f"{e}.course_id", "guid"),
        "UserId": _f(f"{e}.user_id", "guid"),
        "UserLoginName": _f("u.login_name"),
        "EnrollmentStatus": _f(f"{e}.status", "int"),
        "EnrollmentStatusText": _coded(f"{e}.status", lambda s: s.name),
        "RegistrationStatus": _coded(f"{e}.status", lambda s: s.registration_status),
        "CoursePassingStatus": _coded(f"{e}.status", lambda s: s.passing_status),
        "RegistrationDate": _f(f"{e}.registered_at", "datetime"),
        "StartDate": _f(f"{e}.started_at", "datetime"),
        "CompletionDate": _f(f"{e}.completed_at", "datetime"),
        "EndDate": _f(f"{e}.completed_at", "datetime"),
        "DueDate": _f(f"{e}.due_at", "datetime"),
        "CertificateId": _f(f"{e}.certificate_id"),
        "CEU": _f(f"CASE WHEN {e}.status = {completed} THEN CAST(co.ceu AS INTEGER) ELSE 0 END", "int"),
        "DecimalCEU": _f(f"CASE WHEN {e}.status = {completed} THEN co.ceu ELSE 0.0 END", "float"),
        # Not the literal `0`: SQLite reads `ORDER BY 0` as a column position and fails.
        "IsPartOfTrainingPlan": _f("(0 = 1)", "bool"),
        "CanUnenroll": _f(f"({e}.status IN ({can_unenroll}))", "bool"),
        "CancellationReason": _f(f"{e}.cancellation_reason"),
        "courseSessionId": _f(f"{e}.session_id", "guid"),
        "ModifiedAt": _f(f"{e}.modified_at", "datetime"),
        **_prefixed("User", _user_fields("u", "um")),
        **_prefixed("Course", _course_fields("co")),
    }


_USER_FIELD_VALUES = Collection(
    "EXISTS (SELECT 1 FROM json_each(u.field_values) fv WHERE {cond})",
    {
        "FieldId": _f("json_extract(fv.value, '$.FieldId')"),
        "FieldTitle": _f("json_extract(fv.value, '$.FieldTitle')"),
        "Value": _f("json_extract(fv.value, '$.Value')"),
    },
)

ENTITIES: dict[str, EntityMap] = {
    entity.name: entity
    for entity in (
        EntityMap(
            "CourseCatalogs",
            "catalogs",
            "catalogs.id",
            {
                "Id": _f("catalogs.id", "guid"),
                "Title": _f("catalogs.title"),
                "Description": _f("catalogs.description"),
                "Url": _f("catalogs.url"),
                "CreatedAt": _f("catalogs.created_at", "datetime"),
            },
            {
                "Courses": Collection(
                    "EXISTS (SELECT 1 FROM courses cco WHERE cco.catalog_id = catalogs.id"
                    " AND cco.is_deleted = 0 AND {cond})",
                    _course_fields("cco"),
                ),
                "Admins": Collection(
                    "EXISTS (SELECT 1 FROM catalog_admins ca JOIN users au ON au.id = ca.user_id"
                    " WHERE ca.catalog_id = catalogs.id AND {cond})",
                    _person_fields("au"),
                ),
            },
            "catalogs.created_at",
        ),
        EntityMap(
            "CourseCategories",
            "categories",
            "categories.id",
            {
                "Id": _f("categories.id", "guid"),
                "Name": _f("categories.name"),
                "CourseCatalogId": _f("categories.catalog_id", "guid"),
                "ParentCategoryId": _f("categories.parent_id", "guid"),
            },
            {},
            "categories.name COLLATE NOCASE",
        ),
        EntityMap(
            "CourseTags",
            "tags",
            "tags.id",
            {
                "Id": _f("tags.id", "guid"),
                "Name": _f("tags.name"),
                "CourseCatalogId": _f("tags.catalog_id", "guid"),
            },
            {},
            "tags.name COLLATE NOCASE",
        ),
        EntityMap(
            "Courses",
            "courses",
            "courses.id",
            _course_fields("courses"),
            _course_collections("courses"),
            "courses.created_at",
        ),
        EntityMap(
            "Users",
            "users u LEFT JOIN users m ON m.id = u.manager_id",
            "u.id",
            _user_fields("u", "m"),
            {"UserFieldValues": _USER_FIELD_VALUES},
            "u.created_at",
        ),
        EntityMap(
            "CourseSessions",
            "course_sessions",
            "course_sessions.id",
            _session_fields("course_sessions"),
            {
                "Instructors": Collection(
                    "EXISTS (SELECT 1 FROM session_instructors si JOIN users iu ON iu.id = si.user_id"
                    " WHERE si.session_id = course_sessions.id AND {cond})",
                    _person_fields("iu"),
                ),
                "Days": Collection(
                    "EXISTS (SELECT 1 FROM session_days sd WHERE sd.session_id = course_sessions.id" " AND {cond})",
                    {
                        "Id": _f("sd.id", "guid"),
                        "StartDate": _f("sd.start_at", "datetime"),
                        "EndDate": _f("sd.end_at", "datetime"),
                    },
                ),
            },
            "course_sessions.start_at",
        ),
        EntityMap(
            "Enrollments",
            "enrollments JOIN users u ON u.id = enrollments.user_id"
            " JOIN courses co ON co.id = enrollments.course_id"
            " LEFT JOIN users um ON um.id = u.manager_id",
            "enrollments.id",
            _enrollment_fields(),
            {
                "Registrations": Collection(
                    "EXISTS (SELECT 1 FROM session_registrations reg WHERE reg.enrollment_id = enrollments.id"
                    " AND reg.status <> 'Cancelled' AND {cond})",
                    {
                        "Id": _f("reg.id", "guid"),
                        "CourseSessionId": _f("reg.session_id", "guid"),
                        "Status": _f("reg.status"),
                        "RegisteredAt": _f("reg.registered_at", "datetime"),
                    },
                ),
                **{f"Course/{name}": c for name, c in _course_collections("co").items()},
            },
            "enrollments.registered_at",
        ),
    )
}
