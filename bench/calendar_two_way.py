"""The two-way calendar mirror: how long after a person deletes a session's event they are unregistered.

Run from the repository root:

    .venv/bin/python bench/calendar_two_way.py [--quick] [--people 100] [--rate 5] [--runs 2] [--caldav-poll 5]

Five processes share the machine: this one (the database's writer as the API would be: it builds the world and
connects and enrolls people through the storage verbs, one transaction each; it acts as the people deleting their
events, and it polls the database), the fakes (tests/mirror/fakes/graph.py and fakes/google.py on threads of one
process; the main thread answers this process over a pipe), Radicale (a real CalDAV server,
tests/mirror/radicale_support.py's RadicaleServer, restarted with INFO logging: its log line for each request is
how the worker's requests to it are counted), the receiver
(calendars.receiving.NotificationReceiver, the app `coursewire serve` mounts at /calendar/notifications, under
uvicorn on 127.0.0.1 with uvloop and httptools) and the worker (calendars.worker.CalendarWorker.run with its
defaults, its public address the receiver's, so it creates Graph subscriptions and Google watch channels there;
providers built as calendars.connections.open_provider does, through the guarded session the worker makes for
itself, 127.0.0.1 allowed; CalendarConfig.from_env with COURSEWIRE_CALDAV_POLL_SECONDS=`--caldav-poll`).

For each provider and run, a phase: `--people` new learners connect a calendar of their own (Microsoft 365: a
mailbox of the Graph fake; Google: a primary calendar of the Google fake; CalDAV: a Radicale user and calendar
made with MKCALENDAR) and are enrolled into a one-day session of their own phase. The phase waits until every
event is written, every push channel exists and every first check (a full listing) is done. Then the people
delete their events at `--rate` per second, one each:

  graph    GraphFake.delete_as_person: the event leaves the mailbox, the fake POSTs a `deleted` change
           notification to the receiver [MS5]; the worker's check reads calendarView/delta, GETs the calendar
           and the event (404) and unregisters.
  google   GoogleCalendarFake.person_deletes: the event is cancelled, the fake POSTs `exists` to the receiver
           [GO2] (before the call returns); the check lists with the sync token, GETs the calendar and the event.
  caldav   an HTTP DELETE to Radicale as the person (no user agent, so not counted); nothing tells coursewire:
           the connection's poll (sync-collection REPORT every COURSEWIRE_CALDAV_POLL_SECONDS) finds it.
  null     baseline, the engine without HTTP: calendars.providers.null.NullProvider in the worker's process;
           the worker deletes as the person (person_deletes) and at once calls storage.calendar_watch.notified
           for the connection, as the receiver would.

Latency: the wall-clock time this process first sees the enrollment Cancelled (it reads the phase's enrollments
every `--poll` seconds, 0.05: up to 50 ms late, 25 ms on average) minus the time of the deletion (graph, google,
null: just before the fake or provider removed the event, in its own process; caldav: when Radicale answered the
DELETE). The event log's CalendarEventDeleted occurred_at is not used: it is the time the worker's round began,
before the check ran. Counted per phase, from the first deletion until every enrollment is cancelled, nothing is
queued and the mirror removed the events (the sync after a cancellation DELETEs the event, answered 404): the HTTP
requests the fake (or Radicale, by its log: user agent coursewire-calendars) received, by kind, and the
notifications it POSTed to the receiver; requests per unregistration is their sum over the unregistrations. Each
phase ends by disconnecting its people (storage.calendar.disconnect, keeping events), so their channels and polls
stop.

Both fakes hold each request `--provider-latency` seconds (0.05) as a stand-in for the service's own time, and
throttle nothing; Radicale answers in its own time, with its default of 8 connections served at once
(`--radicale-connections`). Runs rotate the providers' order; the tables quote, per provider, medians over the runs
of each run's p50, p99 and max, and the pooled samples' p50 / p99.

Caveats: every process shares the machine's two cores with other sessions' work (each phase records the cores
other processes took); CalDAV latency is mostly the poll interval, chosen for the bench (the default is 300 s);
the worker's idle poll (CalendarWorker.run's `interval`) bounds how soon a due check starts; a check handles a
whole connection, so one person per connection is the worst case for requests per unregistration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# bench/ holds calendar.py: run as a script, this folder would come first on sys.path and shadow the standard
# library's calendar module (imported by email, http.cookiejar and so aiohttp). The folder goes last.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or os.getcwd()).resolve() not in (BENCH, ROOT)]
sys.path += [str(BENCH), str(ROOT / "tests" / "mirror")]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from multiprocessing.connection import Connection as Pipe  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from machine import describe, publish  # noqa: E402
from noise import _busy_seconds  # noqa: E402

from storage import calendar, catalogs, courses, enrollments, sessions, users  # noqa: E402
from storage.db import Database, iso  # noqa: E402
from storage.models import CLI  # noqa: E402
from storage.secrets import SecretBox  # noqa: E402

RESULTS = BENCH / "results" / "calendar_two_way.md"
NULL_DOMAIN = "null.bench"
TOKEN_PREFIX = "bench-"  # noqa: S105 (the fakes' made-up access tokens)
ZONE = "W. Europe Standard Time"
PROVIDERS = ("graph", "google", "caldav", "null")
LABELS = {
    "graph": "Microsoft 365 (Graph fake, change notifications)",
    "google": "Google (fake, push channels)",
    "caldav": "CalDAV (Radicale, polled)",
    "null": "NullProvider, notified at once (the engine alone)",
}
CANCELLED = 4  # storage.models.EnrollmentStatus.Cancelled


# -- the fakes' process ----------------------------------------------------------------------------------------


def fakes_main(pipe: Pipe, options: dict[str, Any]) -> None:
    """The Graph fake and the Google fake, serving on threads; this thread answers
    the bench's requests until ("stop",)."""
    from fakes.google import GoogleCalendarFake
    from fakes.graph import GraphFake

    latency = options["latency"]

    class BenchGraph(GraphFake):  # type: ignore[misc]  # tests/ is not type-checked
        """Tokens are `bench-<mailbox user id>`."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.token_check = self._bench_token

        def _bench_token(self, token: str) -> str | None:
            user = token.removeprefix(TOKEN_PREFIX)
            return user if token.startswith(TOKEN_PREFIX) and user in self.mailboxes else None

    class BenchGoogle(GoogleCalendarFake):  # type: ignore[misc]
        """Tokens are `bench-<account>`; every request waits `latency` seconds first (outside the fake's lock)."""

        def __init__(self) -> None:
            super().__init__()
            self.authorize = self._bench_token

        def _bench_token(self, token: str) -> str | None:
            account = token.removeprefix(TOKEN_PREFIX)
            return account if token.startswith(TOKEN_PREFIX) and account in self.calendars else None

        def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Any:
            time.sleep(latency)
            return super().handle(method, target, headers, raw)

    graph = BenchGraph(seed=1, latency=latency)
    graph.start()
    google = BenchGoogle().start()
    pipe.send({"graph": graph.url, "google": google.base_url})

    def kinds(provider: str, since: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
        """Requests by kind and notifications POSTed, after the positions in `since`; and the new positions."""
        out: Counter[str] = Counter()
        if provider == "graph":
            with graph._lock:
                requests, inner, notes = graph.requests[:], graph.batch_requests[:], len(graph.deliveries)
            for method, path in requests[since.get("requests", 0) :]:
                out[f"{method} {_graph_kind(path)}"] += 1
            for method, path in inner[since.get("inner", 0) :]:
                out[f"$batch: {method} {_graph_kind(path)}"] += 1
            out["notifications"] = notes - since.get("notes", 0)
            return dict(out), {"requests": len(requests), "inner": len(inner), "notes": notes}
        with google.lock:
            log, notes = google.log[:], len(google.pushed)
        for entry in log[since.get("requests", 0) :]:
            out[f"{entry.method} {_google_kind(entry.path, entry.query)}"] += 1
        out["notifications"] = notes - since.get("notes", 0)
        return dict(out), {"requests": len(log), "notes": notes}

    while True:
        command, *args = pipe.recv()
        if command == "graph-add":
            for user, address in args[0]:
                graph.add_user(user, address)
            pipe.send(len(args[0]))
        elif command == "google-add":
            for account in args[0]:
                google.add_calendar(account, "Europe/Berlin")
            pipe.send(len(args[0]))
        elif command == "graph-delete":
            at = time.time()
            graph.delete_as_person(*args)
            pipe.send(at)
        elif command == "google-delete":
            at = time.time()
            google.person_deletes(*args)  # returns once the notification was answered
            pipe.send(at)
        elif command == "counts":
            pipe.send(kinds(*args))
        elif command == "stop":
            graph.stop()
            google.stop()
            pipe.send("stopped")
            return


def _graph_kind(path: str) -> str:
    if "/delta" in path:
        return "delta"
    if path.endswith("/$batch"):
        return "$batch"
    if "/subscriptions" in path:
        return "subscriptions"
    if "/events/" in path:
        return "event"
    if path.endswith("/events"):
        return "events"
    return "calendar"


def _dav_kind(path: str) -> str:
    if path.endswith(".ics"):
        return "event"
    return "calendar" if path.endswith("/training/") else "principal or home"


def _google_kind(path: str, query: dict[str, list[str]]) -> str:
    if path.endswith("/watch"):
        return "watch"
    if path.endswith("/calendarList"):
        return "calendarList"
    if path.endswith("/events"):
        return "events (sync token)" if "syncToken" in query else "events (list)"
    if "/events/" in path:
        return "event"
    return "calendar"


class Fakes:
    """The bench's side of the fakes' process."""

    def __init__(self, options: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(target=fakes_main, args=(theirs, options), name="fakes", daemon=True)
        self.process.start()
        theirs.close()  # so that recv() raises EOFError, not waits forever, if the process dies
        self.urls: dict[str, str] = self.call()

    def call(self, *message: Any) -> Any:
        if message:
            self.pipe.send(message)
        return self.pipe.recv()

    def stop(self) -> None:
        self.call("stop")
        self.process.join(10)


# -- the receiver's process ------------------------------------------------------------------------------------


def receiver_main(db_path: str, port: int) -> None:
    """NotificationReceiver (what `coursewire serve` mounts at /calendar/notifications) under uvicorn."""
    import uvicorn

    from calendars.receiving import NotificationReceiver

    logging.basicConfig(level=logging.WARNING, format="receiver %(levelname)s %(name)s: %(message)s")
    app = NotificationReceiver(Database(db_path))
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


# Radicale's INFO line for each request: "<method> request for '<path>' ... received from ... using '<agent>'".
DAV_REQUEST = re.compile(r"\] (\w+) request for '([^']*)'.* using '([^']*)'")


def restart_radicale(radicale: Any, connections: int) -> None:
    """Start radicale_support's Radicale again logging every request (INFO: how the worker's requests are
    counted), and with `[server] max_connections` (Radicale's default: 8) when `connections` is not 0."""
    radicale.process.terminate()
    radicale.process.wait(10)
    config = radicale.root / "config"
    text = config.read_text().replace("level = warning", "level = info", 1)
    if connections:
        text = text.replace("[server]\n", f"[server]\nmax_connections = {connections}\n", 1)
    config.write_text(text)
    radicale.process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "radicale", "--config", str(config)],
        stdout=radicale._log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not process.is_alive():
            raise SystemExit(f"the process for port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s") from None
            time.sleep(0.05)  # a process starting: nothing to wait on but the port


# -- the worker's process --------------------------------------------------------------------------------------


def worker_main(pipe: Pipe, db_path: str, urls: dict[str, str], public_url: str, caldav_poll: float) -> None:
    """CalendarWorker.run with its defaults until ("stop",); ("null-delete", connection id, provider id) deletes
    a NullProvider's event as the person and marks the connection's check due, answering the deletion's time."""
    logging.basicConfig(level=logging.WARNING, format="worker %(levelname)s %(name)s: %(message)s")
    from calendars.config import CalendarConfig
    from calendars.connections import open_provider
    from calendars.model import Provider
    from calendars.providers.null import NullProvider
    from calendars.worker import CalendarWorker
    from storage import calendar_watch, outbound
    from storage.calendar import Connection

    nulls: dict[str, NullProvider] = {}

    async def main() -> None:
        db = Database(db_path)
        box = SecretBox.for_database(db_path)
        config = CalendarConfig.from_env(
            {
                "COURSEWIRE_GRAPH_URL": urls["graph"] + "/v1.0",
                "COURSEWIRE_GOOGLE_CALENDAR_URL": urls["google"],
                "COURSEWIRE_CALDAV_POLL_SECONDS": str(caldav_poll),
                "COURSEWIRE_ALLOWED_NETWORKS": "127.0.0.1/32",
            }
        )
        # The session CalendarWorker.start() makes when it builds providers itself.
        session = outbound.guarded_session(config.allowed_networks, user_agent="coursewire-calendars/1")

        def provider_for(connection: Connection) -> Provider:
            if (connection.account or "").endswith("@" + NULL_DOMAIN):
                return nulls.setdefault(connection.id, NullProvider())
            return open_provider(connection, session, db, box, config)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with CalendarWorker(db, box, config, provider_for=provider_for, public_url=public_url) as worker:
            task = asyncio.create_task(worker.run(stop))
            pipe.send("running")
            while True:
                command, *args = await loop.run_in_executor(None, pipe.recv)
                if command == "null-delete":
                    connection_id, provider_id = args
                    at = time.time()
                    nulls[connection_id].person_deletes(provider_id)
                    await asyncio.to_thread(calendar_watch.notified, db, connection_id, db.clock())
                    pipe.send(at)
                elif command == "stop":
                    stop.set()
                    await task
                    break
        await session.close()
        pipe.send("stopped")

    asyncio.run(main())


class Worker:
    def __init__(self, db_path: Path, urls: dict[str, str], public_url: str, caldav_poll: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(
            target=worker_main, args=(theirs, str(db_path), urls, public_url, caldav_poll), name="worker"
        )
        self.process.start()
        theirs.close()
        assert self.pipe.recv() == "running"

    def call(self, *message: Any) -> Any:
        self.pipe.send(message)
        return self.pipe.recv()

    def cpu(self) -> float:
        return _cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.pipe.send(("stop",))
        self.pipe.recv()
        self.process.join(10)


def _cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) a process used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Others:
    """Cores other processes of the machine kept busy while a phase ran: the machine's busy CPU time
    (bench/noise.py) minus this bench's processes', per second of wall time."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), _busy_seconds(), sum(_cpu_seconds(pid) for pid in self.pids)

    def cores(self) -> float:
        (t0, busy0, mine0), (t1, busy1, mine1) = self.start, self._sample()
        return max(0.0, (busy1 - busy0) - (mine1 - mine0)) / (t1 - t0)


# -- the world -------------------------------------------------------------------------------------------------


@dataclass
class World:
    directory: Path
    db: Database
    box: SecretBox
    course_id: str
    day: datetime
    people: dict[str, list[str]]  # provider -> logins not used yet
    ids: dict[str, str]  # login -> user id


def build_world(directory: Path, per_provider: int) -> World:
    """A catalog, a ClassRoom course and `per_provider` users per provider, through the storage verbs; every
    provider enabled, UnregisterOnCalendarDelete left on (its default)."""
    db = Database(directory / "coursewire.db")
    db.migrate()
    box = SecretBox.for_database(str(directory / "coursewire.db"))
    calendar.update_settings(db, CLI, {"Microsoft365Enabled": True, "GoogleEnabled": True, "CalDAVEnabled": True})
    catalog = catalogs.create_catalog(db, CLI, {"Title": "Academy"}, "https://lms.example")
    course = courses.create(
        db,
        CLI,
        {
            "CourseCatalogId": catalog["Id"],
            "Title": "Forklift safety",
            "Description": "A hands-on day",
            "Culture": "en-US",
            "UICulture": "en-US",
            "CourseType": "ClassRoom",
            "Url": "forklift-safety",
            "CourseSessionEnrollmentType": "EnrollToMultiple",
        },
        "https://lms.example",
    )
    for _ in range(10):
        courses.provision_step(db, directory / "files")
    day = (datetime.now(UTC) + timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    ids: dict[str, str] = {}
    people: dict[str, list[str]] = {}
    for provider in PROVIDERS:
        people[provider] = [f"{provider}{i:05d}@contoso.example" for i in range(per_provider)]
        for login in people[provider]:
            ids[login] = users.create(db, CLI, {"LoginName": login, "Email": login, "Title": login.split("@")[0]})["Id"]
    return World(directory, db, box, course["Id"], day, people, ids)


def new_session(world: World, title: str) -> str:
    body = {
        "Title": title,
        "TimeZone": ZONE,
        "StartDate": (world.day + timedelta(hours=8)).isoformat(),
        "EndDate": (world.day + timedelta(hours=10)).isoformat(),
        "Room": {"Title": "Hall A", "Location": "Building 1"},
    }
    return str(sessions.create(world.db, CLI, world.course_id, body)["Id"])


# -- a phase ---------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    provider: str
    run: int
    people: int = 0
    setup_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    missing: int = 0  # deletions that did not unregister within the timeout
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # from the first deletion until everything settled
    worker_cpu: float = 0.0
    others: float = 0.0
    late_starts: int = 0  # deletions that began more than 50 ms after their scheduled time
    errors: Counter[str] = field(default_factory=Counter)  # checks' last errors, at the end of the phase

    @property
    def requests(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != "notifications" and not kind.startswith("$batch:"))


@dataclass
class Person:
    login: str
    user_id: str
    enrollment_id: str
    connection_id: str = ""
    provider_id: str = ""
    caldav: tuple[str, str] | None = None  # Radicale user name and password


def connect(world: World, provider: str, person: Person, fakes: Fakes, radicale: Any) -> None:
    """Connect the person's calendar (storage.calendar.connect, as the connection pages do after OAuth)."""
    far = iso(datetime(2099, 1, 1, tzinfo=UTC)) or ""
    name = person.login.split("@")[0]
    if provider == "caldav":
        assert person.caldav is not None
        user, password = person.caldav
        credentials = {"username": user, "password": password}
        kind, account, target = "CalDAV", user, f"{radicale.url}/{user}/training/"
    else:
        token = TOKEN_PREFIX + (person.login if provider == "google" else person.user_id)
        credentials = {"access_token": token, "refresh_token": "unused", "expires_at": far}
        kind = "Google" if provider == "google" else "Microsoft365"
        account, target = (f"{name}@{NULL_DOMAIN}" if provider == "null" else person.login), None
    calendar.connect(
        world.db, CLI, person.user_id, kind, account=account, calendar=target,
        credentials=world.box.seal(json.dumps(credentials)),
    )  # fmt: skip


def settled(db: Database, provider: str, people: list[Person]) -> bool:
    """Every person's event written, nothing queued, every connection's first check done and (Graph, Google) its
    push channel made, no check due now (CalDAV's come every poll)."""
    if calendar.pending(db):
        return False
    ids = [p.user_id for p in people]
    marks = ",".join("?" * len(ids))
    now = iso(datetime.now(UTC))
    with db.read() as conn:
        written = conn.execute(
            f"SELECT count(*) FROM calendar_items WHERE channel = 'calendar' AND provider_id IS NOT NULL"  # noqa: S608
            f" AND user_id IN ({marks})",
            ids,
        ).fetchone()[0]
        watches = conn.execute(
            "SELECT w.cursor, w.channel_id, w.check_due_at, w.owner FROM calendar_watches w"  # noqa: S608
            " JOIN calendar_connections c ON c.id = w.connection_id"
            f" WHERE c.state = 'active' AND c.user_id IN ({marks})",
            ids,
        ).fetchall()
    if written < len(people) or len(watches) < len(people):
        return False
    for row in watches:
        if row["cursor"] is None or row["owner"] is not None:
            return False
        if provider in ("graph", "google") and (row["channel_id"] is None or row["check_due_at"] <= now):
            return False
    return True


def removed(db: Database, session_id: str) -> bool:
    """Whether the mirror has removed every event of the session (the sync after each cancellation: a DELETE
    the provider answers 404) and nothing is queued."""
    with db.read() as conn:
        left = conn.execute("SELECT count(*) FROM calendar_items WHERE session_id = ?", (session_id,)).fetchone()[0]
    return left == 0 and calendar.pending(db) == 0


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)  # another process's progress: nothing to wait on but the database


def cancelled_at(db_path: str, enrollment_ids: list[str], poll: float, stop: threading.Event) -> dict[str, float]:
    """Poll the enrollments every `poll` seconds on this thread until `stop`; the wall-clock time each was first
    seen Cancelled. Runs on its own thread with its own connection."""
    db = Database(db_path)
    seen: dict[str, float] = {}
    marks = ",".join("?" * len(enrollment_ids))
    query = f"SELECT id FROM enrollments WHERE status = {CANCELLED} AND id IN ({marks})"  # noqa: S608
    while not stop.is_set():
        with db.read() as conn:
            rows = conn.execute(query, enrollment_ids).fetchall()
        at = time.time()
        for (enrollment_id,) in rows:
            seen.setdefault(enrollment_id, at)
        if len(seen) == len(enrollment_ids):
            break
        stop.wait(poll)
    return seen


def phase(
    world: World,
    fakes: Fakes,
    worker: Worker,
    radicale: Any,
    provider: str,
    number: int,
    args: argparse.Namespace,
    pids: list[int],
) -> Phase:
    result = Phase(provider, number)
    n = args.people
    logins, world.people[provider] = world.people[provider][:n], world.people[provider][n:]
    assert len(logins) == n, "not enough people prepared for this run"
    result.people = n
    errors = CheckErrors(world.db.path)
    errors.start()
    t = time.monotonic()
    session_id = new_session(world, f"Two-way session ({provider}, run {number})")
    people = [Person(login, world.ids[login], "") for login in logins]
    if provider == "graph":
        fakes.call("graph-add", [(p.user_id, p.login) for p in people])
    elif provider == "google":
        fakes.call("google-add", [p.login for p in people])
    elif provider == "caldav":
        from radicale_support import mkcalendar_body

        for p in people:
            user, password = radicale.new_user()
            answer = radicale.request(
                "MKCALENDAR", f"/{user}/training/", user, password, mkcalendar_body("Training", ("VEVENT",)),
                {"Content-Type": "application/xml"},
            )  # fmt: skip
            assert answer.status == 201, answer
            p.caldav = (user, password)
    for p in people:
        connect(world, provider, p, fakes, radicale)
        body = {"userLoginName": p.login, "courseSessionId": session_id}
        p.enrollment_id = enrollments.enroll(world.db, CLI, world.course_id, body)["Id"]
    wait_until(lambda: settled(world.db, provider, people), args.timeout, f"the {provider} phase's setup")
    time.sleep(1.0)  # stragglers: notifications of the fill still in flight are answered and checked
    wait_until(lambda: settled(world.db, provider, people), args.timeout, f"the {provider} phase's setup")
    result.setup_seconds = time.monotonic() - t
    with world.db.read() as conn:
        for p in people:
            row = conn.execute(
                "SELECT connection_id, provider_id FROM calendar_items WHERE user_id = ? AND session_id = ?"
                " AND channel = 'calendar'",
                (p.user_id, session_id),
            ).fetchone()
            p.connection_id, p.provider_id = row["connection_id"], row["provider_id"]

    counted = provider if provider != "null" else "graph"
    if provider == "caldav":
        since = {"offset": (radicale.root / "radicale.log").stat().st_size}
    else:
        _, since = fakes.call("counts", counted, {})
    cpu, others = worker.cpu(), Others(pids)
    stop = threading.Event()
    seen: dict[str, float] = {}
    poller = threading.Thread(
        target=lambda: seen.update(cancelled_at(world.db.path, [p.enrollment_id for p in people], args.poll, stop)),
        name="poller",
    )
    poller.start()
    deleted: dict[str, float] = {}
    start = time.monotonic()
    for i, p in enumerate(people):
        wait = start + i / args.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.05:
            result.late_starts += 1
        if provider == "graph":
            deleted[p.enrollment_id] = fakes.call("graph-delete", p.user_id, p.provider_id)
        elif provider == "google":
            deleted[p.enrollment_id] = fakes.call("google-delete", p.login, p.provider_id)
        elif provider == "caldav":
            assert p.caldav is not None
            answer = radicale.request("DELETE", urlsplit(p.provider_id).path, *p.caldav)
            deleted[p.enrollment_id] = time.time()
            assert answer.status in (200, 204), answer
        else:
            deleted[p.enrollment_id] = worker.call("null-delete", p.connection_id, p.provider_id)
    poller.join(args.timeout)
    stop.set()
    poller.join()
    wait_until(lambda: removed(world.db, session_id), args.timeout, "the cancelled registrations' events to go")
    result.seconds = time.monotonic() - start
    result.worker_cpu, result.others = worker.cpu() - cpu, others.cores()
    if provider == "caldav":
        result.counts = dav_counts(radicale.root / "radicale.log", since["offset"])
    else:
        result.counts, _ = fakes.call("counts", counted, since)
    if provider == "null":
        result.counts = {}
    for p in people:
        if p.enrollment_id in seen:
            result.latencies.append(seen[p.enrollment_id] - deleted[p.enrollment_id])
        else:
            result.missing += 1
    errors.stop.set()
    errors.join()
    result.errors = errors.found
    for p in people:
        calendar.disconnect(world.db, CLI, p.user_id, keep_events=True)
    return result


def dav_counts(log: Path, offset: int) -> dict[str, int]:
    """The worker's requests (user agent coursewire-calendars) Radicale logged after `offset`, by kind."""
    out: Counter[str] = Counter()
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    for method, path, agent in DAV_REQUEST.findall(text):
        if agent.startswith("coursewire"):
            out[f"{method} {_dav_kind(path)}"] += 1
    return dict(out)


class CheckErrors(threading.Thread):
    """Every check error recorded while a phase runs (storage.calendar_watch.release keeps the last one per
    connection and a later success clears it, so it is read every 0.1 s): error text -> connections."""

    def __init__(self, db_path: str) -> None:
        super().__init__(name="check-errors", daemon=True)
        self.db = Database(db_path)
        self.stop = threading.Event()
        self.seen: set[tuple[str, str, str]] = set()
        self.found: Counter[str] = Counter()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            with self.db.read() as conn:
                rows = conn.execute(
                    "SELECT connection_id, last_check_error, check_due_at FROM calendar_watches"
                    " WHERE last_check_error IS NOT NULL"
                ).fetchall()
            for row in rows:
                key = (row[0], row[1], row[2])
                if key not in self.seen:
                    self.seen.add(key)
                    self.found[row[1][:300]] += 1


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest-rank method: the ceil(q * n)-th smallest (p99 of 100 samples is the 99th)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) - 1e-9)))
    return ordered[rank - 1]


