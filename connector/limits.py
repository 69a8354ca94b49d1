"""The limits a server process applies to every connection and request, and the OData error bodies of their
refusals. connector.server.HttpProtocol enforces them on the wire, before or beside the app:

- Head size: the bytes of each request's line and headers are counted as they arrive, before httptools
  buffers them; past `max_bytes` the answer is `431 Request Header Fields Too Large` (RFC 6585 §5) with the
  OData error naming the header being received (or `request-target` for the request line), and the
  connection is closed without parsing further. Each request on a keep-alive connection is counted from its
  first byte. Of a pipelined request that starts in the same read as the end of the one before, the bytes
  after the read's last blank line are counted (exact unless the earlier request ended with a
  Content-Length body, then an over-estimate by at most that read).
- Head time: a request's line and headers must be complete within `timeout` seconds of its first byte (of
  the connection's opening, for its first request); otherwise `408 Request Timeout` (RFC 9110 §15.5.9) and
  close. A head trickled byte by byte does not extend the deadline. Idle keep-alive connections are uvicorn's
  `timeout_keep_alive`'s to close; time during which the server itself stopped reading (a pipelined request
  waiting for the response before it) does not count.
- Body: a GET, HEAD or DELETE that declares a body (`Content-Length` over 0, or `Transfer-Encoding`) is answered
  400 naming that header before any of it is read, and closed. Any other body must be complete within
  `body_timeout` seconds of the head's end; a FileUpload's (the app says which, through the scope's UPLOAD_HOOK)
  within that plus one second per MIN_UPLOAD_RATE bytes received: a minimum average rate. Otherwise 408 and close
  (only the close, once a response has begun). Time during which the server stopped reading (the app not taking
  the body yet) starts the allowance anew. A response completed before its body has all arrived (a 401, 403, 413,
  429...) closes the connection rather than reading on.
- Connections: a request whose head is complete while the process holds `max_connections` connections
  displaces those whose head is still pending, longest pending first, then those whose body (not an upload's)
  has been arriving for over OVERLOADED_HEAD_SECONDS, longest first (each gets a 503 and is closed), so
  half-open requests cannot keep prompt clients out; only when the others are serving requests or idle
  between them does uvicorn's `limit_concurrency` answer 503, here as the OData error with `Retry-After: 1`
  (RFC 9110 §15.6.4, §10.2.3). A connection that arrives past `max_connections` gets
  OVERLOADED_HEAD_SECONDS, not `timeout`, to send its head. A connection being closed after a refusal no
  longer counts.

408 and 431 are written only when no response to an earlier pipelined request is under way on the
connection (they would interleave with it); otherwise that response is finished and the connection closed.

connector.edge adds one per API key: BodyCounts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from connector import errors
from connector.errors import HttpError
from connector.settings import Settings
from storage.models import ApiKey

# A connection that arrives while its process already serves max_connections must send its head within this
# many seconds (or header_timeout if shorter): descriptors held by a flood of half-open requests then stay near
# max_connections + (new connections per second) x 1 s, instead of x header_timeout.
OVERLOADED_HEAD_SECONDS = 1.0
# After a 408 or 431 the server half-closes and reads (discarding) what the client still sends, for at most this
# long or this many bytes, so the client reads the answer instead of a reset (RFC 9112 §9.6).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
# How much of the head's current line is kept, to name the header at fault in a 431.
LINE_PREFIX = 80
# After its first COURSEWIRE_BODY_TIMEOUT seconds a FileUpload body must have averaged at least this many bytes a
# second since its head ended. 50 MiB over a 64 kbit/s link (8 KiB/s) takes under two hours and stays 8x above it;
# a client holding a connection with a trickle pays 1 KiB/s for it (and a key holds few: connector.edge).
MIN_UPLOAD_RATE = 1024
# The scope key of the protocol's hook by which the app says a request's body is a FileUpload's (connector.edge).
UPLOAD_HOOK = "coursewire.upload_body"
# Methods whose requests carry no body here: one that declares a body is refused before it is read.
BODYLESS = frozenset({b"GET", b"HEAD", b"DELETE"})
# One API key may have at most one in this many of COURSEWIRE_MAX_CONNECTIONS (at least one) requests whose body is
# still arriving in one server process: slow bodies of one key cannot hold every connection.
BODIES_PER_KEY_SHARE = 10


@dataclass(frozen=True)
class HeadLimits:
    """The limits one server process applies to every connection.

    max_bytes: bytes of a request's line and headers (COURSEWIRE_MAX_HEADER_BYTES);
    timeout: seconds to send them (COURSEWIRE_HEADER_TIMEOUT);
    max_connections: connections served at once (COURSEWIRE_MAX_CONNECTIONS);
    body_timeout: seconds to send a body once the head is complete (COURSEWIRE_BODY_TIMEOUT).
    """

    max_bytes: int
    timeout: float
    max_connections: int
    body_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(settings.max_header_bytes, settings.header_timeout, settings.max_connections, settings.body_timeout)


@functools.cache
def process_limits() -> HeadLimits:
    """This process's limits, read once from the COURSEWIRE_* environment `serve` passes to uvicorn's workers.

    Raises SettingsError (naming the variable) if the environment is invalid; `serve` checked it before starting.
    """
    return HeadLimits.from_settings(Settings.from_env())


@functools.cache
def unavailable_body(max_connections: int) -> bytes:
    """The 503's OData error body (cached: a flood of half-open requests may be given up thousands at a time)."""
    return errors.body(
        503,
        f"this server process is serving its maximum of {max_connections:,} connections"
        f" (COURSEWIRE_MAX_CONNECTIONS={max_connections}); retry in a moment",
    )


