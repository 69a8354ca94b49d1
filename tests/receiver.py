"""A real HTTP receiver on 127.0.0.1 for webhook tests: records every POST and answers as scripted."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)  # type: ignore[no-any-return]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once this is set (a slow receiver)


class Server(ThreadingHTTPServer):
    """A thread per connection, and a listen queue as long as a production server's.

    socketserver's default `request_queue_size` of 5 is too short for the worker, which opens up to
    `DeliveryConfig.concurrency` (200) connections to one host at once, while this server accepts one
    connection per turn of its loop: the kernel drops the SYNs past the sixth, and TCP sends them again
    only after 1, 3, 7, 15 and 31 s, so the last of them outlast the attempt's 30 s timeout. 1024 is
    the order of what nginx (511), uvicorn and gunicorn (2048) ask for; Linux caps it at somaxconn.
    """

    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.connections = 0  # accepted so far: one per request unless connections are kept alive
        super().__init__(("127.0.0.1", 0), handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        request = super().get_request()
        self.connections += 1
        return request


class Receiver:
    """Answers each POST with the next scripted Reply (then `default`), and keeps what it received.

    It speaks HTTP/1.1 and keeps connections alive between requests, as a flow's callback does.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: every answer carries its Content-Length

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, raw))
                    reply = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.arrived.notify_all()
                if reply.hold is not None:
                    reply.hold.wait(30)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the sender gave up (timed out, or was killed) before the answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = Server(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until `count` requests have arrived (a condition, not a sleep)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self.received)}")
            return list(self.received)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return self.server.connections

    def notifications(self) -> list[dict[str, Any]]:
        return [n for r in self.received for n in r.body["Notifications"]]


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
