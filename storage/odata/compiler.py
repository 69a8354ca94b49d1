"""`$filter` and `$orderby` compiled to parameterized SQLite over an entity set's whitelist (storage.odata.fields).

Nothing from the request reaches the SQL text: identifiers come only from the whitelist and every literal
becomes a `?` parameter. Comparisons follow OData's two-valued logic (a comparison with null is false, `ne`
is true against null), and strings compare case-insensitively like LMS365's SQL Server collation does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from odata_query import ast

from storage.access import enrollment_scope
from storage.errors import Invalid
from storage.odata.fields import Collection, EntityMap
from storage.odata.grammar import (
    DATE_PARTS,
    MATCH_FUNCTIONS,
    STRING_FUNCTIONS,
    SUPPORTED_FUNCTIONS,
    dotted,
    invalid,
    parse_filter,
)
from storage.odata.model import ReadContext
from storage.odata.values import (
    FLIPPED,
    LIKE_ESCAPE,
    MAX_PARAMS,
    OP_NAMES,
    TYPE_TEXT,
    Lit,
    Scope,
    Sql,
    Value,
    compare_literal,
    compare_values,
    escape_like,
    is_condition,
    is_match,
    is_text,
    is_text_value,
    literal_value,
    negate,
    path_of,
    placeholders,
    property_value,
    render,
    text_arg,
    to_db,
    wrap,
)

# Bounds that keep any accepted filter well inside SQLite's limits (expression depth 1000, host
# parameters) and Python's recursion limit.
MAX_DEPTH = 32
MAX_TERMS = 200


class _Compiler:
    """One compilation: walks the AST, enforcing depth and size bounds."""

    def __init__(self) -> None:
        self.depth = 0
        self.terms = 0

    @contextmanager
    def _nested(self) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise invalid(f"$filter is nested more than {MAX_DEPTH} levels deep")
        try:
            yield
        finally:
            self.depth -= 1

    def _term(self) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise invalid(f"$filter has more than {MAX_TERMS} conditions; use `in (...)` for long lists")

    # -- conditions: SQL that is true, false or null, where null counts as false --

    def condition(self, node: ast._Node, scope: Scope) -> Sql:
        with self._nested():
            if isinstance(node, ast.BoolOp):
                return self._bool_op(node, scope)
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                return negate(self.condition(node.operand, scope))
            self._term()
            if isinstance(node, ast.Compare):
                return self._compare(node, scope)
            if isinstance(node, ast.CollectionLambda):
                return self._lambda(node, scope)
            if is_match(node):
                assert isinstance(node, ast.Call)
                return self._match(node, scope)
            if isinstance(node, ast.Boolean):
                return Sql("1" if node.py_val else "0", ())
            value = self.operand(node, scope)
            if isinstance(value, Value) and value.type == "bool":
                return Sql(f"{wrap(value.sql)} = 1", value.params)
            label = value.label if isinstance(value, Value) else render(value.node)
            raise invalid(f"{label} is not a condition; compare it, e.g. `... eq ...`")

    def _bool_op(self, node: ast.BoolOp, scope: Scope) -> Sql:
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
        return Sql(joiner.join(f"({p.text})" for p in parts), tuple(x for p in parts for x in p.params))

    def _compare(self, node: ast.Compare, scope: Scope) -> Sql:
        if isinstance(node.comparator, ast.In):
            return self._in(node, scope)
        if is_condition(node.left) or is_condition(node.right):
            return self._compare_condition(node, scope)
        comparator = node.comparator
        left, right = self.operand(node.left, scope), self.operand(node.right, scope)
        self._note_flag(node, scope)
        if isinstance(left, Lit) and isinstance(right, Lit):
            if isinstance(left.node, ast.Null) and isinstance(right.node, ast.Null):
                if isinstance(comparator, ast.Eq | ast.NotEq):
                    return Sql("1" if isinstance(comparator, ast.Eq) else "0", ())
                raise invalid(f"`null {OP_NAMES[type(comparator)]} null` is never true")
            if isinstance(left.node, ast.Null):
                left, right, comparator = right, left, FLIPPED[type(comparator)]
            left = literal_value(left)
        elif isinstance(left, Lit):
            left, right, comparator = right, left, FLIPPED[type(comparator)]
        assert isinstance(left, Value)
        if isinstance(right, Value):
            return compare_values(left, comparator, right)
        return compare_literal(left, comparator, right.node)

    @staticmethod
    def _note_flag(node: ast.Compare, scope: Scope) -> None:
        """Record an own property compared with `true`/`false` by eq or ne (`IsDeleted eq true`), outside
        any lambda: only such a comparison leaves deleted rows to the filter (storage.odata.fields.visible)."""
        if scope.var is not None or not isinstance(node.comparator, ast.Eq | ast.NotEq):
            return
        for named, other in ((node.left, node.right), (node.right, node.left)):
            if isinstance(named, ast.Identifier) and not named.namespace and isinstance(other, ast.Boolean):
                scope.names.add(named.name)

    def _compare_condition(self, node: ast.Compare, scope: Scope) -> Sql:
        """`contains(Title,'x') eq true`: a condition compared with a boolean literal."""
        cond_node, other = (node.left, node.right) if is_condition(node.left) else (node.right, node.left)
        if not isinstance(other, ast.Boolean) or not isinstance(node.comparator, ast.Eq | ast.NotEq):
            raise invalid("a condition can only be compared with true or false, using eq or ne")
        inner = self.condition(cond_node, scope)
        return inner if other.py_val == isinstance(node.comparator, ast.Eq) else negate(inner)

    def _in(self, node: ast.Compare, scope: Scope) -> Sql:
        if not isinstance(node.right, ast.List):
            raise invalid("`in` needs a parenthesized list of values, like `Role in ('Learner', 'Administrator')`")
        items = node.right.val
        if any(not isinstance(item, ast._Literal) or isinstance(item, ast.List) for item in items):
            raise invalid("the list after `in` may hold only literal values")
        if len(items) > MAX_PARAMS:
            raise invalid(f"the list after `in` has more than {MAX_PARAMS} values")
        with_null = any(isinstance(item, ast.Null) for item in items)
        literals = [item for item in items if not isinstance(item, ast.Null)]
        left = self.operand(node.left, scope)
        if isinstance(left, Lit):
            if isinstance(left.node, ast.Null):
                return Sql("1" if with_null else "0", ())
            left = literal_value(left)
        sql = wrap(left.sql)
        codes: list[object] = []
        for item in literals:
            codes.extend(to_db(left, item))
        parts: list[Sql] = []
        if codes:
            collate = " COLLATE NOCASE" if is_text_value(left) else ""
            parts.append(Sql(f"{sql}{collate} IN ({placeholders(len(codes))})", left.params + tuple(codes)))
        if with_null:
            parts.append(Sql(f"{sql} IS NULL", left.params))
        if not parts:
            return Sql("0", ())
        return Sql(" OR ".join(p.text for p in parts), tuple(x for p in parts for x in p.params))

    def _match(self, node: ast.Call, scope: Scope) -> Sql:
        """contains/startswith/endswith as LIKE, with `%`, `_` and `\\` in the searched text escaped."""
        haystack, needle = self._args(node, 2, scope)
        before, after = MATCH_FUNCTIONS[node.func.name]
        text = text_arg(node, haystack)
        if isinstance(needle, Lit):
            if not isinstance(needle.node, ast.String):
                raise invalid(f"{node.func.name}() needs strings; {render(needle.node)} is not a string")
            pattern = before + escape_like(needle.node.val) + after
            return Sql(f"{wrap(text.sql)} LIKE ? {LIKE_ESCAPE}", (*text.params, pattern))
        other = text_arg(node, needle)
        escaped = f"replace(replace(replace({other.sql}, '\\', '\\\\'), '%', '\\%'), '_', '\\_')"
        pattern_sql = " || ".join(p for p in ("'%'" if before else "", escaped, "'%'" if after else "") if p)
        return Sql(f"{wrap(text.sql)} LIKE {pattern_sql} {LIKE_ESCAPE}", text.params + other.params)

    def _lambda(self, node: ast.CollectionLambda, scope: Scope) -> Sql:
        name = "/".join(path_of(node.owner))
        if scope.var is not None:
            raise invalid(f"any/all inside another any/all ({name}) is not supported")
        collection = scope.collections.get(name)
        if collection is None:
            raise invalid(
                f"{name} is not a collection of {scope.entity}; any/all work on: "
                + (", ".join(sorted(scope.collections)) or "(none)")
            )
        scope.joins.extend(collection.joins)
        if node.lambda_ is None:
            cond = Sql("1", ())
        else:
            variable = node.lambda_.identifier
            if variable.namespace:
                raise invalid(f"lambda variable {dotted(variable)} must be a simple name like x")
            inner = replace(scope, var=variable.name, var_fields=collection.fields, var_collection=name)
            cond = self.condition(node.lambda_.expression, inner)
        # `all` is "no readable item fails", so the read scope stays outside the negation.
        test = negate(cond) if isinstance(node.operator, ast.All) else Sql(f"({cond.text})", cond.params)
        readable = _read_scope(collection, scope.ctx)
        if readable is not None:
            test = Sql(f"({readable.text}) AND {test.text}", readable.params + test.params)
        exists = Sql(collection.exists_sql.replace("{cond}", test.text), test.params)
        return Sql("NOT " + exists.text, exists.params) if isinstance(node.operator, ast.All) else exists

    # -- values --

    def operand(self, node: ast._Node, scope: Scope) -> Value | Lit:
        with self._nested():
            if isinstance(node, ast.Identifier | ast.Attribute):
                return property_value(node, scope)
            if isinstance(node, ast.List):
                raise invalid(f"a list {render(node)} is only allowed after `in`")
            if isinstance(node, ast._Literal):
                if isinstance(node, ast.Time | ast.Duration | ast.Geography):
                    raise invalid(f"literal {render(node)} is not supported in $filter")
                return Lit(node)
            if isinstance(node, ast.Call):
                return self._function(node, scope)
            if isinstance(node, ast.BinOp):
                raise invalid(f"arithmetic ({type(node.op).__name__.lower()}) is not supported in $filter")
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
                raise invalid("negation (-) of a property is not supported in $filter")
            raise invalid("a condition cannot be used as a value here; compare properties with literals")

    def _function(self, node: ast.Call, scope: Scope) -> Value:
        name = dotted(node.func)
        if node.func.namespace or name not in SUPPORTED_FUNCTIONS:
            raise invalid(f"function {name!r} is not supported in $filter; supported: {', '.join(SUPPORTED_FUNCTIONS)}")
        if name in MATCH_FUNCTIONS:
            raise invalid(f"{name}() is a condition, not a value; use it alone or with `eq true`")
        (arg,) = self._args(node, 1, scope)
        if name in DATE_PARTS:
            if isinstance(arg, Lit):
                arg = literal_value(arg)
            if arg.type != "datetime":
                raise invalid(f"{name}() needs a date-time; {arg.label} is {TYPE_TEXT[arg.type]}")
            start, length = DATE_PARTS[name]
            return Value(f"CAST(substr({arg.sql}, {start}, {length}) AS INTEGER)", arg.params, "int", f"{name}()")
        text = text_arg(node, arg)
        if name == "length":
            return Value(f"length({text.sql})", text.params, "int", "length()")
        return Value(f"{STRING_FUNCTIONS[name]}({text.sql})", text.params, "string", f"{name}()")

    def _args(self, node: ast.Call, count: int, scope: Scope) -> list[Value | Lit]:
        name = node.func.name
        if len(node.args) != count:
            raise invalid(f"{name}() takes {count} argument{'s' if count > 1 else ''}, got {len(node.args)}")
        if any(isinstance(arg, ast.NamedParam) for arg in node.args):
            raise invalid(f"{name}() takes positional arguments only")
        return [self.operand(arg, scope) for arg in node.args]


def _read_scope(collection: Collection, ctx: ReadContext) -> Sql | None:
    """The condition keeping a collection's items to those `ctx.reader` may read: None when its items belong
    to no enrollment, when no actor is behind the read, and for actors who read everything."""
    if collection.owner is None or ctx.reader is None:
        return None
    found = enrollment_scope(ctx.reader, collection.owner)
    return None if found is None else Sql(found[0], tuple(found[1]))


@dataclass(frozen=True)
class Filter:
    """A compiled `$filter`: a condition over the set's table, its parameters, the joins it needs, and the
    set's own properties it compares with a boolean literal by `eq`/`ne` outside any lambda (`IsDeleted eq
    true`, `false ne IsDeleted`): `IsDeleted` among them means the filter decides about deleted rows itself.
    Merely naming it (`IsDeleted`, `IsDeleted or true`, `IsDeleted eq IsDeleted`, `IsDeleted ne null`,
    `IsDeleted in (true, false)`) does not."""

    sql: str
    params: tuple[object, ...]
    joins: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()


def compile_filter(entity: EntityMap, expr: str | None, ctx: ReadContext) -> Filter:
    """Compile `$filter` text into a SQL condition over `entity.table` (with `joins`) and its parameters.

    `ctx` gives computed properties their now and base URL. An empty filter is `1=1`. Raises Invalid
    (target `$filter`) naming the property, function or position at fault.
    """
    if expr is None or not expr.strip():
        return Filter("1=1", ())
    try:
        expr.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("$filter is not valid text") from None
    node = parse_filter(expr)
    scope = Scope(entity.fields, entity.collections, entity.name, ctx)
    result = _Compiler().condition(node, scope)
    if len(result.params) > MAX_PARAMS:
        raise invalid(f"$filter has more than {MAX_PARAMS} values")
    return Filter(result.text, result.params, tuple(dict.fromkeys(scope.joins)), frozenset(scope.names))


@dataclass(frozen=True)
class OrderTerm:
    """One ORDER BY expression: `nocase` compares text case-insensitively; `nullable` says NULLs may occur
    (SQLite sorts them first ascending, last descending)."""

    sql: str
    params: tuple[object, ...]
    descending: bool = False
    nocase: bool = False
    nullable: bool = True
    joins: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The term as written in ORDER BY."""
        return self.sql + (" COLLATE NOCASE" if self.nocase else "") + (" DESC" if self.descending else "")


@dataclass(frozen=True)
class Order:
    """A total order: the terms asked for (or the set's default), then the key."""

    terms: tuple[OrderTerm, ...]

    @property
    def sql(self) -> str:
        """The ORDER BY list, without the keyword."""
        return ", ".join(term.text for term in self.terms)

    @property
    def params(self) -> tuple[object, ...]:
        return tuple(p for term in self.terms for p in term.params)

    @property
    def joins(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(j for term in self.terms for j in term.joins))


def compile_orderby(entity: EntityMap, items: Sequence[tuple[str, bool]], ctx: ReadContext) -> Order:
    """The order for `(property, descending)` items (the set's default order when empty), ending with the key.

    Raises Invalid (target `$orderby`) for a property that cannot be sorted on.
    """
    terms: list[OrderTerm] = []
    for name, descending in items:
        found = entity.fields.get(name)
        if found is None:
            raise Invalid(
                f"cannot order {entity.name} by {name!r}; sortable properties: " + ", ".join(sorted(entity.fields)),
                target="$orderby",
            )
        nocase = bool(found.text_sql) or is_text(found.type)
        params = tuple(ctx.value(c) for c in found.context)
        terms.append(
            OrderTerm(wrap(found.text_sql or found.sql), params, descending, nocase, found.nullable, found.joins)
        )
    if not terms and entity.default_order:
        sql, _, collate = entity.default_order.partition(" COLLATE ")
        # Default orders are over NOT NULL columns of the set's own table.
        terms.append(OrderTerm(sql, (), nocase=collate == "NOCASE", nullable=False))
    # The key last makes the order total, so paging never repeats or drops a row.
    terms.append(OrderTerm(entity.key_sql, (), nullable=False))
    return Order(tuple(terms))
