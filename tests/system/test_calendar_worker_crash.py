"""A calendar worker killed between a provider write and its record (kill -9 while the provider's answer is on
its way) leaves, once restarted, exactly one event per person and day: in a real Radicale (the PUT's
If-None-Match finds the copy the dead worker wrote) and in the Graph fake (the same transactionId)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "mirror"))  # the calendar tests' real servers and fakes
import radicale_support
from fakes.graph import GraphFake
from radicale_support import RadicaleServer, mkcalendar_body

from storage import calendar, catalogs, courses, enrollments, sessions, users
from storage.db import Database, iso
from storage.models import CLI
from storage.secrets import SecretBox

pytestmark = [pytest.mark.system, pytest.mark.slow]
radicale = radicale_support.radicale
BIN = Path(sys.executable).parent / "coursewire"
WRITES = ("PUT", "POST")


class HoldingProxy(ThreadingHTTPServer):
    """Forwards to `upstream`; the first write's answer is held (the write is done upstream) until released,
    so a test can kill the client between the provider's write and the client learning of it."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_port = upstream_port
        self.held = threading.Event()
        self.release = threading.Event()
        self.holding = True
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: HoldingProxy
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request(self.command, self.path, body, headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        with self.server.lock:
            hold = self.server.holding and self.command in WRITES
            if hold:
                self.server.holding = False
        if hold:
            self.server.held.set()
            self.server.release.wait(30)
            self.close_connection = True
            return  # the client is gone: it never learns that the write happened
        try:
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_PROPFIND = do_REPORT = _forward

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy_for() -> Iterator[Any]:
    started: list[tuple[HoldingProxy, threading.Thread]] = []

    def start(port: int) -> HoldingProxy:
        proxy = HoldingProxy(port)
        thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        started.append((proxy, thread))
        return proxy

    yield start
    for proxy, thread in started:
        proxy.release.set()
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def world(data: Path, provider: str, credentials: dict[str, str], calendar_id: str | None) -> Database:
    """A database with one learner registered to a two-day session and a connected calendar."""
    db = Database(data / "coursewire.db")
    db.migrate()
    box = SecretBox.for_database(db.path)
    learner = users.create(db, CLI, {"LoginName": "lena@example.org", "Email": "lena@example.org"})
    catalog = catalogs.create_catalog(db, CLI, {"Title": "Academy"}, "https://lms.example")
    course = courses.create(
        db,
        CLI,
        {
            "CourseCatalogId": catalog["Id"],
            "Title": "First aid",
            "Description": "d",
            "Culture": "en-US",
            "UICulture": "en-US",
            "CourseType": "ClassRoom",
            "Url": "first-aid",
        },
        "https://lms.example",
    )
    for _ in range(10):
        courses.provision_step(db, data / "files")
    start = (db.clock() + timedelta(days=10)).replace(hour=9, minute=0, second=0, microsecond=0, tzinfo=None)
    days = [
        {
            "StartDate": (start + timedelta(days=d)).isoformat(),
            "EndDate": (start + timedelta(days=d, hours=3)).isoformat(),
        }
        for d in range(2)
    ]
    session = sessions.create(
        db,
        CLI,
        course["Id"],
        {
            "Title": "Two mornings",
            "TimeZone": "W. Europe Standard Time",
            "Days": days,
            "StartDate": days[0]["StartDate"],
            "EndDate": days[1]["EndDate"],
        },
    )
    calendar.update_settings(db, CLI, {f"{provider}Enabled": True})
    calendar.connect(
        db,
        CLI,
        learner["Id"],
        provider,
        account="lena",
        calendar=calendar_id,
        credentials=box.seal(json.dumps(credentials)),
    )
    enrollments.enroll(db, CLI, course["Id"], {"userLoginName": "lena@example.org", "courseSessionId": session["Id"]})
    return db


def crash_and_recover(data: Path, proxy: HoldingProxy, env: dict[str, str]) -> None:
    """Start `coursewire worker`, kill -9 it once the provider wrote and before it heard back, then run
    `coursewire worker --once` to finish."""
    environ = {**os.environ, "COURSEWIRE_DATA_DIR": str(data), "COURSEWIRE_ALLOWED_NETWORKS": "127.0.0.0/8", **env}
    log = (data / "worker.log").open("wb")
    worker = subprocess.Popen([str(BIN), "worker"], env=environ, stdout=log, stderr=log)
    try:
        assert proxy.held.wait(60), (data / "worker.log").read_text()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
        proxy.release.set()
    again = subprocess.run([str(BIN), "worker", "--once"], env=environ, stdout=log, stderr=log, timeout=120)
    log.close()
    assert again.returncode == 0, (data / "worker.log").read_text()


def test_caldav_after_a_crash_holds_one_event_per_day(tmp_path: Path, radicale: RadicaleServer, proxy_for: Any) -> None:
    name, password = radicale.new_user()
    made = radicale.request(
        "MKCALENDAR", f"/{name}/training/", name, password, mkcalendar_body("Training", ("VEVENT",))
    )
    assert made.status == 201
    proxy = proxy_for(radicale.port)
    data = tmp_path / "data"
    db = world(data, "CalDAV", {"username": name, "password": password}, f"{proxy.url}/{name}/training/")
    crash_and_recover(data, proxy, {})
    files = sorted((radicale.storage / "collection-root" / name / "training").glob("*.ics"))
    assert len(files) == 2, [f.name for f in files]
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM calendar_items").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM calendar_dirty").fetchone()[0] == 0


def test_graph_after_a_crash_holds_one_event_per_day(tmp_path: Path, proxy_for: Any) -> None:
    with GraphFake() as fake:
        fake.add_user("lena-id", "lena@contoso.example")
        token = fake.issue_token("lena-id")
        port = int(fake.url.rsplit(":", 1)[1])
        proxy = proxy_for(port)
        data = tmp_path / "data"
        far = iso(Database(":memory:").clock() + timedelta(days=1))
        credentials = {"access_token": token, "refresh_token": "unused", "expires_at": far or ""}
        db = world(data, "Microsoft365", credentials, None)
        crash_and_recover(
            data,
            proxy,
            {
                "COURSEWIRE_GRAPH_URL": f"{proxy.url}/v1.0",
                "COURSEWIRE_MICROSOFT_CLIENT_ID": "client",
                "COURSEWIRE_MICROSOFT_CLIENT_SECRET": "secret",
            },
        )
        stored = fake.stored("lena-id")
        assert len(stored) == 2, stored
        with db.read() as conn:
            assert conn.execute("SELECT count(*) FROM calendar_items").fetchone()[0] == 2
