"""The throttling window (storage/ratelimit.py): never more than `calls` accepted calls in any `period` seconds per
key, exact waits, refused calls not counted, state bounded, one limit for every process sharing the file."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.ratelimit import SWEEP_BATCH, RateLimiter

T0 = 1_000_000.0  # seconds; small enough that a float holds every microsecond exactly
US = 1_000_000


def at(microseconds: int) -> float:
    """The clock value `microseconds` after T0."""
    return (T0 * US + microseconds) / US


def rows(path: Path) -> tuple[int, int]:
    """How many keys and how many recorded calls the file holds."""
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("SELECT count(*) FROM windows").fetchone()[0],
            conn.execute("SELECT count(*) FROM calls").fetchone()[0],
        )


def test_call_601_is_refused_until_the_first_call_leaves_the_window(tmp_path: Path) -> None:
    """600 calls in 6 s are accepted; the 601st is refused, with the exact wait, until the first is 60 s old."""
    limiter = RateLimiter(tmp_path / "ratelimit.db", 600, 60)
    assert [limiter.acquire("k", at(i * 10_000)) for i in range(600)] == [0.0] * 600  # call 600 at t = 5.99 s
    assert limiter.acquire("k", at(5_990_000)) == 54.01  # call 601 at t: the first call leaves at 60 s
    assert limiter.acquire("k", at(30_000_000)) == 30.0
    assert limiter.acquire("k", at(59_999_999)) == 0.000001
    assert limiter.acquire("k", at(60_000_000)) == 0.0  # the first call has left: one place
    assert limiter.acquire("k", at(60_000_000)) == 0.01  # the second call (0.01 s) leaves at 60.01 s
    assert limiter.acquire("k", at(60_010_000)) == 0.0


def test_a_burst_of_620_gets_exactly_20_refusals(tmp_path: Path) -> None:
    """A burst of 620 calls over 6.2 s: 600 accepted, 20 refused (a token bucket refills during it)."""
    limiter = RateLimiter(tmp_path / "ratelimit.db", 600, 60)
    waits = [limiter.acquire("k", at(i * 10_000)) for i in range(620)]
    assert waits[:600] == [0.0] * 600
    assert waits[600:] == [(60_000_000 - i * 10_000) / US for i in range(600, 620)]


def test_refused_calls_do_not_count(tmp_path: Path) -> None:
    """Thousands of refused calls leave the window as it was: the next place opens when the first call leaves."""
    limiter = RateLimiter(tmp_path / "ratelimit.db", 3, 60)
    for second in (0, 1, 2):
        assert limiter.acquire("k", at(second * US)) == 0.0
    for step in range(3000):
        assert limiter.acquire("k", at(2 * US + step * 19_000)) > 0  # 2 s to 58.98 s
    assert limiter.acquire("k", at(60 * US)) == 0.0
    assert limiter.acquire("k", at(61 * US)) == 0.0
    assert limiter.acquire("k", at(61 * US)) == 1.0


def test_keys_are_counted_apart(tmp_path: Path) -> None:
    """One key at its limit leaves another key's calls untouched."""
    limiter = RateLimiter(tmp_path / "ratelimit.db", 2, 60)
    assert [limiter.acquire("busy", T0) for _ in range(3)] == [0.0, 0.0, 60.0]
    assert [limiter.acquire("calm", T0) for _ in range(2)] == [0.0, 0.0]


def test_a_clock_stepped_back_cannot_open_the_window(tmp_path: Path) -> None:
    """A call timed before the key's newest call counts at that call's time, so the window stays full."""
    limiter = RateLimiter(tmp_path / "ratelimit.db", 2, 60)
    assert limiter.acquire("k", at(0)) == 0.0
    assert limiter.acquire("k", at(50 * US)) == 0.0
    assert limiter.acquire("k", at(-3600 * US)) == 10.0  # as if at 50 s: the first call leaves at 60 s
    assert limiter.acquire("k", at(60 * US)) == 0.0


def test_the_clock_is_read_when_none_is_given(tmp_path: Path) -> None:
    """Without `now`, the injected clock gives the time (the server's wall clock by default)."""
    now = [T0]
    limiter = RateLimiter(tmp_path / "ratelimit.db", 1, 10, clock=lambda: now[0])
    assert limiter.acquire("k") == 0.0
    now[0] = T0 + 4.5
    assert limiter.acquire("k") == 5.5
    now[0] = T0 + 10
    assert limiter.acquire("k") == 0.0


