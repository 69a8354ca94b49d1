"""What leaving nulls out of responses costs (connector/wire.py): 1,000-row pages, with and without the rule.

Two apps over the same generated database (bench/dataset.py, 2,000 users and 6,000 enrollments), one
writing responses with coursewire's JSONIFIER, one with connexion's plain Jsonifier, as before the rule.
Each call is made through the in-process test client (no network, no other load), the two apps
alternating, and timed twice: the wall clock of the whole request, and the process's CPU time. The
table gives medians over `--runs` calls and the encoding alone of the same page (thread CPU, best of
the runs). Run: `.venv/bin/python bench/wire_nulls.py` (about a minute); writes bench/results/wire_nulls.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connexion.jsonifier import Jsonifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset import Scale, build  # bench scripts import their neighbours
from machine import describe, publish

from connector import app as app_module
from connector import wire
from connector.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "wire_nulls.md"
CALLS = {
    "Enrollments, 1,000 rows": "/odata/v2/Enrollments?$top=1000",
    "Enrollments, 1,000 rows, $expand=User,Course": "/odata/v2/Enrollments?$top=1000&$expand=User,Course",
    "Users, 1,000 rows": "/odata/v2/Users?$top=1000",
}


def make_client(settings: Settings, jsonifier: Jsonifier) -> Any:
    """A test client of an app whose responses are written by `jsonifier`."""
    saved = wire.JSONIFIER
    wire.JSONIFIER = jsonifier
    try:
        application = app_module.create_app(settings)
    finally:
        wire.JSONIFIER = saved
    return application.test_client()


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        scale = Scale(users=2000, enrollments=6000, courses=6, session_courses=2, sessions_per_course=2)
        dataset = build(data / "coursewire.db", scale, data / "files")
        settings = Settings(data_dir=data, rate_limit=None, page_size=1000)
        auth = {"Authorization": "Basic " + base64.b64encode(f"api:{dataset.key}".encode()).decode()}
        plain = Jsonifier(json, separators=(",", ":"), ensure_ascii=False)
        clients = {"without nulls (coursewire)": make_client(settings, wire.JSONIFIER)}
        clients["nulls as before (plain Jsonifier)"] = make_client(settings, plain)
        rows = []
        for label, url in CALLS.items():
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
            bodies = {}
            for name, client in clients.items():  # warm-up, and the bodies for the sizes
                response = client.get(url, headers=auth)
                assert response.status_code == 200, response.text
                bodies[name] = response.content
            for _ in range(args.runs):
                for name, client in clients.items():
                    samples[name].append(timed(lambda c=client, u=url: c.get(u, headers=auth)))
            page = json.loads(bodies["nulls as before (plain Jsonifier)"])
            encode = {
                "without nulls (coursewire)": lambda p=page: wire.JSONIFIER.dumps(p),
                "nulls as before (plain Jsonifier)": lambda p=page: plain.dumps(p),
            }
            for name in clients:
                best = min(_thread_ms(encode[name]) for _ in range(args.runs))
                wall = statistics.median(s[0] for s in samples[name])
                cpu = statistics.median(s[1] for s in samples[name])
                rows.append((label, name, wall, cpu, best, len(bodies[name]), bodies[name].count(b":null")))
        lines = [
            "# Leaving nulls out of responses",
            "",
            "Written by `bench/wire_nulls.py`; bench/README.md says what is measured.",
            "",
            *describe(packages=("connexion", "flask", "orjson"), wrk=False),
            "",
            f"In-process test client, {args.runs} calls per app alternating, medians; encoding: best thread CPU.",
            "",
            "| call | responses | request ms | request CPU ms | encoding CPU ms | body bytes | nulls |",
            "|---|---|---:|---:|---:|---:|---:|",
            *(f"| {c} | {n} | {w:.1f} | {p:.1f} | {e:.2f} | {b:,} | {k:,} |" for c, n, w, p, e, b, k in rows),
            "",
        ]
        publish("\n".join(lines), RESULTS)


def _thread_ms(call: Callable[[], Any]) -> float:
    started = time.thread_time()
    call()
    return (time.thread_time() - started) * 1000


if __name__ == "__main__":
    main()
