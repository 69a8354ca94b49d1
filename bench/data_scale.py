"""Data scale: list and enroll latency through the real HTTP API over 100,000 users and 1,000,000 enrollments.

Run from the repository root:

    /tmp/venv/bin/python bench/data_scale.py [--requests 100] [--data-dir DIR]

1. Builds the database (bench/dataset.py; about a minute), or reuses the one in `--data-dir`.
2. Starts `coursewire serve` on it (uvicorn, one worker per core, COURSEWIRE_RATE_LIMIT=off) and sends
   each query `--requests` times, one at a time over a keep-alive connection, with fresh parameters
   each time (another user, course, page), and reports p50/p99 of the wall time per call. One at a
   time, because the question is what a call costs at this scale, not how many fit in a second.
3. Enrolls learners into the busiest session (full, with a waitlist) and cancels seated learners
   (each cancel promotes the first in line), and reports the same.
4. Replays one call of each query inside this process with every SQL statement traced, re-runs each
   SELECT on its own to time it, and prints the EXPLAIN QUERY PLAN of the slow ones: where the time goes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataset import Dataset, Scale, build
from machine import describe, publish
from servers import Server, basic_auth, start_coursewire
from tracing import SqlStatement, trace_call

RESULTS = Path(__file__).resolve().parent / "results" / "data_scale.md"
SLOW_STATEMENT_MS = 5.0


@dataclass
class Context:
    """Parameters to draw from: ids that exist in the generated data."""

    data: Dataset
    user_ids: list[str]
    popular_courses: list[str]
    free_logins: list[str]  # users not enrolled in the busy course
    seated: list[str]  # cancellable enrollments (NotStarted, InProgress) holding a seat in the busy session
    busy_session: str
    rng: random.Random
    deep_links: list[str] = field(default_factory=list)  # nextLinks deep into all enrollments (deep_links())


@dataclass(frozen=True)
class Call:
    """One HTTP call: method, path with query string, JSON body, and the status it must answer."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    status: int = 200


@dataclass(frozen=True)
class Scenario:
    """A named call shape; `make` draws one concrete call from the context."""

    name: str
    shape: str
    make: Callable[[Context], Call]


@dataclass
class Timing:
    scenario: Scenario
    latencies_ms: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    count: int | None = None
    statements: list[SqlStatement] = field(default_factory=list)


def _list(set_path: str, **options: str) -> str:
    return (
        set_path + "?" + urllib.parse.urlencode({f"${k}": v for k, v in options.items()}, quote_via=urllib.parse.quote)
    )


def _user(c: Context) -> str:
    return c.rng.choice(c.user_ids)


def _course(c: Context) -> str:
    return c.rng.choice(c.popular_courses)


DEEP_SKIP = "all enrollments, newest first, deep page by $skip"
DEEP_KEYSET = "all enrollments, newest first, deep page by $skiptoken"


def deep_links(client: Client, ctx: Context, n: int) -> list[str]:
    """`n` nextLinks that resume all enrollments, newest first, after a random row among the first 100,000,
    each asking for 50 rows like the $skip query: one `$skip` call each, made before any timing (a link
    carries a $skiptoken: the sort values of the row it resumes after, signed by the server)."""
    links = []
    for _ in range(n):
        depth = ctx.rng.randrange(min(100_000, ctx.data.counts["enrollments"] - 200))
        path = _list("/odata/v2/Enrollments", orderby="RegistrationDate desc", skip=str(depth))
        status, body, _ = client.call(Call("GET", path))
        if status != 200 or "@odata.nextLink" not in body:
            raise RuntimeError(f"GET {path} answered {status} without a nextLink: {body}")
        parts = urllib.parse.urlsplit(body["@odata.nextLink"])
        links.append(f"{parts.path}?{parts.query}&$top=50")
    return links


def _enrollments_page(c: Context, filter: str, pages: int) -> Call:
    """A random one of the first `pages` pages of 50 filtered enrollments."""
    return Call("GET", _list("/odata/v2/Enrollments", filter=filter, top="50", skip=str(50 * c.rng.randrange(pages))))


