"""Hostile write: do the largest values the limits allow slow later writes, or stall the event loop?

Run from the repository root:

    .venv/bin/python bench/hostile_write.py [--runs 3] [--seconds 5] [--hostile 600]

1. Later writes. Two `coursewire serve` processes (2 workers, default settings, throttling off, each on a
   fresh data directory): `hostile` and `control`. Storms of ordinary writes (POST /odata/v2/Users as in
   http_overhead.py, and POST /odata/v2/CourseTags into one catalog) are measured with wrk on both,
   in rotating order, `--runs` times. Then `hostile` takes `--hostile` writes (600: one minute of the
   default rate limit, 600/60 per key) in which every string is as long as the document allows, in
   4-byte characters (bench/largest.py reads each maxLength from openapi/apiDefinition.swagger.json at
   run time): users, catalogs, tags, categories and courses (each with 100 new tags and categories), into
   the indexed columns (LoginName, Email, Title, Department, tag and category names, course Url...),
   while `control` takes the same writes with short values (same rows). Then the ordinary storms again.
   The claim: after the hostile writes, ordinary writes run at the same speed within noise. The same
   round's hostile/control ratio before and after says so without the drift of a shared machine.
2. Event-loop stall. One `coursewire serve` with one worker (so every request shares one event loop)
   answers GET /healthz, sampled every 10 ms by one client, while other clients post (a) nothing,
   (b) the largest valid CreateUser body, (c) 1 MiB of wrong-typed values nested inside an array,
   (d) a 2 MiB chunked body (past the 1 MiB JSON limit). Once as shipped (bodies over 32 KiB are parsed
   and validated on a thread: connector/validation.py OFFLOAD_BYTES), once with every body parsed on
   the loop (bench/offload_hook sets OFFLOAD_BYTES very high in that server only).

Writes bench/results/hostile_write.md; bench/README.md says what is measured and the caveats.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from largest import MAX_JSON_BYTES, OMIT, Builder, Filler, Slot
from loadgen import LoadError, Measurement, median, run_guarded, wrk_path
from machine import describe, publish
from noise import Window
from servers import BENCH_DIR, Server, start_coursewire

RESULTS = BENCH_DIR / "results" / "hostile_write.md"
BODY_SCRIPT = BENCH_DIR / "wrk_body.lua"
HOOK_DIR = BENCH_DIR / "offload_hook"
UNIQUE = "U" * 20  # wrk_body.lua's placeholder for a name unique per request
NO_OFFLOAD = str(2**62)
PROXY = "/v2/httprequest"

USERS, CATALOGS, TAGS, CATEGORIES, COURSES = (
    "/odata/v2/Users",
    "/odata/v2/CourseCatalogs",
    "/odata/v2/CourseTags",
    "/odata/v2/CourseCategories",
    "/odata/v2/Courses",
)
# Indexes the hostile values land in (page counts and depth are reported for each that exists).
INDEXES = (
    "users_login",
    "users_login_key",
    "users_email",
    "users_email_key",
    "users_title",
    "users_department_title",
    "tags_name",
    "tags_name_key",
    "categories_name",
    "categories_name_key",
    "courses_site_url",
)


# --- the ordinary storms -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Storm:
    """An ordinary write measured before and after: its name and the call."""

    name: str
    call: str


STORMS = (Storm("users", f"POST {USERS}"), Storm("tags", f"POST {TAGS}"))


@dataclass
class Target:
    """One server of part 1, with the catalog its tags go into and the files wrk reads."""

    role: str  # "hostile" or "control"
    server: Server
    catalog_id: str
    tag_body: Path
    logins: list[str] = field(default_factory=list)


def wrk_body(
    server: Server,
    path: str,
    body_file: Path,
    *,
    mode: str = "length",
    token: str,
    seconds: float,
    connections: int,
    threads: int = 1,
) -> dict[str, Any]:
    """wrk with bench/wrk_body.lua posting `body_file` to `path`; its WRK_JSON line as a dict."""
    argv = [
        wrk_path(),
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(BODY_SCRIPT),
        server.base,
        "--",
        "POST",
        path,
        server.headers["Authorization"],
        str(body_file),
        mode,
        token,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - argv built here
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(lines[-1].removeprefix("WRK_JSON "))
    return data


def guarded(
    group: int, workers: int, run: Callable[[str], Measurement], *, max_noise: float, retries: int, pause: float = 2.0
) -> Measurement:
    """`run(attempt_tag)` redone while other processes took more than `max_noise` cores (as loadgen.run_guarded)."""
    attempts = []
    for attempt in range(retries + 1):
        with Window(group, workers) as window:
            measured = run(f"{attempt}")
        attempts.append(
            replace(
                measured,
                noise_cores=window.foreign_cores,
                balance=window.balance,
                server_cpu_ms=1000 * window.server_seconds / max(1, measured.requests),
            )
        )
        if window.foreign_cores <= max_noise:
            break
        time.sleep(pause)
    return replace(min(attempts, key=lambda m: m.noise_cores), attempts=len(attempts))


def storm(target: Target, which: Storm, seconds: float, args: argparse.Namespace) -> Measurement:
    """One measured storm of ordinary writes against `target`, redone when the machine was busy."""
    server = target.server
    if which.name == "users":
        return run_guarded(
            server.process.pid,
            args.workers,
            max_noise=args.max_noise,
            min_balance=0.0,  # writes queue on SQLite's lock: the workers' CPU is uneven whatever the accept pattern
            retries=args.retries,
            url=server.base,
            method="POST",
            path=USERS,
            authorization=server.headers["Authorization"],
            body="user",
            run_tag=uuid.uuid4().hex[:12],
            seconds=seconds,
            connections=args.connections,
        )

    def tags(attempt: str) -> Measurement:
        data = wrk_body(
            server,
            TAGS,
            target.tag_body,
            token=uuid.uuid4().hex[:7] + attempt[-1],
            seconds=seconds,
            connections=args.connections,
        )
        failures = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
        if failures:
            raise LoadError(f"POST {TAGS} on {target.role}: {failures} of {data['requests']} failed: {data}")
        return Measurement(
            requests=int(data["requests"]),
            seconds=data["duration_us"] / 1e6,
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            failures=0,
        )

    return guarded(server.process.pid, args.workers, tags, max_noise=args.max_noise, retries=args.retries)


# --- the hostile writes --------------------------------------------------------------------------------------


@dataclass
class Posted:
    """What a phase of single writes did: count, bytes sent, wall time, each call's latency."""

    label: str
    count: int = 0
    body_bytes: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    largest: dict[str, int] = field(default_factory=dict)  # call -> largest body in bytes
    by_call: dict[str, list[float]] = field(default_factory=dict)  # call -> latencies in ms


