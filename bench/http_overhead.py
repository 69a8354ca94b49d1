"""HTTP overhead: coursewire against a bare connexion app and a bare Flask app doing the same SQLite work.

Run from the repository root:

    /tmp/venv/bin/python bench/http_overhead.py [--seconds 8] [--runs 5]

Three servers run side by side, all under uvicorn with coursewire's settings (uvloop, httptools, one
worker per core) on databases migrated by coursewire's migrations:

  coursewire  `coursewire serve`: Basic auth (an API key lookup per call), throttling off
              (COURSEWIRE_RATE_LIMIT=off), its validators, handlers, shaping and error handlers;
  connexion   bench/baseline_connexion.py: a bare connexion FlaskApp serving bench/baseline.yaml;
  flask       bench/baseline_flask.py: bare Flask behind a2wsgi (what connexion wraps Flask in).

Each run drives GET /odata/v2/Users({id}) and POST /odata/v2/Users (a unique LoginName per call) on
every target with wrk, the targets' order rotating from run to run so drift on a noisy machine hits
all of them alike. The table quotes medians over the runs, and the ratios of the medians.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadgen import LoadError, Measurement, median, run_guarded, wrk_path
from machine import describe, publish
from servers import Server, start_baseline, start_coursewire

from connector.app import WSGI_THREADS

RESULTS = Path(__file__).resolve().parent / "results" / "http_overhead.md"
TARGETS = ("coursewire", "connexion", "flask")
GOAL = 0.8  # coursewire should keep at least this share of bare connexion's throughput


@dataclass(frozen=True)
class Operation:
    """One measured call: its method and path (`{id}` is the seeded user), and the body wrk.lua builds."""

    method: str
    path: str
    body: str


OPERATIONS = (
    Operation("GET", "/odata/v2/Users({id})", "none"),
    Operation("POST", "/odata/v2/Users", "user"),
)
SEED_USER = {"LoginName": "seed@bench.example", "Email": "seed@bench.example", "Title": "Seed", "Department": "Bench"}


def start_targets(workdir: Path, workers: int) -> dict[str, tuple[Server, str]]:
    """Start the three servers; return each with the id of a user it created through its own POST."""
    from storage.db import Database  # the real migrations, so every target has the same tables and indexes

    servers: dict[str, Server] = {}
    try:
        (workdir / "coursewire").mkdir()
        servers["coursewire"] = start_coursewire(workdir / "coursewire", workers)
        auth = servers["coursewire"].headers["Authorization"]
        for name in ("connexion", "flask"):
            (workdir / name).mkdir()
            database = workdir / name / "coursewire.db"
            Database(database).migrate()
            servers[name] = start_baseline(name, f"baseline_{name}", database, workers, auth)
        seeded = {}
        for name, server in servers.items():
            status, user = server.request("POST", "/odata/v2/Users", SEED_USER)
            if status != 200 or not isinstance(user, dict):
                raise RuntimeError(f"{name}: CreateUser answered {status}: {user}")
            status, again = server.request("GET", f"/odata/v2/Users({user['Id']})")
            if status != 200 or not isinstance(again, dict) or again["LoginName"] != SEED_USER["LoginName"]:
                raise RuntimeError(f"{name}: GetUserById answered {status}: {again}")
            seeded[name] = (server, str(user["Id"]))
        return seeded
    except BaseException:
        for server in servers.values():
            server.stop()
        raise


def measure(
    targets: dict[str, tuple[Server, str]],
    *,
    runs: int,
    seconds: float,
    warmup: float,
    connections: int,
    threads: int,
    workers: int,
    max_noise: float,
    min_balance: float,
    retries: int,
) -> dict[tuple[str, str], list[Measurement]]:
    """Warm every target up, then `runs` rounds over targets and operations in rotating order.

    A run during which other processes took more than `max_noise` cores, or a GET run whose least busy
    worker did less than `min_balance` of the busiest one's work, is redone (see noise.py). POST runs
    are not held to the balance: every write waits for SQLite's one write lock, and the busy waits
    make the workers' CPU time uneven whatever the accept pattern.
    """
    results: dict[tuple[str, str], list[Measurement]] = {(t, op.method): [] for t in targets for op in OPERATIONS}

    def once(target: str, op: Operation, duration: float, guard: bool = True) -> Measurement:
        server, user_id = targets[target]
        return run_guarded(
            server.process.pid,  # the server's own process group (start_new_session)
            workers,
            max_noise=max_noise if guard else float("inf"),
            min_balance=min_balance if guard and op.method == "GET" else 0.0,
            retries=retries,
            url=server.base,
            method=op.method,
            path=op.path.format(id=user_id),
            authorization=server.headers["Authorization"],
            body=op.body,
            run_tag=uuid.uuid4().hex[:12],
            seconds=duration,
            connections=connections,
            threads=threads,
        )

    for target in targets:
        for op in OPERATIONS:
            once(target, op, warmup, guard=False)
    names = list(targets)
    for run in range(runs):
        order = names[run % len(names) :] + names[: run % len(names)]
        for target in order:
            for op in OPERATIONS:
                m = once(target, op, seconds)
                results[(target, op.method)].append(m)
                print(
                    f"run {run + 1}/{runs} {target:10} {op.method:4} {m.rps:8.0f} req/s  p50 {m.p50_ms:6.2f} ms"
                    f"  p99 {m.p99_ms:7.2f} ms  noise {m.noise_cores:.2f} cores"
                    f"  balance {m.balance:.2f}  attempts {m.attempts}",
                    flush=True,
                )
    return results


PAIRS = (("coursewire", "connexion"), ("connexion", "flask"), ("coursewire", "flask"))


def _ratio_rows(values: dict[tuple[str, str], float], methods: list[str], *, inverse: bool = False) -> list[str]:
    rows = []
    for top, bottom in PAIRS:
        cells = [
            f"{(values[(bottom, m)] / values[(top, m)]) if inverse else (values[(top, m)] / values[(bottom, m)]):.2f}x"
            for m in methods
        ]
        rows.append(f"| {top} / {bottom} | " + " | ".join(cells) + " |")
    return rows


def _paired_rows(results: dict[tuple[str, str], list[Measurement]], methods: list[str]) -> list[str]:
    """Run-by-run throughput ratios (targets of one run were measured minutes apart at most): median [range]."""
    rows = []
    for top, bottom in PAIRS:
        cells = []
        for m in methods:
            ratios = [a.rps / b.rps for a, b in zip(results[(top, m)], results[(bottom, m)], strict=True)]
            cells.append(f"{median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
        rows.append(f"| {top} / {bottom} | " + " | ".join(cells) + " |")
    return rows


def report(results: dict[tuple[str, str], list[Measurement]], settings: list[str]) -> str:
    """The markdown results: medians per target and operation, the ratios, every run, the settings."""

    def medians(value: Callable[[Measurement], float]) -> dict[tuple[str, str], float]:
        return {key: median([value(m) for m in ms]) for key, ms in results.items()}

    rps, p50, p99 = medians(lambda m: m.rps), medians(lambda m: m.p50_ms), medians(lambda m: m.p99_ms)
    cpu = medians(lambda m: m.server_cpu_ms)
    methods = [op.method for op in OPERATIONS]
    table = [
        "| target | " + " | ".join(f"{m} req/s | {m} p50 ms | {m} p99 ms | {m} CPU ms/req" for m in methods) + " |",
        "|---|" + "---:|" * (4 * len(methods)),
    ]
    for target in TARGETS:
        cells = [
            f"{rps[(target, m)]:,.0f} | {p50[(target, m)]:.1f} | {p99[(target, m)]:.1f} | {cpu[(target, m)]:.2f}"
            for m in methods
        ]
        table.append(f"| **{target}** | " + " | ".join(cells) + " |")
    ratios = [
        "",
        "Ratios of the medians: throughput (what the goal is stated in), and server CPU time per request"
        " (the inverse ratio, so above 1 means the same as for throughput: cheaper).",
        "",
        "| throughput ratio | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
        *_ratio_rows(rps, methods),
        "",
        "| same run, ratio of throughputs: median [min-max] | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
        *_paired_rows(results, methods),
        "",
        "| CPU-per-request ratio (inverse) | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
        *_ratio_rows(cpu, methods, inverse=True),
        "",
        f"Goal: coursewire at least {GOAL}x of bare connexion's throughput. "
        + "; ".join(
            f"{m}: {rps[('coursewire', m)] / rps[('connexion', m)]:.2f}x "
            + ("(met)" if rps[("coursewire", m)] / rps[("connexion", m)] >= GOAL else "(**not met**)")
            for m in methods
        )
        + ".",
    ]
    runs = len(next(iter(results.values())))
    every = [
        "",
        "Every run: req/s / p99 ms / server CPU ms per request / other processes' CPU meanwhile (cores) /"
        " worker balance / attempts.",
        "",
        "| target | call | " + " | ".join(f"run {i + 1}" for i in range(runs)) + " |",
        "|---|---|" + "---|" * runs,
    ]
    for (target, method), ms in results.items():
        cells = [
            f"{m.rps:,.0f} / {m.p99_ms:.1f} / {m.server_cpu_ms:.2f} / {m.noise_cores:.2f} / {m.balance:.2f}"
            f" / {m.attempts}"
            for m in ms
        ]
        every.append(f"| {target} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(
        [
            "# HTTP overhead: coursewire vs bare connexion vs bare Flask",
            "",
            "Written by `bench/http_overhead.py`; bench/README.md says what is measured and the caveats.",
            "",
            *describe(),
            *settings,
            "",
            f"Medians over {runs} runs:",
            "",
            *table,
            *ratios,
            *every,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured wrk run (default 8)")
    parser.add_argument("--runs", type=int, default=5, help="measured rounds over all targets (default 5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target and call")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: it shares the cores)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="uvicorn workers (default: cores)")
    parser.add_argument(
        "--max-noise", type=float, default=0.25, help="redo a run if other processes took more cores (default 0.25)"
    )
    parser.add_argument(
        "--min-balance",
        type=float,
        default=0.6,
        help="redo a run if its least busy worker did less than this share of the busiest's work (default 0.6)",
    )
    parser.add_argument("--retries", type=int, default=4, help="redos per run at most (default 4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers (finally) on SIGTERM too
    try:
        wrk_path()
    except LoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = [
        f"- Servers: uvicorn, {args.workers} workers, loop=uvloop, http=httptools, access log off;"
        " SQLite WAL, synchronous=NORMAL, busy_timeout 10 s, foreign keys on (storage/db.py), one database per"
        " target migrated by storage/migrations.py",
        "- coursewire: `coursewire serve`, COURSEWIRE_RATE_LIMIT=off (throttling disabled), Basic auth with a"
        f" Full Control key, a2wsgi pool of {WSGI_THREADS} threads (connector/app.py); the baselines keep a2wsgi's"
        " default 10",
        f"- Load: wrk {args.threads} thread(s), {args.connections} keep-alive connections, {args.runs} runs of"
        f" {args.seconds:g} s per target and call after a {args.warmup:g} s warm-up, targets in rotating order;"
        " wrk runs on the same 2 cores as the server",
        f"- A run was redone (up to {args.retries} times, the least disturbed attempt kept) when other processes of"
        f" the machine took more than {args.max_noise:g} cores meanwhile, or when the uvicorn workers' CPU time was"
        f" uneven in a GET run (least busy below {args.min_balance:g} of the busiest: wrk's connections all"
        " accepted by one worker); see bench/README.md",
        "- GET /odata/v2/Users({id}) of one seeded user; POST /odata/v2/Users with a unique LoginName per call"
        " (coursewire also writes its UserCreated event; the baselines write the same event row)",
    ]
    with tempfile.TemporaryDirectory(prefix="coursewire-bench-") as tmp:
        targets = start_targets(Path(tmp), args.workers)
        try:
            results = measure(
                targets,
                runs=args.runs,
                seconds=args.seconds,
                warmup=args.warmup,
                connections=args.connections,
                threads=args.threads,
                workers=args.workers,
                max_noise=args.max_noise,
                min_balance=args.min_balance,
                retries=args.retries,
            )
        finally:
            for server, _ in targets.values():
                server.stop()
    text = report(results, settings)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