@settings(max_examples=150, deadline=None)
@given(
    calls=st.integers(1, 6),
    period_us=st.integers(1, 3 * US),
    steps=st.lists(st.tuples(st.integers(-US, 2 * US), st.sampled_from("ab")), max_size=60),
)
def test_decisions_match_a_log_of_every_accepted_call(calls: int, period_us: int, steps: list[tuple[int, str]]) -> None:
    """Against a plain log of all accepted calls: refused exactly when `calls` accepted calls are less than
    `period` old, with a wait that ends exactly when the oldest of them leaves; the clock may step back by up to
    a period (beyond that, a key idle for two periods may have been swept)."""
    with tempfile.TemporaryDirectory() as directory:
        limiter = RateLimiter(Path(directory) / "ratelimit.db", calls, period_us / US)
        accepted: dict[str, list[int]] = {"a": [], "b": []}
        clock = latest = 0
        for step, key in steps:
            clock = max(clock + step, latest - period_us)
            latest = max(latest, clock)
            log = accepted[key]
            now = max(clock, log[-1]) if log else clock  # a time before the key's newest call counts as it
            in_window = [t for t in log if t + period_us > now]
            expected = 0 if len(in_window) < calls else in_window[-calls] + period_us - now
            assert limiter.acquire(key, at(clock)) == expected / US
            if expected == 0:
                log.append(now)
            assert all(b - a >= period_us for a, b in zip(log, log[calls:], strict=False))


def test_a_changed_limit_keeps_the_newest_calls(tmp_path: Path) -> None:
    """Restarted with a smaller limit, a key's newest calls still fill its window; with a larger one, room opens."""
    path = tmp_path / "ratelimit.db"
    before = RateLimiter(path, 5, 60)
    for second in range(5):
        assert before.acquire("k", at(second * US)) == 0.0
    assert RateLimiter(path, 3, 60).acquire("k", at(10 * US)) == 52.0  # the 3 newest: 2, 3 and 4 s
    larger = RateLimiter(path, 6, 60)
    assert [larger.acquire("k", at(10 * US)) for _ in range(4)] == [0.0, 0.0, 0.0, 52.0]  # 0 and 1 s were dropped


def test_keys_that_stop_calling_leave_no_rows(tmp_path: Path) -> None:
    """A key holds at most `calls` rows, and a key silent for a period is deleted by later calls' sweeps."""
    path = tmp_path / "ratelimit.db"
    limiter = RateLimiter(path, 10, 60)
    for second in range(100):
        limiter.acquire("steady", at(second * US))
    assert rows(path) == (1, 10)
    for n in range(3 * SWEEP_BATCH):
        for _ in range(4):
            limiter.acquire(f"once-{n}", at(100 * US))
    assert rows(path) == (1 + 3 * SWEEP_BATCH, 10 + 12 * SWEEP_BATCH)
    later = RateLimiter(path, 10, 60)  # another process, say
    later.acquire("steady", at(219 * US))  # the keys have been idle for less than two periods: kept
    assert rows(path) == (1 + 3 * SWEEP_BATCH, 10 + 12 * SWEEP_BATCH)
    for call in range(4):
        later.acquire("steady", at(280 * US + call))  # the first sweeps 64 keys, each next call 64 more
    assert rows(path) == (1, 10)


def test_an_older_layout_is_replaced(tmp_path: Path) -> None:
    """A file left by the token bucket (table `buckets`) is taken over: the old state is dropped."""
    path = tmp_path / "ratelimit.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE buckets (key TEXT PRIMARY KEY, tat REAL NOT NULL)")
        conn.execute("INSERT INTO buckets VALUES ('k', 1e12)")
    assert RateLimiter(path, 1, 60).acquire("k", T0) == 0.0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'buckets'").fetchall() == []


CHILD = """
import json, sys, time
from storage.ratelimit import RateLimiter

path, calls, period, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
read = [0.0]
def clock():
    read[0] = time.time()
    return read[0]
limiter = RateLimiter(path, calls, period, clock=clock)
print("ready", flush=True)
sys.stdin.readline()
accepted, refused = [], []
end = time.time() + seconds
while time.time() < end:
    wait = limiter.acquire("shared")
    if wait == 0:
        accepted.append(round(read[0] * 1e6))
    else:
        refused.append((round(read[0] * 1e6), round(wait * 1e6)))
print(json.dumps({"accepted": accepted, "refused": refused}))
"""


@pytest.mark.slow
def test_two_processes_share_one_window(tmp_path: Path) -> None:
    """Two processes calling on one key as fast as they can, on the wall clock, for 6 periods: together they
    never have more than `calls` calls accepted in a period, they fill it each time, and no call is accepted
    before the wait a refusal announced."""
    calls, period, seconds = 20, 0.25, 1.5
    command = [sys.executable, "-c", CHILD, str(tmp_path / "ratelimit.db"), str(calls), str(period), str(seconds)]
    with contextlib.ExitStack() as stack:  # pipes closed and children reaped whatever fails
        children = [
            stack.enter_context(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for _ in range(2)
        ]
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:  # both go at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert all(r["accepted"] and r["refused"] for r in results), "both processes were accepted and refused"
    accepted = sorted(t for r in results for t in r["accepted"])
    period_us = round(period * US)
    assert all(b - a >= period_us for a, b in zip(accepted, accepted[calls:], strict=False))
    assert len(accepted) >= calls * int(seconds / period)
    for refused_at, wait in (refusal for r in results for refusal in r["refused"]):
        first_after = next((t for t in accepted if t >= refused_at), None)
        assert first_after is None or first_after >= refused_at + wait
