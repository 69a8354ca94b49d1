"""The ILT calendar mirror against the Microsoft Graph fake: a burst of session edits, tenant-wide mode against
per-user mode, and registration latency.

Run from the repository root:

    .venv/bin/python bench/calendar.py [--quick] [--registrants 1000] [--runs 2] [--rate 20] [--seconds 12]
        [--scenarios burst,tenant,latency]

Three processes share the machine: this one (the database's writer: it builds the world, edits the session,
registers people, and reads the fake's state), the Graph fake (tests/mirror/fakes/graph.py in its own process, a
thread serving HTTP on 127.0.0.1 and the main thread answering this process over a pipe), and the worker
(calendars.worker.CalendarWorker.run with its defaults: poll interval 1 s, 100 pairs claimed per round, 32 at
once). The worker builds each connection's provider as calendars.connections.open_provider does, through the
same guarded aiohttp session the worker makes for itself (127.0.0.1 allowed); connections whose account is
`@null.bench` get calendars.providers.null.NullProvider instead (the latency baseline).

The fake runs with its documented limits: at most 4 requests per mailbox at once (one more is a 429
MailboxConcurrency), $batch of at most 20 answered 4 inner requests at a time, and seeded random 429s outside
(`--throttle`, 2 %) and inside $batch (`--batch-throttle`, 2 %) with `Retry-After: --retry-after` (7 s, the
fake's default); each request holds its mailbox slot `--graph-latency` seconds (0.05) as a stand-in for Graph's
own time. A per-user connection is Microsoft365 with its own mailbox; its sealed credentials hold an access token
the fake accepts (`bench-<user id>`) expiring in 2099, so no token endpoint is involved (no refresh happens). The
fake's process also runs the Entra fake (tests/mirror/fakes/identity.py), whose client-credentials grant gives
the tenant's application tokens, which the Graph fake takes for any mailbox (its `APP` principal), as
tests/mirror/test_tenant.py sets them up; the tenant (storage.calendar_tenant.enable_tenant) is connected from
the start, and the worker's CalendarConfig names the Entra fake's client and that tenant.

  burst    a one-day session with `--registrants` learners, each with their own mailbox, all events created
           first (the "first fill"). Then ten edits through storage.sessions.update, back to back while the
           worker runs, each its own transaction as the API makes it; two kinds: `fields`, 5 titles and 5 rooms
           (each event is updated), and `times`, 4 titles, 3 rooms and 3 times (a moved day gets a new id, so
           each event is deleted and created again). Measured from just before the first edit until every
           mailbox holds exactly the right event (subject, start, end, location and body, read from the fake's
           state every 0.2 s) and no pair is queued, and until 90 % do: the time, the HTTP requests the fake
           received by kind ($batch, DELETE, ...), the requests inside $batch, the 429s (outside and inside),
           the writes the fake carried out, and duplicates (two events of one person on one day, at the end and
           the most seen at any poll). Baseline, in the same run (which goes first alternating): the same change
           as ONE edit, the floor; the naive cost (every edit written on its own) is computed from what each
           edit alone writes.
  tenant   tenant-wide Microsoft 365 (calendars/tenant.py) against per-user mode. `--registrants` more people,
           each with an e-mail address that is the userPrincipalName of a mailbox of the tenant (its Graph user
           id is the person's coursewire id; both are opaque) and no connection, registered to a one-day session
           of their own. Then the roster, calendars.tenant.roster_round back to back until a round looks nobody
           up (200 people a round, each looked up by `GET /users/{e-mail}` in the roster's TenantBatcher, 20 a
           $batch; found people connected with storage.calendar_tenant.connect_mailbox), in this process on an
           HTTP session of its own (the bench's worker has no session of its own to run it on), while the worker
           writes their events through open_provider's tenant provider (`/users/{id}/events` in the worker's one
           TenantBatcher: $batch of 20 across mailboxes, at most 4 in flight per mailbox, Retry-After honoured);
           the roster's time and the first fill (from the roster's start until every mailbox is right and
           nothing is queued) are reported. The two-way mirror then reads each new mailbox once
           (calendarView/delta, sent alone; counted apart as "delta" requests), and every measured run waits
           until no such check is due. Then `--runs` runs, each one edit (title and room at once) of the tenant
           session and one of the burst session (per-user connections, put_many a $batch per person), the order
           alternating; per mode: time to right and to 90 % right (as the burst measures them), HTTP requests,
           $batch calls and the requests inside them, 429s, writes, the worker's batcher's own counts; and the
           ratios tenant-wide / per-user. One event a person: per-user needs one $batch per person, tenant-wide
           about one per 20.
  latency  registrations at `--rate` per second for `--seconds`, each a new person with a connected calendar
           enrolled into a session through storage.enrollments.enroll (its own transaction), with the worker
           in its normal loop. Latency is the fake's creation time of the event (Event.created, set when it
           stores the event) minus the wall-clock time the registration's commit returned. Baseline: the same
           with NullProvider connections (the time of its first put), i.e. the engine without HTTP. The two
           alternate over `--latency-runs` (2) runs and the samples of each are pooled.

Caveats: one machine's two cores run all three processes, so the worker's CPU and the fake's compete; the
fake's latency and Retry-After are chosen, not measured from Graph; one event per person (one session day), so
each per-user $batch holds one request (put_many sends one per pair). Random 429s are drawn per HTTP request
and per inner request, so tenant-wide mode, with about 1/20 of the HTTP requests, meets fewer outer 429s, but
an outer 429 pauses its whole batcher, where per-user it delays one person; with a 7 s Retry-After a single
429 sets the time to right, so the 90 % time says more about throughput.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file is named calendar.py: run as a script, its folder would come first on sys.path and shadow the
# standard library's calendar module (imported by email, http.cookiejar and so aiohttp). The folder goes last.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or os.getcwd()).resolve() not in (BENCH, ROOT)]
sys.path += [str(BENCH), str(ROOT / "tests" / "mirror")]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from multiprocessing.connection import Connection as Pipe  # noqa: E402
from typing import Any  # noqa: E402

from machine import describe, publish  # noqa: E402
from noise import _busy_seconds  # noqa: E402

from calendars import desired  # noqa: E402
from calendars.config import CalendarConfig  # noqa: E402
from calendars.model import CalendarItem, Written  # noqa: E402
from storage import calendar, calendar_tenant, catalogs, courses, enrollments, sessions, users  # noqa: E402
from storage.db import Database, iso  # noqa: E402
from storage.models import CLI  # noqa: E402
from storage.secrets import SecretBox  # noqa: E402

RESULTS = BENCH / "results" / "calendar.md"
NULL_DOMAIN = "null.bench"
TOKEN_PREFIX = "bench-"  # noqa: S105 (the fake's made-up access tokens)
ZONE = "W. Europe Standard Time"
POLL = 0.2  # seconds between reads of the fake's state
KINDS = ("$batch", "POST", "PATCH", "DELETE", "GET", "delta")
SCENARIOS = ("burst", "tenant", "latency")
DEFAULT_MAILBOX_WAIT = 1.0  # calendars.tenant.TenantBatcher's default mailbox_wait, seconds
OLD_MAILBOX_WAIT = 120.0  # what a mailbox's 429 was waited out for inside the batcher before that default
INNER = ("POST", "PATCH", "DELETE", "GET")
TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"  # the Entra and Graph fakes' tenant id
TENANT_DOMAIN = "fabrikam.example"


# -- the Graph fake's process ----------------------------------------------------------------------------------


def fake_main(pipe: Pipe, options: dict[str, Any]) -> None:
    """The Graph fake, serving on a thread; this thread answers the bench's requests until ("stop",)."""
    from fakes.graph import APP, GraphFake, instant
    from fakes.graph import _property_key as property_key
    from fakes.identity import FakeIdentity

    from calendars.providers.graph import PROPERTY_ID

    key_property = property_key(PROPERTY_ID)
    # The Entra fake's client-credentials grant gives the tenant's application tokens (tenant-wide mode).
    identity = FakeIdentity(tenant=TENANT).start()

    class BenchGraph(GraphFake):
        """The fake, counting what it answered: HTTP requests by kind, 429s outside and inside $batch, and the
        writes it carried out. Tokens are `bench-<mailbox user id>` (a person's own), or an application token
        the Entra fake issued (any mailbox of the tenant)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.token_check = self._bench_token

        def _bench_token(self, token: str) -> str | None:
            if token.startswith(TOKEN_PREFIX):
                user = token.removeprefix(TOKEN_PREFIX)
                return user if user in self.mailboxes else None
            return APP if identity.app_token(token) else None

        async def _answer(self, request: Any, path: str, raw: bytes, failure: Any) -> Any:
            answer = await super()._answer(request, path, raw, failure)
            # The two-way mirror's calendarView/delta sweeps (GET, never in $batch) counted apart from the writes.
            kind = "$batch" if path == "/v1.0/$batch" else "delta" if path.endswith("/delta") else request.method
            with self._lock:
                self.counters[f"http {kind}"] += 1
                if answer.status == 429:
                    self.counters["429 outside"] += 1
            return answer

        async def _inner(self, principal: str, request: dict[str, Any], call: int = 0) -> dict[str, Any]:
            out = await super()._inner(principal, request, call)
            if out["status"] == 429:
                with self._lock:
                    self.counters["429 inside"] += 1
            return out

        def _operate(self, mailbox: Any, method: str, rest: list[str], *args: Any) -> Any:
            answer = super()._operate(mailbox, method, rest, *args)  # called holding self._lock
            if method in ("POST", "PATCH", "DELETE"):
                self.counters[f"done {method}"] += 1
            return answer

    fake = BenchGraph(
        seed=options["seed"],
        latency=options["latency"],
        throttle_rate=options["throttle"],
        batch_throttle_rate=options["batch_throttle"],
        retry_after=options["retry_after"],
    )
    fake.start()
    config = identity.config()
    pipe.send(
        (
            fake.url,
            {
                "microsoft_client_id": config.microsoft_client_id,
                "microsoft_client_secret": config.microsoft_client_secret,
                "microsoft_login_url": config.microsoft_login_url,
            },
        )
    )

    def check(people: list[str], want: dict[str, Any]) -> dict[str, int]:
        start, end = datetime.fromisoformat(want["start"]), datetime.fromisoformat(want["end"])
        out = Counter({"right": 0, "missing": 0, "wrong": 0, "duplicates": 0, "events": 0})
        with fake._lock:
            for user in people:
                events = list(fake.mailboxes[user].events.values())
                out["events"] += len(events)
                days = Counter(instant(e.fields["start"]).date() for e in events)
                out["duplicates"] += sum(n - 1 for n in days.values())
                if not events:
                    out["missing"] += 1
                    continue
                f = events[0].fields
                right = (
                    len(events) == 1
                    and events[0].properties.get(key_property) == f"{user}.{want['day_id']}"
                    and f.get("subject") == want["subject"]
                    and instant(f["start"]) == start
                    and instant(f["end"]) == end
                    and (f.get("location") or {}).get("displayName") == want["location"]
                    and (f.get("body") or {}).get("content") == want["body_html"]
                )
                out["right" if right else "wrong"] += 1
        return dict(out)

    def created(people: list[str]) -> dict[str, list[float]]:
        with fake._lock:
            return {
                user: [datetime.fromisoformat(e.created.replace("Z", "+00:00")).timestamp() for e in events]
                for user in people
                if (events := list(fake.mailboxes[user].events.values()))
            }

    while True:
        command, *args = pipe.recv()
        if command == "add":
            for user, address in args[0]:
                fake.add_user(user, address)
            pipe.send(len(args[0]))
        elif command == "counters":
            with fake._lock:
                counts = dict(fake.counters)
            counts["token grants"] = identity.grant_count("client_credentials")
            pipe.send(counts)
        elif command == "check":
            pipe.send(check(*args))
        elif command == "created":
            pipe.send(created(*args))
        elif command == "stop":
            fake.stop()
            identity.close()
            pipe.send("stopped")
            return


class Fake:
    """The bench's side of the fake's process."""

    def __init__(self, options: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(target=fake_main, args=(theirs, options), name="graph-fake", daemon=True)
        self.process.start()
        theirs.close()  # so that recv() raises EOFError, not waits forever, if the fake's process dies
        url, identity = self.call()
        self.url: str = url
        self.identity: dict[str, str] = identity  # the Entra fake's client and login URL (CalendarConfig fields)

    def call(self, *message: Any) -> Any:
        if message:
            self.pipe.send(message)
        return self.pipe.recv()

    def counters(self) -> Counter[str]:
        return Counter(self.call("counters"))

    def stop(self) -> None:
        self.call("stop")
        self.process.join(10)


def bench_config(graph_url: str, identity: dict[str, str]) -> CalendarConfig:
    """The worker's and the roster's settings: the Graph fake, 127.0.0.1 allowed outbound, and the Entra fake's
    client for the tenant (client credentials)."""
    return CalendarConfig(
        graph_url=graph_url,
        allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),),
        microsoft_tenant=TENANT,
        microsoft_client_id=identity["microsoft_client_id"],
        microsoft_client_secret=identity["microsoft_client_secret"],
        microsoft_login_url=identity["microsoft_login_url"],
    )


# -- the worker's process --------------------------------------------------------------------------------------


def worker_main(pipe: Pipe, db_path: str, graph_url: str, identity: dict[str, str]) -> None:
    """CalendarWorker.run with its defaults until ("stop",); ("created",) answers the NullProviders' first-put
    times by item key, ("batcher",) what the tenant's TenantBatcher did so far (calendars.tenant.BatcherStats)."""
    logging.basicConfig(level=logging.WARNING, format="worker %(levelname)s %(name)s: %(message)s")
    from calendars.connections import open_provider
    from calendars.model import Provider
    from calendars.providers.null import NullProvider
    from calendars.tenant import batcher_for
    from calendars.worker import CalendarWorker
    from storage import outbound
    from storage.calendar import Connection

    first_put: dict[str, float] = {}

    class RecordingNull(NullProvider):
        async def put(self, item: CalendarItem, written: Written | None, *, recreate: bool = True) -> Written:
            result = await super().put(item, written, recreate=recreate)
            first_put.setdefault(item.key, time.time())
            return result

    async def main() -> None:
        db = Database(db_path)
        box = SecretBox.for_database(db_path)
        config = bench_config(graph_url, identity)
        # The session CalendarWorker.start() makes when it builds providers itself.
        session = outbound.guarded_session(config.allowed_networks, user_agent="coursewire-calendars/1")

        def provider_for(connection: Connection) -> Provider:
            if (connection.account or "").endswith("@" + NULL_DOMAIN):
                return RecordingNull()
            return open_provider(connection, session, db, box, config)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with CalendarWorker(db, box, config, provider_for=provider_for) as worker:
            task = asyncio.create_task(worker.run(stop))
            pipe.send("running")
            while True:
                command, *args = await loop.run_in_executor(None, pipe.recv)
                if command == "max_wait":
                    # A diagnostic: the longest Retry-After the tenant's batcher waits out itself before it hands
                    # the 429 back to the provider (and so the worker's retry); its default is 120 s.
                    batcher_for(session, config, TENANT).mailbox_wait = float(args[0])
                    pipe.send("ok")
                elif command == "created":
                    pipe.send(dict(first_put))
                elif command == "batcher":
                    # The batcher open_provider's tenant connections share (made here if none was yet).
                    stats = batcher_for(session, config, TENANT).stats
                    pipe.send(
                        {
                            "batches": stats.batches,
                            "batched": sum(stats.batch_sizes),
                            "direct": stats.direct,
                            "inner 429": stats.inner_throttled,
                            "outer 429": stats.outer_throttled,
                            "largest": max(stats.batch_sizes, default=0),
                        }
                    )
                elif command == "stop":
                    stop.set()
                    await task
                    break
        await session.close()
        pipe.send("stopped")

    asyncio.run(main())


