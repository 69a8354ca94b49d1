"""Pages of an entity set: the page query, `$count`, and keyset paging with signed `$skiptoken`s.

A page after a token is the rows strictly after the last row of the previous page in the full order
(which always ends with the key, so it is total): the query seeks to that position on the order's index
instead of counting past every earlier row, so the 1,000th page costs what the first does. Rows inserted
or deleted meanwhile never make another row repeat or go missing.

A token carries the order values of that last row and a fingerprint of the query it belongs to, signed
with HMAC-SHA256: clients cannot read meaning into it or forge a position, and one issued for another
`$filter` or `$orderby` is refused. Its values only ever become `?` parameters. A text value longer than
`MAX_TOKEN_TEXT` (a long description sorted on) is left out and read again from the row by its key when
the token is used, so tokens stay short; rows of listed sets are never deleted outright, only marked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from storage.errors import Invalid
from storage.odata.compiler import Filter, Order, OrderTerm
from storage.odata.fields import EntityMap
from storage.odata.values import Sql

MAX_TOKEN_LENGTH = 4096
MAX_TOKEN_TEXT = 100
_SIGNATURE_BYTES = 16
FROM_ROW = True  # in a token's position: "read this value from the row with the token's key"


@dataclass(frozen=True)
class Page:
    """The keys of one page in order, the count when asked, and the order values of each key's row."""

    keys: list[str]
    total: int | None
    positions: list[tuple[object, ...]]


def _from(entity: EntityMap, *joins: Sequence[str]) -> str:
    return " ".join([entity.table, *dict.fromkeys(j for group in joins for j in group)])


def _equal(term: OrderTerm, value: object) -> Sql:
    if value is None:
        return Sql(f"{term.sql} IS NULL", term.params)
    collate = " COLLATE NOCASE" if term.nocase else ""
    return Sql(f"{term.sql}{collate} = ?", (*term.params, value))


def _beyond(term: OrderTerm, value: object) -> Sql | None:
    """Rows after `value` in this term's direction (SQLite: NULLs first ascending, last descending)."""
    collate = " COLLATE NOCASE" if term.nocase else ""
    if not term.descending:
        if value is None:
            return Sql(f"{term.sql} IS NOT NULL", term.params)
        return Sql(f"{term.sql}{collate} > ?", (*term.params, value))
    if value is None:
        return None  # nothing sorts after NULL descending
    if term.nullable:
        return Sql(f"({term.sql}{collate} < ? OR {term.sql} IS NULL)", (*term.params, value, *term.params))
    return Sql(f"{term.sql}{collate} < ?", (*term.params, value))


def after(order: Order, position: Sequence[object]) -> Sql:
    """A condition true for the rows strictly after `position` (one value per term of `order`).

    Written as a range on the first term (which the order's index can seek to) and the lexicographic
    comparison of the rest.
    """
    branches: list[Sql] = []
    for i, term in enumerate(order.terms):
        beyond = _beyond(term, position[i])
        if beyond is None:
            continue
        parts = [*(_equal(t, v) for t, v in zip(order.terms[:i], position[:i], strict=True)), beyond]
        branches.append(Sql(" AND ".join(p.text for p in parts), tuple(x for p in parts for x in p.params)))
    if not branches:
        return Sql("0", ())
    condition = Sql(" OR ".join(f"({b.text})" for b in branches), tuple(x for b in branches for x in b.params))
    first, value = order.terms[0], position[0]
    collate = " COLLATE NOCASE" if first.nocase else ""
    if value is not None and not (first.descending and first.nullable):
        op = "<=" if first.descending else ">="
        seek = Sql(f"{first.sql}{collate} {op} ?", (*first.params, value))
        return Sql(f"{seek.text} AND ({condition.text})", seek.params + condition.params)
    return condition


