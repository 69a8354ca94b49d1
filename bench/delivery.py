"""Webhook delivery: coursewire's worker against a plain aiohttp client posting the same payloads.

Run from the repository root:

    /tmp/venv/bin/python bench/delivery.py [--runs 3] [--notifications 10000] [--seconds 10]

For 1, 10 and 100 subscribers to UserCreated, with batching at its default (0.25 s) and off, each
run measures two things against one receiver (bench/hook_receiver.py, its own process):

  throughput  `--notifications` notifications' worth of users is created while no worker runs; then
              `coursewire worker` starts and drains the event log into the receiver. Notifications
              per second from the worker's start to the last arrival. The baseline posts exactly
              the bodies the receiver got, with the same number of connections (200), as fast as
              it can (bench/plain_client.py burst).
  latency     with `coursewire worker` running, the bench creates users at a steady rate (100 per
              second; 10 with 100 subscribers, so 1,000 notifications per second either way), each
              in its own transaction as an API call would, and notes each commit's wall-clock time.
              Latency is arrival minus commit, per notification. The baseline posts each event's
              notification to every subscriber, one request each, at the same rate, as a producer
              calling the callbacks itself right after its commit would (plain_client.py paced).

Everything shares the machine's two cores: receiver, worker, bench process and baseline client.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loadgen import median
from machine import describe, publish
from noise import _group_seconds
from servers import BIN, free_port

from storage import apikeys, subscriptions, users
from storage.db import Database
from storage.models import CLI
from storage.secrets import SecretBox

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "delivery.md"
SUBSCRIBERS = (1, 10, 100)
BATCHING = ("0.25", "off")
CONCURRENCY = 200  # DeliveryConfig.concurrency's default; the plain client gets the same
EVENTS_PER_S = 100.0


@dataclass
class Run:
    subscribers: int
    batching: str
    notifications: int = 0
    worker_rate: float = 0.0
    worker_posts: int = 0
    worker_cpu_ms: float = 0.0
    plain_rate: float = 0.0
    plain_cpu_ms: float = 0.0
    rate: float = 0.0
    worker_latency: list[float] = field(default_factory=list)
    plain_latency: list[float] = field(default_factory=list)


class Receiver:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        log = (workdir / "receiver.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(BENCH / "hook_receiver.py"), str(self.port)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.count()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the receiver did not start") from None
                time.sleep(0.05)

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.base}/count", timeout=10) as r:  # noqa: S310 - 127.0.0.1
            return int(json.loads(r.read())["notifications"])

    def wait_for(self, expected: int, timeout: float) -> None:
        """Poll until `expected` notifications have arrived (the sender is another process)."""
        deadline = time.monotonic() + timeout
        while (got := self.count()) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {got} of {expected} notifications arrived in {timeout:g} s")
            time.sleep(0.02)

    def dump(self, name: str) -> list[dict]:
        path = self.workdir / f"{name}.jsonl"
        req = urllib.request.Request(f"{self.base}/dump?path={path}", method="POST")  # noqa: S310
        with urllib.request.urlopen(req, timeout=120):  # noqa: S310
            pass
        with path.open() as f:
            return [json.loads(line) for line in f]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class WorkerProcess:
    """`coursewire worker` on the run's database; `ready` is the wall-clock time it said it started."""

    def __init__(self, data_dir: Path, batching: str) -> None:
        env = {
            **os.environ,
            "COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "COURSEWIRE_WEBHOOK_BATCH_WINDOW": batching,
        }
        self.log = (data_dir / "worker.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI
            [str(BIN / "coursewire"), "--data-dir", str(data_dir), "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # click.echo flushes: "coursewire worker ...: delivering ..."
        self.ready = time.time()
        if not line.startswith(b"coursewire worker"):
            raise RuntimeError(f"the worker did not start: {line!r}; see {self.log.name}")

    def cpu_seconds(self) -> float:
        return sum(_group_seconds(self.process.pid).values())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


def plain_client(mode: str, lines: list[dict], base: str, workdir: Path, **options: float) -> dict:
    path = workdir / f"plain-{mode}.jsonl"
    with path.open("w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    argv = [sys.executable, str(BENCH / "plain_client.py"), mode, str(path), "--base", base]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603 - our own script
    return dict(json.loads(done.stdout))


def setup(data_dir: Path, receiver: Receiver, count: int) -> Database:
    db = Database(data_dir / "coursewire.db")
    db.migrate()
    key = apikeys.create(db, "bench").key
    box = SecretBox.for_database(db.path)
    for n in range(count):
        subscriptions.subscribe(db, box, CLI, key.id, "UserCreated", f"{receiver.base}/hook/{n}")
    return db


def create_user(db: Database, tag: str) -> tuple[str, float]:
    """One user in its own transaction, as CreateUser does; return (id, wall-clock time of its commit)."""
    user = users.create(db, CLI, {"LoginName": f"{tag}@bench.example", "Email": f"{tag}@bench.example"})
    return user["Id"], time.time()


def notifications_of(arrivals: list[dict]) -> list[tuple[float, str, dict]]:
    return [(a["t"], a["hook"], n) for a in arrivals for n in a["body"]["Notifications"]]


def throughput(run: Run, workdir: Path, receiver: Receiver, total: int) -> None:
    data_dir = workdir / "throughput"
    db = setup(data_dir, receiver, run.subscribers)
    events = math.ceil(total / run.subscribers)
    for i in range(events):
        create_user(db, f"backlog{i}")
    expected = events * run.subscribers
    worker = WorkerProcess(data_dir, run.batching)
    try:
        cpu0 = worker.cpu_seconds()
        receiver.wait_for(expected, timeout=600)
        cpu = worker.cpu_seconds() - cpu0
    finally:
        worker.stop()
    arrivals = receiver.dump("worker-burst")
    last = max(a["t"] for a in arrivals)
    run.notifications = expected
    run.worker_posts = len(arrivals)
    run.worker_rate = expected / (last - worker.ready)
    run.worker_cpu_ms = 1000 * cpu / expected

    plain = plain_client(
        "burst",
        [{"hook": a["hook"], "body": a["body"]} for a in arrivals],
        receiver.base,
        workdir,
        concurrency=CONCURRENCY,
    )
    receiver.wait_for(expected, timeout=120)
    again = receiver.dump("plain-burst")
    run.plain_rate = expected / (max(a["t"] for a in again) - plain["t0"])
    run.plain_cpu_ms = 1000 * plain["cpu_seconds"] / expected


def latency(run: Run, workdir: Path, receiver: Receiver, seconds: float) -> None:
    data_dir = workdir / "latency"
    db = setup(data_dir, receiver, run.subscribers)
    run.rate = EVENTS_PER_S if run.subscribers <= 10 else EVENTS_PER_S / 10
    events = int(run.rate * seconds)
    committed: dict[str, float] = {}
    order: dict[str, int] = {}
    worker = WorkerProcess(data_dir, run.batching)
    try:
        start = time.monotonic() + 0.2
        for i in range(events):
            delay = start + i / run.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # a steady producer's schedule
            user_id, at = create_user(db, f"steady{i}")
            committed[user_id], order[user_id] = at, i
        receiver.wait_for(events * run.subscribers, timeout=120)
    finally:
        worker.stop()
    got = notifications_of(receiver.dump("worker-steady"))
    run.worker_latency = [t - committed[n["UserId"]] for t, _, n in got]

    lines = [
        {
            "i": order[n["UserId"]],
            "hook": hook,
            "body": {"Id": f"{hook}-{order[n['UserId']]}", "Attempt": 1, "Properties": {}, "Notifications": [n]},
        }
        for _, hook, n in got
    ]
    plain = plain_client("paced", lines, receiver.base, workdir, rate=run.rate)
    receiver.wait_for(len(lines), timeout=120)
    again = receiver.dump("plain-steady")
    run.plain_latency = [t - (plain["t0"] + order[n["UserId"]] / run.rate) for t, _, n in notifications_of(again)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def _median(runs: list[Run], value: Callable[[Run], float]) -> float:
    return median([value(r) for r in runs])


def _ms(runs: list[Run], attr: str, p: float) -> str:
    """The median over runs of each run's `p`th percentile of `attr` (seconds), in ms."""
    return f"{1000 * _median(runs, lambda r: percentile(getattr(r, attr), p)):,.0f}"


def _label(batching: str) -> str:
    return "off" if batching == "off" else f"{batching} s"


def report(runs: dict[tuple[int, str], list[Run]], settings: list[str]) -> str:
    lines = [
        "# Webhook delivery: coursewire's worker vs a plain aiohttp client",
        "",
        "Written by `bench/delivery.py`; bench/README.md says what is measured and the caveats.",
        "",
        *describe(wrk=False, packages=("aiohttp", "standardwebhooks", "cryptography", "jsonschema_rs")),
        *settings,
        "",
        "## Throughput: draining a backlog",
        "",
        "Notifications per second from the worker's start to the last arrival, against the plain client posting"
        " the same bodies (medians over runs; CPU is the sender's own, per notification).",
        "",
        "| subscribers | batching | notifications | POSTs | coursewire notif/s | plain client notif/s | ratio"
        " | coursewire CPU ms/notif | plain CPU ms/notif |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (subs, batching), done in runs.items():
        worker, plain = _median(done, lambda r: r.worker_rate), _median(done, lambda r: r.plain_rate)
        posts = int(_median(done, lambda r: r.worker_posts))
        lines.append(
            f"| {subs} | {_label(batching)} | {done[0].notifications:,} | {posts:,} | {worker:,.0f} | {plain:,.0f}"
            f" | {worker / plain:.2f}x | {_median(done, lambda r: r.worker_cpu_ms):.3f}"
            f" | {_median(done, lambda r: r.plain_cpu_ms):.3f} |"
        )
    lines += [
        "",
        "## Latency: commit to receiver at a steady rate",
        "",
        "Per notification, wall-clock arrival minus the commit of its event, in ms (medians over runs of each"
        " run's percentile). The plain client posts each notification at its event's scheduled time.",
        "",
        "| subscribers | batching | events/s | notif/s | coursewire p50 | p99 | max | plain p50 | p99 | max |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (subs, batching), done in runs.items():
        rate = done[0].rate
        cells = [_ms(done, attr, p) for attr in ("worker_latency", "plain_latency") for p in (50, 99, 100)]
        lines.append(f"| {subs} | {_label(batching)} | {rate:g} | {rate * subs:,.0f} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--notifications", type=int, default=10000, help="backlog size in notifications")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each steady-rate run")
    parser.add_argument("--subscribers", type=int, nargs="+", default=list(SUBSCRIBERS))
    parser.add_argument("--batching", nargs="+", default=list(BATCHING), help="batch windows (seconds or off)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs: dict[tuple[int, str], list[Run]] = {(s, b): [] for s in args.subscribers for b in args.batching}
    with tempfile.TemporaryDirectory(prefix="coursewire-bench-delivery-") as tmp:
        receiver = Receiver(Path(tmp))
        try:
            for n in range(args.runs):
                for key in runs:
                    workdir = Path(tmp) / f"run{n}-{key[0]}-{key[1]}"
                    workdir.mkdir()
                    run = Run(*key)
                    throughput(run, workdir, receiver, args.notifications)
                    latency(run, workdir, receiver, args.seconds)
                    runs[key].append(run)
                    print(
                        f"run {n + 1}/{args.runs} subscribers={key[0]} batching={key[1]}:"
                        f" {run.worker_rate:,.0f} notif/s (plain {run.plain_rate:,.0f}),"
                        f" p50 {1000 * percentile(run.worker_latency, 50):.0f} ms"
                        f" p99 {1000 * percentile(run.worker_latency, 99):.0f} ms"
                        f" (plain p99 {1000 * percentile(run.plain_latency, 99):.0f} ms)",
                        flush=True,
                    )
        finally:
            receiver.stop()
    settings = [
        f"- {args.runs} runs per configuration; backlog {args.notifications:,} notifications; steady runs of"
        f" {args.seconds:g} s",
        f"- Worker: `coursewire worker`, default settings (concurrency {CONCURRENCY}, poll 50 ms) but"
        " COURSEWIRE_WEBHOOK_BATCH_WINDOW as in the table; plain client: aiohttp, 200 connections",
        "- Receiver: aiohttp server (bench/hook_receiver.py), one process, answers 204 at once",
    ]
    text = report(runs, settings)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
