"""The `$filter`/`$orderby` whitelist of each entity set, derived from its definition (storage.odata.model).

Every identifier the compiler may put into SQL comes from here, and everything here comes from code: the
definitions' SQL templates with their table aliases filled in. Single-valued navigations become joins
(`Course/Title` on enrollments), to-many ones and collections become `any`/`all` over EXISTS.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Literal

from storage.access import ENROLLMENT_OWNED
from storage.odata.entities import MODEL
from storage.odata.model import BOOLEAN, DATETIME, DOUBLE, GUID, INT32, INT64, STRING, EntitySet, Link, Property

FieldType = Literal["string", "int", "float", "bool", "datetime", "guid"]

FIELD_TYPES: dict[str, FieldType] = {
    STRING: "string",
    GUID: "guid",
    INT32: "int",
    INT64: "int",
    DOUBLE: "float",
    BOOLEAN: "bool",
    DATETIME: "datetime",
}
# Single-valued navigations are joined this many levels deep (`Course/CourseCatalog/Title` on enrollments).
JOIN_DEPTH = 2


@dataclass(frozen=True)
class Field:
    """A filterable, sortable property.

    `sql` is a column expression over the entity's FROM clause; its `?` marks take the ReadContext values
    named by `context`; `joins` are the JOIN clauses it needs, in order. `to_db` converts a checked
    literal to what `sql` holds; it may return a tuple meaning "any of these" (a text status that stands
    for several codes) and raises ValueError for a value outside its domain. `text_sql`, when `sql` holds
    a code, gives the wire text; ordering, ordering comparisons and string functions use it.
    """

    sql: str
    type: FieldType
    to_db: Callable[[Any], Any] | None = None
    text_sql: str | None = None
    nullable: bool = True
    context: tuple[str, ...] = ()
    joins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Collection:
    """A to-many navigation or collection for `any`/`all`: `exists_sql` holds `{cond}`; `fields` are its items'.

    `owner` is set when the items belong to an enrollment (storage.access.ENROLLMENT_OWNED: registrations,
    attendance): the column, inside the EXISTS, holding that enrollment's id, which the compiler restricts
    to what the reader may read.
    """

    exists_sql: str
    fields: Mapping[str, Field]
    joins: tuple[str, ...] = ()
    owner: str | None = None


@dataclass(frozen=True)
class EntityMap:
    """The whitelist of one entity set; nested single-valued properties are `/` keys (`SharepointWeb/Url`)."""

    name: str
    table: str
    key_sql: str
    fields: Mapping[str, Field]
    collections: Mapping[str, Collection] = field(default_factory=dict)
    default_order: str = ""
    properties: frozenset[str] = frozenset()  # the set's own property names (not `Nav/...` paths)

    @property
    def from_sql(self) -> str:
        """The FROM clause without joins: the table under its own name as alias."""
        return self.table


def _fill(template: str, alias: str) -> str:
    return template.replace("{t}", alias)


def _coded_to_db(codes: Mapping[str, tuple[int, ...]]) -> Callable[[Any], tuple[int, ...]]:
    lowered = {text.lower(): values for text, values in codes.items()}

    def to_db(text: object) -> tuple[int, ...]:
        try:
            return lowered[str(text).lower()]
        except KeyError:
            raise ValueError(f"must be one of {', '.join(codes)}") from None

    return to_db


def _scalar(prop: Property, alias: str, joins: tuple[str, ...]) -> Field:
    assert prop.sql is not None
    if prop.coded is not None:
        return Field(
            _fill(prop.coded.sql, alias),
            "string",
            _coded_to_db(prop.coded.codes),
            _fill(prop.sql, alias),
            nullable=prop.nullable,
            context=prop.context,
            joins=joins,
        )
    return Field(
        _fill(prop.sql, alias), FIELD_TYPES[prop.type], nullable=prop.nullable, context=prop.context, joins=joins
    )


def _own_joins(es: EntitySet, prop: Property, alias: str, base: tuple[str, ...]) -> tuple[str, ...]:
    return base + tuple(_fill(es.joins[name], alias) for name in prop.joins)


def _property_fields(es: EntitySet, alias: str, base_joins: tuple[str, ...]) -> dict[str, Field]:
    """The set's scalar properties and complex members (`Room/Title`) over `alias`."""
    fields: dict[str, Field] = {}
    for prop in es.properties:
        if prop.collection or prop.sql is None:
            continue
        joins = _own_joins(es, prop, alias, base_joins)
        if prop.members:
            for member in prop.members:
                if member.sql is not None and member.type in FIELD_TYPES:
                    fields[f"{prop.name}/{member.name}"] = _scalar(member, alias, joins)
        elif prop.type in FIELD_TYPES:
            fields[prop.name] = _scalar(prop, alias, joins)
    return fields


def _link_from(link: Link, target: EntitySet, parent: str, child: str) -> tuple[str, str]:
    """(FROM ... , WHERE ...) of a to-many link from the parent alias to the target rows under `child`."""
    where = [link.where.replace("{c}", child).replace("{l}", f"{child}_l")] if link.where else []
    if link.kind == "children":
        return f"{target.table} {child}", " AND ".join([f"{child}.{link.column} = {parent}.id", *where])
    if link.kind == "through":
        source = f"{link.table} {child}_l JOIN {target.table} {child} ON {child}.id = {child}_l.{link.child}"
        return source, " AND ".join([f"{child}_l.{link.parent} = {parent}.id", *where])
    raise ValueError(f"a {link.kind} link is single-valued")


