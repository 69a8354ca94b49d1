"""Limits enforced before the work: body sizes from the headers and as the body streams, nesting depth, and
error messages that quote at most an excerpt of what was sent."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import Api, basic, error

from connector.app import create_app
from connector.settings import Settings
from connector.validation import MAX_DEPTH, MAX_VALUES, shape_problem
from storage.db import Database


def _scope(path: str, headers: dict[str, str], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8365),
    }


class Body:
    """An endless request body sent in `chunk`-byte messages, counting what the app read."""

    def __init__(self, chunk: bytes, total: int | None = None) -> None:
        self.chunk, self.total, self.read = chunk, total, 0

    async def __call__(self) -> dict[str, Any]:
        self.read += len(self.chunk)
        more = self.total is None or self.read < self.total
        return {"type": "http.request", "body": self.chunk, "more_body": more}


def _call(app: Any, scope: dict[str, Any], receive: Any) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), json.loads(body)


def test_a_declared_length_over_the_limit_is_413_before_anything_is_read(app: Any, api: Api) -> None:
    """Content-Length past COURSEWIRE_MAX_JSON_BYTES (or the upload limit) is answered at once; no byte is read."""
    for path, content_type, declared in (
        ("/odata/v2/Users", "application/json", api.settings.max_json_bytes + 1),
        ("/odata/v2/Users", "application/json", 300 * 1024 * 1024),
        ("/certificates/upload", "multipart/form-data; boundary=b", api.settings.max_upload_bytes + 10 * 1024 * 1024),
    ):
        body = Body(b"x" * 1024)
        headers = {**basic(api.secret), "content-type": content_type, "content-length": str(declared)}
        status, answer = _call(app, _scope(path, headers), body)
        assert (status, answer["error"]["code"], body.read) == (413, "PayloadTooLarge", 0), path
        assert "COURSEWIRE_MAX_" in answer["error"]["message"]


def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit(app: Any, api: Api) -> None:
    """A body without Content-Length is read only until it passes its limit, then answered 413."""
    chunk = 64 * 1024
    body = Body(b"[" * chunk)
    status, answer = _call(
        app, _scope("/odata/v2/Users", {**basic(api.secret), "content-type": "application/json"}), body
    )
    assert status == 413
    assert body.read <= api.settings.max_json_bytes + chunk
    upload = Body(b"x" * chunk)
    preamble = b'--b\r\nContent-Disposition: form-data; name="File"; filename="big.bin"\r\n\r\n'
    first = [{"type": "http.request", "body": preamble, "more_body": True}]

    async def streaming() -> dict[str, Any]:
        return first.pop() if first else await upload()

    headers = {**basic(api.secret), "content-type": "multipart/form-data; boundary=b"}
    status, answer = _call(app, _scope("/certificates/upload", headers), streaming)
    assert (status, answer["error"]["code"]) == (413, "PayloadTooLarge")
    assert upload.read <= api.settings.max_upload_bytes + 64 * 1024 + chunk


def test_a_chunked_json_body_within_the_limit_is_accepted(app: Any, api: Api) -> None:
    """Chunked bodies are not refused for lacking a Content-Length: they are read, measured and handled."""
    payload = json.dumps({"LoginName": "chunked@x.example"}).encode()
    parts = [payload[i : i + 7] for i in range(0, len(payload), 7)]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    headers = {**basic(api.secret), "content-type": "application/json", "transfer-encoding": "chunked"}
    status, answer = _call(app, _scope("/odata/v2/Users", headers), receive)
    assert (status, answer["LoginName"]) == (200, "chunked@x.example")


def test_the_json_limit_is_a_setting(settings: Settings, db: Database) -> None:
    """COURSEWIRE_MAX_JSON_BYTES moves the limit; uploads keep their own (COURSEWIRE_MAX_UPLOAD_BYTES)."""
    assert Settings.from_env({"COURSEWIRE_MAX_JSON_BYTES": "2048"}).max_json_bytes == 2048
    small = create_app(replace(settings, max_json_bytes=2048), db=db)
    from storage import apikeys

    secret = apikeys.create(db, "k", "full").secret
    with small.test_client() as client:
        big = client.post(
            "/odata/v2/Users", headers=basic(secret), json={"LoginName": "a@x.example", "Title": "t" * 3000}
        )
        assert big.status_code == 413
        assert (
            client.post("/odata/v2/Users", headers=basic(secret), json={"LoginName": "a@x.example"}).status_code == 200
        )


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000])
def test_deep_nesting_is_a_400_not_a_500(api: Api, depth: int) -> None:
    """The issue's example: 1,000 nested arrays answered 500; past MAX_DEPTH levels a body is a 400."""
    for body in ("[" * depth + "]" * depth, '{"x":' * depth + '"deep"' + "}" * depth):
        response = api.post("/odata/v2/Users", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert f"deeper than {MAX_DEPTH}" in error(response)["message"]


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        "[" * 100_000,
        '{"LoginName":"m@x.example","Zzz":[' + ",".join(["[" * 30 + "]" * 30] * 17_000) + "]}",
        json.dumps({"LoginName": "m@x.example", "Zzz": list(range(MAX_VALUES))}),
    ],
    ids=["deep", "unbalanced", "many-nested", "many-flat"],
)
def test_bodies_with_too_many_values_are_refused_before_parsing(api: Api, body: str) -> None:
    """A review's finding: 1 MiB of small nested arrays cost 1.8 s of server time each; a body holding more than
    MAX_VALUES values (or nested too deep) is a 400 judged on its bytes, before any object is built."""
    import time

    began = time.monotonic()
    response = api.post("/odata/v2/Users", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    assert "values" in error(response)["message"] or "deeper" in error(response)["message"]
    assert time.monotonic() - began < 0.5


def _reference(value: Any) -> tuple[int, int]:
    """(depth, values) the slow way: nesting of arrays/objects, and their items and members (an empty one: 1)."""
    if isinstance(value, list | dict):
        children = list(value.values() if isinstance(value, dict) else value)
        inner = [_reference(c) for c in children]
        return 1 + max((d for d, _ in inner), default=0), max(len(children), 1) + sum(v for _, v in inner)
    return 0, 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{},:"\\ é'),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet='k[]{}",\\'), children, max_size=4),
    max_leaves=40,
)