class Worker:
    def __init__(self, db_path: Path, graph_url: str, identity: dict[str, str]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(
            target=worker_main, args=(theirs, str(db_path), graph_url, identity), name="worker"
        )
        self.process.start()
        theirs.close()  # so that recv() raises EOFError, not waits forever, if the worker's process dies
        assert self.pipe.recv() == "running"

    def cpu(self) -> float:
        """CPU seconds (user + system) the worker's process used so far."""
        return _cpu_seconds(self.process.pid)

    def created(self) -> dict[str, float]:
        self.pipe.send(("created",))
        result: dict[str, float] = self.pipe.recv()
        return result

    def max_wait(self, seconds: float) -> None:
        """Set the tenant batcher's mailbox_wait (TenantBatcher's argument) in the worker's process."""
        self.pipe.send(("max_wait", seconds))
        assert self.pipe.recv() == "ok"

    def batcher(self) -> Counter[str]:
        """The tenant batcher's totals so far (worker_main)."""
        self.pipe.send(("batcher",))
        return Counter(self.pipe.recv())

    def stop(self) -> None:
        self.pipe.send(("stop",))
        self.pipe.recv()
        self.process.join(10)


class Others:
    """Cores other processes of the machine kept busy while a phase ran: the machine's busy CPU time
    (bench/noise.py) minus this bench's three processes', per second of wall time."""

    def __init__(self, fake: Fake, worker: Worker) -> None:
        self.pids = [os.getpid(), fake.process.pid, worker.process.pid]
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), _busy_seconds(), sum(_cpu_seconds(pid) for pid in self.pids)

    def cores(self) -> float:
        (t0, busy0, mine0), (t1, busy1, mine1) = self.start, self._sample()
        return max(0.0, (busy1 - busy0) - (mine1 - mine0)) / (t1 - t0)


