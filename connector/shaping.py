"""Shape read models into OData responses: `$select`, nested `$expand`, `@odata.context`, paging."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from connector import context, odata
from storage import access
from storage.errors import Invalid, NotFound
from storage.odata import MODEL, PRIMITIVES, ReadContext, fields, paging, reading
from storage.odata.compiler import compile_filter, compile_orderby
from storage.odata.values import Sql

SKIPTOKEN_KEY = "skiptoken"


def metadata(set_name: str, *, entity: bool = False) -> str:
    """The `@odata.context` URL of an entity set (or of one entity of it)."""
    return f"{context.base_url()}/odata/v2/$metadata#{set_name}{'/$entity' if entity else ''}"


def read_context() -> ReadContext:
    """What reads of this request depend on: the injected clock's now, the public base URL, and the actor
    (whose read scope `$filter` conditions over registrations and attendance keep)."""
    return ReadContext(now=context.services().db.clock(), base_url=context.base_url(), reader=context.actor())


class _Nav(NamedTuple):
    """What `$expand` may name: a navigation (`target` set) or a value only `$expand` adds (`target` None).

    `entity` is false for a plain value (ProvisioningProgress): its context names a property, without
    `/$entity` (OData 4.0 Protocol 10.15), as $metadata declares it.
    """

    target: str | None
    many: bool
    context_link: bool
    entity: bool = True


def _expansions(set_name: str) -> dict[str, _Nav]:
    es = MODEL.entity_set(set_name)
    out = {n.name: _Nav(n.target, n.many, n.context_link) for n in es.navigations}
    out.update(
        {
            p.name: _Nav(None, p.collection, p.context_link, p.type not in PRIMITIVES)
            for p in es.properties
            if p.expand_only
        }
    )
    return out


def expandable(set_name: str) -> dict[str, frozenset[str]]:
    """Navigation names of an entity set, each with the property names `$select` may name inside it."""
    return {name: selectable(nav.target) if nav.target else frozenset() for name, nav in _expansions(set_name).items()}


def selectable(set_name: str) -> frozenset[str]:
    """The names `$select` may name on an entity set: its properties and navigations."""
    es = MODEL.entity_set(set_name)
    return frozenset(p.name for p in es.properties) | frozenset(n.name for n in es.navigations)


def parse(set_name: str, raw: Mapping[str, Any]) -> odata.QueryOptions:
    """Parse and check the query options against the entity set; raises Invalid naming the option."""
    options = odata.parse_options(raw, selectable=selectable(set_name), expandable=expandable(set_name))
    check_expand(set_name, options.expand)
    return options


def check_expand(set_name: str, items: Sequence[odata.ExpandItem], ctx: ReadContext | None = None) -> None:
    """Check nested `$expand` items against the entity sets all the way down (the parser checks one level).

    Raises Invalid (target `$expand`) for a name that is not a navigation of its entity set, a nested
    option a navigation cannot take, or a nested `$filter`/`$orderby` the target cannot be queried by.
    """
    ctx = ctx or read_context()
    navigations = _expansions(set_name)
    for item in items:
        nav = navigations.get(item.name)
        if nav is None:
            names = ", ".join(sorted(navigations)) or "(none)"
            raise Invalid(f"$expand: {set_name} has no navigation {item.name!r}; expandable: {names}", "$expand")
        where = f"$expand: inside {item.name}(...)"
        if nav.target is None:
            if item.expand or item.filter or item.orderby or item.top is not None:
                raise Invalid(f"{where} only $select applies; {item.name} is a value, not an entity set", "$expand")
            continue
        unknown = [n for n in item.select or () if n != "*" and n not in selectable(nav.target)]
        if unknown:
            raise Invalid(f"{where} $select names unknown property {unknown[0]!r}", "$expand")
        if not nav.many and (item.filter or item.orderby or item.top is not None):
            raise Invalid(
                f"{where} $filter, $orderby and $top apply to collections; {item.name} is one entity", "$expand"
            )
        if item.filter or item.orderby:
            entity_map = fields.entity_map(nav.target)
            try:
                compile_filter(entity_map, item.filter, ctx)
                compile_orderby(entity_map, item.orderby, ctx)
            except Invalid as exc:
                raise Invalid(f"{where} {exc.message}", "$expand") from None
        check_expand(nav.target, item.expand, ctx)


def shape(
    conn: sqlite3.Connection,
    set_name: str,
    ids: Sequence[str],
    select: Sequence[str] | None,
    expand: Sequence[odata.ExpandItem],
    ctx: ReadContext,
) -> list[dict[str, Any]]:
    """Load entities by key (in order, skipping missing ones) and apply `$select` and `$expand`."""
    return list(_shape(conn, set_name, ids, select, expand, ctx).values())


def _shape(
    conn: sqlite3.Connection,
    set_name: str,
    ids: Sequence[str],
    select: Sequence[str] | None,
    expand: Sequence[odata.ExpandItem],
    ctx: ReadContext,
) -> dict[str, dict[str, Any]]:
    """`shape` keyed by id, in order: a nested `$select` may leave `Id` out of the entities themselves."""
    loaded = reading.load(conn, set_name, ids, ctx)
    present = [i for i in ids if i in loaded]
    if set_name in access.ENROLLMENT_OWNED:
        # Expansions reach enrollments, registrations and attendance from courses and sessions: the
        # actor's read scope applies to them however they are reached.
        allowed = access.readable(conn, context.actor(), set_name, present)
        present = [i for i in present if i in allowed]
    navigations = _expansions(set_name)
    expansions: dict[str, dict[str, Any]] = {}
    for item in expand:
        nav = navigations[item.name]
        if nav.target is None:
            found = reading.values(conn, set_name, [item.name], present, ctx)
            expansions[item.name] = {k: _select_value(v[item.name], item.select) for k, v in found.items()}
            continue
        values = reading.navigate(conn, set_name, item.name, present)
        child_ids = list(dict.fromkeys(c for v in values.values() for c in (v if nav.many else [v]) if c))
        if nav.many and (item.filter or item.orderby):
            values = _filter_children(conn, nav.target, item, child_ids, values, ctx)
            child_ids = list(dict.fromkeys(c for v in values.values() for c in v))
        if nav.many and item.top is not None:
            values = {parent: v[: item.top] for parent, v in values.items()}
        children = _shape(conn, nav.target, child_ids, item.select, item.expand, ctx)
        expansions[item.name] = {
            parent: ([children[c] for c in v if c in children] if nav.many else children.get(v))
            for parent, v in values.items()
        }
    wanted = None if not select or "*" in select else set(select)
    out = {}
    for i in present:
        entity = loaded[i]
        result = {k: v for k, v in entity.items() if wanted is None or k in wanted}
        for item in expand:
            nav = navigations[item.name]
            if nav.context_link and not nav.many:
                result[f"{item.name}@odata.context"] = metadata(f"{set_name}({i})/{item.name}", entity=nav.entity)
            result[item.name] = expansions[item.name].get(i)
        out[i] = result
    return out


def _filter_children(
    conn: sqlite3.Connection,
    target: str,
    item: odata.ExpandItem,
    child_ids: Sequence[str],
    values: Mapping[str, list[str]],
    ctx: ReadContext,
) -> dict[str, list[str]]:
    """Apply a nested `$filter`/`$orderby` to each parent's children with one query over all of them."""
    entity_map = fields.entity_map(target)
    # One JSON parameter holds every key, however many there are.
    among = Sql(
        f"{entity_map.key_sql} IN (SELECT value FROM json_each(?))",  # noqa: S608 (the key comes from code)
        (json.dumps(list(child_ids)),),
    )
    kept = paging.select_page(
        conn,
        entity_map,
        where=compile_filter(entity_map, item.filter, ctx),
        order=compile_orderby(entity_map, item.orderby, ctx),
        limit=len(child_ids),
        scope=among,
    ).keys
    rank = {c: i for i, c in enumerate(kept)}
    if item.orderby:
        return {parent: sorted((c for c in v if c in rank), key=rank.__getitem__) for parent, v in values.items()}
    return {parent: [c for c in v if c in rank] for parent, v in values.items()}


