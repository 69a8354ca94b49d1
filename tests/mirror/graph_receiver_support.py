"""A notification receiver on 127.0.0.1 for the Graph fake: answers the subscription validation request as
scripted and records every change and lifecycle notification (calendar-sync.md §3: the fakes POST to a
receiver on 127.0.0.1 [MS5][MS6]).

`validation` picks the answer to `?validationToken=`: 'echo' (200, text/plain, the decoded token: what Graph
requires), 'wrong' (200 with another text), 'json' (the token as application/json), 'refuse' (403).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class GraphReceiver:
    """What the receiver saw: `tokens` (validation tokens, decoded), `changes` and `lifecycle` (the items of
    each notification's `value`, in arrival order), `posts` (every notification body)."""

    def __init__(self) -> None:
        self.validation = "echo"
        self.tokens: list[str] = []
        self.posts: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []
        self.lifecycle: list[dict[str, Any]] = []
        self.url = ""
        self._lock = threading.Lock()

    def answer(self, query: str, raw: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for one POST."""
        tokens = parse_qs(query).get("validationToken")
        if tokens:
            token = tokens[0]
            with self._lock:
                self.tokens.append(token)
            if self.validation == "echo":
                return 200, "text/plain; charset=utf-8", token.encode()
            if self.validation == "wrong":
                return 200, "text/plain; charset=utf-8", b"not the token"
            if self.validation == "json":
                return 200, "application/json", json.dumps(token).encode()
            return 403, "text/plain", b""
        body = json.loads(raw)
        with self._lock:
            self.posts.append(body)
            for item in body.get("value", []):
                (self.lifecycle if "lifecycleEvent" in item else self.changes).append(item)
        return 202, "text/plain", b""


@contextmanager
def graph_receiver() -> Iterator[GraphReceiver]:
    """A GraphReceiver listening on 127.0.0.1 (its `url` ends in /calendar/notifications/graph), stopped after."""
    receiver = GraphReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, content_type, body = receiver.answer(urlsplit(self.path).query, raw)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="graph-receiver", daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/calendar/notifications/graph"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
