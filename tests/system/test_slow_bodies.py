"""Slow and unwanted request bodies against a real `coursewire serve`: a body on GET/HEAD/DELETE is refused before it
is read, other bodies must arrive within COURSEWIRE_BODY_TIMEOUT (uploads at a minimum average rate after it), a
key's slow bodies hold at most its share of the connections, and a connection stuck in its body is displaced when
the process is full, so the review's slow-body attack cannot keep /healthz or other clients out."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from serving import BIN, Server, start

pytestmark = [pytest.mark.system, pytest.mark.slow]

BODY_TIMEOUT = 1.0  # COURSEWIRE_BODY_TIMEOUT of the server
MAX_CONNECTIONS = 20  # COURSEWIRE_MAX_CONNECTIONS of the server: a key may hold 2 slow bodies at once


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bodies") / "data"


@pytest.fixture(scope="module")
def reader(data: Path) -> str:
    """The Authorization header of a Read Only key."""
    created = subprocess.run(
        [str(BIN), "apikey", "create", "--name", "reader", "--access", "read", "--json"],
        env={**os.environ, "COURSEWIRE_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        check=True,
    )
    return requests.auth._basic_auth_str("api", json.loads(created.stdout)["key"])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def server(data: Path, reader: str) -> Iterator[Server]:
    """`coursewire serve` with one worker process, a one-second body timeout and at most 20 connections."""
    env = {"COURSEWIRE_BODY_TIMEOUT": f"{BODY_TIMEOUT:g}", "COURSEWIRE_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    yield from start(data, "--workers", "1", env=env)


def _auth(server: Server) -> str:
    assert server.session.auth is not None
    return requests.auth._basic_auth_str(*server.session.auth)  # type: ignore[attr-defined]


def _connect(server: Server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1])), timeout=timeout)


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, str]]:
    """The one response on `sock` (status, headers, OData error), read until the server closes the connection;
    fails if it does not close."""
    buffer = b""
    while chunk := sock.recv(65536):
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    assert len(body) == int(headers["content-length"]), buffer[:300]
    error = json.loads(body).get("error", {}) if body.startswith(b"{") else {}
    return int(lines[0].split(" ", 2)[1]), headers, error


def _healthz(server: Server) -> int:
    return requests.get(server.base + "/healthz", timeout=5).status_code


def _head(method: str, path: str, auth: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_on_get_head_or_delete_is_refused_at_once_with_400_naming_the_header(
    server: Server, reader: str
) -> None:
    """The review's repro (a Read Only key's GET declaring a 1,000,000-byte body, then silent) and its kin are
    answered 400 naming Content-Length or Transfer-Encoding before the body is read, and the connection closed."""
    cases = [
        (b"GET /odata/v2/Users HTTP/1.1\r\nContent-Length: 1000000\r\n", "Content-Length"),
        (b"HEAD /odata/v2/Users HTTP/1.1\r\nContent-Length: 5\r\n", "Content-Length"),
        (b"DELETE /odata/v2/Users(1) HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding"),
    ]
    for start_line, header in cases:
        with _connect(server, timeout=5) as sock:
            began = time.monotonic()
            sock.sendall(start_line + f"Host: 127.0.0.1\r\nAuthorization: {reader}\r\n\r\n".encode() + b"{")
            status, headers, error = _answer(sock)
            seconds = time.monotonic() - began
        assert status == 400, (start_line, error)
        assert error["target"] == header
        assert "carries no body" in error["message"]
        assert headers["connection"] == "close"
        assert seconds < 0.5, f"{start_line!r}: {seconds:.2f} s"
    # An empty body declared as such is no body.
    with _connect(server, timeout=5) as sock:
        sock.sendall(
            f"GET /odata/v2/Users?$top=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {reader}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        assert _answer(sock)[0] == 200


def test_a_json_body_that_does_not_arrive_within_the_body_timeout_is_answered_408_and_closed(server: Server) -> None:
    """A POST whose body trickles (10 bytes every 0.2 s) is answered 408 naming COURSEWIRE_BODY_TIMEOUT once that
    many seconds have passed since its headers, and closed; a body that arrives in time is served."""
    with _connect(server, timeout=5) as sock:
        sock.sendall(_head("POST", "/odata/v2/Users", _auth(server), 1000))
        began = time.monotonic()
        while not select.select([sock], [], [], 0.2)[0] and time.monotonic() - began < 5:
            sock.send(b" " * 10)
        status, headers, error = _answer(sock)
        seconds = time.monotonic() - began
    assert status == 408, error
    assert error["code"] == "RequestTimeout"
    assert "COURSEWIRE_BODY_TIMEOUT=1" in error["message"]
    assert BODY_TIMEOUT * 0.9 < seconds < BODY_TIMEOUT + 0.5, f"answered after {seconds:.2f} s"
    body = json.dumps({"LoginName": "prompt@bodies.example", "Title": "Prompt"}).encode()
    with _connect(server, timeout=5) as sock:
        sock.sendall(_head("POST", "/odata/v2/Users", _auth(server), len(body))[:-2] + b"Connection: close\r\n\r\n")
        sock.sendall(body[:5])
        assert not select.select([sock], [], [], BODY_TIMEOUT / 2)[0]
        sock.sendall(body[5:])
        assert _answer(sock)[0] == 200


def _multipart(size: int) -> tuple[bytes, str]:
    boundary = "slowbodyboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="File"; filename="slow.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"s" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_an_upload_may_outlast_the_body_timeout_at_a_kilobyte_a_second_but_not_a_trickle(server: Server) -> None:
    """Uploads over slow links keep working: a FileUpload sent at about 2.5 KiB/s for 3 s (three times
    COURSEWIRE_BODY_TIMEOUT) is stored, while one trickling 40 bytes a second is answered 408 naming the rate."""
    body, content_type = _multipart(7000)
    with _connect(server, timeout=10) as sock:
        sock.sendall(_head("POST", "/uploads/slow", _auth(server), len(body), content_type))
        began = time.monotonic()
        for start in range(0, len(body), 512):
            sock.sendall(body[start : start + 512])
            if start + 512 < len(body):
                assert not select.select([sock], [], [], 0.2)[0], "answered before the upload ended"
        status, _, error = _first(sock)
        seconds = time.monotonic() - began
    assert status in (200, 201), error
    assert seconds > 2.5 * BODY_TIMEOUT
    with _connect(server, timeout=10) as sock:
        sock.sendall(_head("POST", "/uploads/trickle", _auth(server), len(body), content_type))
        began, sent = time.monotonic(), 0
        while not select.select([sock], [], [], 0.25)[0] and time.monotonic() - began < 5:
            sent += sock.send(body[sent : sent + 10])
        status, _, error = _answer(sock)
        seconds = time.monotonic() - began
    assert status == 408, error
    assert "1,024 bytes a second" in error["message"]
    assert BODY_TIMEOUT * 0.9 < seconds < BODY_TIMEOUT + 0.6, f"answered after {seconds:.2f} s"


def _first(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, str]]:
    """The first response on a keep-alive connection (Content-Length framed)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split(" ", 2)[1]), headers, json.loads(body)