SCENARIOS = (
    Scenario(
        "enrollments of a user",
        "Enrollments?$filter=UserId eq '{user}'&$orderby=RegistrationDate desc&$top=50",
        lambda c: Call(
            "GET",
            _list("/odata/v2/Enrollments", filter=f"UserId eq '{_user(c)}'", orderby="RegistrationDate desc", top="50"),
        ),
    ),
    Scenario(
        "enrollments of a user, counted",
        "... the same &$count=true",
        lambda c: Call(
            "GET",
            _list(
                "/odata/v2/Enrollments",
                filter=f"UserId eq '{_user(c)}'",
                orderby="RegistrationDate desc",
                top="50",
                count="true",
            ),
        ),
    ),
    Scenario(
        "a course's completed enrollments, paged",
        "Enrollments?$filter=CourseId eq '{popular course}' and EnrollmentStatus eq 3&$top=50&$skip={0..2000}",
        lambda c: _enrollments_page(c, f"CourseId eq '{_course(c)}' and EnrollmentStatus eq 3", pages=41),
    ),
    Scenario(
        "a course's completed enrollments, newest first, counted",
        "Enrollments?$filter=CourseId eq '{popular course}' and EnrollmentStatusText eq 'Completed'"
        "&$orderby=RegistrationDate desc&$top=50&$count=true",
        lambda c: Call(
            "GET",
            _list(
                "/odata/v2/Enrollments",
                filter=f"CourseId eq '{_course(c)}' and EnrollmentStatusText eq 'Completed'",
                orderby="RegistrationDate desc",
                top="50",
                count="true",
            ),
        ),
    ),
    Scenario(
        "the busy course's waitlist",
        "Enrollments?$filter=CourseId eq '{busy course}' and EnrollmentStatus eq 6&$top=50&$skip={0..1000}",
        lambda c: _enrollments_page(c, f"CourseId eq '{c.data.busy_course}' and EnrollmentStatus eq 6", pages=21),
    ),
    Scenario(
        "all enrollments, newest first, deep page by $skip",
        "Enrollments?$orderby=RegistrationDate desc&$top=50&$skip={0..100000}",
        lambda c: Call(
            "GET",
            _list(
                "/odata/v2/Enrollments", orderby="RegistrationDate desc", top="50", skip=str(c.rng.randrange(100_000))
            ),
        ),
    ),
    Scenario(
        DEEP_KEYSET,
        "nextLink of $skip={0..100000}: Enrollments?$orderby=RegistrationDate desc&$skiptoken=...&$top=50",
        lambda c: Call("GET", c.deep_links.pop()),
    ),
    Scenario(
        "users by email prefix, by name",
        "Users?$filter=startswith(Email,'user0{10..99}')&$orderby=Title&$top=50",
        lambda c: Call(
            "GET",
            _list(
                "/odata/v2/Users",
                filter=f"startswith(Email,'user0{c.rng.randrange(10, 100)}')",
                orderby="Title",
                top="50",
            ),
        ),
    ),
    Scenario(
        "users by email prefix, by name, counted",
        "... the same &$count=true",
        lambda c: Call(
            "GET",
            _list(
                "/odata/v2/Users",
                filter=f"startswith(Email,'user0{c.rng.randrange(10, 100)}')",
                orderby="Title",
                top="50",
                count="true",
            ),
        ),
    ),
    Scenario(
        "users of a department, by name, paged",
        "Users?$filter=Department eq '{department}'&$orderby=Title&$top=50&$skip={0..5000}",
        lambda c: Call(
            "GET",
            _list(
                "/odata/v2/Users",
                filter=f"Department eq '{c.rng.choice(['Sales', 'Finance', 'IT', 'Legal'])}'",
                orderby="Title",
                top="50",
                skip=str(50 * c.rng.randrange(101)),
            ),
        ),
    ),
    Scenario(
        "sessions of the busy course",
        "Courses({busy course})/CourseSessions",
        lambda c: Call("GET", f"/odata/v2/Courses({c.data.busy_course})/CourseSessions"),
    ),
)
WRITES = (
    Scenario(
        "enroll into the busy session (waitlisted)",
        "POST Courses({busy course})/Enroll {userLoginName, courseSessionId}",
        lambda c: Call(
            "POST",
            f"/odata/v2/Courses({c.data.busy_course})/Enroll",
            {"userLoginName": c.free_logins.pop(), "courseSessionId": c.busy_session},
        ),
    ),
    Scenario(
        "cancel a seat in the busy session (promotes the first in line)",
        "POST Enrollments({seated})/Cancel {message}",
        lambda c: Call("POST", f"/odata/v2/Enrollments({c.seated.pop()})/Cancel", {"message": "bench"}, 204),
    ),
)


