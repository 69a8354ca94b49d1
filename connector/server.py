"""The HTTP/1.1 server protocol: uvicorn's httptools protocol, with limits on what a client costs before its request
reaches the app (request head size and time, connections per process).

`coursewire serve` passes `HttpProtocol` to uvicorn as `http=`; each worker process builds one per connection.
What this relies on in uvicorn 0.54 (uvicorn/protocols/http/httptools_impl.py, `HttpToolsProtocol`):

- `data_received` feeds each read to httptools (`parser.feed_data`), answers 400 and closes the transport on a
  parse error, and first cancels the keep-alive timer. httptools (parser.pyx `_on_header_value`) concatenates the
  pieces of a header value split across reads, and uvicorn's `on_url` concatenates the URL's: a header streamed
  in N reads costs O(N^2) copying. So the bytes are counted here, before they reach the parser.
- The parser calls `on_message_begin`, `on_headers_complete` (where uvicorn builds the scope, answers 503 with
  `flow_control.service_unavailable` once `len(connections) >= limit_concurrency` -- counting the connection
  asking -- or `len(tasks) >= limit_concurrency`, and starts or queues the request's task through
  `_start_asgi_task`) and `on_message_complete`, synchronously inside `feed_data`.
- `on_response_complete` arms `timeout_keep_alive` (closing an idle keep-alive connection silently); a pipelined
  request arriving while a response is under way pauses reading (`flow.pause_reading`) until that response ends.
- `server_state.connections` is the set uvicorn counts for its 503 and waits on at graceful shutdown; it adds a
  connection in `connection_made` and discards it in `connection_lost`.
- Nothing in uvicorn limits a request head's size or the time it takes; no timer runs between a connection's
  opening and its first request. Those are what this module adds.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, cast

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from connector import errors
from connector.settings import Settings

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

# Where a connection is in its current request.
_IDLE, _HEAD, _BODY, _CLOSING = range(4)

# This process's connections whose request head is pending (opened and silent, or part-sent), with the loop time
# it became pending, oldest first. A connection is here exactly while its head timer is armed.
_pending: dict[HttpProtocol, float] = {}


@dataclass(frozen=True)
class HeadLimits:
    """The limits one server process applies to every connection.

    max_bytes: bytes of a request's line and headers (COURSEWIRE_MAX_HEADER_BYTES);
    timeout: seconds to send them (COURSEWIRE_HEADER_TIMEOUT);
    max_connections: connections served at once (COURSEWIRE_MAX_CONNECTIONS).
    """

    max_bytes: int
    timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(settings.max_header_bytes, settings.header_timeout, settings.max_connections)


@functools.cache
def process_limits() -> HeadLimits:
    """This process's limits, read once from the COURSEWIRE_* environment `serve` passes to uvicorn's workers.

    Raises SettingsError (naming the variable) if the environment is invalid; `serve` checked it before starting.
    """
    return HeadLimits.from_settings(Settings.from_env())


@functools.cache
def _unavailable_body(max_connections: int) -> bytes:
    """The 503's OData error body (cached: a flood of half-open requests may be given up thousands at a time)."""
    return errors.body(
        503,
        f"this server process is serving its maximum of {max_connections:,} connections"
        f" (COURSEWIRE_MAX_CONNECTIONS={max_connections}); retry in a moment",
    )


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with three limits, all enforced before the app sees the request:

    - Head size: the bytes of each request's line and headers are counted as they arrive, before httptools
      buffers them; past `max_bytes` the answer is `431 Request Header Fields Too Large` (RFC 6585 §5) with the
      OData error naming the header being received (or `request-target` for the request line), and the
      connection is closed without parsing further. Each request on a keep-alive connection is counted from its
      first byte. Of a pipelined request that starts in the same read as the end of the one before, the bytes
      after the read's last blank line are counted (exact unless the earlier request ended with a
      Content-Length body, then an over-estimate by at most that read).
    - Head time: a request's line and headers must be complete within `timeout` seconds of its first byte (of
      the connection's opening, for its first request); otherwise `408 Request Timeout` (RFC 9110 §15.5.9) and
      close. A head trickled byte by byte does not extend the deadline. Bodies are not covered: once the head is
      complete a slow upload may take as long as it needs. Idle keep-alive connections are uvicorn's
      `timeout_keep_alive`'s to close; time during which the server itself stopped reading (a pipelined request
      waiting for the response before it) does not count.
    - Connections: a request whose head is complete while the process holds `max_connections` connections
      displaces those whose head is still pending, longest pending first (each gets a 503 and is closed), so
      half-open requests cannot keep prompt clients out; only when the others are serving requests or idle
      between them does uvicorn's `limit_concurrency` answer 503, here as the OData error with `Retry-After: 1`
      (RFC 9110 §15.6.4, §10.2.3). A connection that arrives past `max_connections` gets
      OVERLOADED_HEAD_SECONDS, not `timeout`, to send its head. A connection being closed after a refusal no
      longer counts.

    408 and 431 are written only when no response to an earlier pipelined request is under way on the
    connection (they would interleave with it); otherwise that response is finished and the connection closed.
    """

    # In slots: uvicorn's class already keeps ~28 attributes in the instance dict, and past 30 CPython 3.11 stops
    # sharing its keys, which slowed every attribute access of the protocol (about 5 us a request, measured).
    __slots__ = (
        "_allowed",
        "_deadline",
        "_discarded",
        "_ended",
        "_head_bytes",
        "_head_timeout",
        "_line",
        "_linger",
        "_max_connections",
        "_max_head",
        "_overloaded",
        "_past_request_line",
        "_state",
        "_timer",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = process_limits()
        self._max_head = limits.max_bytes
        self._head_timeout = limits.timeout
        self._max_connections = limits.max_connections
        self._state = _IDLE
        self._head_bytes = 0  # of the current request's line and headers so far
        self._deadline: float | None = None  # loop time by which the current head must be complete
        self._allowed = limits.timeout  # seconds the current head was given
        self._overloaded = False  # the connection arrived past max_connections
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False  # a request ended during the current feed
        self._line = b""  # the start of the head's current line, as far as it has been read
        self._past_request_line = False
        self._linger: asyncio.TimerHandle | None = None
        self._discarded = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        now = self.loop.time()
        if len(self.connections) > self._max_connections:  # this one included
            self._overloaded = True
            self._allowed = min(self._head_timeout, OVERLOADED_HEAD_SECONDS)
        self._deadline = now + self._allowed
        self._arm(now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed `data` to the parser, at most as much of a head as its limit leaves room for at a time."""
        if self._state == _IDLE and len(data) <= self._max_head:  # the usual read: a whole head within the limit
            self._begin_head()
            self._head_bytes = len(data)
            self._ended = False
            HttpToolsProtocol.data_received(self, data)
            if self._state == _HEAD and not self.transport.is_closing():
                self._head_left(data, 0, len(data))
            return
        if self._state == _CLOSING:
            self._discard(len(data))
            return
        start, end = 0, len(data)
        view: memoryview | None = None
        while start < end:
            if self._state == _BODY:
                stop = end
            else:
                if self._state == _IDLE:
                    self._begin_head()
                room = self._max_head - self._head_bytes
                if room <= 0:
                    self._refuse_too_large()
                    return
                stop = min(end, start + room)
                self._head_bytes += stop - start
            self._ended = False
            if start == 0 and stop == end:
                super().data_received(data)
            else:  # httptools reads any buffer: a memoryview slice is not a copy
                view = view or memoryview(data)
                super().data_received(cast(bytes, view[start:stop]))
            if self.transport.is_closing():  # uvicorn answered 400 to what httptools could not parse
                return
            if self._state == _HEAD and not self._head_left(data, start, stop):
                return
            start = stop

    def _head_left(self, data: bytes, start: int, stop: int) -> bool:
        """A head is incomplete after `data[start:stop]` was parsed: recount it if it began inside (pipelined),
        keep its current line, refuse it if too large (False), otherwise make sure its clock runs (True)."""
        head_start = start
        if self._ended:  # a pipelined request began after the one before ended inside this piece
            blank = data.rfind(b"\r\n\r\n", start, stop)
            head_start = start if blank < 0 else blank + 4
            self._head_bytes = stop - head_start
        self._remember_line(data, head_start, stop)
        if self._head_bytes > self._max_head:
            self._refuse_too_large()
            return False
        if self._timer is None:
            self._arm(self.loop.time())
        return True

    # httptools parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._state != _HEAD:  # pipelined: it began in a piece fed for the request before
            self._begin_head()

    def on_headers_complete(self) -> None:
        self._state = _BODY
        self._deadline = None
        if self._timer is not None:
            self._cancel_timer()
        limit = self.limit_concurrency
        # uvicorn's own test for its 503, below: make room first by giving up heads that are still pending.
        while limit is not None and len(self.connections) >= limit and _pending:
            next(iter(_pending))._refuse(503, _unavailable_body(self._max_connections), b"retry-after: 1\r\n")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._state = _IDLE
        self._ended = True

    # uvicorn hooks

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if app is service_unavailable:
            app = self._service_unavailable
        super()._start_asgi_task(cycle, app)

    async def _service_unavailable(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """uvicorn's 503 past limit_concurrency, as the OData error with Retry-After (RFC 9110 §15.6.4)."""
        body = _unavailable_body(self._max_connections)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # The limits

    def _begin_head(self) -> None:
        """The first byte of a request's head has arrived: count from zero. Its clock starts in `_arm`, if the
        head is still incomplete once the read is parsed (the connection's own, from its opening, may run)."""
        self._state = _HEAD
        self._head_bytes = 0
        self._line = b""
        self._past_request_line = False

    def _arm(self, now: float) -> None:
        """Start the current head's timer (its deadline from the connection's opening, or from now: the read
        that brought the head's first byte) and list the connection as pending since now."""
        if self._deadline is None:
            self._allowed = self._head_timeout
            self._deadline = now + self._allowed
        self._timer = self.loop.call_at(self._deadline, self._head_timed_out)
        _pending[self] = now

    def _remember_line(self, data: bytes, start: int, stop: int) -> None:
        """Keep the start of the line the head has reached in `data[start:stop]`, to name it if it is refused."""
        newline = data.rfind(b"\n", start, stop)
        if newline >= 0:
            self._past_request_line = True
            self._line = data[newline + 1 : min(stop, newline + 1 + LINE_PREFIX)]
        elif len(self._line) < LINE_PREFIX:
            self._line += data[start : min(stop, start + LINE_PREFIX - len(self._line))]

    def _refuse_too_large(self) -> None:
        target: str | None
        if not self._past_request_line:
            target, what = "request-target", "the URL (a long $filter list can often be shortened with `in`)"
        else:
            name = self._line.split(b":", 1)[0].strip().decode("latin-1")[:64]
            target, what = name or None, f"the {name} header" if name else "the headers"
        message = (
            f"the request line and headers are larger than {self._max_head:,} bytes, the most this server accepts"
            f" (COURSEWIRE_MAX_HEADER_BYTES={self._max_head}); shorten {what}"
        )
        self._refuse(431, errors.body(431, message, target))

    def _head_timed_out(self) -> None:
        self._timer = None
        _pending.pop(self, None)
        if self.transport.is_closing() or self._state not in (_IDLE, _HEAD):
            return
        if self.flow.read_paused:  # the server stopped reading, not the client sending
            self._deadline = None
            self._arm(self.loop.time())
            return
        if self._overloaded and self._allowed < self._head_timeout:
            why = f"the server was at COURSEWIRE_MAX_CONNECTIONS={self._max_connections}"
        else:
            why = f"COURSEWIRE_HEADER_TIMEOUT={self._head_timeout:g}"
        message = (
            f"the request line and headers did not arrive within {self._allowed:g} seconds ({why});"
            " send the request's head at once"
        )
        self._refuse(408, errors.body(408, message))

    def _refuse(self, status: int, body: bytes, extra: bytes = b"") -> None:
        """Answer `status` with `body` and close: half-close, then read and discard what the client still sends
        for LINGER_SECONDS or LINGER_BYTES, so it reads the answer rather than a reset (RFC 9112 §9.6)."""
        self._state = _CLOSING
        self._cancel_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            # A response to an earlier (pipelined) request is under way: finish it, then uvicorn closes.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            extra,
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        # Closing: no longer one of the connections counted against max_connections (uvicorn's connection_lost
        # discards it again; graceful shutdown does not wait for it, its linger ends within LINGER_SECONDS).
        self.connections.discard(self)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _discard(self, count: int) -> None:
        self._discarded += count
        if self._discarded > LINGER_BYTES:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            _pending.pop(self, None)