@given(value=JSON_VALUES, depth=st.integers(0, 8), values=st.integers(0, 40))
def test_the_shape_check_agrees_with_the_parsed_value(value: Any, depth: int, values: int) -> None:
    """Judged on the bytes, depth and value counts are exactly those of the parsed value, brackets and commas
    inside strings (escaped quotes included) never count."""
    ref_depth, ref_values = _reference(value)
    refused = shape_problem(json.dumps(value).encode(), depth, values)
    assert (refused is None) == (ref_depth <= depth and ref_values <= values), (refused, ref_depth, ref_values)


def test_nesting_within_the_bound_reaches_validation(api: Api) -> None:
    """A body nested MAX_DEPTH deep is parsed and judged by the schema (here: not an object), not by depth."""
    body = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    response = api.post("/odata/v2/Users", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "deeper" not in error(response)["message"]


def test_errors_quote_only_an_excerpt_of_a_large_value(api: Api) -> None:
    """A value of most of a megabyte comes back as a short excerpt and its length, never whole."""
    huge = "é" * 400_000
    for body in ({"LoginName": 5, "Title": huge}, {"LoginName": huge}, {"LoginName": "a@x.example", "Role": huge}):
        response = api.post("/odata/v2/Users", json=body)
        assert response.status_code == 400, response.text[:200]
        assert len(response.content) < 1200, response.text[:300]
    wrong_type = api.post("/odata/v2/Users", json={"LoginName": ["x" * 100] * 5000})
    assert (wrong_type.status_code, error(wrong_type)["target"]) == (400, "LoginName")
    assert len(wrong_type.content) < 1200


def test_schema_errors_name_the_field_at_any_depth(api: Api) -> None:
    """The target of a body's schema error is the path to the field, as `Parent.Child` and `Items[0].Field`."""
    response = api.post("/odata/v2/Users", json={"LoginName": "c@x.example", "UserFieldValues": [{"FieldTitle": 5}]})
    assert (response.status_code, error(response)["target"]) == (400, "UserFieldValues[0].FieldTitle")
    missing = api.post("/odata/v2/Users", json={"Title": "No login"})
    assert (missing.status_code, error(missing)["target"]) == (400, "LoginName")


def test_connexion_serves_no_document(client: Any, api: Api) -> None:
    """connexion would serve the document, rebuilt per call, at /swagger.json and /swagger.yaml before any
    authentication (seconds of CPU per anonymous call): anonymous callers get 401, keys 404. /swagger.json is
    coursewire's own, rendered once per address (tests/connector/test_served_document.py)."""
    for path in ("/swagger.yaml", "/openapi.json", "/ui/"):
        assert client.get(path).status_code == 401, path
        assert api.get(path).status_code == 404, path
    assert client.get("/swagger.json").json()["swagger"] == "2.0"


def test_http_request_past_its_concurrency_is_429_at_once(api: Api) -> None:
    """A call past the HttpRequest limit is refused at once with Retry-After, never left waiting on a worker thread
    (waiting calls stalled every request of the process)."""
    import time

    from connector.handlers import proxy

    taken = [proxy._SLOTS.acquire(blocking=False) for _ in range(proxy.MAX_CONCURRENT)]
    try:
        began = time.monotonic()
        response = api.post("/v2/httprequest", json={"method": "GET", "uri": "odata/v2/Users"})
        assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
        assert time.monotonic() - began < 1.0
    finally:
        for ok in taken:
            if ok:
                proxy._SLOTS.release()
    assert api.post("/v2/httprequest", json={"method": "GET", "uri": "odata/v2/Users"}).status_code == 200


def test_stored_json_keeps_characters_as_they_are(api: Api) -> None:
    """A bench finding: the event log stored each non-ASCII character as a `\\uXXXX` escape (a 4-byte character as
    12 bytes), tripling what a write of the largest allowed values stores. Now it stores the characters."""
    title = "東京𝄞" * 50
    user = api.ok(
        "POST",
        "/odata/v2/Users",
        json={
            "LoginName": "tokyo@x.example",
            "Title": title,
            "UserFieldValues": [{"FieldTitle": "Ort", "Value": title}],
        },
    )
    data = api.db.conn.execute("SELECT data FROM events WHERE user_id = ? AND type = 'UserCreated'", (user["Id"],))
    stored = data.fetchone()[0]
    assert title in stored and "\\u" not in stored
    values = api.db.conn.execute("SELECT field_values FROM users WHERE id = ?", (user["Id"],)).fetchone()[0]
    assert title in values
