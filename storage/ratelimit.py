"""Throttling state shared by every server process: a sliding log of accepted calls per key, in its own SQLite file.

The guarantee is the LMS365 connector's: at most `calls` calls in any window of `period` seconds, per key.
Each key keeps the times of its last `calls` accepted calls in a ring of `calls` slots, oldest at the head.
A call at `now` is accepted when the head's call has left the window (`head + period <= now`): its time
replaces the head's and the head moves on. Otherwise it is refused and not recorded, and the wait is
`head + period - now`, when the head's call leaves the window and the next call will be accepted.

So any calls+1 accepted calls of a key span at least `period` seconds, whichever process took them: the
check and the write happen in one write transaction (BEGIN IMMEDIATE), and the clock is read inside it, so
every process records its calls in the order they commit. A token bucket (or GCRA) cannot promise this:
it lets a full burst through and then refills while the burst is still inside the window, so a minute
could hold nearly twice the limit.

Times are stored as whole microseconds, so the wait is exact. Storage stays bounded: a key holds at most
`calls` rows, and once a period each process deletes keys whose newest call is two periods old (SWEEP_BATCH
at a time). One period would do on a clock that never goes back; the second keeps a key's calls while any
call could still be timed inside its window by a clock stepped back up to a period (an NTP step, or another
process's clock a little behind).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from storage.db import connect_wal

SCHEMA_VERSION = 2  # 1 (no user_version) was GCRA's `buckets` table
SWEEP_BATCH = 64  # idle keys deleted per sweep; a full batch makes the next accepted call sweep again
MICRO = 1_000_000


class RateLimiter:
    """`acquire(key)` returns 0.0 when the call may proceed, else the exact seconds until one will be accepted.

    `path` is the SQLite file shared by every process that enforces the limit; `calls` (at least 1) per
    `period` seconds (more than 0) is the limit per key; `clock` returns seconds since the epoch and must be the
    same clock in every process (the wall clock by default; tests inject their own).
    """

    def __init__(self, path: str | Path, calls: int, period: float, clock: Callable[[], float] = time.time) -> None:
        if calls < 1 or not period > 0:
            raise ValueError(f"a rate limit needs at least 1 call per more than 0 seconds, not {calls}/{period}")
        self.path = str(path)
        self.calls = calls
        self.period = period
        self.clock = clock
        self._period_us = max(1, round(period * MICRO))
        self._next_sweep = 0  # microseconds; a sweep is due when an accepted call is at or past it
        self._local = threading.local()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._create_schema()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_wal(self.path)
            # Throttling state may be lost on power failure without harm; don't pay for fsync.
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
        return conn

    def _create_schema(self) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # processes starting together create the tables once
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                # Throttling state is a minute deep: an older layout is dropped, not converted.
                conn.execute("DROP TABLE IF EXISTS buckets")
                # `size` is the ring's length (the `calls` it was built for); `head` the slot of the oldest
                # call, the next to be replaced; `last` the newest call's time.
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                    " head INTEGER NOT NULL, last INTEGER NOT NULL) WITHOUT ROWID"
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, slot INTEGER NOT NULL,"
                    " at INTEGER NOT NULL, PRIMARY KEY (key, slot)) WITHOUT ROWID"
                )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def acquire(self, key: str, now: float | None = None) -> float:
        """Count one call for `key` at `now` (seconds since the epoch; default: the clock, read under the lock).

        Returns 0.0 when the call is accepted (and recorded), else the seconds until the call that holds the
        oldest place in the window leaves it, when a call will be accepted; a refused call is not recorded.
        A `now` earlier than the key's newest call (a clock stepped back) counts as that call's time.
        Raises sqlite3.OperationalError when the file stays locked past the 5 s busy timeout.
        """
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now_us = round((self.clock() if now is None else now) * MICRO)
            row = conn.execute(
                "SELECT w.size, w.head, w.last, c.at FROM windows w"
                " LEFT JOIN calls c ON c.key = w.key AND c.slot = w.head WHERE w.key = ?",
                (key,),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO windows (key, size, head, last) VALUES (?, ?, ?, ?)",
                    (key, self.calls, 1 % self.calls, now_us),
                )
                conn.execute("INSERT OR REPLACE INTO calls (key, slot, at) VALUES (?, 0, ?)", (key, now_us))
            else:
                size, head, last, oldest = row
                if size != self.calls:
                    head, oldest = self._resize(conn, key)
                now_us = max(now_us, last)
                if oldest is not None and oldest + self._period_us > now_us:
                    conn.execute("COMMIT")
                    wait_us: int = oldest + self._period_us - now_us
                    return wait_us / MICRO
                conn.execute(
                    "INSERT INTO calls (key, slot, at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key, slot) DO UPDATE SET at = excluded.at",
                    (key, head, now_us),
                )
                conn.execute(
                    "UPDATE windows SET head = ?, last = ? WHERE key = ?", ((head + 1) % self.calls, now_us, key)
                )
            if now_us >= self._next_sweep:
                self._sweep(conn, now_us)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return 0.0

    def _resize(self, conn: sqlite3.Connection, key: str) -> tuple[int, int | None]:
        """Rebuild `key`'s ring for a changed `calls` (a restart with another COURSEWIRE_RATE_LIMIT), keeping its
        newest calls; returns the new head slot and the time it holds (None when the ring has room)."""
        times = [at for (at,) in conn.execute("SELECT at FROM calls WHERE key = ? ORDER BY at, slot", (key,))]
        kept = times[-self.calls :]
        conn.execute("DELETE FROM calls WHERE key = ?", (key,))
        conn.executemany(
            "INSERT INTO calls (key, slot, at) VALUES (?, ?, ?)", [(key, i, at) for i, at in enumerate(kept)]
        )
        head = len(kept) % self.calls
        conn.execute("UPDATE windows SET size = ?, head = ? WHERE key = ?", (self.calls, head, key))
        return head, kept[0] if len(kept) == self.calls else None

    def _sweep(self, conn: sqlite3.Connection, now_us: int) -> None:
        """Delete up to SWEEP_BATCH keys whose newest call is two periods old (they hold nothing that matters)."""
        idle = conn.execute(
            "SELECT key FROM windows WHERE last <= ? LIMIT ?", (now_us - 2 * self._period_us, SWEEP_BATCH)
        ).fetchall()
        conn.executemany("DELETE FROM calls WHERE key = ?", idle)
        conn.executemany("DELETE FROM windows WHERE key = ?", idle)
        # A full batch may have left more behind: sweep again on the next call rather than hold the lock longer.
        self._next_sweep = now_us if len(idle) == SWEEP_BATCH else now_us + self._period_us
