"""Properties of the OData query layer.

(a) no input reaches SQL text, (b) the SQL agrees with a Python model of OData, (c) the option parsers
raise nothing but Invalid.
"""

from __future__ import annotations

import json
import operator
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odata_query.grammar import ODataLexer

from connector.odata import OPTIONS, next_link, parse_options
from storage.db import Database
from storage.errors import Invalid
from storage.odata import ReadContext, fields
from storage.odata.compiler import compile_filter, compile_orderby
from storage.odata.paging import select_page

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = "2024-01-01T00:00:00.000Z"
ENTITIES = fields.entity_maps()
USERS = ENTITIES["Users"]
CTX = ReadContext(now=datetime(2030, 1, 1, tzinfo=UTC), base_url="https://lms.example")
PLUS_2 = timezone(timedelta(hours=2))


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One migrated database with a few rows in every table the entity maps read."""
    db = Database(tmp_path_factory.mktemp("filters") / "t.db")
    db.migrate()
    stamps = {"created_at": T0, "modified_at": T0}
    fields = json.dumps([{"FieldId": "f", "FieldTitle": "T", "Value": "v"}])
    rows: list[tuple[str, dict[str, object]]] = [
        ("catalogs", {"id": "cat", "title": "Main", "url": "https://lms/main", "created_at": T0}),
        ("users", {"id": "u1", "login_name": "a@x", "email": "A@x", "field_values": fields, **stamps}),
        ("users", {"id": "u2", "login_name": "b@x", "manager_id": "u1", **stamps}),
        ("catalog_admins", {"catalog_id": "cat", "user_id": "u1"}),
        ("categories", {"id": "k1", "catalog_id": "cat", "name": "Sales"}),
        ("tags", {"id": "t1", "catalog_id": "cat", "name": "New"}),
        (
            "courses",
            {
                "id": "c1",
                "catalog_id": "cat",
                "course_type": "ELearning",
                "title": "Excel",
                "description": "",
                "culture": "en",
                "ui_culture": "en",
                "url": "/x",
                "enrollment_flow": "AutomaticApproval",
                "session_enrollment_type": "EnrollToAll",
                **stamps,
            },
        ),
        ("course_categories", {"course_id": "c1", "category_id": "k1"}),
        ("course_tags", {"course_id": "c1", "tag_id": "t1"}),
        ("course_people", {"course_id": "c1", "user_id": "u1", "role": "Trainer"}),
        (
            "course_sessions",
            {
                "id": "s1",
                "course_id": "c1",
                "title": "S",
                "start_at": T0,
                "end_at": T0,
                "time_zone": "UTC",
                "room": json.dumps({"Title": "R"}),
                **stamps,
            },
        ),
        ("session_days", {"id": "d1", "session_id": "s1", "start_at": T0, "end_at": T0}),
        ("session_instructors", {"session_id": "s1", "user_id": "u1"}),
        (
            "enrollments",
            {
                "id": "e1",
                "course_id": "c1",
                "user_id": "u2",
                "status": 1,
                "session_id": "s1",
                "registered_at": T0,
                **stamps,
            },
        ),
        (
            "session_registrations",
            {
                "id": "r1",
                "enrollment_id": "e1",
                "session_id": "s1",
                "user_id": "u2",
                "status": "Registered",
                "registered_at": T0,
                "modified_at": T0,
            },
        ),
    ]
    with db.write() as conn:
        for table, values in rows:
            marks = ", ".join("?" * len(values))
            conn.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({marks})", list(values.values()))  # noqa: S608
    yield db
    db.close()


# --- (a) arbitrary input never reaches SQL text and never breaks or changes the database -----------

_STRING = re.compile(r"'(?:[^']|'')*'")
# Quoted SQL literals the whitelist itself writes (json paths, role names, LIKE escaping, status texts).
_OWN_SQL_LITERALS = {
    m
    for entity in ENTITIES.values()
    for fragment in (
        entity.from_sql,
        *(f.sql + (f.text_sql or "") + "".join(f.joins) for f in entity.fields.values()),
        *(c.exists_sql + "".join(f.sql for f in c.fields.values()) for c in entity.collections.values()),
    )
    for m in _STRING.findall(fragment)
} | {"'\\'", "'\\\\'", "'%'", "'\\%'", "'_'", "'\\_'"}

FRAGMENTS = [
    "Title",
    "Email",
    "LoginName",
    "SharepointWeb/Url",
    "CreatedAt",
    "IsPublished",
    "Categories",
    "x/Name",
    "EnrollmentStatusText",
    "UserFieldValues",
    "f/Value",
    " eq ",
    " ne ",
    " gt ",
    " and ",
    " or ",
    "not ",
    " in ",
    "(",
    ")",
    ",",
    "/any(",
    "/all(",
    "x:",
    "f:",
    "contains(",
    "tolower(",
    "year(",
    "'",
    "''",
    "'a'",
    "null",
    "true",
    "2024-01-01",
    "2024-01-01T00:00:00Z",
    "1",
    "1.5",
    "3f2c0000-0000-4000-8000-000000000000",
    "'Completed'",
    "'; DROP TABLE users; --",
    "') OR 1=1 --",
    '" OR ""="',
    "/*",
    "*/",
    ";",
    "--",
    "\\",
    "%",
    "_",
    "?",
    "' || (SELECT sql FROM sqlite_master) || '",
    "x' UNION SELECT 1 --",
    "\x00",
]


def _replace_strings(text: str, contents: Callable[[int, str], str]) -> str | None:
    """`text` with its i-th string literal's raw content replaced by `contents(i, raw)`; None if unlexable."""
    stripped = text.strip()
    try:
        tokens = list(ODataLexer().tokenize(stripped))
    except Exception:
        return None
    out, last = [], 0
    for i, tok in enumerate(t for t in tokens if t.type == "STRING"):
        match = _STRING.match(stripped, tok.index)
        assert match is not None
        out += [stripped[last : match.start() + 1], contents(i, match.group(0)[1:-1])]
        last = match.end() - 1
    return "".join(out) + stripped[last:]


