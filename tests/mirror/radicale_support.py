"""A real Radicale 3.9 CalDAV server for the calendar tests, and the `caldav_env` every provider test uses.

One Radicale process serves the whole test session (it takes a second or two to start); every test gets its
own user (a line in the htpasswd file, plain passwords) and its own calendar made with MKCALENDAR, so tests
share no state. The provider reaches Radicale through a small recording proxy per test on 127.0.0.1: it logs
each request (`requests()`, `exchanges()`) and can answer the next ones with 429 + Retry-After: 7 or 503
(`fail_next`), which Radicale itself never does. Everything else is Radicale's own answer, byte for byte.
`events()` reads the calendar's files from Radicale's storage folder; `delete_as_person` is a DELETE sent
straight to Radicale as the user, as their calendar app would; `fail_next("auth")` changes the user's password
in the htpasswd file, which Radicale re-reads on every login.
"""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import aiohttp
import pytest
from icalendar import Calendar

from calendars.ical import KEY_PROPERTY
from calendars.providers.caldav import CalDAVProvider

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
# Request headers kept in `exchanges()` (what the CalDAV tests check the provider sent).
RECORDED_HEADERS = ("if-match", "if-none-match", "depth", "content-type")
START_TIMEOUT = 30.0  # seconds for Radicale to answer after start (a loaded CI machine)