@functools.cache
def unavailable_app(max_connections: int) -> ASGIApp:
    """The app that answers uvicorn's 503 past limit_concurrency: the OData error with Retry-After (RFC 9110
    §15.6.4)."""
    body = unavailable_body(max_connections)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]

    async def unavailable(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return unavailable


def head_too_large(max_bytes: int, line: bytes | None) -> bytes:
    """The 431's OData error body for a head over `max_bytes`, naming the header whose `line` (its start) was being
    received, or the request-target while `line` is None (still in the request line)."""
    target: str | None
    if line is None:
        target, what = "request-target", "the URL (a long $filter list can often be shortened with `in`)"
    else:
        name = line.split(b":", 1)[0].strip().decode("latin-1")[:64]
        target, what = name or None, f"the {name} header" if name else "the headers"
    message = (
        f"the request line and headers are larger than {max_bytes:,} bytes, the most this server accepts"
        f" (COURSEWIRE_MAX_HEADER_BYTES={max_bytes}); shorten {what}"
    )
    return errors.body(431, message, target)


def head_timed_out(allowed: float, why: str) -> bytes:
    """The 408's OData error body for a head not complete within `allowed` seconds, `why` naming the setting."""
    message = (
        f"the request line and headers did not arrive within {allowed:g} seconds ({why});"
        " send the request's head at once"
    )
    return errors.body(408, message)


def body_timed_out(timeout: float, upload: bool, received: int, seconds: float) -> bytes:
    """The 408's OData error body for a body that arrived too slowly: `received` bytes in `seconds`, against
    COURSEWIRE_BODY_TIMEOUT `timeout` (and, for an upload, the minimum average rate after it)."""
    if upload:
        message = (
            f"the upload arrived slower than {MIN_UPLOAD_RATE:,} bytes a second on average after its first"
            f" {timeout:g} seconds ({received:,} bytes in {seconds:.0f} s; COURSEWIRE_BODY_TIMEOUT={timeout:g});"
            " send it at once"
        )
    else:
        message = (
            f"the request body did not arrive within {timeout:g} seconds of its headers"
            f" (COURSEWIRE_BODY_TIMEOUT={timeout:g}); send it at once"
        )
    return errors.body(408, message)


def declared_body(method: bytes, headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The 400's OData error body when a request of a bodyless `method` declares a body, else None."""
    for name, value in headers:
        if (name == b"content-length" and value.strip(b" \t0")) or name == b"transfer-encoding":
            header = "Content-Length" if name == b"content-length" else "Transfer-Encoding"
            message = (
                f"a {method.decode()} request carries no body here, and this one declares one ({header}:"
                f" {value[:20].decode('latin-1')}); send it without a body"
            )
            return errors.body(400, message, header)
    return None


class BodyCounts:
    """The requests of each API key whose body is still arriving in this process (used on its event loop only), at
    most `cap` per key: max_connections // BODIES_PER_KEY_SHARE, at least 1."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.cap = max(1, max_connections // BODIES_PER_KEY_SHARE)
        self.counts: dict[str, int] = {}

    def admit(self, key: ApiKey) -> Callable[[], None]:
        """Count one more request of `key` whose body is to be read, and return what ends the count (idempotent).

        Raises HttpError 429 with Retry-After (RFC 6585 §4) when the key already has `cap` of them.
        """
        counts = self.counts
        if counts.get(key.id, 0) >= self.cap:
            raise HttpError(
                429,
                f"API key '{key.name}' already has {self.cap} requests whose bodies are still arriving at this server"
                f" process, its share of COURSEWIRE_MAX_CONNECTIONS={self.max_connections} (one in"
                f" {BODIES_PER_KEY_SHARE}); finish sending those first",
                headers={"Retry-After": "1"},
            )
        counts[key.id] = counts.get(key.id, 0) + 1
        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                if counts[key.id] <= 1:
                    del counts[key.id]
                else:
                    counts[key.id] -= 1

        return release
