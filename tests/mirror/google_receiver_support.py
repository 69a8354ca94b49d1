"""A receiver of push notifications on 127.0.0.1: a real HTTP server that records each POST it gets.

Stands in for coursewire's `/calendar/notifications/...` endpoint where a test needs only to see what the Google
fake sends (headers, body, order); it answers `status` (200 unless a test sets another).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One POST: the path, its headers (names in lower case) and its body."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def state(self) -> tuple[str, int, str]:
        """(channel id, message number, resource state) of a Google notification [GO2]."""
        h = self.headers
        return h["x-goog-channel-id"], int(h["x-goog-message-number"]), h["x-goog-resource-state"]


class Receiver:
    """Use as a context manager; `url` is the address to give the provider; `received` lists what came."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.block_on_close = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/calendar/notifications/google"

    def states(self) -> list[tuple[str, int, str]]:
        with self.lock:
            return [r.state for r in self.received]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
