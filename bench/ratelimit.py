"""Cost of one throttling decision: storage/ratelimit.py's `acquire` per call, now and at an earlier revision.

`python bench/ratelimit.py [--before main] [--runs 7] [--calls 3000]`

Every request that carries an API key pays for one `RateLimiter.acquire` (connector/edge.py `_charge`, on a
worker thread): one write transaction on data/ratelimit.db. This measures it directly, without HTTP, in
these scenarios, each on a fresh file with the default limit (600 calls per 60 s):

- accepted: one key calling every 0.1 s of a simulated clock, so every call is accepted and, after the
  first 600, each one replaces the oldest of a full window;
- refused: one key whose window is full, calling again and again at the same moment;
- 1,000 keys: keys taking turns, each calling once per simulated second (all accepted);
- 2 processes: two processes at once, each with its own key as in "accepted", sharing the file (so
  each call may wait for the other's write lock); the figure is wall time per call in each process.

The simulated clock is passed as `acquire(key, now)`, which both implementations take, so the figures are
the cost of the decision and its write, not of waiting. `--before REV` loads storage/ratelimit.py of that
git revision (`git show`) beside the working tree's; the implementations alternate within each run, and
the table gives medians over `--runs` of the microseconds per call (wall and CPU time of this process).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402

CALLS, PERIOD = 600, 60.0
T0 = 1_700_000_000.0


def load(revision: str | None) -> ModuleType:
    """storage/ratelimit.py of the working tree (None) or of a git revision, as a module."""
    if revision is None:
        from storage import ratelimit

        return ratelimit
    source = subprocess.run(  # noqa: S603
        ["git", "show", f"{revision}:storage/ratelimit.py"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="ratelimit-rev-")) / "ratelimit_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ratelimit_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(n: int, call: Callable[[int], float]) -> tuple[float, float, int]:
    """Run call(0..n-1); return wall and CPU microseconds per call and how many were accepted."""
    accepted = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        accepted += call(i) == 0.0
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6, accepted


def accepted(module: ModuleType, directory: Path, n: int, key: str = "key-a") -> tuple[float, float, int]:
    limiter = module.RateLimiter(directory / "ratelimit.db", CALLS, PERIOD)
    for i in range(CALLS):  # a full window first: the steady state of a busy key
        limiter.acquire(key, T0 + i * 0.1)
    start = T0 + CALLS * 0.1
    return timed(n, lambda i: limiter.acquire(key, start + i * 0.1))


def refused(module: ModuleType, directory: Path, n: int) -> tuple[float, float, int]:
    limiter = module.RateLimiter(directory / "ratelimit.db", CALLS, PERIOD)
    for _ in range(CALLS):
        limiter.acquire("key", T0)
    return timed(n, lambda i: limiter.acquire("key", T0 + 1.0))


def many_keys(module: ModuleType, directory: Path, n: int) -> tuple[float, float, int]:
    limiter = module.RateLimiter(directory / "ratelimit.db", CALLS, PERIOD)
    keys = [f"key-{k:04d}" for k in range(1000)]
    for i in range(2000):  # every key has calls in its window
        limiter.acquire(keys[i % 1000], T0 + i * 0.001)
    start = T0 + 2.0
    return timed(n, lambda i: limiter.acquire(keys[i % 1000], start + i * 0.001))


def two_processes(revision: str | None, directory: Path, n: int) -> tuple[float, float, int]:
    """Two child processes of this script, started together, each timing `accepted` on its own key."""
    command = [sys.executable, __file__, "--child", str(directory), "--calls", str(n)]
    if revision:
        command += ["--before", revision]
    children = [
        subprocess.Popen([*command, "--key", key], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # noqa: S603
        for key in ("key-a", "key-b")
    ]
    for child in children:  # each says it is ready (limiter built, window full), then all go at once
        assert child.stdout and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [tuple(map(float, child.communicate()[0].split())) for child in children]
    return (
        statistics.mean(r[0] for r in results),
        statistics.mean(r[1] for r in results),
        int(sum(r[2] for r in results)),
    )


def child(directory: Path, n: int, key: str, revision: str | None) -> None:
    module = load(revision)
    limiter = module.RateLimiter(directory / "ratelimit.db", CALLS, PERIOD)
    for i in range(CALLS):
        limiter.acquire(key, T0 + i * 0.1)
    print("ready", flush=True)
    sys.stdin.readline()
    start = T0 + CALLS * 0.1
    wall, cpu, ok = timed(n, lambda i: limiter.acquire(key, start + i * 0.1))
    print(wall, cpu, ok, flush=True)


SCENARIOS = ("accepted", "refused", "1,000 keys", "2 processes")


def run(revision: str | None, module: ModuleType, scenario: str, n: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(prefix="ratelimit-bench-") as name:
        directory = Path(name)
        if scenario == "accepted":
            return accepted(module, directory, n)
        if scenario == "refused":
            return refused(module, directory, n)
        if scenario == "1,000 keys":
            return many_keys(module, directory, n)
        return two_processes(revision, directory, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision whose storage/ratelimit.py to compare with (e.g. main)")
    parser.add_argument("--runs", type=int, default=7, help="runs; medians are quoted (default 7)")
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per scenario and run (default 3000)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ratelimit.md")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="key-a", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls, args.key, args.before)
        return

    targets: list[tuple[str, str | None]] = [("working tree", None)]
    if args.before:
        targets.insert(0, (args.before, args.before))
    modules = {label: load(revision) for label, revision in targets}
    samples: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for number in range(args.runs):
        order = targets if number % 2 == 0 else targets[::-1]
        for scenario in SCENARIOS:
            for label, revision in order:
                result = run(revision, modules[label], scenario, args.calls)
                samples.setdefault((label, scenario), []).append(result)
                print(f"run {number + 1} {scenario:12} {label:14} {result[0]:7.1f} us wall {result[1]:7.1f} us CPU")

    load_average = ", ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    lines = [
        "# Throttling: cost of one decision (storage/ratelimit.py `acquire`)",
        "",
        "Written by `bench/ratelimit.py`; its docstring says what each scenario does.",
        "",
        *(line.removesuffix("; ") for line in machine.describe(packages=(), wrk=False)),
        f"- {args.runs} runs of {args.calls} timed calls per scenario, implementations alternating within each run;"
        f" limit {CALLS} calls per {PERIOD:g} s; load average at the end {load_average} (the machine is shared)",
        "",
        "Medians over the runs, microseconds per call (wall time, and CPU time of the calling process):",
        "",
        "| scenario | " + " | ".join(f"{label} wall | {label} CPU" for label, _ in targets) + " | accepted per run |",
        "|---|" + "---:|---:|" * len(targets) + "---|",
    ]
    for scenario in SCENARIOS:
        cells = []
        for label, _ in targets:
            runs = samples[(label, scenario)]
            cells += [f"{statistics.median(r[0] for r in runs):.1f}", f"{statistics.median(r[1] for r in runs):.1f}"]
        counts = " / ".join(str(samples[(label, scenario)][0][2]) for label, _ in targets)
        lines.append(f"| {scenario} | " + " | ".join(cells) + f" | {counts} |")
    machine.publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
