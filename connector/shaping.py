"""Shape read models into OData responses: `$select`, nested `$expand`, `@odata.context`, paging."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from connector import context, odata
from storage import access, query
from storage.errors import Invalid, NotFound
from storage.readmodel import ENTITY_SETS


def metadata(set_name: str, *, entity: bool = False) -> str:
    """The `@odata.context` URL of an entity set (or of one entity of it)."""
    return f"{context.base_url()}/odata/v2/$metadata#{set_name}{'/$entity' if entity else ''}"


def expandable(set_name: str) -> dict[str, frozenset[str]]:
    """Navigation names of an entity set, each with the property names `$select` may name inside it."""
    out = {}
    for name, nav in ENTITY_SETS[set_name].navigations.items():
        if nav.target:
            target = ENTITY_SETS[nav.target]
            out[name] = target.properties | frozenset(target.navigations)
        else:
            out[name] = frozenset()
    return out


def selectable(set_name: str) -> frozenset[str]:
    es = ENTITY_SETS[set_name]
    return es.properties | frozenset(es.navigations)


def parse(set_name: str, raw: Mapping[str, Any]) -> odata.QueryOptions:
    """Parse and check the query options against the entity set; raises Invalid naming the option."""
    options = odata.parse_options(raw, selectable=selectable(set_name), expandable=expandable(set_name))
    check_expand(set_name, options.expand)
    return options


def check_expand(set_name: str, items: Sequence[odata.ExpandItem]) -> None:
    """Check nested `$expand` items against the entity sets all the way down (the parser checks one level).

    Raises Invalid (target `$expand`) for a name that is not a navigation of its entity set, a nested
    option a navigation cannot take, or a nested `$filter`/`$orderby` the target cannot be queried by.
    """
    es = ENTITY_SETS[set_name]
    for item in items:
        nav = es.navigations.get(item.name)
        if nav is None:
            names = ", ".join(sorted(es.navigations)) or "(none)"
            raise Invalid(f"$expand: {set_name} has no navigation {item.name!r}; expandable: {names}", "$expand")
        where = f"$expand: inside {item.name}(...)"
        if nav.target is None:
            if item.expand or item.filter or item.orderby or item.top is not None:
                raise Invalid(f"{where} only $select applies; {item.name} is a value, not an entity set", "$expand")
            continue
        target = ENTITY_SETS[nav.target]
        unknown = [n for n in item.select or () if n != "*" and n not in target.properties | target.navigations.keys()]
        if unknown:
            raise Invalid(f"{where} $select names unknown property {unknown[0]!r}", "$expand")
        if not nav.many and (item.filter or item.orderby or item.top is not None):
            raise Invalid(
                f"{where} $filter, $orderby and $top apply to collections; {item.name} is one entity", "$expand"
            )
        if item.filter or item.orderby:
            entity_map = query.ENTITIES.get(nav.target)
            if entity_map is None:
                raise Invalid(f"{where} $filter and $orderby are not supported for {item.name}", "$expand")
            try:
                query.compile_filter(entity_map, item.filter)
                query.compile_orderby(entity_map, item.orderby)
            except Invalid as exc:
                raise Invalid(f"{where} {exc.message}", "$expand") from None
        check_expand(nav.target, item.expand)


def shape(
    conn: sqlite3.Connection,
    set_name: str,
    ids: Sequence[str],
    select: Sequence[str] | None,
    expand: Sequence[odata.ExpandItem],
) -> list[dict[str, Any]]:
    """Load entities by key (in order, skipping missing ones) and apply `$select` and `$expand`."""
    return list(_shape(conn, set_name, ids, select, expand).values())


def _shape(
    conn: sqlite3.Connection,
    set_name: str,
    ids: Sequence[str],
    select: Sequence[str] | None,
    expand: Sequence[odata.ExpandItem],
) -> dict[str, dict[str, Any]]:
    """`shape` keyed by id, in order: a nested `$select` may leave `Id` out of the entities themselves."""
    es = ENTITY_SETS[set_name]
    loaded = es.load(conn, ids)
    present = [i for i in ids if i in loaded]
    if set_name in access.ENROLLMENT_OWNED:
        # Expansions reach enrollments, registrations and attendance from courses and sessions: the
        # actor's read scope applies to them however they are reached.
        allowed = access.readable(conn, context.actor(), set_name, present)
        present = [i for i in present if i in allowed]
    expansions: dict[str, dict[str, Any]] = {}
    for item in expand:
        nav = es.navigations[item.name]
        values = nav.load(conn, present)
        if nav.target is None:
            expansions[item.name] = {k: _select_value(v, item.select) for k, v in values.items()}
            continue
        child_ids = list(dict.fromkeys(c for v in values.values() for c in (v if nav.many else [v]) if c))
        if nav.many and (item.filter or item.orderby):
            values = _filter_children(conn, nav.target, item, child_ids, values)
            child_ids = list(dict.fromkeys(c for v in values.values() for c in v))
        if nav.many and item.top is not None:
            values = {parent: v[: item.top] for parent, v in values.items()}
        children = _shape(conn, nav.target, child_ids, item.select, item.expand)
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
            nav = es.navigations[item.name]
            if nav.context and not nav.many:
                result[f"{item.name}@odata.context"] = metadata(f"{set_name}({i})/{item.name}", entity=True)
            result[item.name] = expansions[item.name].get(i)
        out[i] = result
    return out


def _filter_children(
    conn: sqlite3.Connection,
    target: str,
    item: odata.ExpandItem,
    child_ids: Sequence[str],
    values: Mapping[str, list[str]],
) -> dict[str, list[str]]:
    """Apply a nested `$filter`/`$orderby` to each parent's children with one query over all of them."""
    entity_map = query.ENTITIES[target]
    where, params = query.compile_filter(entity_map, item.filter)
    kept, _ = query.select_page(
        conn,
        entity_map,
        where=where,
        params=params,
        order_by=query.compile_orderby(entity_map, item.orderby),
        limit=len(child_ids),
        offset=0,
        count=False,
        # One JSON parameter holds every key, however many there are.
        extra_where=f"{entity_map.key_sql} IN (SELECT value FROM json_each(?))",  # noqa: S608 (key from code)
        extra_params=[json.dumps(list(child_ids))],
    )
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
    db = context.services().db
    with db.read() as conn:
        if check is not None:
            check(conn)
        shaped = shape(conn, set_name, [entity_id], options.select, options.expand)
    if not shaped:
        raise NotFound(f"{set_name} has no entity with id {entity_id!r}", target="Id")
    return {"@odata.context": metadata(context_set or set_name, entity=True), **shaped[0]}