def _cpu_seconds(pid: int | None) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the world -------------------------------------------------------------------------------------------------


@dataclass
class World:
    db: Database
    course_id: str
    burst_session: str
    burst_people: list[str]
    latency_sessions: dict[str, str]  # mode -> session id
    latency_people: dict[str, list[str]]  # mode -> people not yet registered (login names)
    ids: dict[str, str]  # login name -> user id
    day: datetime  # the sessions' date (local)
    box: SecretBox
    tenant_session: str
    tenant_people: list[str]  # login names: people of the tenant, not connected and not registered yet


def build_world(directory: Path, registrants: int, latency_people: int, tenant_people: int) -> World:
    """A catalog, a ClassRoom course, a one-day session for the burst, one per latency mode and one for the
    tenant; `registrants` learners registered to the burst session and `latency_people` per mode with a
    connected calendar, none registered yet; `tenant_people` learners with an e-mail address and no calendar
    connection, not registered yet; the tenant connected (storage.calendar_tenant.enable_tenant). Everything
    through the storage verbs the API uses."""
    db = Database(directory / "coursewire.db")
    db.migrate()
    box = SecretBox.for_database(str(directory / "coursewire.db"))
    calendar.update_settings(db, CLI, {"Microsoft365Enabled": True})
    calendar_tenant.enable_tenant(db, CLI, TENANT)
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

    def new_session(title: str) -> str:
        body = {
            "Title": title,
            "TimeZone": ZONE,
            "StartDate": (day + timedelta(hours=8)).isoformat(),
            "EndDate": (day + timedelta(hours=10)).isoformat(),
            "Room": {"Title": "Hall A", "Location": "Building 1"},
        }
        return str(sessions.create(db, CLI, course["Id"], body)["Id"])

    burst_session = new_session("Burst session")
    latency_sessions = {mode: new_session(f"Latency session ({mode})") for mode in ("graph", "null")}
    tenant_session = new_session("Tenant session")
    far = iso(datetime(2099, 1, 1, tzinfo=UTC))
    ids: dict[str, str] = {}

    def person(login: str, null: bool) -> None:
        user = users.create(db, CLI, {"LoginName": login, "Email": login, "Title": login.split("@")[0]})
        ids[login] = user["Id"]
        credentials = {"access_token": TOKEN_PREFIX + user["Id"], "refresh_token": "unused", "expires_at": far}
        calendar.connect(
            db,
            CLI,
            user["Id"],
            "Microsoft365",
            account=f"{login.split('@')[0]}@{NULL_DOMAIN}" if null else login,
            calendar=None,
            credentials=box.seal(json.dumps(credentials)),
        )

    burst_people = [f"burst{i:05d}@contoso.example" for i in range(registrants)]
    waiting = {
        "graph": [f"lat{i:05d}@contoso.example" for i in range(latency_people)],
        "null": [f"nul{i:05d}@contoso.example" for i in range(latency_people)],
    }
    for login in burst_people + waiting["graph"]:
        person(login, null=False)
    for login in waiting["null"]:
        person(login, null=True)
    for login in burst_people:
        enrollments.enroll(db, CLI, course["Id"], {"userLoginName": login, "courseSessionId": burst_session})
    tenant_logins = [f"tenant{i:05d}@{TENANT_DOMAIN}" for i in range(tenant_people)]
    for login in tenant_logins:
        ids[login] = users.create(db, CLI, {"LoginName": login, "Email": login, "Title": login.split("@")[0]})["Id"]
    return World(
        db, course["Id"], burst_session, burst_people, latency_sessions, waiting, ids, day, box, tenant_session,
        tenant_logins,
    )  # fmt: skip


def wanted(db: Database, user_id: str, session_id: str) -> dict[str, Any]:
    """What the person's event should be, as the fake's check compares it (every learner's is the same but
    for the key)."""
    with db.read() as conn:
        items: list[CalendarItem] = desired.items_for(conn, user_id, session_id)
    assert len(items) == 1, items
    item = items[0]
    return {
        "day_id": item.day_id,
        "subject": item.subject,
        "start": item.start.isoformat(),
        "end": item.end.isoformat(),
        "location": item.location or "",
        "body_html": item.body_html,
    }


