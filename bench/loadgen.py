"""The load generator: wrk with bench/wrk.lua, and its result as numbers.

wrk is a separate C process with an event loop, so the client costs far less CPU than the server it
drives; on a 2-core machine it still shares the cores with the server, which is why every target is
driven the same way and only ratios and medians are quoted.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from noise import Window

SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
DIAGNOSE = SCRIPT.with_name("wrk_diagnose.lua")
MARKER = "WRK_JSON "


class LoadError(RuntimeError):
    """wrk is missing, failed, or the target answered with errors (so its numbers would mean nothing)."""


@dataclass(frozen=True)
class Measurement:
    """One wrk run: throughput and latency percentiles (milliseconds), and how many calls failed."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int
    noise_cores: float = 0.0  # CPU other processes of the machine took during the run, in cores
    balance: float = 1.0  # least busy worker's CPU time over the busiest's
    server_cpu_ms: float = 0.0  # server CPU time per request, in milliseconds
    attempts: int = 1

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk_path() -> str:
    """The wrk binary; raises LoadError saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk is not installed: apt-get install -y wrk")
    return found


def run_wrk(
    url: str,
    method: str,
    path: str,
    authorization: str,
    *,
    body: str = "none",
    run_tag: str = "run",
    seconds: float = 8.0,
    connections: int = 16,
    threads: int = 1,
) -> Measurement:
    """Drive `method url+path` for `seconds` with keep-alive connections; return what wrk measured.

    `body` "user" sends CreateUser bodies with a LoginName unique per request (prefixed by `run_tag`,
    which must differ between runs against the same database). Raises LoadError if any call failed.
    """
    data = _wrk(url, method, path, authorization, body, run_tag, seconds, connections, threads, SCRIPT)
    failures = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    if failures:
        # Say what failed: a short run of the same load that prints each failing status and body once.
        diagnosis = _wrk(url, method, path, authorization, body, run_tag + "d", 1, connections, threads, DIAGNOSE)
        raise LoadError(
            f"{method} {url}{path}: {failures} of {data['requests']} calls failed: {data}; a short re-run"
            f" answered: {diagnosis.get('failures') or 'no failures'}"
        )
    return Measurement(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        failures=failures,
    )


def _wrk(
    url: str,
    method: str,
    path: str,
    authorization: str,
    body: str,
    run_tag: str,
    seconds: float,
    connections: int,
    threads: int,
    script: Path,
) -> dict[str, Any]:
    """Run wrk with `script`; return its WRK_JSON line as a dict, with `failures` lines of the diagnosis."""
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
        str(script),
        url,
        "--",
        method,
        path,
        authorization,
        body,
        run_tag,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - argv built here
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    data["failures"] = [line.removeprefix("WRK_FAILURE ") for line in done.stdout.splitlines() if "WRK_FAILURE" in line]
    return data


def run_guarded(
    group: int,
    workers: int,
    *,
    max_noise: float = 0.25,
    min_balance: float = 0.6,
    retries: int = 4,
    pause: float = 2.0,
    **wrk: Any,
) -> Measurement:
    """`run_wrk(**wrk)` against the server whose process group is `group`, redone while disturbed.

    A run is disturbed when other processes took more than `max_noise` cores, or when its least busy
    worker did less than `min_balance` of the busiest one's work (see noise.py). After `retries` redos
    the least disturbed attempt is kept; the measurement records its noise, balance and attempts.
    """
    attempts: list[Measurement] = []
    for attempt in range(retries + 1):
        with Window(group, workers) as window:
            # A fresh run tag per attempt: a redone POST run must not repeat the LoginNames it created.
            measured = run_wrk(**{**wrk, "run_tag": f"{wrk.get('run_tag', 'run')}a{attempt}"})
        attempts.append(
            replace(
                measured,
                noise_cores=window.foreign_cores,
                balance=window.balance,
                server_cpu_ms=1000 * window.server_seconds / max(1, measured.requests),
            )
        )
        if window.foreign_cores <= max_noise and window.balance >= min_balance:
            break
        time.sleep(pause)

    def disturbance(m: Measurement) -> float:
        return max(0.0, m.noise_cores - max_noise) + max(0.0, min_balance - m.balance)

    return replace(min(attempts, key=disturbance), attempts=len(attempts))


def median(values: Sequence[float]) -> float:
    """The median (the middle run is robust against one noisy run on a shared 2-core machine)."""
    return float(statistics.median(values))