def context(data: Dataset, seed: int, requests: int) -> Context:
    """Draw the ids the scenarios need from the database itself."""
    import sqlite3

    conn = sqlite3.connect(data.path)
    try:
        user_ids = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY rowid")]
        popular = [
            r[0]
            for r in conn.execute(
                "SELECT course_id FROM enrollments GROUP BY course_id ORDER BY count(*) DESC LIMIT 20"
            )
        ]
        busy_session = data.busy_sessions[0]
        need = 2 * requests + 20
        free = [
            r[0]
            for r in conn.execute(
                "SELECT login_name FROM users u WHERE is_deleted = 0 AND NOT EXISTS (SELECT 1 FROM enrollments e"
                " WHERE e.user_id = u.id AND e.course_id = ? AND e.status NOT IN (4, 5)) ORDER BY rowid DESC LIMIT ?",
                (data.busy_course, need),
            )
        ]
        seated = [
            r[0]
            for r in conn.execute(
                "SELECT r.enrollment_id FROM session_registrations r JOIN enrollments e ON e.id = r.enrollment_id"
                " WHERE r.session_id = ? AND r.status = 'Registered' AND e.status IN (1, 2) ORDER BY r.seq LIMIT ?",
                (busy_session, need),
            )
        ]
    finally:
        conn.close()
    return Context(data, user_ids, popular, free, seated, busy_session, random.Random(seed))  # noqa: S311


class Client:
    """One keep-alive HTTP/1.1 connection to the server; `call` returns (status, JSON body, milliseconds)."""

    def __init__(self, server: Server) -> None:
        parsed = urllib.parse.urlsplit(server.base)
        self.connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=120)
        self.headers = dict(server.headers)

    def call(self, call: Call) -> tuple[int, Any, float]:
        headers = dict(self.headers)
        payload = None
        if call.body is not None:
            payload = json.dumps(call.body).encode()
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        self.connection.request(call.method, call.path, body=payload, headers=headers)
        response = self.connection.getresponse()
        raw = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        return response.status, json.loads(raw) if raw else None, elapsed


def measure(client: Client, ctx: Context, scenario: Scenario, requests: int, budget: float) -> Timing:
    """`requests` calls one after another (fewer if `budget` seconds run out), after two warm-up calls."""
    timing = Timing(scenario)
    deadline = time.monotonic() + budget
    for i in range(requests + 2):
        call = scenario.make(ctx)
        status, body, ms = client.call(call)
        if status != call.status:
            raise RuntimeError(f"{scenario.name}: {call.method} {call.path} answered {status}: {body}")
        if i < 2:
            continue
        timing.latencies_ms.append(ms)
        if isinstance(body, dict) and "value" in body:
            timing.rows.append(len(body["value"]))
            timing.count = body.get("@odata.count", timing.count)
        if time.monotonic() > deadline and len(timing.latencies_ms) >= 10:
            break
    return timing


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 100 calls, p99 is the second slowest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def busy_state(data: Dataset) -> str:
    import sqlite3

    conn = sqlite3.connect(data.path)
    try:
        rows = conn.execute(
            "SELECT status, count(*) FROM session_registrations WHERE session_id = ? GROUP BY status",
            (data.busy_sessions[0],),
        ).fetchall()
        limit = conn.execute(
            "SELECT max_attendees FROM course_sessions WHERE id = ?", (data.busy_sessions[0],)
        ).fetchone()[0]
        enrolled = conn.execute("SELECT count(*) FROM enrollments WHERE course_id = ?", (data.busy_course,)).fetchone()[
            0
        ]
    finally:
        conn.close()
    states = ", ".join(f"{n:,} {status}" for status, n in rows)
    return f"busy course: {enrolled:,} enrollments; its first session: MaxAttendees {limit:,}, registrations {states}"


def report(timings: list[Timing], writes: list[Timing], header: list[str], requests: int) -> str:
    def row(t: Timing) -> str:
        lat = t.latencies_ms
        rows = f"{statistics.median(t.rows):.0f}" if t.rows else "-"
        count = f"{t.count:,}" if t.count is not None else "-"
        slowest = max((s.ms for s in t.statements if s.ms is not None), default=None)
        sql = f"{slowest:.1f}" if slowest is not None else "-"
        return (
            f"| {t.scenario.name} | `{t.scenario.shape}` | {len(lat)} | {percentile(lat, 50):.1f} |"
            f" {percentile(lat, 99):.1f} | {rows} | {count} | {sql} |"
        )

    lines = [
        "# Data scale: coursewire over 100,000 users and 1,000,000 enrollments",
        "",
        "Written by `bench/data_scale.py`; bench/README.md says what is measured and the caveats.",
        "",
        *header,
        "",
        f"Latency of one call at a time over a keep-alive connection (wall time at the client), {requests} calls"
        " per row with fresh parameters each; p99 of 100 calls is the second slowest. `slowest SQL` is the"
        " longest single statement of one traced call, re-run alone.",
        "",
        "| call | shape | n | p50 ms | p99 ms | rows | @odata.count | slowest SQL ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *[row(t) for t in timings],
        "",
        *_deep_page_summary(timings),
        "Writes into the busiest session:",
        "",
        "| call | shape | n | p50 ms | p99 ms | rows | @odata.count | slowest SQL ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *[row(t) for t in writes],
        "",
        f"## Statements slower than {SLOW_STATEMENT_MS:g} ms, with their query plans",
        "",
    ]
    for t in [*timings, *writes]:
        slow = [s for s in t.statements if s.ms is not None and s.ms >= SLOW_STATEMENT_MS]
        if not slow:
            continue
        lines += [f"### {t.scenario.name}", ""]
        for s in sorted(slow, key=lambda s: -(s.ms or 0)):
            params = ", ".join(repr(p) for p in s.params)
            lines += [
                f"{s.ms:.1f} ms, parameters ({params}):",
                "",
                "```sql",
                s.sql,
                "```",
                "",
                "```",
                *s.plan,
                "```",
                "",
            ]
    return "\n".join(lines) + "\n"