# -- the burst -------------------------------------------------------------------------------------------------


@dataclass
class Burst:
    kind: str  # a key of BURSTS
    edits: int
    seconds: float = 0.0
    seconds_90: float = 0.0  # until 90 % of the mailboxes were right
    edit_seconds: float = 0.0  # how long the edits themselves took
    counts: Counter[str] = field(default_factory=Counter)
    duplicates_end: int = 0
    duplicates_seen: int = 0
    worker_cpu: float = 0.0
    converged: bool = False
    others: float = 0.0  # cores other processes of the machine took meanwhile
    batcher: Counter[str] = field(default_factory=Counter)  # the worker's tenant batcher meanwhile

    @property
    def writes(self) -> int:
        return sum(self.counts[f"done {m}"] for m in ("POST", "PATCH", "DELETE"))

    @property
    def requests(self) -> int:
        return sum(self.counts[f"http {k}"] for k in KINDS)

    @property
    def sweeps(self) -> int:
        """calendarView/delta GETs: the two-way mirror's periodic checks, not caused by the edit."""
        return self.counts["http delta"]

    @property
    def inner(self) -> int:
        """Requests inside $batch calls."""
        return sum(self.counts[f"batch {k}"] for k in INNER)


class Edits:
    """Edit bodies with values never used before, so every edit changes what every event should hold."""

    def __init__(self, day: datetime) -> None:
        self.day = day
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def title(self) -> dict[str, Any]:
        return {"Title": f"Forklift safety, edition {self._next()}"}

    def room(self) -> dict[str, Any]:
        return {"Room": {"Title": f"Hall {self._next()}", "Location": "Building 2"}}

    def time(self) -> dict[str, Any]:
        start = self.day + timedelta(hours=7, minutes=5 * (self._next() % 100))  # same day: 07:05 to 15:20
        return {"StartDate": start.isoformat(), "EndDate": (start + timedelta(hours=2)).isoformat()}

    def bodies(self, kind: str, edits: int) -> list[dict[str, Any]]:
        """Ten edits or the same change as one. `fields`: title, room, title, room, ... (5 and 5), or title and
        room at once; `times`: title, room, time, title, room, time, ... (4, 3 and 3), or all three at once."""
        makers = (self.title, self.room) if kind == "fields" else (self.title, self.room, self.time)
        if edits == 1:
            return [{k: v for make in makers for k, v in make().items()}]
        return [makers[i % len(makers)]() for i in range(edits)]


# kind -> (the ten edits, the one edit, writes per person if each of the ten were written on its own: a title
# or room edit is one PATCH; a time edit gives the day a new id, storage.sessions._write_days keeping a day's id
# only while its times do not change, so its event is deleted and created again: two writes)
BURSTS = {
    "fields": ("10 edits: 5 titles, 5 rooms", "1 edit: title and room at once (the floor)", 10),
    "times": (
        "10 edits: 4 titles, 3 rooms, 3 times",
        "1 edit: title, room and time at once (the floor)",
        4 + 3 + 2 * 3,
    ),
}


def converge(
    world: World, fake: Fake, people: list[str], session_id: str, timeout: float
) -> tuple[bool, dict[str, int], int, float]:
    """Poll the fake until every person's mailbox holds the right event and no pair is queued. Returns
    (converged, the last check, the most duplicates seen at any poll, the monotonic time when 90 % were right)."""
    want = wanted(world.db, world.ids[people[0]], session_id)  # every learner's event is the same but its key
    user_ids = [world.ids[p] for p in people]
    deadline = time.monotonic() + timeout
    seen, most = 0, float("nan")
    while True:
        state = fake.call("check", user_ids, want)
        now = time.monotonic()
        seen = max(seen, state["duplicates"])
        if math.isnan(most) and state["right"] >= 0.9 * len(people):
            most = now
        if state["right"] == len(people) and calendar.pending(world.db) == 0:
            return True, state, seen, most
        if now > deadline:
            return False, state, seen, most
        time.sleep(POLL)


def burst(
    world: World,
    fake: Fake,
    worker: Worker,
    kind: str,
    bodies: list[dict[str, Any]],
    timeout: float,
    *,
    tenant: bool = False,
) -> Burst:
    """Edit the burst session (`tenant`: the tenant session) with `bodies`, one transaction each, and wait
    until its registrants' mailboxes are right (converge)."""
    session_id, people = (
        (world.tenant_session, world.tenant_people) if tenant else (world.burst_session, world.burst_people)
    )
    result = Burst(kind, len(bodies))
    before, cpu, others, batcher = fake.counters(), worker.cpu(), Others(fake, worker), worker.batcher()
    start = time.monotonic()
    for body in bodies:
        sessions.update(world.db, CLI, session_id, body)
    result.edit_seconds = time.monotonic() - start
    # The check needs the wanted state, read after the last edit; the clock runs from before the first.
    result.converged, state, result.duplicates_seen, most = converge(world, fake, people, session_id, timeout)
    result.seconds, result.seconds_90 = time.monotonic() - start, most - start
    result.worker_cpu, result.others = worker.cpu() - cpu, others.cores()
    result.counts = fake.counters() - before
    result.batcher = _minus(worker.batcher(), batcher)
    result.duplicates_end = state["duplicates"]
    if not result.converged:
        print(f"  did not converge in {timeout:.0f} s: {state}, {calendar.pending(world.db)} pairs queued")
    return result


def _minus(after: Counter[str], before: Counter[str]) -> Counter[str]:
    """after - before, keeping keys that did not change (Counter's `-` drops zeros) but not `largest`."""
    return Counter({k: v - before[k] for k, v in after.items() if k != "largest"})


# -- tenant-wide mode ------------------------------------------------------------------------------------------


@dataclass
class TenantFill:
    """Registering the tenant's people, the roster connecting them, and the first fill of their mailboxes."""

    people: int
    enroll_seconds: float = 0.0
    roster_seconds: float = 0.0  # until the roster had connected everyone (its rounds back to back)
    roster_rounds: int = 0
    connected: int = 0
    roster_batches: int = 0  # $batch calls of the roster's own batcher (look-ups)
    roster_lookups: int = 0
    fill: Burst = field(default_factory=lambda: Burst("tenant fill", 0))
    checks_seconds: float = 0.0  # from the roster's start until every new mailbox had its first check
    check_counts: Counter[str] = field(default_factory=Counter)  # what the fake received meanwhile, after the fill


def checks_due(db: Database) -> int:
    """Connections whose two-way check (calendars/inbound.py: a calendarView/delta reading) is due now or that
    have no watch row yet; the first check of a new connection is due at once (storage.calendar_watch.ensure)."""
    with db.read() as conn:
        due = conn.execute("SELECT count(*) FROM calendar_watches WHERE check_due_at <= ?", (iso(datetime.now(UTC)),))
        unwatched = conn.execute(
            "SELECT count(*) FROM calendar_connections c LEFT JOIN calendar_watches w ON w.connection_id = c.id"
            " WHERE c.state = 'active' AND c.sync_enabled = 1 AND c.status = 'Connected' AND w.connection_id IS NULL"
        )
        return int(due.fetchone()[0]) + int(unwatched.fetchone()[0])


