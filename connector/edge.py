"""The ASGI middleware in front of connexion: Basic auth, throttling, who the request acts as, key access
level, route guard, and request body limits enforced before the body is read."""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.errors import HttpError
from connector.limits import UPLOAD_HOOK, BodyCounts
from connector.routes import CATCH_ALL as CATCH_ALL
from connector.routes import Route as Route
from connector.routes import canonical_ids, checked_numbers
from connector.routes import compile_routes as compile_routes
from connector.settings import Settings
from storage import actors, apikeys, ids, outbound
from storage.db import Database
from storage.models import Actor, ApiKey
from storage.ratelimit import RateLimiter
from storage.secrets import SecretBox

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# HttpRequest wraps another request; the wrapped request is checked when it runs.
PROXY_PATHS = frozenset({"/httprequest", "/v2/httprequest"})
# First path segments that belong to the API; POSTs under them never fall through to FileUpload.
RESERVED_SEGMENTS = frozenset({"odata", "webhooks", "httprequest", "v2", "healthz"})
# An upload's multipart framing (boundaries, part headers, other fields) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# Control characters (a percent-encoded newline, say) are never part of an id, name or file path.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# A Host header (RFC 9110 §7.2): a DNS name or IPv4 address by certification.export.HOST_PATTERN's rule (labels
# of letters, digits and inner hyphens, none empty: no `a..b`, no trailing dot), or a bracketed IPv6 literal; and
# a port from 1 to 65535, in ASCII digits. Links are built from it, and a catalog's Url keeps it.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\]){_PORT}")
MAX_HOST = 255


@dataclass
class Services:
    """What handlers need, built once per process by the app factory and put in every request's scope."""

    settings: Settings
    db: Database
    limiter: RateLimiter | None
    box: SecretBox
    resolve: Callable[[str], list[str]] = outbound.resolve  # DNS for the callback check at subscribe time
    app: ASGIApp | None = None
    loop: asyncio.AbstractEventLoop | None = None
    routes: list[Route] = field(default_factory=list)


def _credentials(scope: Scope) -> tuple[str, str]:
    header = ""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            header = value.decode("latin-1")
            break
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise HttpError(
            401,
            "authenticate with Basic auth: username 'api', password an API key (coursewire apikey create)",
            headers={"WWW-Authenticate": 'Basic realm="coursewire"'},
        )
    try:
        username, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise HttpError(
            401,
            "the Authorization header is not valid Basic credentials",
            headers={"WWW-Authenticate": 'Basic realm="coursewire"'},
        ) from None
    return username, password


