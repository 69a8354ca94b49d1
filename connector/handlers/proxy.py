"""Handlers for "Send an HTTP request": run the described request inside coursewire, as the caller.

The inner request goes through the whole stack (routing, validation, handlers) without leaving the
process, always as its caller: the same key and the same acting user, settled by the edge for the outer
request. Nothing in the described request can change that: an `Authorization` header is refused, and an
`LMS365-User-Id` is refused unless it names the user the call already acts as. Its status, headers and
body are the answer.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import threading
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from flask import Response

from connector import context
from connector.errors import HttpError
from storage import actors
from storage.errors import Invalid, excerpt
from storage.models import Actor

# Each proxied call holds one WSGI worker thread while its inner request needs another; three at once
# hold six of the app's ten threads (connector.app.WSGI_THREADS) and leave four for everything else.
MAX_CONCURRENT = 3
_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT)
_DROP_REQUEST_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
# Headers that say where the request came from: the inner request gets the outer one's, never the described ones.
_FORWARDED = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port")
_PASS_RESPONSE_HEADERS = {"content-type", "location", "retry-after", "allow", "www-authenticate"}
_TIMEOUT_SECONDS = 60
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _headers(raw: Any, actor: Actor) -> dict[str, str]:
    """The described headers, lower-cased, without those that only the outer request may set.

    Raises Invalid naming the header for a name or value HTTP cannot carry, an `Authorization` header, and an
    `LMS365-User-Id` (in any case, empty or not) that does not name the user the call acts as.
    """
    headers = {}
    for name, value in (raw or {}).items():
        text = "" if value is None else str(value)
        if not _TOKEN.fullmatch(name):
            raise Invalid(f"header name {excerpt(name)} is not a valid HTTP header name", target="headers")
        if not _FIELD_VALUE.fullmatch(text):
            raise Invalid(
                f"header {name} has a value HTTP cannot carry (line breaks or characters beyond Latin-1)",
                target=f"headers.{name}",
            )
        lowered = name.lower()
        if lowered == "authorization":
            raise Invalid(
                "headers: leave Authorization out; the request runs with the connection's own credentials",
                target=f"headers.{name}",
            )
        if lowered == "lms365-user-id":
            if not actors.same_user(context.services().db, actor, text):
                raise Invalid(
                    f"headers.{name} must name the user this call acts as, or be left out: the request always runs"
                    " as its caller (set LMS365-User-Id on the connection's request instead)",
                    target=f"headers.{name}",
                )
            continue
        if lowered in _FORWARDED:
            continue
        headers[lowered] = text
    return headers


def http_request(parameters: dict[str, Any]) -> Response:
    return _run(parameters, "/odata/v2/")


def http_request_v2(parameters: dict[str, Any]) -> Response:
    return _run(parameters, "/")


def resolve(uri: Any, prefix: str, base_url: str | None = None) -> tuple[str, str]:
    """Turn the described uri into (path, query) under `prefix`; raise Invalid (target `uri`) for escaping uris
    and for absolute ones other than this server's own links.

    A relative uri is read under `prefix` (`/odata/v2/` for HttpRequest, `/` for HttpRequest_v2). An absolute
    uri counts only when it is one of the links this server hands out (an `@odata.nextLink`, a `Location`):
    same scheme, host and port as `base_url` (connector.context.base_url: COURSEWIRE_PUBLIC_URL or the trusted
    request host), no user name or password, under its path; its path is then read from the server's root
    and must still lie under `prefix`. The request never leaves the process either way.
    """
    text = uri.strip() if isinstance(uri, str) else ""
    if not text:
        raise Invalid("uri must not be empty", target="uri")
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or text.startswith(("//", "\\")) or "\\" in text:
        own = _own_path(text, base_url)
        if own is None:
            example = "Courses" if prefix != "/" else "odata/v2/Courses"
            raise Invalid(
                f"uri {excerpt(text)} must be relative to {prefix} (e.g. {example}) or one of this server's own"
                f" links (starting {base_url or 'with its own address'}/); coursewire never sends requests to other"
                " hosts",
                target="uri",
            )
        relative, base = own.lstrip("/"), "/"
    else:
        relative, base = unquote(parts.path).lstrip("/"), prefix
    path = posixpath.normpath(base + relative)
    if prefix != "/" and not (path + "/").startswith(prefix):
        raise Invalid(f"uri {excerpt(text)} leaves {prefix}", target="uri")
    if ".." in relative.split("/"):
        raise Invalid(f"uri {excerpt(text)} must not contain '..' segments", target="uri")
    if path.rstrip("/") in ("/httprequest", "/v2/httprequest"):
        raise Invalid("uri must not point at the HttpRequest operation itself", target="uri")
    return path, parts.query


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _own_path(text: str, base_url: str | None) -> str | None:
    """The decoded path, from the server's root, of an absolute `text` that is a link under `base_url`; None for
    any other URL: another scheme, host or port, a user name or password (`https://ourhost@evil/` names the host
    `evil`; `https://evil@ourhost/` is refused too), a backslash, or a path outside the base path."""
    if not base_url or "\\" in text:
        return None
    link, own = urlsplit(text), urlsplit(base_url)
    if "@" in link.netloc or link.scheme.lower() != own.scheme.lower() or not link.hostname:
        return None
    try:
        link_port, own_port = link.port, own.port
    except ValueError:
        return None
    scheme = own.scheme.lower()
    if link.hostname != own.hostname or (link_port or _DEFAULT_PORTS.get(scheme)) != (
        own_port or _DEFAULT_PORTS.get(scheme)
    ):
        return None
    base_path = own.path.rstrip("/")
    if base_path and link.path != base_path and not link.path.startswith(base_path + "/"):
        return None
    return "/" + unquote(link.path[len(base_path) :]).lstrip("/")


def _run(parameters: dict[str, Any], prefix: str) -> Response:
    method = (parameters.get("method") or "GET").upper()
    path, query = resolve(parameters.get("uri"), prefix, context.base_url())
    headers = _headers(parameters.get("headers"), context.actor())
    body = parameters.get("body")
    payload = b"" if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    if payload and "content-type" not in headers:
        headers["content-type"] = "application/json"
    outer = context.scope()
    for name in _FORWARDED:
        value = context.header(name)
        if value is not None:
            headers[name] = value
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": outer.get("scheme", "http"),
        "path": path,
        "raw_path": quote(path).encode(),
        "root_path": "",
        "query_string": quote(query, safe="=&%+;/?:@,$!*'()~").encode(),
        "headers": [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items() if k not in _DROP_REQUEST_HEADERS
        ]
        + [
            (b"host", (context.header("Host") or "localhost").encode("latin-1")),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": outer.get("client"),
        "server": outer.get("server"),
        # The caller's identity, settled by the edge: the inner request is not authenticated again.
        "coursewire.key": context.api_key(),
        "coursewire.actor": context.actor(),
        "state": dict(outer.get("state") or {}),
    }
    # Never wait for a slot: a waiting call would hold a worker thread that the calls in progress need for
    # their inner requests, and enough waiting calls stall every request of the process.
    if not _SLOTS.acquire(blocking=False):
        raise HttpError(
            429,
            f"{MAX_CONCURRENT} HttpRequest calls are already running in this server process; retry shortly",
            headers={"Retry-After": "1"},
        )
    try:
        services = context.services()
        assert services.app is not None and services.loop is not None
        future = asyncio.run_coroutine_threadsafe(_call(services.app, scope, payload), services.loop)
        status, response_headers, content = future.result(_TIMEOUT_SECONDS)
    finally:
        _SLOTS.release()
    kept = {k: v for k, v in response_headers if k.lower() in _PASS_RESPONSE_HEADERS}
    return Response(content, status=status, headers=kept)


async def _call(app: Any, scope: dict[str, Any], payload: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    sent = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Event().wait()  # never disconnects: the outer caller is still waiting
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return int(start["status"]), headers, content
