"""A real `coursewire serve` subprocess on a free 127.0.0.1 port, for system tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

BIN = Path(sys.executable).parent / "coursewire"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workers(process: subprocess.Popen[bytes]) -> list[int]:
    """The processes of `coursewire serve` that serve HTTP: uvicorn's workers (children started by
    multiprocessing's spawn, not its resource tracker), or `serve` itself when it runs one worker."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == process.pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                children.append(int(stat.parent.name))
        except OSError:
            continue
    return children or [process.pid]


def _listening_inode(port: int) -> int | None:
    """The inode of the socket listening on 127.0.0.1:`port` (/proc/net/tcp), if any."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[9])
    return None


def accepting(pid: int, port: int) -> bool:
    """Whether process `pid` waits for connections on `port`: its event loop's epoll set holds the listening
    socket (/proc/<pid>/fdinfo of an eventpoll descriptor lists each watched file's inode in hex). A uvicorn
    worker gets there only after importing the app, which takes seconds on a loaded machine: until then its
    memory and CPU belong to its start, not to what a test does."""
    inode = _listening_inode(port)
    if inode is None:
        return False
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if (
                os.readlink(fd) == "anon_inode:[eventpoll]"
                and f" ino:{inode:x} " in (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
            ):
                return True
    except OSError:
        return False
    return False


def eventually(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something true: the worker runs in another process, with no clock to
    inject; the deadline only bounds a failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Server:
    def __init__(self, base: str, key: str, process: subprocess.Popen[bytes]) -> None:
        self.base = base
        self.process = process
        self.session = requests.Session()
        self.session.auth = ("api", key)

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def workers(self) -> list[int]:
        """The processes serving HTTP (see `workers`)."""
        return workers(self.process)

    def call(self, method: str, path: str, status: int = 200, **kw):
        response = self.session.request(method, self.base + path, timeout=30, **kw)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None


def start(data: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Create a key, start `coursewire serve` with `args`, wait until /healthz answers and every worker process
    accepts connections, stop it after."""
    env = {**os.environ, "COURSEWIRE_DATA_DIR": str(data), **(env or {})}
    created = subprocess.run(
        [str(BIN), "apikey", "create", "--name", "e2e", "--json"], env=env, capture_output=True, text=True, check=True
    )
    key = json.loads(created.stdout)["key"]
    port = free_port()
    log = (data.parent / "serve.log").open("wb")  # a file, not a pipe nobody drains
    process = subprocess.Popen([str(BIN), "serve", "--port", str(port), *args], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # uvicorn gives a worker 60 s to import the app
    while True:  # wait for the port and every worker: readiness probes, not a fixed sleep
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200 and all(
                accepting(pid, port) for pid in workers(process)
            ):
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