def settle(world: World, timeout: float) -> float:
    """Wait until no pair is queued and no check is due (so a measured edit does not share the worker's rounds
    with the first readings of new mailboxes); returns the seconds waited."""
    start = time.monotonic()
    while (checks_due(world.db) or calendar.pending(world.db)) and time.monotonic() - start < timeout:
        time.sleep(POLL)
    return time.monotonic() - start


async def _roster(world: World, config: CalendarConfig) -> tuple[int, int, Any]:
    """calendars.tenant.roster_round until a round looks nobody up, on an HTTP session of its own (the worker
    runs it on its own session in production; here the worker is the bench's, without one). Returns (rounds,
    people connected, the roster batcher's BatcherStats)."""
    from calendars import tenant
    from storage import outbound

    session = outbound.guarded_session(config.allowed_networks, user_agent="coursewire-calendars/1")
    try:
        batcher = tenant.TenantBatcher(session, config.graph_url, tenant.TenantTokens(session, config, TENANT))
        rounds = connected = 0
        while True:
            result = await tenant.roster_round(world.db, world.box, config, session, datetime.now(UTC), batcher=batcher)
            if result.error:
                raise SystemExit(f"the roster failed: {result.error}")
            rounds += 1
            connected += result.connected
            if not result.looked_up:
                return rounds, connected, batcher.stats
    finally:
        await session.close()


def tenant_fill(world: World, fake: Fake, worker: Worker, config: CalendarConfig, timeout: float) -> TenantFill:
    """Register the tenant's people to the tenant session (no connection yet: nothing to write), wait until the
    worker has nothing queued, then run the roster (its look-ups, 20 per $batch, connect each person to their
    mailbox with storage.calendar_tenant.connect_mailbox) while the worker writes; the fill ends when every
    mailbox holds the right event and nothing is queued. Counts are from the roster's start."""
    out = TenantFill(len(world.tenant_people))
    start = time.monotonic()
    for login in world.tenant_people:
        enrollments.enroll(
            world.db, CLI, world.course_id, {"userLoginName": login, "courseSessionId": world.tenant_session}
        )
    out.enroll_seconds = time.monotonic() - start
    deadline = time.monotonic() + timeout
    while calendar.pending(world.db) and time.monotonic() < deadline:
        time.sleep(POLL)
    fill = out.fill
    before, cpu, others, batcher = fake.counters(), worker.cpu(), Others(fake, worker), worker.batcher()
    start = time.monotonic()
    out.roster_rounds, out.connected, stats = asyncio.run(_roster(world, config))
    out.roster_seconds = time.monotonic() - start
    out.roster_batches, out.roster_lookups = stats.batches, sum(stats.batch_sizes)
    fill.converged, state, fill.duplicates_seen, most = converge(
        world, fake, world.tenant_people, world.tenant_session, timeout
    )
    fill.seconds, fill.seconds_90 = time.monotonic() - start, most - start
    fill.worker_cpu, fill.others = worker.cpu() - cpu, others.cores()
    fill.counts = fake.counters() - before
    fill.batcher = _minus(worker.batcher(), batcher)
    fill.duplicates_end = state["duplicates"]
    settle(world, timeout)
    out.checks_seconds = time.monotonic() - start
    out.check_counts = fake.counters() - before - fill.counts
    return out


# kind -> (label, the tenant batcher's mailbox_wait for it; None: per-user mode)
MODES = {
    "tenant": ("tenant-wide (application token)", DEFAULT_MAILBOX_WAIT),
    "per-user": ("per-user (own tokens)", None),
    "tenant, 429 waited out": (
        f"tenant-wide, mailbox 429s waited out in the batcher (mailbox_wait {OLD_MAILBOX_WAIT:g} s: before the fix)",
        OLD_MAILBOX_WAIT,
    ),
}


def compare(world: World, fake: Fake, worker: Worker, edits: Edits, runs: int, timeout: float) -> list[Burst]:
    """One edit (title and room) of the tenant session, one of the burst session (per-user connections) and
    one of the tenant session with mailbox 429s waited out in the batcher (as before the fix), in each run, the
    order reversed every other run; kinds the keys of MODES."""
    out: list[Burst] = []
    for number in range(runs):
        for mode in list(MODES) if number % 2 == 0 else list(reversed(MODES)):
            max_wait = MODES[mode][1]
            settle(world, timeout)
            if max_wait is not None:
                worker.max_wait(max_wait)
            b = burst(world, fake, worker, mode, edits.bodies("fields", 1), timeout, tenant=max_wait is not None)
            out.append(b)
            print(
                f"run {number + 1} {mode:23} 1 edit: {b.seconds:5.1f} s (90 % {b.seconds_90:4.1f}), {b.requests} HTTP"
                f" requests ({b.counts['http $batch']} $batch holding {b.inner}), {b.writes} writes, 429s"
                f" {b.counts['429 outside']}/{b.counts['429 inside']}, worker CPU {b.worker_cpu:.1f} s"
            )
    return out


# -- latency ---------------------------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    mode: str
    registrations: int = 0
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    duplicates: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    worker_cpu: float = 0.0
    late_starts: int = 0  # registrations that began more than 50 ms after their scheduled time
    others: float = 0.0  # cores other processes of the machine took meanwhile