def select_page(
    conn: sqlite3.Connection,
    entity: EntityMap,
    *,
    where: Filter,
    order: Order,
    limit: int,
    offset: int = 0,
    count: bool = False,
    scope: Sql | None = None,
    position: Sequence[object] | None = None,
) -> Page:
    """One page of keys of `entity` matching `where` (and the caller's `scope`) in `order`.

    `position` (from a token) starts the page after that row; `offset` skips rows after that. `count`
    adds the number of matching rows (regardless of position and offset). `scope` is trusted SQL of the
    caller (parent key, hidden deleted rows, read scope) with its parameters.
    """
    conditions = [Sql(f"({where.sql})", where.params)]
    if scope is not None:
        conditions.append(Sql(f"({scope.text})", scope.params))
    counted = Sql(" AND ".join(c.text for c in conditions), tuple(x for c in conditions for x in c.params))
    if position is not None:
        resume = after(order, _resolve(conn, entity, order, position))
        conditions.append(Sql(f"({resume.text})", resume.params))
    condition = Sql(" AND ".join(c.text for c in conditions), tuple(x for c in conditions for x in c.params))
    keys: list[str] = []
    positions: list[tuple[object, ...]] = []
    if limit > 0:
        columns = ", ".join(term.sql for term in order.terms)
        source = _from(entity, where.joins, order.joins)
        # S608: every piece is whitelist SQL or caller SQL; request values are only ever `?` parameters.
        sql = f"SELECT {columns} FROM {source} WHERE {condition.text} ORDER BY {order.sql} LIMIT ? OFFSET ?"  # noqa: S608
        params = [*order.params, *condition.params, *order.params, limit, offset]
        for row in conn.execute(sql, params):
            keys.append(row[len(order.terms) - 1])
            positions.append(tuple(row))
    total = None
    if count:
        source = _from(entity, where.joins)
        total = conn.execute(f"SELECT count(*) FROM {source} WHERE {counted.text}", counted.params).fetchone()[0]  # noqa: S608
    return Page(keys, total, positions)


def _resolve(conn: sqlite3.Connection, entity: EntityMap, order: Order, position: Sequence[object]) -> Sequence[object]:
    """The position with the values a token left out read from the row with its key (the last value)."""
    if not any(value is FROM_ROW for value in position):
        return position
    columns = ", ".join(term.sql for term in order.terms)
    sql = f"SELECT {columns} FROM {_from(entity, order.joins)} WHERE {entity.key_sql} = ?"  # noqa: S608
    row = conn.execute(sql, [*order.params, position[-1]]).fetchone()
    if row is None:
        raise _refuse("resumes after a row that no longer exists")
    return [row[i] if value is FROM_ROW else value for i, value in enumerate(position)]


# --- tokens ---------------------------------------------------------------------------------------


def fingerprint(*parts: object) -> str:
    """A short digest of what a token is only valid with (the list's path, `$filter`, `$orderby`)."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(position: Sequence[object], query: str, key: bytes) -> str:
    """A `$skiptoken` for the row at `position` of the query with fingerprint `query`, signed with `key`.

    Long texts are left for the row to give back (FROM_ROW); if the token is still too long, every value
    but the key is.
    """
    values = [FROM_ROW if isinstance(v, str) and len(v) > MAX_TOKEN_TEXT else v for v in position[:-1]]
    payload = _payload([*values, position[-1]], query)
    if len(payload) * 4 // 3 + 32 > MAX_TOKEN_LENGTH:
        payload = _payload([*(FROM_ROW for _ in values), position[-1]], query)
    signature = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    return f"{_b64(payload)}.{_b64(signature)}"


def _payload(position: list[object], query: str) -> bytes:
    return json.dumps({"p": position, "q": query}, separators=(",", ":"), ensure_ascii=False).encode()


def _refuse(message: str) -> Invalid:
    return Invalid(f"$skiptoken {message}; follow @odata.nextLink as given, or start again without it", "$skiptoken")


def decode_token(token: str, query: str, key: bytes, order: Order) -> tuple[object, ...]:
    """The position a `$skiptoken` resumes after; raises Invalid (target `$skiptoken`) for a token that is
    malformed, altered, signed with another key, or issued for another `$filter`/`$orderby`."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise _refuse(f"is longer than {MAX_TOKEN_LENGTH} characters")
    payload_text, dot, signature_text = token.partition(".")
    try:
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (binascii.Error, ValueError):
        raise _refuse("is not a token this server issued") from None
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    if not dot or not hmac.compare_digest(signature, expected):
        raise _refuse("is not a token this server issued (or it was altered)")
    try:
        data = json.loads(payload)
        position, issued_for = data["p"], data["q"]
    except (ValueError, TypeError, KeyError):
        raise _refuse("is not a token this server issued") from None
    if issued_for != query:
        raise _refuse("was issued for another $filter or $orderby")
    if (
        not isinstance(position, list)
        or len(position) != len(order.terms)
        or not all(v is None or v is FROM_ROW or isinstance(v, str | int | float) for v in position)
        or isinstance(position[-1], bool)
        or any(v is False for v in position)
    ):
        raise _refuse("does not fit this list's order")
    return tuple(position)
