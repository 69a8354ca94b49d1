"""A real `coursewire serve` subprocess on a free 127.0.0.1 port, for system tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

BIN = Path(sys.executable).parent / "coursewire"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base: str, key: str, process: subprocess.Popen[bytes]) -> None:
        self.base = base
        self.process = process
        self.session = requests.Session()
        self.session.auth = ("api", key)

    def call(self, method: str, path: str, status: int = 200, **kw):
        response = self.session.request(method, self.base + path, timeout=30, **kw)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None


def start(data: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Create a key, start `coursewire serve` with `args`, wait until /healthz answers, stop it after."""
    env = {**os.environ, "COURSEWIRE_DATA_DIR": str(data), **(env or {})}
    created = subprocess.run(
        [str(BIN), "apikey", "create", "--name", "e2e", "--json"], env=env, capture_output=True, text=True, check=True
    )
    key = json.loads(created.stdout)["key"]
    port = free_port()
    log = (data.parent / "serve.log").open("wb")  # a file, not a pipe nobody drains
    process = subprocess.Popen([str(BIN), "serve", "--port", str(port), *args], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # wait for the port: a readiness probe, not a fixed sleep
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server did not start: {(data.parent / 'serve.log').read_text()}")
        time.sleep(0.05)
    yield Server(base, key, process)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


class Probe(threading.Thread):
    """Asks /healthz every 20 ms on fresh connections and records how long each answer took; an answer other
    than 200 counts as 99 s (none). A request that fails outright is recorded in `failures` and counts as no
    answer, unless `errors_are_answers` (a test that judges latency only and asserts on `failures` itself)."""

    def __init__(self, base: str, *, errors_are_answers: bool = False) -> None:
        super().__init__(daemon=True)
        self.base, self.latencies, self.failures = base, [], []
        self.errors_are_answers = errors_are_answers
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            try:
                ok = requests.get(self.base + "/healthz", timeout=5).status_code == 200
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                ok = self.errors_are_answers
            self.latencies.append(time.monotonic() - began if ok else 99.0)
            self.done.wait(0.02)
