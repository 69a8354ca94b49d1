"""Shape read models into OData responses: `$select`, nested `$expand`, `@odata.context`, paging."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from connector import context, odata
from storage import query
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
    return odata.parse_options(raw, selectable=selectable(set_name), expandable=expandable(set_name))


def shape(
    conn: sqlite3.Connection,
    set_name: str,
    ids: Sequence[str],
    select: Sequence[str] | None,
    expand: Sequence[odata.ExpandItem],
) -> list[dict[str, Any]]:
    """Load entities by key (in order, skipping missing ones) and apply `$select` and `$expand`."""
    es = ENTITY_SETS[set_name]
    loaded = es.load(conn, ids)
    present = [i for i in ids if i in loaded]
    expansions: dict[str, dict[str, Any]] = {}
    for item in expand:
        nav = es.navigations[item.name]
        values = nav.load(conn, present)
        if nav.target is None:
            expansions[item.name] = {k: _select_value(v, item.select) for k, v in values.items()}
            continue
        child_ids = [c for v in values.values() for c in (v if nav.many else [v]) if c]
        children = {
            c["Id"]: c for c in shape(conn, nav.target, list(dict.fromkeys(child_ids)), item.select, item.expand)
        }
        expansions[item.name] = {
            parent: ([children[c] for c in v if c in children] if nav.many else children.get(v))
            for parent, v in values.items()
        }
    wanted = None if not select or "*" in select else set(select)
    out = []
    for i in present:
        entity = loaded[i]
        result = {k: v for k, v in entity.items() if wanted is None or k in wanted}
        for item in expand:
            nav = es.navigations[item.name]
            if nav.context and not nav.many:
                result[f"{item.name}@odata.context"] = metadata(f"{set_name}({i})/{item.name}", entity=True)
            result[item.name] = expansions[item.name].get(i)
        out.append(result)
    return out


def _select_value(value: Any, select: Sequence[str] | None) -> Any:
    """Apply a nested `$select` to a computed navigation value (an object or a list of objects)."""
    if not select or "*" in select:
        return value
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in select}
    if isinstance(value, list):
        return [_select_value(v, select) for v in value]
    return value


def one(set_name: str, entity_id: str, raw: Mapping[str, Any], *, context_set: str | None = None) -> dict[str, Any]:
    """One entity shaped by `$select`/`$expand`, with `@odata.context`; the caller checked it exists."""
    options = parse(set_name, raw)
    db = context.services().db
    with db.read() as conn:
        shaped = shape(conn, set_name, [entity_id], options.select, options.expand)
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

    `hide_deleted` is a SQL condition added unless the `$filter` mentions IsDeleted itself.
    """
    options = parse(set_name, raw)
    settings = context.services().settings
    entity_map = query.ENTITIES[set_name]
    where, params = query.compile_filter(entity_map, options.filter)
    order_by = query.compile_orderby(entity_map, options.orderby)
    if hide_deleted and "IsDeleted" not in (options.filter or ""):
        extra_where = f"({extra_where}) AND {hide_deleted}" if extra_where else hide_deleted
    limit, offset = odata.page_window(options.top, options.skip, settings.page_size, settings.max_page_size)
    db = context.services().db
    with db.read() as conn:
        ids, total = query.select_page(
            conn,
            entity_map,
            where=where,
            params=params,
            order_by=order_by,
            limit=limit + 1,
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
    from urllib.parse import parse_qsl

    return dict(parse_qsl(query_string, keep_blank_values=True))
