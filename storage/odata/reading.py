"""Read models derived from the definitions: entities in their wire shape, loaded in batches by key, and the
navigations `$expand` follows.

Each value comes from its Property's SQL (or batch loader), the very expression `$filter` and `$orderby`
use (storage.odata.fields), so what a list is filtered on is what it shows.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from storage.odata.entities import MODEL
from storage.odata.entities.common import rows_by
from storage.odata.model import BOOLEAN, DOUBLE, INT32, INT64, PRIMITIVES, EntitySet, Property, ReadContext

Entity = dict[str, Any]


def _fill(template: str, alias: str) -> str:
    return template.replace("{t}", alias)


def _decode(prop: Property, value: Any) -> Any:
    """A value as SQLite gave it (JSON text for complex and collection values) in its wire type."""
    if value is None:
        return [] if prop.collection else None
    if prop.collection or prop.type not in PRIMITIVES:
        parsed = json.loads(value) if isinstance(value, str) else value
        if prop.collection:
            return [_shape(prop.type, item) for item in parsed]
        return _shape(prop.type, parsed)
    return _primitive(prop.type, value)


def _primitive(type_: str, value: Any) -> Any:
    if value is None:
        return None
    if type_ == BOOLEAN:
        return bool(value)
    if type_ in (INT32, INT64):
        return int(value)
    if type_ == DOUBLE:
        return float(value)
    return value


def _shape(type_: str, value: Any) -> Any:
    """A decoded JSON value as `type_`: complex members typed (json_object writes booleans as 0/1)."""
    if type_ in PRIMITIVES:
        return _primitive(type_, value)
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for member in MODEL.complex_type(type_).properties:
        if member.name in out:
            item = out[member.name]
            if member.collection and isinstance(item, list):
                out[member.name] = [_shape(member.type, v) for v in item]
            else:
                out[member.name] = _shape(member.type, item)
    return out


Decoder = Callable[[Any], Any] | None  # None: the value as SQLite gives it


def _decoder(prop: Property) -> Decoder:
    """How a column of `prop` becomes its wire value, decided once per property."""
    if prop.collection or prop.type not in PRIMITIVES:
        return lambda value: _decode(prop, value)
    convert = {BOOLEAN: bool, INT32: int, INT64: int, DOUBLE: float}.get(prop.type)
    if convert is None:
        return None
    return lambda value: None if value is None else convert(value)


@dataclass(frozen=True)
class _Read:
    """A compiled read of some properties of a set: the SELECT by key, its context names, the columns'
    property names and decoders, and the properties read in batches of their own."""

    sql: str
    context: tuple[str, ...]
    columns: tuple[tuple[str, Decoder], ...]
    batches: tuple[Property, ...]
    names: tuple[str, ...]


@cache
def _read(set_name: str, names: tuple[str, ...]) -> _Read:
    es = MODEL.entity_set(set_name)
    t = es.table
    props = tuple(es.property(n) for n in names)
    by_sql = tuple(p for p in props if p.sql is not None)
    joins = dict.fromkeys(_fill(es.joins[j], t) for p in by_sql for j in p.joins)
    key = _fill(es.property(es.key[0]).sql or "", t)
    columns = ", ".join([key, *(_fill(p.sql or "", t) for p in by_sql)])
    source = " ".join([t, *joins])
    return _Read(
        sql=f"SELECT {columns} FROM {source} WHERE {key} IN ({{ids}})",  # noqa: S608 (code-built)
        context=tuple(c for p in by_sql for c in p.context),
        columns=tuple((p.name, _decoder(p)) for p in by_sql),
        batches=tuple(p for p in props if p.sql is None and p.load is not None),
        names=names,
    )


def values(
    conn: sqlite3.Connection, set_name: str, names: Sequence[str], ids: Sequence[str], ctx: ReadContext | None
) -> dict[str, Entity]:
    """{key: {name: value}} of the named properties for the rows of `ids` that exist, in wire types.

    Raises LookupError when a property needs a ReadContext value (the base URL) that `ctx` lacks.
    """
    read = _read(set_name, tuple(names))
    if read.context and ctx is None:
        raise LookupError(f"reading {set_name} needs a ReadContext ({', '.join(read.context)})")
    params = [ctx.value(c) for c in read.context] if ctx is not None else []
    out: dict[str, Entity] = {}
    for row in rows_by(conn, read.sql, ids, *params):
        out[row[0]] = {
            name: value if decode is None else decode(value)
            for (name, decode), value in zip(read.columns, row[1:], strict=True)
        }
    present = list(out)
    for prop in read.batches:
        if present:
            loaded = prop.load(conn, present, ctx) if prop.load is not None else {}
            for key in present:
                out[key][prop.name] = loaded.get(key)
    if read.batches:  # in the definition's order, as the wire shows them
        return {key: {name: out[key][name] for name in read.names} for key in present}
    return out


def base_properties(es: EntitySet) -> tuple[str, ...]:
    """The properties every entity of the set shows (all but those only `$expand` adds)."""
    return tuple(p.name for p in es.properties if not p.expand_only)


def load(
    conn: sqlite3.Connection, set_name: str, ids: Sequence[str], ctx: ReadContext | None = None
) -> dict[str, Entity]:
    """Entities of `set_name` by key, in wire shape, for the ids that exist (in no particular order).

    `ctx` is needed for sets with computed values (a course's Url and IsEnded); LookupError without it.
    """
    return values(conn, set_name, base_properties(MODEL.entity_set(set_name)), ids, ctx)


def navigate(conn: sqlite3.Connection, set_name: str, name: str, ids: Sequence[str]) -> dict[str, Any]:
    """Per parent key of `ids`: the target key of a single-valued navigation (None when absent) or the
    list of target keys of a collection, in the navigation's order."""
    es = MODEL.entity_set(set_name)
    nav = es.navigation(name)
    link = nav.link
    target = MODEL.entity_set(nav.target)
    if link.kind == "column":
        sql = f"SELECT id, {link.column} FROM {es.table} WHERE id IN ({{ids}})"  # noqa: S608 (code-built)
        found = {row[0]: row[1] for row in rows_by(conn, sql, ids)}
        return {i: found.get(i) for i in ids}
    where = link.where.replace("{c}", "c").replace("{l}", "l")
    order = link.order.replace("{c}", "c")
    if link.kind == "children":
        sql = f"SELECT c.{link.column}, c.id FROM {target.table} c WHERE c.{link.column} IN ({{ids}})"  # noqa: S608
    else:
        sql = (
            f"SELECT l.{link.parent}, l.{link.child} FROM {link.table} l"  # noqa: S608 (code-built)
            f" JOIN {target.table} c ON c.id = l.{link.child} WHERE l.{link.parent} IN ({{ids}})"
        )
    if where:
        sql += f" AND {where}"
    if order:
        sql += f" ORDER BY {order}, c.id"
    out: dict[str, list[str]] = defaultdict(list)
    for row in rows_by(conn, sql, ids):
        out[row[0]].append(row[1])
    return {i: out.get(i, []) for i in ids}