def _string_contents_blanked(text: str) -> str | None:
    """The same filter with every string literal's content replaced by as many z's."""
    return _replace_strings(text, lambda _, raw: "z" * len(raw))


PAYLOADS = [
    "'; DROP TABLE users; --",
    "') OR 1=1 --",
    "%' OR '1'='1",
    "\\' --",
    "x' UNION SELECT sql FROM sqlite_master --",
    "?",
    "_%",
    "*/ OR /*",
    "'' OR ''=''",
]


def _injected(case: tuple[Case, list[str]]) -> str:
    """A valid filter whose string literals carry SQL injection payloads (quotes doubled as OData wants)."""
    (text, _), payloads = case
    replaced = _replace_strings(text, lambda i, _: payloads[i % len(payloads)].replace("'", "''"))
    assert replaced is not None
    return replaced


def _schema(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")]


# --- (b) random valid filters over Users agree with a Python model of OData semantics -----------------

_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """SQLite NOCASE and LIKE fold ASCII letters only."""
    return text.translate(_FOLD)


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


Row = dict[str, Any]
Pred = Callable[[Row], bool]
Case = tuple[str, Pred]

ALPHABET = "aAbB%_'\\ é"
words = st.text(alphabet=ALPHABET, max_size=3)
STRING_PROPS = ["LoginName", "Email", "Title", "Department", "Role", "ManagerLoginName"]
ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
FLIP = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq", "ne": "ne"}


def _text_compare(op: str, value: str | None, literal: str) -> bool:
    if op == "eq":
        return value is not None and fold(value) == fold(literal)
    if op == "ne":
        return value is None or fold(value) != fold(literal)
    return value is not None and ORDER_OPS[op](fold(value), fold(literal))


@st.composite
def string_compare(draw: st.DrawFn) -> Case:
    prop, op, lit = draw(st.sampled_from(STRING_PROPS)), draw(st.sampled_from(list(FLIP))), draw(words)
    if draw(st.booleans()):
        return f"{quote(lit)} {FLIP[op]} {prop}", lambda r: _text_compare(op, r[prop], lit)
    return f"{prop} {op} {quote(lit)}", lambda r: _text_compare(op, r[prop], lit)


@st.composite
def string_function(draw: st.DrawFn) -> Case:
    prop, lit = draw(st.sampled_from(STRING_PROPS)), draw(words)
    name = draw(st.sampled_from(["contains", "startswith", "endswith"]))
    test = {"contains": str.__contains__, "startswith": str.startswith, "endswith": str.endswith}[name]
    return f"{name}({prop},{quote(lit)})", lambda r: r[prop] is not None and test(fold(r[prop]), fold(lit))


@st.composite
def value_function(draw: st.DrawFn) -> Case:
    prop = draw(st.sampled_from(STRING_PROPS))
    kind = draw(st.sampled_from(["tolower", "toupper", "length"]))
    if kind == "length":
        n, op = draw(st.integers(0, 4)), draw(st.sampled_from(list(ORDER_OPS)))
        return f"length({prop}) {op} {n}", lambda r: r[prop] is not None and ORDER_OPS[op](len(r[prop]), n)
    lit = draw(words)
    return f"{kind}({prop}) eq {quote(lit)}", lambda r: _text_compare("eq", r[prop], lit)


@st.composite
def null_test(draw: st.DrawFn) -> Case:
    prop, op = draw(st.sampled_from([*STRING_PROPS, "ManagerId"])), draw(st.sampled_from(["eq", "ne"]))
    return f"{prop} {op} null", lambda r: (r[prop] is None) == (op == "eq")


@st.composite
def in_list(draw: st.DrawFn) -> Case:
    prop = draw(st.sampled_from(STRING_PROPS))
    items = draw(st.lists(st.one_of(words, st.none()), min_size=1, max_size=3))
    texts = ", ".join("null" if i is None else quote(i) for i in items)
    folded = {fold(i) for i in items if i is not None}
    return (
        f"{prop} in ({texts})",
        lambda r: (r[prop] is None and None in items) or (r[prop] is not None and fold(r[prop]) in folded),
    )


@st.composite
def bool_test(draw: st.DrawFn) -> Case:
    prop = draw(st.sampled_from(["IsExternal", "IsDeleted"]))
    form = draw(st.sampled_from(["bare", "true", "false"]))
    if form == "bare":
        return prop, lambda r: r[prop]
    return f"{prop} eq {form}", lambda r: r[prop] == (form == "true")


@st.composite
def date_compare(draw: st.DrawFn) -> Case:
    moment = draw(st.datetimes(datetime(2023, 12, 30), datetime(2024, 1, 3))).replace(tzinfo=UTC)
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    op = draw(st.sampled_from(["eq", "ne", *ORDER_OPS]))
    form = draw(st.sampled_from(["z", "offset", "date"]))
    if form == "date":
        moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        text = moment.strftime("%Y-%m-%d")
    elif form == "offset":
        shifted = moment.astimezone(PLUS_2)
        text = shifted.strftime("%Y-%m-%dT%H:%M:%S.") + f"{shifted.microsecond // 1000:03d}+02:00"
    else:
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    compare = {"eq": operator.eq, "ne": operator.ne, **ORDER_OPS}[op]
    return f"CreatedAt {op} {text}", lambda r: compare(r["created"], moment)


@st.composite
def year_test(draw: st.DrawFn) -> Case:
    year = draw(st.sampled_from([2023, 2024]))
    return f"year(CreatedAt) eq {year}", lambda r: r["created"].year == year


@st.composite
def value_vs_value(draw: st.DrawFn) -> Case:
    a, b = draw(st.sampled_from(STRING_PROPS)), draw(st.sampled_from(STRING_PROPS))
    op = draw(st.sampled_from(["eq", "ne", "gt", "le"]))

    def pred(r: Row) -> bool:
        x, y = r[a], r[b]
        if op in ("eq", "ne"):
            same = (x is None and y is None) or (x is not None and y is not None and fold(x) == fold(y))
            return same == (op == "eq")
        return x is not None and y is not None and ORDER_OPS[op](fold(x), fold(y))

    return f"{a} {op} {b}", pred


@st.composite
def field_value_lambda(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["any", "all", "empty"]))
    if kind == "empty":
        return "UserFieldValues/any()", lambda r: bool(r["fields"])
    prop = draw(st.sampled_from(["FieldTitle", "Value", "FieldId"]))
    test = draw(st.sampled_from(["eq", "ne", "contains", "null"]))
    lit = draw(words)
    if test == "contains":
        inner, item_pred = (
            f"contains(f/{prop},{quote(lit)})",
            (lambda i: i[prop] is not None and fold(lit) in fold(i[prop])),
        )
    elif test == "null":
        inner, item_pred = f"f/{prop} eq null", lambda i: i[prop] is None
    else:
        inner, item_pred = f"f/{prop} {test} {quote(lit)}", lambda i: _text_compare(test, i[prop], lit)
    quantifier = any if kind == "any" else all
    return f"UserFieldValues/{kind}(f: {inner})", lambda r: quantifier(item_pred(i) for i in r["fields"])


