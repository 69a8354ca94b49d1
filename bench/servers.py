"""Server subprocesses for the benches: coursewire's own `serve`, and the two baselines under the same uvicorn."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BIN = Path(sys.executable).parent
COURSEWIRE = BIN / "coursewire"

# The settings `coursewire serve` hard-codes (connector/cli.py); the baselines get exactly these.
UVICORN_FLAGS = ("--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def basic_auth(key: str) -> str:
    """The Authorization header value coursewire expects: username `api`, password the key."""
    return "Basic " + base64.b64encode(f"api:{key}".encode()).decode()


def create_key(data_dir: Path) -> str:
    """Create a Full Control API key with the real CLI (it also migrates the database) and return it."""
    created = subprocess.run(  # noqa: S603 - our own CLI, arguments built here
        [str(COURSEWIRE), "--data-dir", str(data_dir), "apikey", "create", "--name", "bench", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(created.stdout)["key"])


@dataclass
class Server:
    """One running server: its base URL, the headers every request carries, and the process group to stop."""

    name: str
    base: str
    headers: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    extra: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        """One HTTP call with urllib (set-up only, never measured); return (status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310 - 127.0.0.1 only
                payload = response.read()
                return response.status, json.loads(payload) if payload else None
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            return exc.code, json.loads(payload) if payload else None

    def stop(self) -> None:
        """SIGTERM the uvicorn supervisor (it stops its workers); SIGKILL our own process group if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def _wait_ready(server: Server, probe: str, timeout: float = 60.0) -> None:
    """Poll `probe` until it answers 200: a readiness check, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = server.request("GET", probe)
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{server.name} did not start:\n{server.log_path.read_text()[-4000:]}")
        time.sleep(0.1)


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")  # a file, not a pipe nobody drains
    try:
        # A session of its own, so a hung server can be killed as one group without touching anything else.
        return subprocess.Popen(  # noqa: S603 - our own commands, arguments built here
            argv, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        log.close()


def start_coursewire(data_dir: Path, workers: int, env_extra: dict[str, str] | None = None) -> Server:
    """`coursewire serve` on a free port with throttling off, and a key for Basic auth."""
    key = create_key(data_dir)
    port = free_port()
    env = {
        **os.environ,
        "COURSEWIRE_DATA_DIR": str(data_dir),
        "COURSEWIRE_RATE_LIMIT": "off",
        **(env_extra or {}),
    }
    log_path = data_dir / "serve.log"
    argv = [str(COURSEWIRE), "serve", "--port", str(port), "--workers", str(workers)]
    server = Server(
        "coursewire",
        f"http://127.0.0.1:{port}",
        {"Authorization": basic_auth(key)},
        _spawn(argv, env, log_path),
        log_path,
        data_dir,
        {"key": key},
    )
    _wait_ready(server, "/healthz")
    return server


def start_baseline(name: str, module: str, database: Path, workers: int, auth_header: str) -> Server:
    """A baseline app (`bench/<module>.py`, attribute `app`) under uvicorn with coursewire's settings.

    The baselines ignore Authorization; sending the same header keeps every request the same size.
    """
    port = free_port()
    env = {**os.environ, "BENCH_DATABASE": str(database)}
    log_path = database.parent / f"{name}.log"
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *UVICORN_FLAGS,
    ]
    server = Server(
        name,
        f"http://127.0.0.1:{port}",
        {"Authorization": auth_header},
        _spawn(argv, env, log_path),
        log_path,
        database.parent,
    )
    _wait_ready(server, "/healthz")
    return server