# -- the report ------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def report(args: argparse.Namespace, world_seconds: float, phases: list[Phase], worker_interval: float) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# Calendar mirror, two-way: from a person deleting a session's event to their unregistration",
        "",
        "Written by `bench/calendar_two_way.py`; its docstring says what is measured and how.",
        "",
        *describe(packages=("aiohttp", "uvicorn", "radicale"), wrk=False),
        f"- {args.people} people per provider and run, one connected calendar and one session day (one event)"
        f" each, deleting their events at {args.rate:g} per second; {args.runs} run(s), the providers' order"
        f" rotating; users built through the storage verbs in {world_seconds:.0f} s",
        f"- Worker: CalendarWorker.run with its defaults (idle poll {worker_interval:g} s, 100 pairs and 100"
        f" checks a round, 32 at once), its own process; COURSEWIRE_CALDAV_POLL_SECONDS={args.caldav_poll:g}"
        " (default 300), sweep of Microsoft 365 and Google 900 s (default)",
        "- Receiver: calendars.receiving.NotificationReceiver under uvicorn (uvloop, httptools), its own process",
        f"- Graph and Google fakes: {args.provider_latency * 1000:.0f} ms per request, no throttling; Radicale"
        f" with max_connections {args.radicale_connections or 8}, logging every request (INFO)",
        f"- Latency read by polling the enrollments every {args.poll * 1000:.0f} ms; load average at the end {load}"
        " (the machine is shared)",
        "",
        "## Deletion to unregistration",
        "",
        "Per provider: the median over the runs of each run's p50, p99 and max, and the pooled samples' p50 / p99"
        " (all in ms). Requests: HTTP requests the fake or Radicale received from the first deletion until"
        " everything settled, per unregistration (the worker's only; the people's deletions are not requests to"
        " the fake), and the notifications POSTed to the receiver per unregistration.",
        "",
        "| provider | unregistered | p50 | p99 | max | pooled p50 / p99 | requests per unregistration"
        " | notifications per unregistration | worker CPU per unregistration, ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for provider in PROVIDERS:
        mine = [p for p in phases if p.provider == provider]
        if not mine:
            continue
        pooled = [x for p in mine for x in p.latencies]
        done = sum(len(p.latencies) for p in mine)
        missing = sum(p.missing for p in mine)
        per = f"{median([p.requests / max(1, len(p.latencies)) for p in mine]):.1f}" if provider != "null" else "0"
        notes = (
            f"{median([p.counts.get('notifications', 0) / max(1, len(p.latencies)) for p in mine]):.2f}"
            if provider in ("graph", "google")
            else "0"
        )
        cpu = median([p.worker_cpu / max(1, len(p.latencies)) * 1000 for p in mine])
        lines.append(
            f"| {LABELS[provider]} | {done:,}"
            + (f" ({missing} not)" if missing else "")
            + f" | {ms(median([quantile(p.latencies, 0.5) for p in mine]))}"
            f" | {ms(median([quantile(p.latencies, 0.99) for p in mine]))}"
            f" | {ms(median([max(p.latencies, default=float('nan')) for p in mine]))}"
            f" | {ms(quantile(pooled, 0.5))} / {ms(quantile(pooled, 0.99))} | {per} | {notes} | {cpu:.1f} |"
        )
    base = [p for p in phases if p.provider == "null"]
    if base:
        engine = median([quantile(p.latencies, 0.5) for p in base])
        added = [
            f"{provider} +{ms(median([quantile(p.latencies, 0.5) for p in mine]) - engine)} ms"
            for provider in ("graph", "google", "caldav")
            if (mine := [p for p in phases if p.provider == provider])
        ]
        lines += [
            "",
            f"- Over the engine alone (p50 {ms(engine)} ms), each provider's path adds at p50: {', '.join(added)}.",
        ]
    dav = [p for p in phases if p.provider == "caldav"]
    if dav:
        polls = sum(n for p in dav for kind, n in p.counts.items() if kind.startswith("REPORT"))
        seconds = sum(p.seconds * p.people for p in dav)
        lines.append(
            f"- CalDAV: {polls:,} sync-collection REPORTs in {sum(p.seconds for p in dav):.0f} s of phases, one per"
            f" connection every {seconds / max(1, polls):.1f} s (COURSEWIRE_CALDAV_POLL_SECONDS={args.caldav_poll:g}):"
            " the poll costs requests whether or not anyone deletes anything; the rest are the confirmation"
            " (PROPFIND of the calendar, discovery of the person's other calendars, GET of the event) and the"
            " sync's DELETE."
        )
    lines += [
        "",
        "Requests by kind (sum over the runs; `$batch:` lines are requests inside $batch, not counted again):",
        "",
    ]
    for provider in ("graph", "google", "caldav"):
        mine = [p for p in phases if p.provider == provider]
        if not mine:
            continue
        total: Counter[str] = Counter()
        for p in mine:
            total.update(p.counts)
        done = sum(len(p.latencies) for p in mine)
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(total.items()) if kind != "notifications")
        lines.append(f"- {LABELS[provider]}: {kinds} ({done:,} unregistered)")
    lines += [
        "",
        "Each phase:",
        "",
        "| run | provider | p50, ms | p99, ms | max, ms | unregistered | requests | setup, s | phase, s"
        " | worker CPU, s | others, cores | late deletions | check errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        lines.append(
            f"| {p.run} | {p.provider} | {ms(quantile(p.latencies, 0.5))} | {ms(quantile(p.latencies, 0.99))}"
            f" | {ms(max(p.latencies, default=float('nan')))} | {len(p.latencies)} of {p.people}"
            f" | {p.requests:,} | {p.setup_seconds:.1f} | {p.seconds:.1f} | {p.worker_cpu:.1f} | {p.others:.1f}"
            f" | {p.late_starts} | {sum(p.errors.values())} |"
        )
    errors: Counter[str] = Counter()
    for p in phases:
        errors.update(p.errors)
    if errors:
        lines += ["", "Check errors seen (storage.calendar_watch's last_check_error, read every 0.1 s):", ""]
        lines += [f"- {n} x {error}" for error, n in errors.most_common(10)]
    lines.append("")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 people per provider, 1 run")
    parser.add_argument("--people", type=int, default=100, help="people per provider and run")
    parser.add_argument("--rate", type=float, default=5.0, help="deletions per second")
    parser.add_argument("--runs", type=int, default=2, help="runs of every provider (medians quoted)")
    parser.add_argument("--caldav-poll", type=float, default=5.0, help="COURSEWIRE_CALDAV_POLL_SECONDS (5 to 86400)")
    parser.add_argument(
        "--radicale-connections", type=int, default=0, help="Radicale's [server] max_connections (0: its default, 8)"
    )
    parser.add_argument("--provider-latency", type=float, default=0.05, help="seconds each fake request takes")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between reads of the enrollments")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a phase to settle")
    parser.add_argument("--only", choices=PROVIDERS, action="append", help="measure only these providers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.people, args.runs = 20, 1
        if args.out == RESULTS:
            args.out = Path(tempfile.gettempdir()) / "calendar-two-way-quick.md"
    providers = tuple(args.only or PROVIDERS)

    from radicale_support import RadicaleServer

    from calendars.worker import CalendarWorker

    worker_interval = inspect.signature(CalendarWorker.run).parameters["interval"].default

    with tempfile.TemporaryDirectory(prefix="calendar-two-way-") as name:
        directory = Path(name)
        t = time.monotonic()
        print(f"building the world: {args.people * args.runs} people per provider")
        world = build_world(directory, args.people * args.runs)
        world_seconds = time.monotonic() - t
        (directory / "radicale").mkdir()
        radicale = RadicaleServer(directory / "radicale")
        restart_radicale(radicale, args.radicale_connections)
        fakes: Fakes | None = None
        worker: Worker | None = None
        receiver: Any = None
        phases: list[Phase] = []
        try:
            radicale.wait_ready()
            fakes = Fakes({"latency": args.provider_latency})
            port = free_port()
            context = multiprocessing.get_context("spawn")
            receiver = context.Process(
                target=receiver_main, args=(str(world.db.path), port), name="receiver", daemon=True
            )
            receiver.start()
            wait_listening(port, receiver)
            worker = Worker(directory / "coursewire.db", fakes.urls, f"http://127.0.0.1:{port}", args.caldav_poll)
            pids = [os.getpid(), fakes.process.pid, worker.process.pid, receiver.pid, radicale.process.pid]
            for number in range(1, args.runs + 1):
                shift = (number - 1) % len(providers)
                for provider in providers[shift:] + providers[:shift]:
                    p = phase(world, fakes, worker, radicale, provider, number, args, pids)
                    phases.append(p)
                    print(
                        f"run {number} {provider:6}: p50 {ms(quantile(p.latencies, 0.5))} ms,"
                        f" p99 {ms(quantile(p.latencies, 0.99))} ms, max {ms(max(p.latencies, default=0))} ms,"
                        f" {len(p.latencies)} of {p.people} unregistered, {p.requests} requests"
                        f" {dict(sorted(p.counts.items()))}, setup {p.setup_seconds:.1f} s,"
                        f" others {p.others:.1f} cores, {p.late_starts} late"
                    )
                    for error, count in p.errors.items():
                        print(f"  {count} checks last failed with: {error}")
        finally:
            if worker is not None:
                worker.stop()
            if receiver is not None:
                receiver.terminate()
                receiver.join(10)
            if fakes is not None:
                fakes.stop()
            radicale.stop()
        publish(report(args, world_seconds, phases, worker_interval), args.out)


if __name__ == "__main__":
    main()