atoms = st.one_of(
    string_compare(),
    string_function(),
    value_function(),
    null_test(),
    in_list(),
    bool_test(),
    date_compare(),
    year_test(),
    value_vs_value(),
    field_value_lambda(),
)


def _combine(children: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    def both(pair: tuple[Case, Case], word: str) -> Case:
        (ta, pa), (tb, pb) = pair
        if word == "and":
            return f"({ta}) and ({tb})", lambda r: pa(r) and pb(r)
        return f"({ta}) or ({tb})", lambda r: pa(r) or pb(r)

    def negate(case: Case, spaced: bool) -> Case:
        text, pred = case
        return (f"not ({text})" if spaced else f"not({text})"), lambda r: not pred(r)

    return st.one_of(
        st.builds(both, st.tuples(children, children), st.sampled_from(["and", "or"])),
        st.builds(negate, children, st.booleans()),
    )


filters = st.recursive(atoms, _combine, max_leaves=6)
arbitrary_texts = st.one_of(
    st.text(max_size=120),
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join),
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map(" ".join),
)
# (filter text, entity set): arbitrary text against any entity, or valid Users filters carrying payloads.
filter_inputs = st.one_of(
    st.tuples(arbitrary_texts, st.sampled_from(sorted(ENTITIES))),
    st.tuples(
        st.tuples(filters, st.lists(st.sampled_from(PAYLOADS), min_size=1, max_size=3)).map(_injected),
        st.just("Users"),
    ),
)


