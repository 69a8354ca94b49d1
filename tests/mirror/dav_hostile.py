"""A small, hostile CalDAV server on 127.0.0.1 for the connection tests: it answers PROPFIND with whatever
multistatus documents a test gives it (`account`: a principal, its calendar homes and the calendars in them,
which may point anywhere), records what it was asked, and can hold requests unanswered until the test lets them
go (`stall`), as a server written to tie up coursewire's threads would. REPORT gets the (status, body) a test
gives for the path (`reports`), else 501 Not Implemented, as from a server without the report.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

HOLD_LIMIT = 10.0  # seconds a stalled request waits for the test to release it (then the server answers 503)

CALENDAR = "<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>"


def response(href: str, props: str) -> str:
    """One DAV:response with a 200 propstat holding `props` (XML text in the D: and C: namespaces)."""
    return (
        f"<D:response><D:href>{escape(href)}</D:href><D:propstat><D:prop>{props}</D:prop>"
        "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    )


def multistatus(*responses: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        + "".join(responses)
        + "</D:multistatus>"
    ).encode()


def account(homes: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, bytes]:
    """The PROPFIND answers of an account: `/` names the principal `/p/`, whose calendar-home-set lists the keys
    of `homes` in order; each home lists its calendars as (href, display name), hrefs as given (they may be
    absolute URLs on any host)."""
    home_set = "".join(f"<D:href>{escape(home)}</D:href>" for home in homes)
    pages = {
        "/": multistatus(response("/", "<D:current-user-principal><D:href>/p/</D:href></D:current-user-principal>")),
        "/p/": multistatus(response("/p/", f"<C:calendar-home-set>{home_set}</C:calendar-home-set>")),
    }
    for home, calendars in homes.items():
        listed = [response(home, "<D:resourcetype><D:collection/></D:resourcetype>")]
        listed += [
            response(href, f"{CALENDAR}<D:displayname>{escape(name)}</D:displayname>") for href, name in calendars
        ]
        pages[home] = multistatus(*listed)
    return pages


@dataclass
class DavServer:
    """A running hostile server: its base `url` (ends with '/'), the (method, path) pairs it received, and the
    paths whose requests it holds until `release()`."""

    url: str = ""
    pages: dict[str, bytes] = field(default_factory=dict)
    reports: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    stall: set[str] = field(default_factory=set)
    received: list[tuple[str, str]] = field(default_factory=list)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self) -> None:
        self.released.set()

    def requests(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.received)


class QuietHandler(BaseHTTPRequestHandler):
    """An HTTP/1.1 request handler that writes no access log."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1, a free port, in a thread; yields `http://127.0.0.1:PORT`; stopped after."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def dav_server(
    pages: Mapping[str, bytes], stall: Sequence[str] = (), reports: Mapping[str, tuple[int, bytes]] | None = None
) -> Iterator[DavServer]:
    """Serve `pages` (path -> 207 body; anything else 404) on 127.0.0.1, a free port; REPORT answers `reports`
    (path -> status and body; anything else 501)."""
    state = DavServer(pages=dict(pages), stall=set(stall), reports=dict(reports or {}))

    class Handler(QuietHandler):
        def do_PROPFIND(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path
            with state.lock:
                state.received.append((self.command, path))
            state.arrived.release()
            if path in state.stall and not state.released.wait(HOLD_LIMIT):
                self.answer(503, b"")
                return
            body = state.pages.get(path)
            self.answer(207 if body is not None else 404, body or b"")

        do_GET = do_PUT = do_PROPFIND

        def do_REPORT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.received.append((self.command, self.path))
            self.answer(*state.reports.get(self.path, (501, b"")))

        def answer(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # coursewire gave up waiting: what a deadline looks like from here

    with serving(Handler) as base:
        state.url = base + "/"
        try:
            yield state
        finally:
            state.release()  # before the server stops: a stalled request would hold its shutdown