def post_json(server: Server, path: str, body: dict[str, Any]) -> tuple[int, Any, float, int]:
    """POST one JSON body (UTF-8, not ASCII-escaped); return (status, decoded answer, seconds, body bytes)."""
    data = json.dumps(body, ensure_ascii=False).encode()
    headers = {**server.headers, "Content-Type": "application/json"}
    request = urllib.request.Request(server.base + path, data=data, method="POST", headers=headers)  # noqa: S310
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - 127.0.0.1 only
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    elapsed = time.perf_counter() - started
    return status, json.loads(payload) if payload else None, elapsed, len(data)


def post_all(
    server: Server, calls: Iterator[tuple[str, dict[str, Any]]], posted: Posted, concurrency: int
) -> list[Any]:
    """Post every (path, body) with `concurrency` clients; record them in `posted`; return the answers.

    Raises RuntimeError naming the call and the server's message if any write is refused: a hostile
    write the server refuses would measure nothing (bench/largest.py needs an override for that field).
    """
    lock = threading.Lock()

    def one(call: tuple[str, dict[str, Any]]) -> Any:
        path, body = call
        status, answer, elapsed, size = post_json(server, path, body)
        if status not in (200, 201):
            raise RuntimeError(f"POST {path} answered {status}: {json.dumps(answer)[:600]}")
        with lock:
            posted.count += 1
            posted.body_bytes += size
            posted.latencies_ms.append(1000 * elapsed)
            posted.largest[path] = max(posted.largest.get(path, 0), size)
            posted.by_call.setdefault(path, []).append(1000 * elapsed)
        return answer

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, calls))
    posted.seconds += time.perf_counter() - started
    return answers


def iso_date(year: int) -> Callable[[Slot], str]:
    return lambda slot: f"{year}-01-01T00:00:00Z"


def overrides_for(target: Target, logins: Iterator[str]) -> dict[str, dict[str, Callable[[Slot], Any]]]:
    """Per call, the properties that must name something real; everything else is free text (bench/largest.py)."""

    def email(slot: Slot) -> str:
        token = slot.filler.token()
        if not slot.filler.wide:
            return f"{token}@bench.example"
        return f"{token}@" + slot.filler.text((slot.max_length or 320) - len(token) - 1)

    def url(slot: Slot) -> str:
        # Path segments of ASCII letters and digits (storage/courses.py), none longer than a file name.
        total = slot.max_length or 2048
        text = slot.filler.ascii(total)
        return "/".join(text[i : i + 200] for i in range(0, len(text), 201))[:total].strip("/")

    def web_url(slot: Slot) -> str:
        # An absolute https URL (storage/names.py web_url), its path as long as the limit allows.
        head = "https://bench.example/"
        return head + slot.filler.ascii((slot.max_length or 2048) - len(head))

    def login(slot: Slot) -> str:
        return next(logins)

    def omit(slot: Slot) -> object:
        return OMIT

    catalog: Callable[[Slot], str] = lambda slot: target.catalog_id  # noqa: E731
    return {
        USERS: {
            "Email": email,
            "DirectoryObjectId": lambda slot: str(uuid.UUID(int=slot.filler.rng.getrandbits(128), version=4)),
            "ManagerLoginName": login if target.logins else omit,
        },
        CATALOGS: {"AdminLogins[]": login},
        TAGS: {"CourseCatalogId": catalog},
        CATEGORIES: {"CourseCatalogId": catalog, "ParentCategoryId": omit},
        COURSES: {
            "CourseCatalogId": catalog,
            "Url": url,
            "ImageUrl": web_url,
            "Categories[].Id": omit,
            "Categories[].ParentCategoryId": omit,
            "Tags[].Id": omit,
            "TeacherLogins[]": login,
            "TrainerLogins[]": login,
            "AdminLogins[]": login,
            "PublishingSettings.StartDate": iso_date(2030),
            "PublishingSettings.EndDate": iso_date(2031),
            "ExpirySettings.FixedDate": iso_date(2032),
            "ExpirySettings.DaysAfterCompletion": lambda slot: "365",
            "DueDateSettings.FixedDate": iso_date(2032),
            "DueDateSettings.DaysAfterEnrollment": lambda slot: "30",
            "FailedCourseId": omit,
        },
    }