@st.composite
def user_rows(draw: st.DrawFn) -> list[Row]:
    rows: list[Row] = []
    for i in range(draw(st.integers(0, 6))):
        optional = st.one_of(st.none(), words)
        created = datetime(2023, 12, 31, tzinfo=UTC) + timedelta(
            milliseconds=draw(st.integers(0, 3 * 24 * 3600 * 1000))
        )
        fields = draw(
            st.lists(
                st.fixed_dictionaries({"FieldId": optional, "FieldTitle": words, "Value": optional}),
                max_size=2,
            )
        )
        manager = draw(st.one_of(st.none(), st.integers(0, i - 1))) if i else None
        rows.append(
            {
                "Id": f"u{i}",
                "LoginName": draw(words) + f"#{i}",  # the suffix keeps logins unique case-insensitively
                "Email": draw(optional),
                "Title": draw(optional),
                "Department": draw(optional),
                "Role": draw(st.sampled_from(["Learner", "Administrator"])),
                "IsExternal": draw(st.booleans()),
                "IsDeleted": draw(st.booleans()),
                "ManagerId": None if manager is None else f"u{manager}",
                "created": created,
                "fields": fields,
            }
        )
    for row in rows:
        row["ManagerLoginName"] = next((m["LoginName"] for m in rows if m["Id"] == row["ManagerId"]), None)
    return rows


def _store(db: Database, rows: list[Row]) -> None:
    with db.write() as conn:
        conn.execute("DELETE FROM users")
        for r in rows:
            created = r["created"].strftime("%Y-%m-%dT%H:%M:%S.") + f"{r['created'].microsecond // 1000:03d}Z"
            conn.execute(
                "INSERT INTO users (id, login_name, email, title, department, role, is_external, is_deleted,"
                " manager_id, field_values, created_at, modified_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r["Id"],
                    r["LoginName"],
                    r["Email"],
                    r["Title"],
                    r["Department"],
                    r["Role"],
                    int(r["IsExternal"]),
                    int(r["IsDeleted"]),
                    r["ManagerId"],
                    json.dumps(r["fields"]),
                    created,
                    created,
                ),
            )


@pytest.fixture(scope="module")
def model_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database(tmp_path_factory.mktemp("model") / "t.db")
    db.migrate()
    yield db
    db.close()


