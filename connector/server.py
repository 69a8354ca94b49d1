"""The HTTP/1.1 server protocol: uvicorn's httptools protocol, with limits on what a client costs before and while its
request reaches the app (request head size and time, body time, connections per process).

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
- `on_body` buffers the body for the app, or drops it once the response is complete (reading on meanwhile).
  Nothing in uvicorn limits a head's size or time, or a body's time: that is what this module adds.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from connector.limits import (
    BODYLESS,
    LINE_PREFIX,
    LINGER_BYTES,
    LINGER_SECONDS,
    MIN_UPLOAD_RATE,
    OVERLOADED_HEAD_SECONDS,
    UPLOAD_HOOK,
    body_timed_out,
    declared_body,
    head_timed_out,
    head_too_large,
    process_limits,
    unavailable_app,
    unavailable_body,
)

# Where a connection is in its current request.
_IDLE, _HEAD, _BODY, _CLOSING = range(4)

# This process's connections whose request head is pending (opened and silent, or part-sent), with the loop time
# it became pending, oldest first. A connection is here exactly while its head timer is armed.
_pending: dict[HttpProtocol, float] = {}
# Connections whose request body (not an upload's) is still arriving, with the loop time their head ended.
_bodies: dict[HttpProtocol, float] = {}


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of connector.limits, enforced on the wire whatever the app does
    with the request: head size (431) and time (408), body time (408; a body on GET/HEAD/DELETE, 400), and
    connections (503, displacing stalled heads and bodies first).
    """

    # In slots: uvicorn's class already keeps ~28 attributes in the instance dict, and past 30 CPython 3.11 stops
    # sharing its keys, which slowed every attribute access of the protocol (about 5 us a request, measured).
    __slots__ = (
        "_allowed",
        "_body_since",
        "_body_timeout",
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
        "_received",
        "_state",
        "_timer",
        "_upload",
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
        self._body_timeout = limits.body_timeout
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
        self._body_since, self._received, self._upload = 0.0, 0, False  # the current body's: see _arm_body

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
            elif self._state == _BODY and self._timer is None and not self.transport.is_closing():
                self._arm_body()
            return
        if self._state == _CLOSING:
            self._discard(len(data))
            return
        start, end = 0, len(data)
        view: memoryview | None = None
        while start < end:
            if self._state == _CLOSING:  # refused in the piece just parsed
                self._discard(end - start)
                return
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
        if self._state == _BODY and self._timer is None:
            self._arm_body()

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
        if self._state == _CLOSING:  # pipelined after a refused request: never served
            return
        super().on_message_begin()
        if self._state != _HEAD:  # pipelined: it began in a piece fed for the request before
            self._begin_head()

    def on_headers_complete(self) -> None:
        if self._state == _CLOSING:
            return
        self._state = _BODY
        self._deadline = None
        if self._timer is not None:
            self._cancel_timer()
        method = self.parser.get_method()
        if method in BODYLESS and (refusal := declared_body(method, self.headers)) is not None:
            self._refuse(400, refusal)
            return
        self._received, self._upload = 0, False
        limit = self.limit_concurrency
        # uvicorn's own test for its 503, below: make room first by giving up heads that are still pending, then
        # bodies that have been trickling in.
        while limit is not None and len(self.connections) >= limit:
            if _pending:
                next(iter(_pending))._refuse(503, unavailable_body(self._max_connections), b"retry-after: 1\r\n")
            elif _bodies and next(iter(_bodies.values())) <= self.loop.time() - OVERLOADED_HEAD_SECONDS:
                next(iter(_bodies))._refuse_body(503, unavailable_body(self._max_connections), b"retry-after: 1\r\n")
            else:
                break
        super().on_headers_complete()
        if method not in BODYLESS and self.cycle is not None:
            self.scope[UPLOAD_HOOK] = functools.partial(self._upload_body, self.cycle)  # type: ignore[literal-required]

    def on_body(self, body: bytes) -> None:
        if self._state == _CLOSING:
            return
        self._received += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._state == _CLOSING:
            return
        super().on_message_complete()
        self._state = _IDLE
        self._ended = True
        if self._timer is not None:  # the body's
            self._cancel_timer()

    # uvicorn hooks

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle  # not a pipelined request's: that one would be the protocol's cycle by now
        if self._state == _BODY and cycle is not None and cycle.response_complete and not self.transport.is_closing():
            # Answered before its body ended (uvicorn would read on, dropping it, for as long as the client sends):
            # close instead, lingering so the client reads the answer.
            self._close(linger=True)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if app is service_unavailable:
            app = cast(ASGI3Application, unavailable_app(self._max_connections))
        super()._start_asgi_task(cycle, app)

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
        self._refuse(431, head_too_large(self._max_head, self._line if self._past_request_line else None))

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
        self._refuse(408, head_timed_out(self._allowed, why))

    def _refuse(self, status: int, body: bytes, extra: bytes = b"") -> None:
        """Answer `status` with `body` and close: half-close, then read and discard what the client still sends
        for LINGER_SECONDS or LINGER_BYTES, so it reads the answer rather than a reset (RFC 9112 §9.6)."""
        self._state = _CLOSING
        self._cancel_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete and not self.cycle.disconnected:
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
        self._close(linger=True)

    def _close(self, linger: bool) -> None:
        """Stop serving the connection: half-close and discard what still comes for LINGER_SECONDS (so the client
        reads what was written), or close at once."""
        self._state = _CLOSING
        self._cancel_timer()
        # Closing: no longer one of the connections counted against max_connections (uvicorn's connection_lost
        # discards it again; graceful shutdown does not wait for it, its linger ends within LINGER_SECONDS).
        self.connections.discard(self)
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    # The body's limits

    def _arm_body(self) -> None:
        """The head ended in the read just parsed and its body is still to come: start the body's clock."""
        now = self.loop.time()
        self._body_since = now  # when its allowance started; _received: its bytes so far; _upload: a FileUpload's
        self._timer = self.loop.call_at(now + self._body_timeout, self._body_timed_out)
        _bodies[self] = now

    def _upload_body(self, cycle: RequestResponseCycle) -> None:
        """The app's word that the request of `cycle` is a FileUpload: its body may take as long as it arrives at
        MIN_UPLOAD_RATE on average (after the first `body_timeout` seconds), and is never displaced."""
        if cycle is self.cycle and self._state == _BODY:
            self._upload = True
            _bodies.pop(self, None)

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._state != _BODY:
            return
        now = self.loop.time()
        allowed = self._body_timeout + (self._received / MIN_UPLOAD_RATE if self._upload else 0.0)
        if self.flow.read_paused:  # the server stopped reading, not the client sending: start the allowance anew
            self._body_since = now - allowed + self._body_timeout
            allowed = self._body_timeout
        if now < self._body_since + allowed:
            self._timer = self.loop.call_at(self._body_since + allowed, self._body_timed_out)
            return
        _bodies.pop(self, None)
        self._refuse_body(408, body_timed_out(self._body_timeout, self._upload, self._received, now - self._body_since))

    def _refuse_body(self, status: int, body: bytes, extra: bytes = b"") -> None:
        """Answer `status` to a request whose body is still arriving (the app may be waiting for it: it is told the
        client left, and its answer goes nowhere) and close; only close if the app's answer has begun."""
        _bodies.pop(self, None)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self._close(linger=False)
                return
            cycle.disconnected = True
            cycle.message_event.set()
        self._refuse(status, body, extra)

    def _discard(self, count: int) -> None:
        self._discarded += count
        if self._discarded > LINGER_BYTES:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            _pending.pop(self, None)
            _bodies.pop(self, None)