def _deep_page_summary(timings: list[Timing]) -> list[str]:
    """The deep page by $skiptoken against the same page by $skip, measured in the same run (the baseline)."""
    by_name = {t.scenario.name: t.latencies_ms for t in timings}
    if DEEP_SKIP not in by_name or DEEP_KEYSET not in by_name:
        return []
    skip, token = by_name[DEEP_SKIP], by_name[DEEP_KEYSET]
    return [
        f"Deep page of all enrollments, newest first: following the @odata.nextLink ($skiptoken) takes"
        f" p50 {percentile(token, 50):.1f} ms, p99 {percentile(token, 99):.1f} ms; the same pages by $skip, the"
        f" baseline of this run, p50 {percentile(skip, 50):.1f} ms, p99 {percentile(skip, 99):.1f} ms"
        f" ({percentile(skip, 99) / percentile(token, 99):.0f}x the p99).",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100, help="calls per query (default 100)")
    parser.add_argument("--budget", type=float, default=45.0, help="seconds per query at most (default 45)")
    parser.add_argument("--users", type=int, default=100_000, help="users to generate (default 100,000)")
    parser.add_argument("--enrollments", type=int, default=1_000_000, help="enrollments (default 1,000,000)")
    parser.add_argument("--data-dir", type=Path, help="keep the database here and reuse it on the next run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="uvicorn workers (default: cores)")
    parser.add_argument("--seed", type=int, default=365, help="random seed of the data and the parameters")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server (finally) on SIGTERM too

    with tempfile.TemporaryDirectory(prefix="coursewire-scale-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        data = _dataset(data_dir, Scale(users=args.users, enrollments=args.enrollments, seed=args.seed))
        ctx = context(data, args.seed, args.requests)
        header = [
            *describe(),
            f"- Data: {data.counts['users']:,} users, {data.counts['enrollments']:,} enrollments,"
            f" {data.counts['session_registrations']:,} session registrations, {len(data.course_ids)} courses"
            f" (bench/dataset.py, seed {args.seed}; no ANALYZE, as coursewire never runs it)",
            f"- {busy_state(data)}",
            f"- Server: `coursewire serve`, {args.workers} workers (uvicorn, uvloop, httptools),"
            " COURSEWIRE_RATE_LIMIT=off, Basic auth; client in this process, on the same 2 cores",
        ]
        server = start_coursewire(data_dir, args.workers)
        try:
            client = Client(server)
            ctx.deep_links = deep_links(client, ctx, args.requests + 3)  # two warm-up calls, one traced
            timings = []
            for scenario in SCENARIOS:
                timings.append(measure(client, ctx, scenario, args.requests, args.budget))
                _progress(timings[-1])
            writes = []
            for scenario in WRITES:
                writes.append(measure(client, ctx, scenario, args.requests, args.budget))
                _progress(writes[-1])
        finally:
            server.stop()
        auth = basic_auth(data.key)
        for t in [*timings, *writes]:
            t.statements = trace_call(data.path, auth, t.scenario.make(ctx))
        text = report(timings, writes, header, args.requests)
    publish(text, args.out)
    return 0


def _dataset(data_dir: Path, scale: Scale) -> Dataset:
    """Build the database in `data_dir`, or reuse it when a previous run left it there."""
    summary = data_dir / "dataset.json"
    if summary.exists():
        saved = json.loads(summary.read_text())
        return Dataset(Path(saved["path"]), **{k: v for k, v in saved.items() if k != "path"})
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = build(data_dir / "coursewire.db", scale, data_dir / "files")
    print(f"built {data.counts} in {time.monotonic() - started:.0f} s", flush=True)
    summary.write_text(json.dumps({**data.__dict__, "path": str(data.path)}))
    return data


def _progress(t: Timing) -> None:
    print(
        f"{t.scenario.name:60} n={len(t.latencies_ms):4} p50 {percentile(t.latencies_ms, 50):8.1f} ms"
        f"  p99 {percentile(t.latencies_ms, 99):8.1f} ms",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
