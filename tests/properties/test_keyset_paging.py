"""Keyset paging (storage.odata.paging) against a Python model: any order, any page size, NULLs and case."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.db import Database
from storage.errors import Invalid
from storage.odata import ReadContext, fields
from storage.odata.compiler import compile_filter, compile_orderby
from storage.odata.paging import FROM_ROW, MAX_TOKEN_LENGTH, decode_token, encode_token, fingerprint, select_page

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CTX = ReadContext(now=datetime(2030, 1, 1, tzinfo=UTC), base_url="https://lms.example")
USERS = fields.entity_map("Users")
KEY = b"k" * 32
# Few distinct values, so ties (and ties under NOCASE only) are common.
# Texts over MAX_TOKEN_TEXT are left out of tokens and read back from the row.
LONG = "x" * 150
texts = st.one_of(
    st.none(), st.sampled_from(["a", "A", "b", "B", "ab", "Ab", "c", LONG, LONG.upper() + "a", LONG + "b"])
)
stamps = st.sampled_from(["2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z", "2024-01-03T00:00:00.000Z"])


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = Database(tmp_path_factory.mktemp("keyset") / "t.db")
    database.migrate()
    yield database
    database.close()


def _store(db: Database, rows: list[dict[str, Any]]) -> None:
    with db.write() as conn:
        conn.execute("DELETE FROM users")
        for r in rows:
            conn.execute(
                "INSERT INTO users (id, login_name, department, title, is_external, created_at, modified_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (r["id"], r["id"], r["department"], r["title"], r["external"], r["created"], r["created"]),
            )


rows_strategy = st.lists(
    st.fixed_dictionaries({"department": texts, "title": texts, "external": st.integers(0, 1), "created": stamps}),
    max_size=25,
).map(lambda rows: [{**r, "id": f"u{i:02d}"} for i, r in enumerate(rows)])
orders = st.lists(
    st.tuples(st.sampled_from(["Department", "Title", "IsExternal", "CreatedAt", "ManagerLoginName"]), st.booleans()),
    max_size=3,
    unique_by=lambda t: t[0],
)


def _pages(conn: sqlite3.Connection, order_items: list[tuple[str, bool]], size: int, expr: str | None) -> list[str]:
    """Every key, page by page, each page resuming after the previous page's last row through a token."""
    where = compile_filter(USERS, expr, CTX)
    order = compile_orderby(USERS, order_items, CTX)
    query = fingerprint("Users", expr, order_items)
    seen: list[str] = []
    position = None
    for _ in range(100):
        page = select_page(conn, USERS, where=where, order=order, limit=size, position=position)
        seen.extend(page.keys)
        if len(page.keys) < size:
            return seen
        position = decode_token(encode_token(page.positions[-1], query, KEY), query, KEY, order)
    raise AssertionError("paging did not end")


@SETTINGS
@given(rows=rows_strategy, order_items=orders, size=st.integers(1, 7), expr=st.sampled_from([None, "Title ne 'b'"]))
def test_keyset_pages_list_every_row_once_in_order(
    db: Database, rows: list[dict[str, Any]], order_items: list[tuple[str, bool]], size: int, expr: str | None
) -> None:
    """Pages chained by tokens give exactly the rows of one big page, in the same order, whatever the
    order's terms, directions, NULLs and case-only ties."""
    _store(db, rows)
    with db.read() as conn:
        where = compile_filter(USERS, expr, CTX)
        everything = select_page(
            conn, USERS, where=where, order=compile_orderby(USERS, order_items, CTX), limit=1000
        ).keys
        assert _pages(conn, order_items, size, expr) == everything


def test_tokens_refuse_tampering_and_other_queries() -> None:
    """A token decodes only unaltered, under its key, for its own query; everything else is Invalid naming
    $skiptoken."""
    order = compile_orderby(USERS, [("Title", False)], CTX)
    query = fingerprint("Users", None, [["Title", False]])
    token = encode_token(("Ann", "u01"), query, KEY)
    assert decode_token(token, query, KEY, order) == ("Ann", "u01")
    payload, _, signature = token.partition(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    bad = [
        flipped + "." + signature,
        payload + "." + signature[::-1],
        payload,
        "",
        "%%%.***",
        "x" * 5000,
        token + "x",
    ]
    for text in bad:
        with pytest.raises(Invalid) as info:
            decode_token(text, query, KEY, order)
        assert info.value.target == "$skiptoken", text
    for wrong_query, wrong_key in ((fingerprint("Users", "Title eq 'x'", [["Title", False]]), KEY), (query, b"j" * 32)):
        with pytest.raises(Invalid) as info:
            decode_token(token, wrong_query, wrong_key, order)
        assert info.value.target == "$skiptoken"
    longer = compile_orderby(USERS, [("Title", False), ("Department", True)], CTX)
    with pytest.raises(Invalid, match="does not fit"):
        decode_token(token, query, KEY, longer)


@given(st.text(max_size=200))
def test_any_text_is_a_token_or_invalid(text: str) -> None:
    """Arbitrary text as a token raises Invalid naming $skiptoken, never anything else."""
    order = compile_orderby(USERS, [], CTX)
    with pytest.raises(Invalid) as info:
        decode_token(text, "q", KEY, order)
    assert info.value.target == "$skiptoken"


def test_long_values_stay_out_of_tokens() -> None:
    """Long texts are read back from the row, and a token that would still be too long keeps only the key,
    so every token the server issues is one it accepts."""
    order = compile_orderby(USERS, [("Title", False)], CTX)
    token = encode_token(("t" * 5000, "u01"), "q", KEY)
    assert len(token) < 200
    assert decode_token(token, "q", KEY, order) == (FROM_ROW, "u01")
    many = compile_orderby(USERS, [("Title", False)] * 399, CTX)
    position = (*(1 / 3 for _ in range(399)), "u01")
    token = encode_token(position, "q", KEY)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert decode_token(token, "q", KEY, many) == (*(FROM_ROW for _ in range(399)), "u01")