def _select_value(value: Any, select: Sequence[str] | None) -> Any:
    """Apply a nested `$select` to a computed navigation value (an object or a list of objects)."""
    if not select or "*" in select:
        return value
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in select}
    if isinstance(value, list):
        return [_select_value(v, select) for v in value]
    return value


def one(
    set_name: str,
    entity_id: str,
    raw: Mapping[str, Any],
    *,
    context_set: str | None = None,
    check: Callable[[sqlite3.Connection], object] | None = None,
) -> dict[str, Any]:
    """One entity shaped by `$select`/`$expand`, with `@odata.context`, read in one transaction.

    `check(conn)` runs first in that transaction and raises NotFound for rows the loader would still
    return (soft-deleted courses and sessions); an id the loader does not know, or one outside the
    actor's read scope, is NotFound too.
    """
    options = parse(set_name, raw)
    ctx = read_context()
    with context.services().db.read() as conn:
        if check is not None:
            check(conn)
        shaped = shape(conn, set_name, [entity_id], options.select, options.expand, ctx)
    if not shaped:
        raise NotFound(f"{set_name} has no entity with id {entity_id!r}", target="Id")
    return {"@odata.context": metadata(context_set or set_name, entity=True), **shaped[0]}


def many(
    set_name: str,
    raw: Mapping[str, Any],
    *,
    parent_key: str | None = None,
    context_set: str | None = None,
) -> dict[str, Any]:
    """A page of an entity set as an OData collection, with `@odata.count` and `@odata.nextLink`.

    Soft-deleted rows are left out unless `$filter` compares `IsDeleted` with true or false
    (storage.odata.fields.visible); `parent_key` lists the rows under one parent (a course's sessions). Sets
    with a read scope (enrollments) list only what the actor may read (storage.access.enrollment_scope), and
    `$filter` conditions over them see only that too (storage.odata.compiler). The nextLink carries a
    `$skiptoken` resuming after the page's last row (storage.odata.paging); `$skip` still skips rows. Raises
    Invalid naming the option.
    """
    options = parse(set_name, raw)
    services = context.services()
    settings = services.settings
    ctx = read_context()
    entity_map = fields.entity_map(set_name)
    where = compile_filter(entity_map, options.filter, ctx)
    order = compile_orderby(entity_map, options.orderby, ctx)
    scope_sql, scope_params = fields.visible(set_name, where.names, parent_key)
    owned = access.ENROLLMENT_OWNED.get(set_name)
    read_scope = access.enrollment_scope(context.actor(), f"{owned[0]}.{owned[1]}") if owned else None
    if read_scope is not None:
        scope_sql, scope_params = f"{scope_sql} AND {read_scope[0]}", (*scope_params, *read_scope[1])
    key = services.box.subkey(SKIPTOKEN_KEY)
    query = paging.fingerprint(set_name, parent_key, options.filter or "", [list(o) for o in options.orderby])
    position = paging.decode_token(options.skiptoken, query, key, order) if options.skiptoken else None
    limit, offset = odata.page_window(options.top, options.skip, settings.page_size, settings.max_page_size)
    with services.db.read() as conn:
        # `$top=0` reads no page at all: with `$count=true` it asks for the count alone.
        page = paging.select_page(
            conn,
            entity_map,
            where=where,
            order=order,
            limit=limit + 1 if limit else 0,
            offset=offset,
            count=options.count,
            scope=Sql(scope_sql, scope_params),
            position=position,
        )
        more = len(page.keys) > limit
        ids = page.keys[:limit]
        value = shape(conn, set_name, ids, options.select, options.expand, ctx)
    result: dict[str, Any] = {"@odata.context": metadata(context_set or set_name)}
    if options.count:
        result["@odata.count"] = page.total
    result["value"] = value
    top_remaining = None if options.top is None else options.top - len(ids)
    if more and (top_remaining is None or top_remaining > 0):
        path, query_string = context.path_and_query()
        result["@odata.nextLink"] = odata.next_link(
            context.base_url() + path,
            _raw_query(query_string),
            top_remaining=top_remaining,
            skiptoken=paging.encode_token(page.positions[len(ids) - 1], query, key),
        )
    return result


def _raw_query(query_string: str) -> dict[str, str]:
    return dict(parse_qsl(query_string, keep_blank_values=True))