def test_sixty_slow_bodies_of_one_read_only_key_hold_two_connections_and_healthz_keeps_answering(
    server: Server, reader: str
) -> None:
    """The review's attack with a body the Read Only key may send (HttpRequest's JSON, declared 1,000,000 bytes,
    then silent) on 60 connections: the key holds its share (2 of 20) until COURSEWIRE_BODY_TIMEOUT, the other 58
    are answered 429 with Retry-After at once and closed, and /healthz answers 200 meanwhile."""
    held: list[socket.socket] = []
    try:
        began = time.monotonic()
        for _ in range(60):
            sock = _connect(server, timeout=5)
            sock.sendall(_head("POST", "/httprequest", reader, 1_000_000) + b"{")
            held.append(sock)
        # The key's excess is answered at once; until the server has got to all 60 (it may take a moment on a
        # loaded machine), a process at its connection limit may turn others away, so ask /healthz after.
        answers, pending = [], list(held)
        while len(answers) < len(held) - 2 and time.monotonic() - began < 10:
            for sock in select.select(pending, [], [], 0.05)[0]:
                status, headers, error = _answer(sock)
                answers.append((status, time.monotonic() - began, headers, error))
                pending.remove(sock)
        assert _healthz(server) == 200
        healthz_after = time.monotonic() - began
        for sock in pending:
            status, headers, error = _answer(sock)
            answers.append((status, time.monotonic() - began, headers, error))
    finally:
        for sock in held:
            sock.close()
    assert healthz_after < 10, f"/healthz answered after {healthz_after:.2f} s"
    statuses = sorted(status for status, *_ in answers)
    # The key's share is held to the timeout; the rest is refused at once: 429 for the key's excess, or 503 when
    # a connection arrives while the process is at COURSEWIRE_MAX_CONNECTIONS (refused ones still closing).
    assert statuses.count(408) == 2 and set(statuses) <= {408, 429, 503} and statuses.count(429) >= 40, statuses
    status, _, headers, error = next(answer for answer in answers if answer[0] == 429)
    assert headers["retry-after"] == "1"
    assert "COURSEWIRE_MAX_CONNECTIONS=20" in error["message"]
    assert max(seconds for status, seconds, *_ in answers if status == 408) < BODY_TIMEOUT + 1.0


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve` with one worker process, at most 10 connections and the default body timeout (30 s)."""
    data = tmp_path_factory.mktemp("crowded") / "data"
    yield from start(data, "--workers", "1", env={"COURSEWIRE_MAX_CONNECTIONS": "10"})


def test_at_max_connections_a_complete_request_displaces_a_body_stuck_for_over_a_second(crowded: Server) -> None:
    """A connection stuck in its JSON body no longer keeps prompt clients out of a full process: a complete
    request displaces it (503 with Retry-After) once it has been waiting over a second, as stalled heads are."""
    stuck = _connect(crowded)
    idle: list[socket.socket] = []
    try:
        stuck.sendall(_head("POST", "/odata/v2/Users", _auth(crowded), 1000) + b"{")
        assert not select.select([stuck], [], [], 1.1)[0]
        for _ in range(9):  # the rest of the process's 10 connections: keep-alive, idle after one answer
            sock = _connect(crowded)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _first(sock)[0] == 200
            idle.append(sock)
        assert _healthz(crowded) == 200
        status, headers, error = _answer(stuck)
        assert status == 503, error
        assert headers["retry-after"] == "1"
        assert "COURSEWIRE_MAX_CONNECTIONS=10" in error["message"]
    finally:
        for sock in [stuck, *idle]:
            sock.close()