def _collections(es: EntitySet, alias: str, base_joins: tuple[str, ...]) -> dict[str, Collection]:
    out: dict[str, Collection] = {}
    for prop in es.properties:
        if prop.exists is not None:
            items = {item.name: _scalar(item, alias, ()) for item in prop.items}
            out[prop.name] = Collection(_fill(prop.exists, alias), items, base_joins)
    for nav in es.navigations:
        if not nav.many:
            continue
        target = MODEL.entity_set(nav.target)
        child = f"{alias}_{nav.name.lower()}"
        source, where = _link_from(nav.link, target, alias, child)
        # Item properties needing joins of their own are left out: the EXISTS reads the target's row only.
        items = {name: f for name, f in _property_fields(target, child, ()).items() if not f.joins and not f.context}
        exists = f"EXISTS (SELECT 1 FROM {source} WHERE {where} AND {{cond}})"  # noqa: S608 (code-built)
        owned = ENROLLMENT_OWNED.get(nav.target)
        owner = f"{child}.{owned[1]}" if owned else None
        out[nav.name] = Collection(exists, items, base_joins, owner)
    return out


_PLAIN = re.compile(r"[a-z_]+\.[a-z_]+")


def _absent_is_null(found: Field, alias: str) -> Field:
    """A field reached through an optional join: null when there is no row to join (a count or a constant
    would otherwise read 0 or false where the API shows no value)."""

    def wrap(sql: str) -> str:
        return sql if _PLAIN.fullmatch(sql) else f"CASE WHEN {alias}.id IS NULL THEN NULL ELSE {sql} END"

    text_sql = wrap(found.text_sql) if found.text_sql else None
    return replace(found, sql=wrap(found.sql), text_sql=text_sql, nullable=True)


def _walk(
    es: EntitySet, alias: str, base_joins: tuple[str, ...], depth: int
) -> tuple[dict[str, Field], dict[str, Collection]]:
    fields = _property_fields(es, alias, base_joins)
    # odata-query parses `A/B/any(...)` but not a lambda three segments down.
    collections = _collections(es, alias, base_joins) if depth < JOIN_DEPTH else {}
    if depth >= JOIN_DEPTH:
        return fields, collections
    for nav in es.navigations:
        if nav.many or nav.link.kind != "column":
            continue
        target = MODEL.entity_set(nav.target)
        child = f"{alias}_{nav.name.lower()}"
        kind = "LEFT JOIN" if nav.nullable else "JOIN"
        join = f"{kind} {target.table} {child} ON {child}.id = {alias}.{nav.link.column}"
        nested_fields, nested_collections = _walk(target, child, (*base_joins, join), depth + 1)
        if nav.nullable:
            nested_fields = {name: _absent_is_null(f, child) for name, f in nested_fields.items()}
        fields.update({f"{nav.name}/{name}": f for name, f in nested_fields.items()})
        collections.update({f"{nav.name}/{name}": c for name, c in nested_collections.items()})
    return fields, collections


@cache
def entity_map(set_name: str) -> EntityMap:
    """The whitelist of entity set `set_name`, derived once from MODEL; KeyError for an unknown set."""
    es = MODEL.entity_set(set_name)
    fields, collections = _walk(es, es.table, (), 0)
    return EntityMap(
        name=es.name,
        table=es.table,
        key_sql=_fill(es.property(es.key[0]).sql or "", es.table),
        fields=fields,
        collections=collections,
        default_order=_fill(es.default_order, es.table),
        properties=frozenset(p.name for p in es.properties),
    )


def entity_maps() -> dict[str, EntityMap]:
    """Every entity set's whitelist, by name."""
    return {es.name: entity_map(es.name) for es in MODEL.entity_sets}


def visible(set_name: str, names: frozenset[str], parent_key: str | None = None) -> tuple[str, tuple[object, ...]]:
    """The condition a list of `set_name` always adds: live rows only, and the parent's rows for a nested
    list. `("1=1", ())` when none applies. Raises ValueError for a parent key on a set without a parent.

    Deleted rows are left to the filter only when `names` (storage.odata.compiler.Filter.names: the own
    properties the filter compares with `true` or `false` by `eq`/`ne`) holds the set's soft-delete
    property: `IsDeleted eq true` lists deleted users, `IsDeleted or true` does not."""
    es = MODEL.entity_set(set_name)
    parts: list[str] = []
    params: tuple[object, ...] = ()
    if es.live and (es.soft_delete_property is None or es.soft_delete_property not in names):
        parts.append(_fill(es.live, es.table))
    if parent_key is not None:
        if es.parent is None:
            raise ValueError(f"{set_name} is not listed under a parent")
        parts.append(f"{es.table}.{es.parent} = ?")
        params = (parent_key,)
    return (" AND ".join(parts) or "1=1"), params
