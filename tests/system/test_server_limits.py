"""Hostile request heads against a real `coursewire serve`: oversized heads are refused with 431 as they arrive,
heads that never finish are closed after COURSEWIRE_HEADER_TIMEOUT, connections past COURSEWIRE_MAX_CONNECTIONS
get 503, and ordinary long URLs, keep-alive and slow bodies keep working."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from serving import Probe, Server, start

pytestmark = [pytest.mark.system, pytest.mark.slow]

KB = 1000
MB = 1024 * 1024
HEAD_TIMEOUT = 1.0  # COURSEWIRE_HEADER_TIMEOUT of the `served` server
MAX_CONNECTIONS = 10  # COURSEWIRE_MAX_CONNECTIONS of the `crowded` server (the smallest it accepts)
STALLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # a request head that never ends


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve` with two worker processes, the default header limit and a one-second header timeout."""
    env = {"COURSEWIRE_HEADER_TIMEOUT": f"{HEAD_TIMEOUT:g}"}
    yield from start(tmp_path_factory.mktemp("heads") / "data", "--workers", "2", env=env)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve` with one worker process that serves at most MAX_CONNECTIONS connections at once."""
    env = {"COURSEWIRE_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    yield from start(tmp_path_factory.mktemp("crowd") / "data", "--workers", "1", env=env)


def _auth(server: Server) -> str:
    assert server.session.auth is not None
    return requests.auth._basic_auth_str(*server.session.auth)  # type: ignore[attr-defined]


def _connect(server: Server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def _peak_memory(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"VmHWM not in /proc/{pid}/status")


class Reader:
    """Reads HTTP/1.1 responses (with a Content-Length) off one socket, keeping what follows for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed in the middle of a response: {self.buffer[:200]!r}")
        self.buffer += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: (status, headers by lower-case name, body)."""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split(" ", 2)[1]), headers, body

    def closed(self) -> bool:
        """Whether the server has closed the connection (EOF or reset) once what it sent was read."""
        try:
            while chunk := self.sock.recv(65536):
                self.buffer += chunk
        except ConnectionResetError:
            pass
        return True


def _error(body: bytes) -> dict[str, str]:
    """The OData error object of a response body."""
    document = json.loads(body)
    assert set(document) == {"error"}, document
    return dict(document["error"])


def _healthz(server: Server, connection_close: bool = True) -> tuple[int, dict[str, str], bytes]:
    with _connect(server) as sock:
        close = b"Connection: close\r\n" if connection_close else b""
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n")
        return Reader(sock).response()


def _endless_header(server: Server, until: float, statuses: list[int | None]) -> None:
    """Until `until`: open a connection, start a request whose X-Big header never ends and stream it as fast as
    the server reads; on an answer (or the connection's end) record the status (None: none came) and start over."""
    chunk = b"a" * 65536
    while time.monotonic() < until:
        answer = b""
        with _connect(server) as sock:
            sock.setblocking(False)
            pending = memoryview(STALLED + b"X-Big: ")
            try:
                while time.monotonic() < until and b"\r\n" not in answer:
                    readable, writable, _ = select.select([sock], [sock], [], 0.2)
                    if readable:
                        part = sock.recv(4096)
                        if not part:
                            break
                        answer += part
                    elif writable:
                        pending = pending[sock.send(pending) :] or memoryview(chunk)
            except OSError:  # reset once the server has answered and stopped reading: what the test wants
                with contextlib.suppress(OSError):
                    answer += sock.recv(4096)  # the answer arrived before the reset, and is still there to read
        statuses.append(int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None)


def test_a_200_kb_header_is_refused_with_431_at_once(served: Server) -> None:
    """A client sending one 200 KB header gets, at once and without the worker's memory growing, a 431 (RFC 6585
    §5) with the OData error naming the header and the setting, and the connection is closed."""
    workers = served.workers()
    assert len(workers) == 2
    _healthz(served)
    before = {pid: _peak_memory(pid) for pid in workers}
    with _connect(served) as sock:
        began = time.monotonic()
        sock.sendall(STALLED + b"X-Big: " + b"a" * (200 * KB) + b"\r\n\r\n")
        reader = Reader(sock)
        status, headers, body = reader.response()
        seconds = time.monotonic() - began
        assert reader.closed()
    assert status == 431, body
    assert seconds < 0.5, f"431 took {seconds * 1000:.0f} ms"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = _error(body)
    assert error["code"] == "RequestHeaderFieldsTooLarge"
    assert "COURSEWIRE_MAX_HEADER_BYTES=65536" in error["message"]
    assert error["target"] == "X-Big"
    growth = {pid: _peak_memory(pid) - before[pid] for pid in workers}
    assert max(growth.values()) < 1 * MB, growth


def test_after_a_431_the_server_reads_on_so_a_client_still_writing_sees_no_reset(served: Server) -> None:
    """A client still writing an oversized request when the 431 comes can finish writing (up to 1 MiB) and read
    the answer instead of meeting a connection reset, because the server half-closes and reads on (RFC 9112 §9.6)."""
    with _connect(served) as sock:
        sock.sendall(STALLED + b"X-Big: " + b"a" * (100 * KB))
        reader = Reader(sock)
        assert reader.response()[0] == 431
        for _ in range(8):  # 512 KiB more: the rest of its request, as a client that writes before reading would
            sock.sendall(b"a" * 65536)
        sock.shutdown(socket.SHUT_WR)
        assert reader.closed()
        assert reader.buffer == b""


def test_endless_headers_on_eight_connections_neither_stall_nor_grow_the_server(served: Server) -> None:
    """The review's attack (8 connections streaming a header that never ends, reconnecting whenever refused) is
    answered 431 after 64 KiB each time, while the workers' memory stays flat and /healthz keeps answering."""
    workers = served.workers()
    _healthz(served)
    before = {pid: _peak_memory(pid) for pid in workers}
    probe = Probe(served.base)
    probe.start()
    until = time.monotonic() + 3.0
    statuses: list[list[int | None]] = [[] for _ in range(8)]
    attackers = [threading.Thread(target=_endless_header, args=(served, until, s)) for s in statuses]
    for attacker in attackers:
        attacker.start()
    for attacker in attackers:
        attacker.join(30)
    probe.done.set()
    probe.join(10)
    growth = {pid: _peak_memory(pid) - before[pid] for pid in workers}
    refused = sum(s.count(431) for s in statuses)
    print(
        json.dumps(
            {
                "refused_431": refused,
                "peak_growth_mb": [round(g / MB, 2) for g in growth.values()],
                "healthz_max_ms": round(max(probe.latencies) * 1000, 1),
                "healthz_samples": len(probe.latencies),
            }
        )
    )
    # Each attacker's last connection may be cut by the end of the attack (None); every other one got its 431.
    assert all(431 in s and set(s[:-1]) == {431} for s in statuses), [[x for x in s if x != 431] for s in statuses]
    assert max(growth.values()) < 8 * MB, {pid: f"{g / MB:.1f} MB" for pid, g in growth.items()}
    assert probe.failures == []
    assert len(probe.latencies) >= 3
    assert max(probe.latencies) < 1.0, f"slowest /healthz: {max(probe.latencies) * 1000:.0f} ms"


def test_a_60_kb_url_below_the_limit_is_served_and_a_longer_one_is_431(served: Server) -> None:
    """A flow's long `$filter` (60 KB of URL once percent-encoded) is served, while a URL past the limit is
    refused with 431 naming the request-target."""
    served.call("POST", "/odata/v2/Users", json={"LoginName": "kenshu@heads.example", "Title": "研修講師"})
    prefix = "/odata/v2/Users?$filter="
    filler = "研" * 6650  # 9 bytes each once percent-encoded
    expression = quote(f"Title eq '研修講師' or Title eq '{filler}'", safe="")
    url = prefix + expression
    assert 59 * KB < len(url) < 61 * KB
    head = f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {_auth(served)}\r\nConnection: close\r\n\r\n"
    head = head.encode()
    with _connect(served) as sock:
        sock.sendall(head)
        status, _, body = Reader(sock).response()
    assert status == 200, body[:300]
    assert [user["LoginName"] for user in json.loads(body)["value"]] == ["kenshu@heads.example"]

    longer = head.replace(b"?$filter=", b"?$filter=" + quote("研" * 700, safe="").encode() + b"%20or%20", 1)
    assert len(longer) > 64 * 1024
    with _connect(served) as sock:
        sock.sendall(longer)
        status, _, body = Reader(sock).response()
    assert status == 431, body[:300]
    assert _error(body)["target"] == "request-target"


def test_the_limit_counts_the_request_line_and_headers_exactly(served: Server) -> None:
    """A request whose line and headers (blank line included) are exactly COURSEWIRE_MAX_HEADER_BYTES is served,
    and one byte more is a 431."""
    base = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    for size, expected in ((64 * 1024, 200), (64 * 1024 + 1, 431)):
        head = base + b"p" * (size - len(base) - 4) + b"\r\n\r\n"
        assert len(head) == size
        with _connect(served) as sock:
            sock.sendall(head)
            assert Reader(sock).response()[0] == expected, size


def test_header_bytes_count_per_request_on_a_keep_alive_connection(served: Server) -> None:
    """A client that keeps its connection open may send requests (one after another, or pipelined) whose heads
    add up to more than the limit, because the limit applies to each request's head, not to the connection."""
    cookie = b"Cookie: " + b"c" * (40 * KB) + b"\r\n"
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + cookie + b"\r\n"
    with _connect(served) as sock:
        reader = Reader(sock)
        for _ in range(4):
            sock.sendall(request)
            status, _, _ = reader.response()
            assert status == 200
        sock.sendall(request * 3)  # pipelined: three heads in one write
        assert [reader.response()[0] for _ in range(3)] == [200, 200, 200]
    oversized = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (64 * 1024) + b"\r\n\r\n"
    with _connect(served) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + oversized)  # pipelined after a small one
        assert reader.response()[0] == 200
        # Refused too: once the first answer is sent, the connection closes (a 431 would have interleaved with it).
        assert reader.closed()
        assert reader.buffer == b""


def test_a_stalled_request_head_is_answered_408_and_closed_after_the_timeout(served: Server) -> None:
    """A client that sends half a request head (slowloris), nothing at all, or its head byte by byte gets a 408
    (RFC 9110 §15.5.9) and a closed connection once COURSEWIRE_HEADER_TIMEOUT has passed since it connected."""

    def half(sock: socket.socket, began: float) -> None:
        sock.sendall(STALLED)

    def nothing(sock: socket.socket, began: float) -> None:
        pass

    def trickle(sock: socket.socket, began: float) -> None:
        """Send one byte of an endless header whenever the server has been quiet for 0.2 s, until it answers."""
        sock.sendall(STALLED + b"X-Slow: ")
        while not select.select([sock], [], [], 0.2)[0] and time.monotonic() - began < 5 * HEAD_TIMEOUT:
            sock.send(b"a")

    cases = {"half a head": half, "nothing": nothing, "a byte every 0.2 s": trickle}
    for name, send in cases.items():
        with _connect(served, timeout=5 * HEAD_TIMEOUT) as sock:
            began = time.monotonic()
            send(sock, began)
            reader = Reader(sock)
            try:
                status, _, body = reader.response()
            except TimeoutError:
                raise AssertionError(f"{name}: no answer within {5 * HEAD_TIMEOUT:g} s") from None
            assert reader.closed()
            seconds = time.monotonic() - began
        assert status == 408, (name, body)
        assert _error(body)["code"] == "RequestTimeout"
        assert "COURSEWIRE_HEADER_TIMEOUT=1" in _error(body)["message"]
        assert HEAD_TIMEOUT * 0.9 < seconds < HEAD_TIMEOUT + 1.0, f"{name}: closed after {seconds:.2f} s"


def test_a_slow_body_is_not_cut_by_the_header_timeout(served: Server) -> None:
    """Uploads over slow links keep working, because once the head is complete the body may take longer than
    COURSEWIRE_HEADER_TIMEOUT to arrive."""
    body = json.dumps({"LoginName": "slow@heads.example", "Title": "Slow"}).encode()
    head = (
        f"POST /odata/v2/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {_auth(served)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with _connect(served) as sock:
        sock.sendall(head + body[:10])
        quiet = not select.select([sock], [], [], 2 * HEAD_TIMEOUT)[0]  # waiting for a close that must not come
        sock.sendall(body[10:])
        status, _, answer = Reader(sock).response()
    assert quiet
    assert status == 200, answer


def test_an_idle_keep_alive_connection_is_closed_after_five_seconds(served: Server) -> None:
    """Idle keep-alive connections do not pile up: uvicorn closes one 5 s after its last response."""
    with _connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        assert reader.response()[0] == 200
        answered = time.monotonic()
        assert reader.closed()
        seconds = time.monotonic() - answered
    assert reader.buffer == b""  # closed without a word: the client did not ask anything
    assert 4.5 < seconds < 7.0, f"closed after {seconds:.2f} s"


def _stalled(server: Server, count: int) -> list[socket.socket]:
    """`count` connections that each sent half a request head, once the server has seen them all."""
    socks = []
    for _ in range(count):
        sock = _connect(server)
        sock.sendall(STALLED)
        socks.append(sock)
    return socks


def _idle(server: Server, count: int) -> list[socket.socket]:
    """`count` keep-alive connections that have each had one answer and sent nothing since (for up to 5 s)."""
    socks = []
    for _ in range(count):
        sock = _connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).response()[0] == 200
        socks.append(sock)
    return socks


def _recovered(server: Server) -> bool:
    """Whether /healthz answers 200 again within 5 s of the load dropping."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _healthz(server)[0] == 200:
            return True
        select.select([], [], [], 0.05)
    return False


def test_past_max_connections_the_server_answers_503_and_recovers(crowded: Server) -> None:
    """A server process holds COURSEWIRE_MAX_CONNECTIONS keep-alive connections at once, answers a request on one
    more with a 503 (RFC 9110 §15.6.4) carrying the OData error and Retry-After, and recovers once the load drops."""
    held = _idle(crowded, MAX_CONNECTIONS - 1)
    try:
        assert _healthz(crowded)[0] == 200  # the MAX_CONNECTIONS-th connection is served
        held += _idle(crowded, 1)
        status, headers, body = _healthz(crowded)
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        error = _error(body)
        assert error["code"] == "ServiceUnavailable"
        assert f"COURSEWIRE_MAX_CONNECTIONS={MAX_CONNECTIONS}" in error["message"]
    finally:
        for sock in held:
            sock.close()
    assert _recovered(crowded)


def test_at_max_connections_a_complete_request_displaces_the_longest_stalled_head(crowded: Server) -> None:
    """A slowloris holding every connection a process serves cannot lock others out, because a complete request
    displaces the connection that has been sending its head longest, which gets a 503."""
    held = _stalled(crowded, MAX_CONNECTIONS)
    try:
        assert _healthz(crowded)[0] == 200
        answered = select.select(held, [], [], 2)[0]
        assert answered == [held[0]]
        status, headers, body = Reader(held[0]).response()
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert "COURSEWIRE_MAX_CONNECTIONS=10" in _error(body)["message"]
    finally:
        for sock in held:
            sock.close()
    assert _recovered(crowded)


def test_stalled_connections_past_max_connections_are_closed_within_a_second(crowded: Server) -> None:
    """The review's descriptor exhaustion cannot recur, because past COURSEWIRE_MAX_CONNECTIONS a connection
    gets one second (not the whole header timeout) to send its head, so a flood of half-open requests is shed."""
    (worker,) = crowded.workers()
    descriptors = len(list(Path(f"/proc/{worker}/fd").iterdir()))
    held = _stalled(crowded, MAX_CONNECTIONS)
    try:
        began = time.monotonic()
        flood = _stalled(crowded, 40)
        for sock in flood:
            sock.settimeout(5)
            status, _, _ = Reader(sock).response()
            assert status == 408
            sock.close()
        seconds = time.monotonic() - began
        assert seconds < 2.0, f"the flood was closed after {seconds:.2f} s"
        # The first MAX_CONNECTIONS are within their 30 s header timeout: still open, nothing to read.
        assert not select.select(held, [], [], 0)[0]
        # The flood's descriptors are released as the server reads each close.
        deadline = time.monotonic() + 2
        while len(list(Path(f"/proc/{worker}/fd").iterdir())) > descriptors + MAX_CONNECTIONS and (
            time.monotonic() < deadline
        ):
            select.select([], [], [], 0.02)
        assert len(list(Path(f"/proc/{worker}/fd").iterdir())) <= descriptors + MAX_CONNECTIONS
    finally:
        for sock in held:
            sock.close()
    assert _recovered(crowded)