def free_port() -> int:
    """A port nothing listens on now: Radicale cannot bind port 0 and tell us which port it got."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class RadicaleServer:
    """A Radicale process on 127.0.0.1 with htpasswd (plain) auth, its storage and users under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = root / "storage"
        self.htpasswd = root / "users"
        self.htpasswd.write_text("")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._users: dict[str, str] = {}
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        config = root / "config"
        config.write_text(
            "\n".join(
                [
                    "[server]",
                    f"hosts = 127.0.0.1:{self.port}",
                    "[auth]",
                    "type = htpasswd",
                    f"htpasswd_filename = {self.htpasswd}",
                    "htpasswd_encryption = plain",
                    "delay = 0",  # Radicale waits 1 s after a failed login by default; tests fail logins on purpose
                    "[rights]",
                    "type = owner_only",
                    "[storage]",
                    f"filesystem_folder = {self.storage}",
                    "[logging]",
                    "level = warning",
                    "",
                ]
            )
        )
        self._log = (root / "radicale.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self) -> None:
        """Return once Radicale accepts connections; fail with its log when it exits or never answers."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Radicale exited with {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Radicale did not answer within {START_TIMEOUT} s: {self.log()}") from None
                time.sleep(0.05)  # a subprocess starting: there is no clock to inject

    def log(self) -> str:
        self._log.flush()
        return (self.root / "radicale.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def new_user(self) -> tuple[str, str]:
        """A fresh user name and password (added to the htpasswd file)."""
        with self._lock:
            n = next(self._names)
            name, password = f"person{n}", f"app-password-{n}"
            self._users[name] = password
            self._write_htpasswd()
        return name, password

    def set_password(self, name: str, password: str) -> None:
        with self._lock:
            self._users[name] = password
            self._write_htpasswd()

    def _write_htpasswd(self) -> None:
        temporary = self.htpasswd.with_suffix(".new")
        temporary.write_text("".join(f"{user}:{password}\n" for user, password in self._users.items()))
        os.replace(temporary, self.htpasswd)  # Radicale never reads a half-written file

    def request(
        self,
        method: str,
        path: str,
        user: str,
        password: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request straight to Radicale (not through any proxy), as `user`."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = {"Authorization": _basic(user, password), **(headers or {})}
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()


def _basic(user: str, password: str) -> str:
    return aiohttp.encode_basic_auth(user, password)


def mkcalendar_body(name: str, components: tuple[str, ...]) -> bytes:
    comps = "".join(f'<C:comp name="{c}"/>' for c in components)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
        f"<D:displayname>{escape(name)}</D:displayname>"
        f"<C:supported-calendar-component-set>{comps}</C:supported-calendar-component-set>"
        "</D:prop></D:set></C:mkcalendar>"
    ).encode()


@dataclass
class Exchange:
    """One request the proxy received: method, path, the headers in RECORDED_HEADERS (as `If-None-Match`), and
    the status answered."""

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class _Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class RecordingProxy(ThreadingHTTPServer):
    """Forwards every request to Radicale, recording it; answers scripted failures instead when told to."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.exchanges: list[Exchange] = []
        self.failures: list[_Failure] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards the provider: every answer has its Content-Length
    server: RecordingProxy

    def forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        recorded = {k.title(): self.headers[k] for k in RECORDED_HEADERS if k in self.headers}
        exchange = Exchange(self.command, urlsplit(self.path).path, recorded)
        with self.server.lock:
            self.server.exchanges.append(exchange)
            failure = self.server.failures.pop(0) if self.server.failures else None
        if failure is not None:
            status, headers, data = failure.status, failure.headers, b"scripted failure"
        else:
            status, headers, data = self.upstream(body)
        exchange.status = status
        try:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in HOP_BY_HOP | {"content-length", "date", "server"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def upstream(self, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        connection = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def log_message(self, *args: Any) -> None:
        pass


for _method in ("GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS", "PROPFIND", "PROPPATCH", "REPORT", "MKCALENDAR"):
    setattr(_ProxyHandler, f"do_{_method}", _ProxyHandler.forward)


class CalDAVEnv:
    """The provider test interface (tests/mirror/contract.py `ProviderEnv`) for one Radicale user and calendar."""

    def __init__(self, server: RadicaleServer, proxy: RecordingProxy) -> None:
        self.server = server
        self.proxy = proxy
        self.username, self.password = server.new_user()
        self.person_password = self.password  # what the person's own apps use (changes with fail_next("auth"))
        self.account = self.username
        self.calendar_path = self.make_calendar("training", "Training")
        self.calendar_url = proxy.url + self.calendar_path
        self.server_url = proxy.url + "/"

    def make_calendar(self, slug: str, name: str, components: tuple[str, ...] = ("VEVENT",)) -> str:
        """A new calendar collection of the user (MKCALENDAR, RFC 4791 §5.3.1); its path."""
        path = f"/{self.username}/{slug}/"
        answer = self.person("MKCALENDAR", path, mkcalendar_body(name, components), {"Content-Type": "application/xml"})
        assert answer.status == 201, answer
        return path

    def person(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        """A request straight to Radicale as the user, the way their calendar app would send it."""
        return self.server.request(method, path, self.username, self.person_password, body, headers)

    def make_provider(self, session: aiohttp.ClientSession, **options: Any) -> CalDAVProvider:
        return CalDAVProvider(session, self.calendar_url, self.username, self.password, **options)

    def files(self) -> dict[str, bytes]:
        """The calendar's objects as Radicale stores them: resource name -> iCalendar bytes."""
        folder = self.server.storage / "collection-root" / self.username / self.calendar_path.strip("/").split("/")[-1]
        return {p.name: p.read_bytes() for p in sorted(folder.glob("*.ics"))}

    def events(self) -> list[dict[str, Any]]:
        """The calendar's events, read from Radicale's storage folder (not through the provider)."""
        found = []
        for name, data in self.files().items():
            for event in Calendar.from_ical(data).walk("VEVENT"):
                start: Any = event["DTSTART"]
                end: Any = event["DTEND"]
                key = event.get(KEY_PROPERTY)
                found.append(
                    {
                        "id": self.calendar_url + quote(name),
                        "key": str(key) if key is not None else None,
                        "subject": str(event.get("SUMMARY", "")),
                        "start": _aware(start.dt),
                        "end": _aware(end.dt),
                        "time_zone": start.params.get("TZID"),
                    }
                )
        return found

    def delete_as_person(self, provider_id: str) -> None:
        answer = self.person("DELETE", urlsplit(provider_id).path)
        assert answer.status in (200, 204), answer

    def fail_next(self, kind: str, count: int = 1) -> None:
        if kind == "auth":
            self.person_password = self.password + "-changed"
            self.server.set_password(self.username, self.person_password)
            return
        failure = {
            "throttle": _Failure(429, {"Retry-After": "7"}),
            "unavailable": _Failure(503),
        }[kind]
        with self.proxy.lock:
            self.proxy.failures.extend([failure] * count)

    def requests(self) -> list[tuple[str, str]]:
        with self.proxy.lock:
            return [(e.method, e.path) for e in self.proxy.exchanges]

    def exchanges(self) -> list[Exchange]:
        with self.proxy.lock:
            return list(self.proxy.exchanges)


def _aware(value: Any) -> datetime:
    assert isinstance(value, datetime) and value.tzinfo is not None, f"not an aware date-time: {value!r}"
    return value


@pytest.fixture(scope="session")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleServer]:
    """One real Radicale for the session; tests isolate themselves with a user of their own (CalDAVEnv)."""
    server = RadicaleServer(tmp_path_factory.mktemp("radicale"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def caldav_env(radicale: RadicaleServer) -> Iterator[CalDAVEnv]:
    """A new Radicale user with one calendar ("Training"), reached through a recording proxy."""
    proxy = RecordingProxy(radicale.port)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield CalDAVEnv(radicale, proxy)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)