@SETTINGS
@given(rows=user_rows(), case=filters)
def test_sql_agrees_with_odata_model(model_db: Database, rows: list[Row], case: Case) -> None:
    """Random filters built from the Users whitelist select exactly the rows a Python model of OData selects
    (two-valued null logic, ASCII case-insensitive text, LIKE without wildcards, any/all, UTC instants)."""
    text, pred = case
    _store(model_db, rows)
    where = compile_filter(USERS, text, CTX)
    with model_db.read() as conn:
        page = select_page(conn, USERS, where=where, order=compile_orderby(USERS, [], CTX), limit=100, count=True)
    expected = {r["Id"] for r in rows if pred(r)}
    assert set(page.keys) == expected, (text, where)
    assert page.total == len(expected)


# --- (a) the injection property, fed arbitrary text, fragments and the valid filters of (b) with payloads ---


@SETTINGS
@given(case=filter_inputs)
def test_input_never_reaches_sql_text(database: Database, case: tuple[str, str]) -> None:
    """For any text, compile_filter raises Invalid or yields SQL whose only values are `?` parameters,
    whose text does not depend on string literal contents, and which runs without error or side effect."""
    text, entity_name = case
    entity = ENTITIES[entity_name]
    try:
        where = compile_filter(entity, text, CTX)
        sql, params = where.sql, where.params
    except Invalid as exc:
        assert exc.target == "$filter"
        return
    assert sql.count("?") == len(params)
    assert set(_STRING.findall(sql)) <= _OWN_SQL_LITERALS, sql
    assert ";" not in sql and "--" not in sql and "/*" not in sql
    if not any(f.to_db for f in entity.fields.values()):
        # With no value-dependent properties, the SQL text must not change when only literal contents do.
        blanked = _string_contents_blanked(text)
        assert blanked is not None
        assert compile_filter(entity, blanked, CTX).sql == sql
    conn = database.conn
    before_changes, before_schema = conn.total_changes, _schema(conn)
    with database.read():
        select_page(conn, entity, where=where, order=compile_orderby(entity, [], CTX), limit=5, count=True)
    assert conn.total_changes == before_changes
    assert _schema(conn) == before_schema


# --- (c) option parsers only ever raise Invalid ------------------------------------------------------

SELECTABLE = frozenset({"Id", "Title", "SharepointWeb", "Courses", "Categories"})
EXPANDABLE = {
    "SharepointWeb": frozenset(),
    "Courses": frozenset({"Id", "Title", "Categories"}),
    "Categories": frozenset({"Id"}),
}
option_text = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "Courses",
                "Id",
                "Title",
                "SharepointWeb",
                "Categories",
                "$select",
                "$expand",
                "$filter",
                "$top",
                "$orderby",
                "=",
                "(",
                ")",
                ",",
                ";",
                "'",
                " ",
                "desc",
                "asc",
                "*",
                "/",
                "5",
                "-1",
            ]
        ),
        max_size=16,
    ).map("".join),
)


@SETTINGS
@given(
    option=st.sampled_from(OPTIONS),
    value=st.one_of(option_text, st.integers(-(2**40), 2**40), st.booleans(), st.none()),
)
def test_option_parsers_raise_only_invalid(option: str, value: str | int | bool | None) -> None:
    """Any value of $select, $expand, $orderby, $top, $skip or $count parses or raises Invalid naming it."""
    try:
        parse_options({option: value}, selectable=SELECTABLE, expandable=EXPANDABLE)
    except Invalid as exc:
        assert exc.target == option, (exc.target, exc.message)


@SETTINGS
@given(
    others=st.dictionaries(
        st.sampled_from(["$filter", "$select", "$orderby", "$expand", "api-version"]),
        st.text(max_size=30),
        max_size=4,
    ),
    skip=st.integers(0, 10**6),
    top=st.one_of(st.none(), st.integers(1, 10**6)),
)
def test_next_link_round_trips(others: dict[str, str], skip: int, top: int | None) -> None:
    """Parsing a nextLink's query gives back every other option unchanged plus the new $skip and $top."""
    link = next_link("https://lms.example/odata/v2/Users", {**others, "$skip": "0"}, skip=skip, top_remaining=top)
    query = dict(parse_qsl(urlsplit(link).query, keep_blank_values=True))
    expected = {**others, "$skip": str(skip)} | ({} if top is None else {"$top": str(top)})
    assert query == expected