def latency_run(
    world: World, fake: Fake, worker: Worker, mode: str, rate: float, seconds: float, timeout: float
) -> LatencyRun:
    run = LatencyRun(mode)
    n = int(rate * seconds)
    people, world.latency_people[mode] = world.latency_people[mode][:n], world.latency_people[mode][n:]
    assert len(people) == n, "not enough people prepared for this run"
    session_id = world.latency_sessions[mode]
    committed: dict[str, float] = {}
    before, cpu, others = fake.counters(), worker.cpu(), Others(fake, worker)
    start = time.monotonic()
    for i, login in enumerate(people):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.05:
            run.late_starts += 1
        enrollments.enroll(world.db, CLI, world.course_id, {"userLoginName": login, "courseSessionId": session_id})
        committed[world.ids[login]] = time.time()
    run.registrations = n
    day_id = wanted(world.db, world.ids[people[0]], session_id)["day_id"]
    deadline = time.monotonic() + timeout
    while True:
        if mode == "null":
            first = worker.created()
            made = {u: [first[f"{u}.{day_id}"]] for u in committed if f"{u}.{day_id}" in first}
        else:
            made = fake.call("created", list(committed))
        if (len(made) == n and calendar.pending(world.db) == 0) or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    for user, at in committed.items():
        times = made.get(user)
        if not times:
            run.missing += 1
            continue
        run.duplicates += len(times) - 1
        run.latencies.append(min(times) - at)
    run.worker_cpu, run.others = worker.cpu() - cpu, others.cores()
    run.counts = fake.counters() - before
    return run


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (p99 of 600 samples is the 594th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- the report ------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def report(
    args: argparse.Namespace,
    world_seconds: float,
    fill: Burst,
    bursts: list[Burst],
    runs: list[LatencyRun],
    people: int,
    tenant: TenantFill | None = None,
    compared: Sequence[Burst] = (),
) -> str:
    def med(group: Sequence[Burst], get: Callable[[Burst], float]) -> float:
        return median([get(b) for b in group])

    def c(key: str) -> Callable[[Burst], float]:
        return lambda b: b.counts[key]

    def row(label: str, group: list[Burst]) -> str:
        return (
            f"| {label} | {fmt(med(group, lambda b: b.seconds))} | {fmt(med(group, lambda b: b.seconds_90))}"
            f" | {fmt(med(group, lambda b: b.requests), 0)}"
            f" | {fmt(med(group, c('http $batch')), 0)} | {fmt(med(group, c('batch POST')), 0)}"
            f" | {fmt(med(group, c('batch PATCH')), 0)} | {fmt(med(group, c('http DELETE')), 0)}"
            f" | {fmt(med(group, c('429 outside')), 0)} / {fmt(med(group, c('429 inside')), 0)}"
            f" | {fmt(med(group, lambda b: b.writes), 0)}"
            f" | {max(b.duplicates_end for b in group)} ({max(b.duplicates_seen for b in group)})"
            f" | {fmt(med(group, lambda b: b.worker_cpu))} |"
        )

    parts = [
        *(["a burst of session edits"] if bursts else []),
        *(["tenant-wide mode against per-user"] if tenant else []),
        *(["registration-to-event latency"] if runs else []),
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines: list[str] = [
        f"# Calendar mirror: {', '.join(parts[:-1]) + ' and ' + parts[-1] if len(parts) > 1 else parts[0]},"
        " against the Graph fake",
        "",
        "Written by `bench/calendar.py`; its docstring says what is measured and how.",
        "",
        *describe(packages=("aiohttp",), wrk=False),
        f"- {people:,} registrants, each with their own Microsoft 365 mailbox; one session day, so one event each;"
        + (f" {tenant.people:,} more people of the tenant for tenant-wide mode;" if tenant else "")
        + f" world built through the storage verbs in {world_seconds:.0f} s",
        f"- Graph fake (tests/mirror/fakes/graph.py, its own process): 4 requests per mailbox, $batch of 20 answered"
        f" 4 at a time, random 429s {args.throttle:.0%} outside and {args.batch_throttle:.0%} inside $batch (seed"
        f" {args.seed}) with Retry-After {args.retry_after} s, {args.graph_latency * 1000:.0f} ms per request",
        "- Worker: CalendarWorker.run with its defaults (poll every 1 s when idle, 100 pairs a round, 32 at once),"
        " its own process; per-user tokens sealed with an expiry in 2099 (no token endpoint, no refresh)"
        + ("; the tenant's application token from the Entra fake's client-credentials grant" if tenant else ""),
        f"- {args.runs} runs of each comparison, the order alternating; load average at the end {load}"
        " (the machine is shared)",
        "",
        f"First fill (per-user), from starting the worker's process: {fill.counts['done POST']:,} events created in"
        f" {fmt(fill.seconds)} s (90 % in {fmt(fill.seconds_90)} s)"
        f" ({fill.requests:,} HTTP requests, {fill.counts['429 outside']} + {fill.counts['429 inside']} 429s,"
        f" worker CPU {fmt(fill.worker_cpu)} s).",
        "",
    ]
    if bursts:
        lines += _burst_section(bursts, people, row, med)
    if tenant is not None:
        lines += _tenant_section(tenant, list(compared), med)
    if runs:
        lines += _latency_section(args, runs)
    return "\n".join(lines)


def _burst_section(
    bursts: list[Burst],
    people: int,
    row: Callable[[str, list[Burst]], str],
    med: Callable[[Sequence[Burst], Callable[[Burst], float]], float],
) -> list[str]:
    lines = [
        "## Burst: ten edits of a session with every registrant's event to update",
        "",
        "Medians over the runs. Time: from just before the first edit until every mailbox holds exactly the right"
        " event (read from the fake every 0.2 s) and nothing is queued. Requests: HTTP requests the fake received;"
        " inner POST/PATCH: requests inside $batch; writes: creates, updates and deletes the fake carried out"
        " (429s excluded). Duplicates: two events of one person on one day, at the end (most seen while"
        " converging).",
        "",
        "| burst | time to right, s | 90 % right, s | HTTP requests | $batch | inner POST | inner PATCH | DELETE"
        " | 429s outside / inside | writes | duplicates (most seen) | worker CPU, s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for kind, (ten_label, one_label, per_person) in BURSTS.items():
        tens = [b for b in bursts if b.kind == kind and b.edits == 10]
        ones = [b for b in bursts if b.kind == kind and b.edits == 1]
        if not tens or not ones:
            continue
        naive = per_person * people
        lines += [
            row(ten_label, tens),
            row(one_label, ones),
            f"| naive: each of the 10 edits written on its own (computed) | | | | | | | | | {naive:,} | | |",
        ]
        floor, ten = med(ones, lambda b: b.writes), med(tens, lambda b: b.writes)
        verdicts.append(
            f"{ten_label}: writes **{ten / floor:.2f}x the floor** ({fmt(ten, 0)} / {fmt(floor, 0)}),"
            f" {ten / naive:.2f}x writing every edit ({fmt(ten, 0)} / {naive:,}); time to right"
            f" {med(tens, lambda b: b.seconds) / med(ones, lambda b: b.seconds):.2f}x the single edit's; the edits"
            f" themselves took {fmt(med(tens, lambda b: b.edit_seconds) * 1000, 0)} ms."
        )
    lines += [
        "",
        *(f"- {v}" for v in verdicts),
        "",
        "Each run:",
        "",
        "| run | burst | time, s | 90 %, s | HTTP requests | writes (POST / PATCH / DELETE) | 429s out / in"
        " | duplicates end (seen) | worker CPU, s | others, cores | converged |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, b in enumerate(bursts):
        lines.append(
            f"| {i // (2 * len(BURSTS)) + 1} | {b.kind}, {b.edits} edit{'s' if b.edits > 1 else ''}"
            f" | {fmt(b.seconds)} | {fmt(b.seconds_90)}"
            f" | {b.requests:,}"
            f" | {b.writes:,} ({b.counts['done POST']:,} / {b.counts['done PATCH']:,} / {b.counts['done DELETE']:,})"
            f" | {b.counts['429 outside']} / {b.counts['429 inside']} | {b.duplicates_end} ({b.duplicates_seen})"
            f" | {fmt(b.worker_cpu)} | {fmt(b.others)} | {'yes' if b.converged else 'NO'} |"
        )
    return [*lines, ""]


def _tenant_section(
    tenant: TenantFill,
    compared: list[Burst],
    med: Callable[[Sequence[Burst], Callable[[Burst], float]], float],
) -> list[str]:
    f = tenant.fill
    worker_batches = f.batcher["batches"]
    lines = [
        f"## Tenant-wide Microsoft 365: one edit of a session of {tenant.people:,} registrants, against per-user",
        "",
        f"{tenant.people:,} people of the tenant (an e-mail address that is a mailbox's userPrincipalName, no"
        f" DirectoryObjectId, no calendar connection) registered to a one-day session in"
        f" {fmt(tenant.enroll_seconds)} s. Then the roster (calendars.tenant.roster_round, up to 200 people a"
        f" round, back to back, in the bench's process on its own HTTP session and TenantBatcher) while the worker"
        f" runs: {tenant.connected:,} connected in {tenant.roster_rounds} rounds and {fmt(tenant.roster_seconds)} s"
        f" ({tenant.roster_lookups:,} look-ups in {tenant.roster_batches:,} $batch calls). First fill, from the"
        f" roster's start until every mailbox holds the right event and nothing is queued:"
        f" {fmt(f.seconds)} s (90 % in {fmt(f.seconds_90)} s); {f.requests:,} HTTP requests, of which"
        f" {f.counts['http $batch']:,} $batch ({worker_batches:,} the worker's, holding"
        f" {f.batcher['batched']:,} requests: {f.batcher['batched'] / max(1, worker_batches):.1f} a call) and"
        f" {f.requests - f.counts['http $batch']:,} sent alone; {f.counts['done POST']:,}"
        f" events created; 429s {f.counts['429 outside']} outside / {f.counts['429 inside']} inside $batch;"
        f" {f.counts['token grants']} client-credentials grants in all; duplicates {f.duplicates_end}"
        f" ({f.duplicates_seen} seen); worker CPU {fmt(f.worker_cpu)} s. The two-way mirror's first reading of"
        f" each new mailbox (calendars/inbound.py: a calendarView/delta listing, sent alone, not in $batch) was done"
        f" for all {fmt(tenant.checks_seconds)} s after the roster's start ({tenant.check_counts['http delta']:,}"
        f" delta GETs after the fill converged, {f.sweeps:,} before); each comparison run below starts once no"
        " check is due and nothing is queued.",
        "",
        "Then, in each run, one edit (title and room at once) of the tenant session, one of the per-user burst"
        f" session ({tenant.people:,} registrants each, one event each) and one more of the tenant session with"
        " mailbox 429s waited out in the batcher, the order reversed every other run. Tenant-wide: each PATCH goes"
        " to `/users/{id}/events/{id}` inside the tenant's shared $batch (calendars.tenant.TenantBatcher: up to 20"
        " a call across mailboxes, at most 4 in flight per mailbox; a mailbox's inner 429 longer than mailbox_wait,"
        f" {DEFAULT_MAILBOX_WAIT:g} s by default, goes back to the worker as Throttled, which retries that pair"
        " after the Retry-After, as per-user mode does; an outer 429 pauses all). Per-user: each person's put_many"
        " is one $batch of their own token holding their one PATCH. The last row sets the worker's batcher's"
        f" mailbox_wait to {OLD_MAILBOX_WAIT:g} s, as it was before: a throttled write waited out inside the"
        " batcher, holding the worker's round of pairs."
        " Medians over the runs; time as in the burst, from just before the edit.",
        "",
        "| mode | time to right, s | 90 % right, s | HTTP requests | of which delta sweeps | $batch | requests"
        " inside $batch | per $batch | 429s outside / inside | writes | duplicates (most seen) | worker CPU, s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups = {mode: [b for b in compared if b.kind == mode] for mode in MODES}
    for mode, (label, _) in MODES.items():
        group = groups[mode]
        if not group:
            continue
        batches, inner = med(group, lambda b: b.counts["http $batch"]), med(group, lambda b: b.inner)
        lines.append(
            f"| {label} | {fmt(med(group, lambda b: b.seconds))} | {fmt(med(group, lambda b: b.seconds_90))}"
            f" | {fmt(med(group, lambda b: b.requests), 0)} | {fmt(med(group, lambda b: b.sweeps), 0)}"
            f" | {fmt(batches, 0)} | {fmt(inner, 0)}"
            f" | {fmt(inner / batches if batches else float('nan'))}"
            f" | {fmt(med(group, lambda b: b.counts['429 outside']), 0)}"
            f" / {fmt(med(group, lambda b: b.counts['429 inside']), 0)}"
            f" | {fmt(med(group, lambda b: b.writes), 0)}"
            f" | {max(b.duplicates_end for b in group)} ({max(b.duplicates_seen for b in group)})"
            f" | {fmt(med(group, lambda b: b.worker_cpu))} |"
        )
    lines.append("")
    for mode in ("tenant", "tenant, 429 waited out"):
        t, u = groups[mode], groups["per-user"]
        if not t or not u:
            continue
        batch = med(t, lambda b: b.counts["http $batch"]) / med(u, lambda b: b.counts["http $batch"])
        own = med(t, lambda b: b.requests - b.sweeps) / med(u, lambda b: b.requests - b.sweeps)
        requests = med(t, lambda b: b.requests) / med(u, lambda b: b.requests)
        seconds = med(t, lambda b: b.seconds) / med(u, lambda b: b.seconds)
        most = med(t, lambda b: b.seconds_90) / med(u, lambda b: b.seconds_90)
        cpu = med(t, lambda b: b.worker_cpu) / med(u, lambda b: b.worker_cpu)
        lines += [
            f"- {MODES[mode][0]} against per-user: $batch calls **{batch:.3f}x** (1/{1 / batch:.1f}); HTTP requests the"
            f" edit caused (sweeps excluded) {own:.3f}x (1/{1 / own:.1f}), all HTTP requests {requests:.3f}x;"
            f" time to right **{seconds:.2f}x**, to 90 % right {most:.2f}x; worker CPU {cpu:.2f}x; the writes are"
            f" the same ({fmt(med(t, lambda b: b.writes), 0)} / {fmt(med(u, lambda b: b.writes), 0)}).",
        ]
    lines += [
        "",
        "Each run:",
        "",
        "| run | mode | time, s | 90 %, s | HTTP requests | $batch / inside | batcher: calls, requests, inner /"
        " outer 429s waited | writes | 429s out / in | duplicates end (seen) | worker CPU, s | others, cores"
        " | converged |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, b in enumerate(compared):
        waited = (
            f"{b.batcher['batches']:,}, {b.batcher['batched']:,}, {b.batcher['inner 429']} / {b.batcher['outer 429']}"
            if b.kind != "per-user"
            else ""
        )
        lines.append(
            f"| {i // len(MODES) + 1} | {b.kind} | {fmt(b.seconds)} | {fmt(b.seconds_90)} | {b.requests:,}"
            f" | {b.counts['http $batch']:,} / {b.inner:,} | {waited} | {b.writes:,}"
            f" | {b.counts['429 outside']} / {b.counts['429 inside']} | {b.duplicates_end} ({b.duplicates_seen})"
            f" | {fmt(b.worker_cpu)} | {fmt(b.others)} | {'yes' if b.converged else 'NO'} |"
        )
    return [*lines, ""]


def _latency_section(args: argparse.Namespace, runs: list[LatencyRun]) -> list[str]:
    pooled = {mode: [x for r in runs if r.mode == mode for x in r.latencies] for mode in ("graph", "null")}
    lines = [
        "## Registration to event: latency at a steady rate",
        "",
        f"{args.rate:g} registrations per second for {args.seconds:g} s, {args.latency_runs} runs per provider"
        " alternating, samples pooled. From the registration's commit (storage.enrollments.enroll returned) to the"
        " event's creation in the fake (its own timestamp) or the NullProvider's first put.",
        "",
        "| provider | registrations | p50, ms | p90, ms | p99, ms | max, ms | missing | duplicates | worker CPU"
        " per registration, ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, label in (("graph", "Graph fake (HTTP, 429s)"), ("null", "NullProvider (the engine alone)")):
        mine = [r for r in runs if r.mode == mode]
        values = pooled[mode]
        registrations = sum(r.registrations for r in mine)
        cpu = sum(r.worker_cpu for r in mine) / max(1, registrations) * 1000
        lines.append(
            f"| {label} | {registrations:,} | {fmt(quantile(values, 0.5) * 1000, 0)}"
            f" | {fmt(quantile(values, 0.9) * 1000, 0)} | {fmt(quantile(values, 0.99) * 1000, 0)}"
            f" | {fmt(max(values, default=float('nan')) * 1000, 0)} | {sum(r.missing for r in mine)}"
            f" | {sum(r.duplicates for r in mine)} | {fmt(cpu, 2)} |"
        )
    graph_runs = [r for r in runs if r.mode == "graph"]
    lines += [
        "",
        "Each run (p50 / p99, ms): "
        + "; ".join(
            f"{r.mode} {fmt(quantile(r.latencies, 0.5) * 1000, 0)} / {fmt(quantile(r.latencies, 0.99) * 1000, 0)}"
            + f" (others {fmt(r.others)} cores"
            + (f", {r.late_starts} registrations started late)" if r.late_starts else ")")
            for r in runs
        )
        + ". Graph runs' 429s outside / inside $batch: "
        + ", ".join(f"{r.counts['429 outside']} / {r.counts['429 inside']}" for r in graph_runs)
        + ".",
        "",
    ]
    return lines


# -- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 registrants, 1 run, 5 s of registrations")
    parser.add_argument("--registrants", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2, help="runs of each burst, alternating (medians quoted)")
    parser.add_argument("--rate", type=float, default=20.0, help="registrations per second (latency)")
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds of registrations per latency run")
    parser.add_argument("--latency-runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--throttle", type=float, default=0.02, help="random 429s outside $batch (fraction)")
    parser.add_argument("--batch-throttle", type=float, default=0.02, help="random 429s inside $batch (fraction)")
    parser.add_argument("--retry-after", type=int, default=7, help="the fake's Retry-After, seconds")
    parser.add_argument("--graph-latency", type=float, default=0.05, help="seconds each request holds its slot")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for convergence")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"which to run, comma-separated, of {', '.join(SCENARIOS)} (the per-user first fill always runs;"
        " fewer than all write to the temporary folder unless --out is given)",
    )
    args = parser.parse_args()
    chosen = {name.strip() for name in args.scenarios.split(",") if name.strip()}
    if not chosen <= set(SCENARIOS):
        parser.error(f"--scenarios: unknown {', '.join(sorted(chosen - set(SCENARIOS)))}")
    if args.quick:
        args.registrants, args.runs, args.seconds, args.latency_runs = 100, 1, 5.0, 1
    if (args.quick or chosen != set(SCENARIOS)) and args.out == RESULTS:
        args.out = Path(tempfile.gettempdir()) / ("calendar-quick.md" if args.quick else "calendar-partial.md")
    per_mode = int(args.rate * args.seconds) * args.latency_runs if "latency" in chosen else 0
    tenant_people = args.registrants if "tenant" in chosen else 0

    with tempfile.TemporaryDirectory(prefix="calendar-bench-") as name:
        directory = Path(name)
        t = time.monotonic()
        print(
            f"building the world: {args.registrants} registrants, {2 * per_mode} people for the latency runs,"
            f" {tenant_people} people of the tenant"
        )
        world = build_world(directory, args.registrants, per_mode, tenant_people)
        world_seconds = time.monotonic() - t
        print(f"  {world_seconds:.0f} s")
        fake = Fake(
            {
                "seed": args.seed,
                "latency": args.graph_latency,
                "throttle": args.throttle,
                "batch_throttle": args.batch_throttle,
                "retry_after": args.retry_after,
            }
        )
        # A tenant person's mailbox: Graph user id = their coursewire user id (opaque to both), address = login.
        mailboxes = world.burst_people + world.latency_people["graph"] + world.tenant_people
        fake.call("add", [(world.ids[login], login) for login in mailboxes])
        graph_url = f"{fake.url}/v1.0"
        worker: Worker | None = None
        bursts: list[Burst] = []
        runs: list[LatencyRun] = []
        tenant: TenantFill | None = None
        compared: list[Burst] = []
        try:
            before = fake.counters()
            t = time.monotonic()
            worker = Worker(directory / "coursewire.db", graph_url, fake.identity)
            fill = Burst("fill", 0)
            fill.converged, state, fill.duplicates_seen, most = converge(
                world, fake, world.burst_people, world.burst_session, args.timeout
            )
            fill.seconds_90 = most - t
            fill.seconds, fill.worker_cpu, fill.counts = time.monotonic() - t, worker.cpu(), fake.counters() - before
            print(f"first fill: {fill.seconds:.1f} s, {fill.writes} writes, {state}")
            if not fill.converged:
                raise SystemExit("the first fill did not converge; see the worker's log above")

            edits = Edits(world.day)
            for number in range(args.runs if "burst" in chosen else 0):
                for kind in BURSTS:
                    for count in (10, 1) if number % 2 == 0 else (1, 10):
                        b = burst(world, fake, worker, kind, edits.bodies(kind, count), args.timeout)
                        bursts.append(b)
                        print(
                            f"run {number + 1} {kind} {count:2} edit(s): {b.seconds:5.1f} s (90 % {b.seconds_90:4.1f}),"
                            f" {b.requests} requests, {b.writes} writes, 429s {b.counts['429 outside']}/"
                            f"{b.counts['429 inside']}, duplicates {b.duplicates_end} ({b.duplicates_seen} seen),"
                            f" worker CPU {b.worker_cpu:.1f} s"
                        )

            if "tenant" in chosen:
                config = bench_config(graph_url, fake.identity)
                tenant = tenant_fill(world, fake, worker, config, args.timeout)
                f = tenant.fill
                print(
                    f"tenant: roster {tenant.connected} connected in {tenant.roster_seconds:.1f} s"
                    f" ({tenant.roster_rounds} rounds, {tenant.roster_batches} $batch); first fill {f.seconds:.1f} s,"
                    f" {f.requests} HTTP requests ({f.counts['http $batch']} $batch holding {f.inner}), {f.writes}"
                    f" writes, 429s {f.counts['429 outside']}/{f.counts['429 inside']}"
                )
                if not f.converged:
                    raise SystemExit("the tenant's first fill did not converge; see the worker's log above")
                compared = compare(world, fake, worker, edits, args.runs, args.timeout)

            for number in range(args.latency_runs if "latency" in chosen else 0):
                for mode in ("null", "graph") if number % 2 == 0 else ("graph", "null"):
                    r = latency_run(world, fake, worker, mode, args.rate, args.seconds, args.timeout)
                    runs.append(r)
                    print(
                        f"latency run {number + 1} {mode:5}: p50 {quantile(r.latencies, 0.5) * 1000:.0f} ms,"
                        f" p99 {quantile(r.latencies, 0.99) * 1000:.0f} ms, {r.missing} missing,"
                        f" {r.duplicates} duplicates, {r.late_starts} late starts"
                    )
        finally:
            if worker is not None:
                worker.stop()
            fake.stop()
        publish(report(args, world_seconds, fill, bursts, runs, args.registrants, tenant, compared), args.out)


if __name__ == "__main__":
    main()