def many(
    set_name: str,
    raw: Mapping[str, Any],
    *,
    extra_where: str | None = None,
    extra_params: Sequence[Any] = (),
    hide_deleted: str | None = None,
    context_set: str | None = None,
) -> dict[str, Any]:
    """A page of an entity set as an OData collection, with `@odata.count` and `@odata.nextLink`.

    `hide_deleted` is a SQL condition added unless the `$filter` mentions IsDeleted itself. Sets with a
    read scope (enrollments) list only what the actor may read (storage.access.enrollment_scope).
    """
    options = parse(set_name, raw)
    settings = context.services().settings
    entity_map = query.ENTITIES[set_name]
    where, params = query.compile_filter(entity_map, options.filter)
    order_by = query.compile_orderby(entity_map, options.orderby)
    if hide_deleted and "IsDeleted" not in (options.filter or ""):
        extra_where = f"({extra_where}) AND {hide_deleted}" if extra_where else hide_deleted
    owned = access.ENROLLMENT_OWNED.get(set_name)
    scope = access.enrollment_scope(context.actor(), f"{owned[0]}.{owned[1]}") if owned else None
    if scope is not None:
        extra_where = f"({extra_where}) AND {scope[0]}" if extra_where else scope[0]
        extra_params = [*extra_params, *scope[1]]
    limit, offset = odata.page_window(options.top, options.skip, settings.page_size, settings.max_page_size)
    db = context.services().db
    with db.read() as conn:
        # `$top=0` reads no page at all: with `$count=true` it asks for the count alone.
        ids, total = query.select_page(
            conn,
            entity_map,
            where=where,
            params=params,
            order_by=order_by,
            limit=limit + 1 if limit else 0,
            offset=offset,
            count=options.count,
            extra_where=extra_where,
            extra_params=extra_params,
        )
        more = len(ids) > limit
        ids = ids[:limit]
        value = shape(conn, set_name, ids, options.select, options.expand)
    result: dict[str, Any] = {"@odata.context": metadata(context_set or set_name)}
    if options.count:
        result["@odata.count"] = total
    result["value"] = value
    top_remaining = None if options.top is None else options.top - len(ids)
    if more and (top_remaining is None or top_remaining > 0):
        path, query_string = context.path_and_query()
        result["@odata.nextLink"] = odata.next_link(
            context.base_url() + path, _raw_query(query_string), skip=offset + len(ids), top_remaining=top_remaining
        )
    return result


def _raw_query(query_string: str) -> dict[str, str]:
    return dict(parse_qsl(query_string, keep_blank_values=True))