class EdgeMiddleware:
    """Authenticates, throttles and checks the key's access before connexion routes the request."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.receiving = BodyCounts(services.settings.max_connections)  # this process's

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = self.services
        if services.loop is None:
            services.loop = asyncio.get_running_loop()
        scope["coursewire"] = services
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method in READ_METHODS:
            await _plain(send, 200, b'{"status":"ok"}')
            return
        if "coursewire.key" not in scope:  # requests re-dispatched by HttpRequest carry their caller's identity
            # One indexed read, on the loop: WAL readers never wait for writers, and a hop to a thread
            # cost more than the query (bench: 0.76x -> 0.87x of bare connexion's GET throughput).
            key = self._authenticate(scope)
            limiter = self.services.limiter
            if limiter is not None:
                # Charging the limit is a write, which may wait for SQLite's lock: never on the loop.
                await asyncio.to_thread(_charge, limiter, key)
            scope["coursewire.key"] = key
            # Who the request acts as is settled here, once, for reads and writes alike.
            scope["coursewire.actor"] = self._actor(scope, key)
        key = scope["coursewire.key"]
        if key.access != "full" and method not in READ_METHODS and path not in PROXY_PATHS:
            raise HttpError(403, f"API key '{key.name}' is Read Only: writes need a Full Control key")
        if CONTROL_CHARACTERS.search(path):
            raise HttpError(400, "the path contains a control character (such as a newline); ids and file paths cannot")
        hosts = header_values(scope, b"host")
        if len(hosts) > 1 or (hosts and not _is_host(hosts[0])):
            raise HttpError(400, "the Host header must be one host name or address, with an optional port", "Host")
        self._check_forwarded(scope)
        route = self._guard(path, method)
        if route is not None:
            canonical_ids(scope, route, method)
            checked_numbers(scope, route, method)
        elif (upload_body := scope.get(UPLOAD_HOOK)) is not None:
            upload_body()  # the server's body clock: an upload's own allowance (connector.server)
        declared = any(name in (b"content-length", b"transfer-encoding") for name, _ in scope.get("headers", []))
        release = self.receiving.admit(key) if declared else _nothing
        try:
            bounded = await self._bounded(scope, receive, route is None, release)
            if bounded is not None:  # None: the client left (or the server gave up on it) before its body ended
                await self.app(scope, bounded, send)
        finally:
            release()

    def _check_forwarded(self, scope: Scope) -> None:
        """X-Forwarded-Proto/Host of a trusted proxy steer links (connector.context.base_url), so they must be what
        they claim: the value the nearest proxy added (the last) is `http`/`https` and one host[:port]."""
        settings = self.services.settings
        client = scope.get("client")
        if settings.public_url or not settings.trusts(str(client[0]) if client else None):
            return
        proto, host = forwarded(scope, b"x-forwarded-proto"), forwarded(scope, b"x-forwarded-host")
        if proto is not None and proto.lower() not in ("http", "https"):
            raise HttpError(400, "X-Forwarded-Proto from the proxy must be http or https", "X-Forwarded-Proto")
        if host is not None and not _is_host(host):
            raise HttpError(
                400,
                "X-Forwarded-Host from the proxy must be one host name or address, with an optional port",
                "X-Forwarded-Host",
            )

    def _actor(self, scope: Scope, key: ApiKey) -> Actor:
        values = header_values(scope, b"lms365-user-id")
        if len(values) > 1:
            raise HttpError(400, f"send {actors.HEADER} once: it names the one user the call acts as", actors.HEADER)
        if values and ids.is_guid(values[0]):
            # A user Id or DirectoryObjectId in any case or in braces: the header is passed on as stored.
            stored = ids.canonical(values[0])
            scope["headers"] = [
                (k, stored.encode("latin-1") if k == b"lms365-user-id" else v) for k, v in scope["headers"]
            ]
            values = [stored]
        return actors.resolve_actor(self.services.db, key, values[0] if values else None)

    async def _bounded(self, scope: Scope, receive: Receive, upload: bool, ended: Callable[[], None]) -> Receive | None:
        """A receive channel that never lets a body past its limit: a declared Content-Length over it is a 413
        before anything is read; JSON and other bodies are read here, up to the limit, and replayed; an
        upload streams on, counted, and is cut off with a 413 as soon as it passes its limit. `ended` is called
        once the body has all arrived. None when the client disconnected before its JSON body ended."""
        settings = self.services.settings
        limit, setting = (
            (
                settings.max_upload_bytes + MULTIPART_OVERHEAD,
                f"COURSEWIRE_MAX_UPLOAD_BYTES={settings.max_upload_bytes} for the file,"
                f" plus {MULTIPART_OVERHEAD // 1024} KiB of multipart framing",
            )
            if upload
            else (settings.max_json_bytes, f"COURSEWIRE_MAX_JSON_BYTES={settings.max_json_bytes}")
        )
        lengths = header_values(scope, b"content-length")
        if lengths:
            if len(set(lengths)) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
                raise HttpError(400, "the Content-Length header is not one whole number", "Content-Length")
            declared = int(lengths[0])
            if declared > limit:
                raise HttpError(413, _too_large(f"is {declared:,} bytes", limit, setting))
        if upload:
            return _counting(receive, limit, setting, ended)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            if len(body) > limit:
                raise HttpError(413, _too_large("passed the limit", limit, setting))
            if not message.get("more_body", False):
                break
        ended()
        if not lengths and body:
            # A chunked body, now whole: tell what follows its length, as if it had been declared.
            scope["headers"] = [
                (k, v) for k, v in scope["headers"] if k not in (b"transfer-encoding", b"content-length")
            ] + [(b"content-length", str(len(body)).encode())]
        return _replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive)

    def _authenticate(self, scope: Scope) -> ApiKey:
        username, password = _credentials(scope)
        if username != "api":
            raise HttpError(
                401,
                "the username must be 'api' (the password is the API key)",
                headers={"WWW-Authenticate": 'Basic realm="coursewire"'},
            )
        key = apikeys.authenticate(self.services.db, password)
        if key is None:
            raise HttpError(401, "unknown or revoked API key", headers={"WWW-Authenticate": 'Basic realm="coursewire"'})
        return key

    def _guard(self, path: str, method: str) -> Route | None:
        """The Route of a path and method of the spec; None for FileUpload's catch-all (a POST to any other
        path); 404/405 for paths the spec lacks, which the catch-all would otherwise swallow."""
        allowed: set[str] = set()
        for route in self.services.routes:
            if route.pattern.match(path):
                if method in route.methods:
                    return route
                allowed |= route.methods
        if allowed:
            raise HttpError(
                405,
                f"{path} accepts {', '.join(sorted(allowed))}, not {method}",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        first = path.strip("/").split("/", 1)[0].lower()
        if method != "POST" or first in RESERVED_SEGMENTS or path == "/":
            raise HttpError(404, f"no operation at {method} {path}; see the connector definition")
        return None


def _is_host(text: str) -> bool:
    return len(text) <= MAX_HOST and HOST.fullmatch(text) is not None


def forwarded(scope: Scope, name: bytes) -> str | None:
    """The value of an X-Forwarded-* header that the nearest proxy added: the last of a comma-separated list
    (proxies such as Apache's mod_proxy append to what the client sent), or None without one."""
    values = header_values(scope, name)
    if not values:
        return None
    return ",".join(values).rsplit(",", 1)[-1].strip()


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of one request header (`name` in lower case), in order."""
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def _too_large(what: str, limit: int, setting: str) -> str:
    return f"the request body {what}; at most {limit:,} bytes are accepted here ({setting})"


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive channel that answers `first`, then passes on to `receive`."""
    pending: list[Message] = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _counting(receive: Receive, limit: int, setting: str, ended: Callable[[], None]) -> Receive:
    """`receive`, raising a 413 HttpError as soon as the body has passed `limit` bytes, and calling `ended` once
    its last part (or a disconnect) has come."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise HttpError(413, _too_large("passed the limit", limit, setting))
        if not message.get("more_body", False):
            ended()
        return message

    return counted


def _charge(limiter: RateLimiter, key: ApiKey) -> None:
    """Count the call against its key's limit (at most `calls` in any `period` seconds, storage.ratelimit).

    Raises HttpError 429 when the window is full, with `Retry-After` in whole seconds rounded up (RFC 9110
    §10.2.3), so a retry after that many seconds finds a place (unless other calls on the key took it first).
    """
    wait = limiter.acquire(key.id)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise HttpError(
            429,
            f"rate limit of {limiter.calls} calls in any {limiter.period:g} seconds reached for this API key;"
            f" the next call will be accepted in {seconds} s (Retry-After)",
            headers={"Retry-After": str(seconds)},
        )


def _nothing() -> None:
    """What ends the count of a request without a body."""


async def _plain(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