def write_phase(builder: Builder, target: Target, filler: Filler, count: int, concurrency: int) -> Posted:
    """`count` writes of every string at its longest (wide filler) or short (ordinary filler): users first
    (the other calls name them), then catalogs, tags, categories and courses in turn."""
    posted = Posted(target.role)
    per_kind = max(1, count // 5)
    users = count - 4 * per_kind
    cycle = itertools.cycle(target.logins) if target.logins else iter(())

    def logins() -> Iterator[str]:
        while True:
            yield next(cycle)

    pool = logins()
    rules = overrides_for(target, pool)

    def user_calls() -> Iterator[tuple[str, dict[str, Any]]]:
        for _ in range(users):
            yield USERS, builder.body("POST", USERS, filler, rules[USERS])

    for answer in post_all(target.server, user_calls(), posted, concurrency):
        target.logins.append(answer["LoginName"])
    cycle = itertools.cycle(target.logins)
    rules = overrides_for(target, pool)
    others = [CATALOGS, TAGS, CATEGORIES, COURSES]

    def other_calls() -> Iterator[tuple[str, dict[str, Any]]]:
        for i in range(4 * per_kind):
            path = others[i % len(others)]
            yield path, builder.body("POST", path, filler, rules[path])

    post_all(target.server, other_calls(), posted, concurrency)
    return posted


# --- part 1: later writes ----------------------------------------------------------------------------------------


def start_target(role: str, workdir: Path, workers: int) -> Target:
    """A `coursewire serve` on a fresh data directory, with one catalog for the tag storms."""
    data_dir = workdir / role
    data_dir.mkdir()
    server = start_coursewire(data_dir, workers)
    status, catalog = server.request("POST", CATALOGS, {"Title": f"Bench {role}"})
    if status != 200 or not isinstance(catalog, dict):
        server.stop()
        raise RuntimeError(f"{role}: CreateCourseCatalog answered {status}: {catalog}")
    tag_body = data_dir / "tag.json"
    tag_body.write_text(json.dumps({"Name": UNIQUE, "CourseCatalogId": catalog["Id"]}))
    return Target(role, server, str(catalog["Id"]), tag_body)


def settle(target: Target, timeout: float = 180.0) -> dict[str, int]:
    """Wait until background provisioning has finished every course; return the courses by provisioning state."""
    deadline = time.monotonic() + timeout
    while True:
        states = dict(
            query(target.server, "SELECT provisioning, count(*) FROM courses GROUP BY provisioning")  # type: ignore[arg-type]
        )
        if all(state in ("Created", "Failed") for state in states) or time.monotonic() > deadline:
            return {str(k): int(v) for k, v in states.items()}
        time.sleep(0.5)


def query(server: Server, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A read-only query on a server's database (WAL: never waits for, nor blocks, its writers)."""
    path = server.data_dir / "coursewire.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, params).fetchall()


def database_bytes(server: Server) -> int:
    """The database file and its WAL, in bytes."""
    base = server.data_dir / "coursewire.db"
    return sum(p.stat().st_size for p in (base, base.with_name(base.name + "-wal")) if p.exists())


@dataclass(frozen=True)
class IndexShape:
    """One index in dbstat's words: entries, pages (overflow pages among them) and depth."""

    entries: int
    pages: int
    overflow: int
    depth: int


def index_shapes(server: Server) -> dict[str, IndexShape]:
    """Shape of each index in INDEXES that the database has."""
    found = {}
    for name in INDEXES:
        rows = query(
            server,
            "SELECT count(*), sum(pagetype = 'overflow'), sum(CASE WHEN pagetype = 'leaf' THEN ncell END),"
            " max(length(path) - length(replace(path, '/', ''))) FROM dbstat WHERE name = ?",
            (name,),
        )
        pages, overflow, entries, depth = rows[0]
        if pages:
            found[name] = IndexShape(int(entries or 0), int(pages), int(overflow or 0), int(depth or 0))
    return found


@dataclass
class Part1:
    """Everything part 1 measured."""

    before: dict[tuple[str, str], list[Measurement]] = field(default_factory=dict)  # (role, storm) -> runs
    after: dict[tuple[str, str], list[Measurement]] = field(default_factory=dict)
    posted: dict[str, Posted] = field(default_factory=dict)
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (role, "before"/"after") -> bytes
    shapes: dict[str, dict[str, IndexShape]] = field(default_factory=dict)
    provisioning: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    limits: dict[str, dict[str, int | None]] = field(default_factory=dict)
    largest_objects: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # role -> (table or index, bytes)
    wal: dict[str, int] = field(default_factory=dict)  # role -> WAL bytes after
    direct: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (role, verb) -> us per call
    direct_calls: int = 0


def storms(targets: list[Target], phase: dict[tuple[str, str], list[Measurement]], args: argparse.Namespace) -> None:
    for run in range(args.runs):
        order = targets[run % 2 :] + targets[: run % 2]
        for target in order:
            for which in STORMS:
                m = storm(target, which, args.seconds, args)
                phase.setdefault((target.role, which.name), []).append(m)
                print(
                    f"  run {run + 1}/{args.runs} {target.role:8} {which.name:5} {m.rps:7.0f} req/s"
                    f"  p50 {m.p50_ms:6.1f} ms  p99 {m.p99_ms:6.1f} ms  noise {m.noise_cores:.2f}"
                    f"  attempts {m.attempts}",
                    flush=True,
                )


def part1(workdir: Path, args: argparse.Namespace) -> Part1:
    """Ordinary storms on `hostile` and `control`, the hostile (and control) writes, the storms again."""
    result = Part1()
    builder = Builder(max_json_bytes=MAX_JSON_BYTES)
    targets: list[Target] = []
    try:
        for role in ("hostile", "control"):
            targets.append(start_target(role, workdir, args.workers))
        print("part 1: warm-up", flush=True)
        for target in targets:
            for which in STORMS:
                storm(target, which, args.warmup, replace_args(args, retries=0, max_noise=float("inf")))
        print("part 1: ordinary writes before", flush=True)
        storms(targets, result.before, args)
        for target in targets:
            result.sizes[(target.role, "before")] = database_bytes(target.server)
        for target in targets:
            wide = target.role == "hostile"
            filler = Filler(random.Random(args.seed), wide=wide)  # noqa: S311 - not security
            kind = "hostile" if wide else "ordinary-sized"
            print(f"part 1: {args.hostile} {kind} writes on {target.role}", flush=True)
            posted = write_phase(builder, target, filler, args.hostile, args.concurrency)
            result.posted[target.role] = posted
            result.provisioning[target.role] = settle(target)
            print(
                f"  {posted.count} writes, {posted.body_bytes / 2**20:.1f} MiB in {posted.seconds:.1f} s;"
                f" courses provisioned: {result.provisioning[target.role]}; median ms by call: "
                + ", ".join(f"{call} {median(ms):.0f}" for call, ms in posted.by_call.items()),
                flush=True,
            )
        result.limits = builder.limits
        print("part 1: ordinary writes after", flush=True)
        storms(targets, result.after, args)
        for target in targets:
            result.sizes[(target.role, "after")] = database_bytes(target.server)
            result.shapes[target.role] = index_shapes(target.server)
            result.largest_objects[target.role] = [
                (str(name), int(size))
                for name, size in query(
                    target.server, "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 5"
                )
            ]
            wal = target.server.data_dir / "coursewire.db-wal"
            result.wal[target.role] = wal.stat().st_size if wal.exists() else 0
            result.rows[target.role] = {
                table: int(query(target.server, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 - our names
                for table in ("users", "catalogs", "tags", "categories", "courses", "events")
            }
    finally:
        for target in targets:
            target.server.stop()
    print("part 1: storage verbs alone, in this process", flush=True)
    paths = {t.role: (t.server.data_dir / "coursewire.db", t.catalog_id) for t in targets}
    direct(paths, args.direct_calls, 1)  # warm-up: the first calls read the indexes into the caches
    result.direct = direct(paths, args.direct_calls, args.runs)
    result.direct_calls = args.direct_calls
    return result


def direct(targets: dict[str, tuple[Path, str]], count: int, rounds: int) -> dict[tuple[str, str], list[float]]:
    """Ordinary writes through the storage verbs alone, in this process, one at a time: no HTTP, no other
    worker, so far less noise than a storm. `targets` maps a role to its database and catalog; the roles
    alternate, `rounds` times `count` calls per verb. Returns microseconds per call, per round."""
    from storage import catalogs, users
    from storage.db import Database
    from storage.models import CLI

    dbs = {role: (Database(path), catalog) for role, (path, catalog) in targets.items()}
    verbs: dict[str, Callable[[Database, str, str], object]] = {
        "users": lambda db, catalog, name: users.create(
            db, CLI, {"LoginName": f"{name}@bench.example", "Email": f"{name}@bench.example", "Title": f"Bench {name}"}
        ),
        "tags": lambda db, catalog, name: catalogs.create_tag(db, CLI, {"Name": name, "CourseCatalogId": catalog}),
    }
    out: dict[tuple[str, str], list[float]] = {}
    roles = list(dbs)
    for run in range(rounds):
        for role in roles[run % 2 :] + roles[: run % 2]:
            db, catalog = dbs[role]
            for verb, call in verbs.items():
                token = uuid.uuid4().hex[:12]
                started = time.perf_counter()
                for i in range(count):
                    call(db, catalog, f"{token}-d-{i}")
                out.setdefault((role, verb), []).append(1e6 * (time.perf_counter() - started) / count)
    for db, _ in dbs.values():
        db.close()
    return out


def replace_args(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


# --- part 2: event-loop stall -----------------------------------------------------------------------------------


class Probe(threading.Thread):
    """GET /healthz over one keep-alive connection every `interval` seconds; latencies in ms."""

    def __init__(self, server: Server, interval: float) -> None:
        super().__init__(daemon=True)
        self.host, self.port = server.base.removeprefix("http://").split(":")
        self.interval = interval
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        tick = time.perf_counter()
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
                continue
            self.latencies_ms.append(1000 * (time.perf_counter() - started))
            tick = max(tick + self.interval, time.perf_counter())
            self.stopping.wait(max(0.0, tick - time.perf_counter()))
        conn.close()


@dataclass(frozen=True)
class Scenario:
    """What the other clients send while the probe samples /healthz."""

    name: str
    words: str
    body: str | None = None  # file name in the work directory; None: no load
    mode: str = "length"
    path: str = USERS
    expect: str = "200"  # the status the load's calls should answer


SCENARIOS = (
    Scenario("idle", "nothing"),
    Scenario("valid", "the largest valid CreateUser body", "valid.json", expect="200"),
    Scenario("proxied", "the same user sent through HttpRequest_v2", "proxied.json", path=PROXY, expect="200"),
    Scenario("invalid", "1 MiB of wrong-typed values (as many as the edge parses)", "invalid.json", expect="400"),
    Scenario("over limit", "2 MiB chunked, past the 1 MiB JSON limit", "over.json", "chunked", expect="413"),
)


@dataclass(frozen=True)
class Stall:
    """One sampling window: probe latencies, what the load did, and the machine's noise meanwhile."""

    probe_ms: list[float]
    probe_errors: int
    load_requests: int
    load_statuses: dict[str, int]
    load_errors: int
    noise_cores: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.probe_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def stall_bodies(workdir: Path, seed: int) -> dict[str, int]:
    """Write the three load bodies into `workdir`; return their sizes in bytes."""
    builder = Builder()
    filler = Filler(random.Random(seed))  # noqa: S311 - not security

    def unique(slot: Slot) -> str:
        return UNIQUE + filler.text((slot.max_length or 256) - len(UNIQUE))

    user = builder.body(
        "POST",
        USERS,
        filler,
        {
            "LoginName": unique,
            "Email": lambda slot: UNIQUE + "@" + filler.text((slot.max_length or 320) - len(UNIQUE) - 1),
            "DirectoryObjectId": lambda slot: OMIT,
            "ManagerLoginName": lambda slot: OMIT,
        },
    )
    valid = json.dumps(user, ensure_ascii=False).encode()
    # As many wrong-typed values as the edge lets reach the parser (connector/validation.py MAX_VALUES, where it
    # exists), each an array where a string belongs, long enough together to fill the JSON limit.
    from connector import validation

    compact = (",", ":")
    count = (getattr(validation, "MAX_VALUES", 60_000) - 10) // 3  # each item: an object, an array, a comma
    shell = len(json.dumps({"FieldTitle": [""]}, separators=compact)) + 1
    text = "x" * max(1, (MAX_JSON_BYTES - 200) // count - shell)
    many = [{"FieldTitle": [text]}] * count
    invalid = json.dumps({"LoginName": UNIQUE, "UserFieldValues": many}, separators=compact).encode()
    over = json.dumps({"LoginName": UNIQUE, "Title": "x" * (2 * MAX_JSON_BYTES)}).encode()
    inner = {
        "method": "POST",
        "uri": "odata/v2/Users",
        "headers": {"Content-Type": "application/json"},
        "body": valid.decode(),
    }
    proxied = json.dumps(inner, ensure_ascii=False).encode()
    sizes = {}
    bodies = (("valid.json", valid), ("proxied.json", proxied), ("invalid.json", invalid), ("over.json", over))
    for name, data in bodies:
        (workdir / name).write_bytes(data)
        sizes[name] = len(data)
    if max(len(invalid), len(valid), len(proxied)) > MAX_JSON_BYTES:
        raise RuntimeError("a stall body is over the JSON limit: it would measure the 413, not the parsing")
    return sizes


def sample(server: Server, scenario: Scenario, workdir: Path, args: argparse.Namespace) -> Stall:
    """Probe /healthz for `args.stall_seconds` while wrk sends `scenario`'s body; redone when the machine was busy."""
    attempts = []
    for _ in range(args.retries + 1):
        own = _own_seconds()
        with Window(server.process.pid, 1) as window:
            wrk = None
            results: list[dict[str, Any]] = []
            if scenario.body is not None:
                wrk = threading.Thread(target=lambda out=results: out.append(load(server, scenario, workdir, args)))
                wrk.start()
                time.sleep(0.3)  # connections open and the first bodies on their way
            probe = Probe(server, args.interval)
            probe.start()
            time.sleep(args.stall_seconds - (0.6 if wrk else 0.0))
            probe.stopping.set()
            probe.join()
            if wrk is not None:
                wrk.join()
        data = results[0] if wrk is not None else {}
        attempts.append(
            Stall(
                probe.latencies_ms,
                probe.errors,
                int(data.get("requests", 0)),
                dict(data.get("statuses", {})),
                sum(int(data.get(k, 0)) for k in ("connect", "read", "write", "timeout")),
                # The probe runs in this process, which Window takes to be idle.
                max(0.0, window.foreign_cores - (_own_seconds() - own) / args.stall_seconds),
            )
        )
        wrong = {status: n for status, n in attempts[-1].load_statuses.items() if status != scenario.expect}
        if wrong:
            raise LoadError(f"{scenario.name}: the load should answer {scenario.expect}, but got {wrong}")
        if window.foreign_cores <= args.max_noise:
            break
        time.sleep(2.0)
    return min(attempts, key=lambda s: s.noise_cores)


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load(server: Server, scenario: Scenario, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    assert scenario.body is not None
    return wrk_body(
        server,
        scenario.path,
        workdir / scenario.body,
        mode=scenario.mode,
        token=uuid.uuid4().hex[:8],
        seconds=args.stall_seconds,
        connections=args.stall_clients,
    )


@dataclass
class Part2:
    stalls: dict[tuple[str, str], list[Stall]] = field(default_factory=dict)  # (config, scenario) -> runs
    sizes: dict[str, int] = field(default_factory=dict)
    steps: dict[str, dict[str, float]] = field(default_factory=dict)  # body -> step -> ms


def steps(workdir: Path, sizes: dict[str, int], repeat: int = 3) -> dict[str, dict[str, float]]:
    """Where a body's time goes, in this process on one thread (median ms of `repeat`): connector/validation.py's
    parse_body (its checks and json.loads, which holds the GIL throughout) and CreateUser's schema validation
    including the error it builds (jsonschema). Says why a thread does or does not spare the loop."""
    from connexion.json_schema import Draft4RequestValidator
    from jsonschema import Draft4Validator, ValidationError

    from connector.validation import BodyProblem, parse_body

    schema = Builder().schema("POST", USERS)
    validator = Draft4RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    out: dict[str, dict[str, float]] = {}
    for name in sizes:
        if name == "over.json":
            continue  # refused by its size before anything parses it
        raw = (workdir / name).read_bytes().replace(UNIQUE.encode(), b"bench".ljust(len(UNIQUE), b"0"))
        timings: dict[str, list[float]] = {}
        for _ in range(repeat):
            t0 = time.perf_counter()
            try:
                body = parse_body(raw, "utf-8")
            except BodyProblem:
                body = None
            t1 = time.perf_counter()
            if body is not None and name != "proxied.json":
                with contextlib.suppress(ValidationError):
                    validator.validate(body)
            t2 = time.perf_counter()
            for step, ms in (("parse", t1 - t0), ("validate", t2 - t1)):
                timings.setdefault(step, []).append(1000 * ms)
        out[name] = {step: median(ms) for step, ms in timings.items()}
    return out


CONFIGS = ("offloaded (as shipped)", "on the loop")


def part2(workdir: Path, args: argparse.Namespace) -> Part2:
    """Probe /healthz with each scenario's load, on a server as shipped and one that parses on the loop."""
    result = Part2()
    stall_dir = workdir / "stall"
    stall_dir.mkdir()
    result.sizes = stall_bodies(stall_dir, args.seed)
    result.steps = steps(stall_dir, result.sizes)
    print(f"part 2: body sizes {result.sizes}; in-process steps (ms) {result.steps}", flush=True)
    servers: dict[str, Server] = {}
    try:
        for config in CONFIGS:
            data_dir = stall_dir / ("offloaded" if config == CONFIGS[0] else "loop")
            data_dir.mkdir()
            extra = {}
            if config == CONFIGS[1]:
                path = os.environ.get("PYTHONPATH", "")
                extra = {
                    "PYTHONPATH": f"{HOOK_DIR}{os.pathsep}{path}" if path else str(HOOK_DIR),
                    "BENCH_OFFLOAD_BYTES": NO_OFFLOAD,
                }
            servers[config] = start_coursewire(data_dir, 1, extra)
        loop_log = servers[CONFIGS[1]].log_path.read_text()
        if f"OFFLOAD_BYTES={NO_OFFLOAD}" not in loop_log:
            raise RuntimeError(f"the offload hook did not run in the on-the-loop server:\n{loop_log[-2000:]}")
        for server in servers.values():  # warm up: the first bodies build the validators
            for scenario in SCENARIOS[1:]:
                if scenario.body is not None:
                    load(server, scenario, stall_dir, replace_args(args, stall_seconds=1))
        for run in range(args.stall_runs):
            configs = list(CONFIGS[run % 2 :] + CONFIGS[: run % 2])
            for config in configs:
                for scenario in SCENARIOS:
                    s = sample(servers[config], scenario, stall_dir, args)
                    result.stalls.setdefault((config, scenario.name), []).append(s)
                    print(
                        f"  run {run + 1}/{args.stall_runs} {config:22} {scenario.name:10} healthz p50"
                        f" {s.percentile(0.5):6.1f} p99 {s.percentile(0.99):7.1f} max {max(s.probe_ms):7.1f} ms"
                        f" ({len(s.probe_ms)} samples); load {s.load_requests} calls {s.load_statuses}"
                        f" errors {s.load_errors}; noise {s.noise_cores:.2f}",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    return result


# --- report ---------------------------------------------------------------------------------------------------


def _range(values: list[float]) -> str:
    return f"{median(values):.2f}x [{min(values):.2f}-{max(values):.2f}]"


def paired(one: Part1, storm_name: str) -> tuple[list[float], list[float]]:
    """The hostile/control throughput ratio of each round, before and after."""
    return tuple(  # type: ignore[return-value]
        [h.rps / c.rps for h, c in zip(phase[("hostile", storm_name)], phase[("control", storm_name)], strict=True)]
        for phase in (one.before, one.after)
    )


def verdict(one: Part1, storm_name: str) -> tuple[float, float]:
    """(effect, noise): the median same-round hostile/control ratio after over the one before, and the
    larger of the two phases' half-ranges of those ratios, relative to their median."""
    before, after = paired(one, storm_name)
    effect = median(after) / median(before)
    noise = max((max(xs) - min(xs)) / 2 / median(xs) for xs in (before, after))
    return effect, noise


def args_calls(one: Part1) -> int:
    return one.direct_calls


def direct_rows(one: Part1) -> list[str]:
    rows = [
        "| verb | hostile us/call | control us/call | ratio | same round: median [range] |",
        "|---|---:|---:|---:|---:|",
    ]
    for verb in ("users", "tags"):
        h, c = one.direct[("hostile", verb)], one.direct[("control", verb)]
        ratios = [a / b for a, b in zip(h, c, strict=True)]
        rows.append(
            f"| {'storage.users.create' if verb == 'users' else 'storage.catalogs.create_tag'} | {median(h):.0f} |"
            f" {median(c):.0f} | {median(h) / median(c):.2f}x | {_range(ratios)} |"
        )
    return rows


def report(one: Part1, two: Part2, settings: list[str]) -> str:
    runs = len(next(iter(one.before.values())))
    table = [
        "| storm | server | before req/s | after req/s | after/before | before p99 ms | after p99 ms | after/before |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for which in STORMS:
        for role in ("hostile", "control"):
            b, a = one.before[(role, which.name)], one.after[(role, which.name)]
            rb, ra = median([m.rps for m in b]), median([m.rps for m in a])
            pb, pa = median([m.p99_ms for m in b]), median([m.p99_ms for m in a])
            table.append(
                f"| {which.call} | {role} | {rb:,.0f} | {ra:,.0f} | {ra / rb:.2f}x | {pb:.1f} | {pa:.1f} |"
                f" {pa / pb:.2f}x |"
            )
    paired_rows = [
        "| storm | hostile/control, same round, before | after | effect (after/before) | noise |",
        "|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for which in STORMS:
        before, after = paired(one, which.name)
        effect, noise = verdict(one, which.name)
        paired_rows.append(f"| {which.call} | {_range(before)} | {_range(after)} | {effect:.2f}x | ±{noise:.0%} |")
        within = abs(effect - 1) <= noise
        verdicts.append(
            f"{which.call}: {'within noise' if within else '**outside noise**'} ({effect:.2f}x, noise ±{noise:.0%})"
        )
    hostile, control = one.posted["hostile"], one.posted["control"]
    mib = 2**20
    growth = [
        "| server | writes | body MiB | seconds | write p50 ms | write p99 ms | database before MiB | after MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for role, posted in (("hostile", hostile), ("control", control)):
        lat = sorted(posted.latencies_ms)
        growth.append(
            f"| {role} | {posted.count} | {posted.body_bytes / mib:.1f} | {posted.seconds:.1f} |"
            f" {lat[len(lat) // 2]:.0f} | {lat[min(len(lat) - 1, int(0.99 * len(lat)))]:.0f} |"
            f" {one.sizes[(role, 'before')] / mib:.1f} | {one.sizes[(role, 'after')] / mib:.1f} |"
        )
    largest = ", ".join(f"{call} {size / 1024:,.0f} KiB" for call, size in sorted(hostile.largest.items()))
    shapes = [
        "| index | hostile: entries / pages / overflow pages / depth | control |",
        "|---|---|---|",
    ]
    for name in INDEXES:
        cells = []
        for role in ("hostile", "control"):
            s = one.shapes.get(role, {}).get(name)
            cells.append(f"{s.entries:,} / {s.pages:,} / {s.overflow:,} / {s.depth}" if s else "-")
        if any(c != "-" for c in cells):
            shapes.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = ", ".join(
        f"{role}: " + ", ".join(f"{n:,} {table}" for table, n in counts.items()) for role, counts in one.rows.items()
    )
    limit_lines = []
    for call, limits in one.limits.items():
        declared = sum(1 for v in limits.values() if v is not None)
        missing = sorted(p for p, v in limits.items() if v is None)
        limit_lines.append(
            f"{call}: string properties with a maxLength {declared}"
            + (f", without {len(missing)} (filled from the body limit: {', '.join(missing)})" if missing else "")
        )
    stall = [
        "| load | parsing | healthz p50 ms | p99 ms | max ms | samples | load calls | load answers |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for scenario in SCENARIOS:
        for config in CONFIGS:
            ss = two.stalls[(config, scenario.name)]
            statuses: dict[str, int] = {}
            for s in ss:
                for k, v in s.load_statuses.items():
                    statuses[k] = statuses.get(k, 0) + v
            errors = sum(s.load_errors for s in ss)
            answers = ", ".join(f"{v} x {k}" for k, v in sorted(statuses.items())) or "-"
            if errors:
                answers += f", {errors} closed or reset"
            stall.append(
                f"| {scenario.words} | {config} | {median([s.percentile(0.5) for s in ss]):.1f} |"
                f" {median([s.percentile(0.99) for s in ss]):.1f} | {median([max(s.probe_ms) for s in ss]):.1f} |"
                f" {sum(len(s.probe_ms) for s in ss)} | {sum(s.load_requests for s in ss)} | {answers} |"
            )
    every = [
        "",
        "Every storm run: req/s / p99 ms / other processes' CPU meanwhile (cores) / attempts.",
        "",
        "| phase | server | storm | " + " | ".join(f"run {i + 1}" for i in range(runs)) + " |",
        "|---|---|---|" + "---|" * runs,
    ]
    for phase, data in (("before", one.before), ("after", one.after)):
        for (role, name), ms in data.items():
            cells = [f"{m.rps:,.0f} / {m.p99_ms:.1f} / {m.noise_cores:.2f} / {m.attempts}" for m in ms]
            every.append(f"| {phase} | {role} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(
        [
            "# Hostile write: later writes and the event loop after the largest values the limits allow",
            "",
            "Written by `bench/hostile_write.py`; bench/README.md says what is measured and the caveats.",
            "",
            *describe(),
            *settings,
            "",
            "## Ordinary writes before and after the hostile writes",
            "",
            f"Medians over {runs} runs per server, storm and phase:",
            "",
            *table,
            "",
            "The same round's hostile/control throughput ratio (servers measured seconds apart, so the drift of the"
            " machine cancels), its median [range] before and after; the effect is after over before, the noise"
            " the larger half-range of those ratios (before or after) relative to their median:",
            "",
            *paired_rows,
            "",
            "Verdict: " + "; ".join(verdicts) + ".",
            "",
            "The writes between the two phases (hostile: every string at its maxLength in 4-byte characters;"
            " control: the same calls and rows with short ASCII values):",
            "",
            *growth,
            "",
            "Largest tables and indexes after (MiB): "
            + "; ".join(
                f"{role}: " + ", ".join(f"{name} {size / mib:,.1f}" for name, size in objects)
                for role, objects in one.largest_objects.items()
            )
            + "; WAL files: "
            + ", ".join(f"{role} {size / mib:,.1f}" for role, size in one.wal.items())
            + ".",
            "",
            f"Largest hostile bodies: {largest}. Rows afterwards: {counts}. Courses by provisioning state:"
            f" {one.provisioning}.",
            "",
            "Limits read from the document: " + "; ".join(limit_lines) + ".",
            "",
            f"The same ordinary writes through the storage verbs alone (this process, one call at a time, no HTTP;"
            f" {len(next(iter(one.direct.values())))} rounds of {args_calls(one)} calls per verb after a warm-up"
            " round, the databases alternating), microseconds per call:",
            "",
            *direct_rows(one),
            "",
            "Indexes after (dbstat; depth counts levels below the root):",
            "",
            *shapes,
            "",
            "## GET /healthz while other clients post large bodies (one worker, one event loop)",
            "",
            "Body sizes: " + ", ".join(f"{name} {size / 1024:,.0f} KiB" for name, size in two.sizes.items()) + ".",
            "",
            *stall,
            "",
            "Where a body's time goes (this process, one thread, median ms of 3; the inner body of the proxied call"
            " is the valid user, parsed again inside): "
            + "; ".join(
                f"{name}: " + ", ".join(f"{step} {ms:.0f}" for step, ms in timings.items())
                for name, timings in two.steps.items()
            )
            + ". json.loads and the message jsonschema builds (a repr of the whole"
            " offending value) run in C without releasing the GIL, so a worker thread cannot spare the event loop"
            " from them; the rest of validation is Python, which yields the GIL every 5 ms.",
            *every,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="measured storms per server, storm and phase (default 3)")
    parser.add_argument("--seconds", type=int, default=4, help="length of each storm (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server and storm (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of part 1's servers (default 2)")
    parser.add_argument(
        "--hostile", type=int, default=600, help="hostile writes (default 600: a minute of the default rate limit)"
    )
    parser.add_argument(
        "--direct-calls", type=int, default=300, help="calls per verb and round through storage alone (default 300)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="clients posting the hostile writes (default 4)")
    parser.add_argument("--stall-runs", type=int, default=2, help="sampling windows per load and server (default 2)")
    parser.add_argument("--stall-seconds", type=int, default=3, help="length of each window (default 3)")
    parser.add_argument("--stall-clients", type=int, default=2, help="connections posting large bodies (default 2)")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between /healthz probes (default 0.01)")
    parser.add_argument(
        "--max-noise", type=float, default=0.25, help="redo a run if other processes took more cores (default 0.25)"
    )
    parser.add_argument("--retries", type=int, default=2, help="redos per run at most (default 2)")
    parser.add_argument("--seed", type=int, default=8, help="random seed of the generated values")
    parser.add_argument("--only", choices=("writes", "stall"), help="run one part only (the report needs both)")
    parser.add_argument("--keep", type=Path, help="new directory to keep the databases in, for a look afterwards")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers (finally) on SIGTERM too
    try:
        wrk_path()
    except LoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True)  # an existing directory would mix two runs' databases
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coursewire-hostile-")))
        one = part1(workdir, args) if args.only != "stall" else None
        two = part2(workdir, args) if args.only != "writes" else None
    print(f"took {time.monotonic() - started:.0f} s", flush=True)
    if one is None or two is None:
        return 0
    maxlengths = Builder().count_max_lengths()
    settings = [
        f"- Document: {maxlengths} maxLength keywords in openapi/apiDefinition.swagger.json; JSON body limit"
        f" {MAX_JSON_BYTES:,} bytes (COURSEWIRE_MAX_JSON_BYTES default)",
        f"- Part 1: two `coursewire serve` ({args.workers} workers, default settings but COURSEWIRE_RATE_LIMIT=off),"
        f" fresh data directories; storms of wrk, 1 thread, {args.connections} connections, {args.seconds:g} s,"
        f" {args.runs} runs per phase, servers in rotating order; {args.hostile} writes between the phases by"
        f" {args.concurrency} clients",
        "- Part 2: `coursewire serve` with 1 worker, as shipped and with OFFLOAD_BYTES raised to 2^62 by"
        f" bench/offload_hook; one client GETs /healthz every {args.interval * 1000:g} ms over a keep-alive"
        f" connection for {args.stall_seconds:g} s windows ({args.stall_runs} per load and server) while wrk posts"
        f" the load over {args.stall_clients} connections",
        f"- A run was redone (up to {args.retries} times, the least disturbed kept) when other processes took more"
        f" than {args.max_noise:g} cores meanwhile",
    ]
    publish(report(one, two, settings), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
