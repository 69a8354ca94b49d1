"""Throttling state shared by every server process: a GCRA bucket per key in its own SQLite file.

GCRA (the generic cell rate algorithm) keeps one number per key, the theoretical arrival time (TAT).
With `calls` per `period`, each call moves the TAT forward by period/calls; a call is refused when that
would put the TAT more than `period` ahead of now. This allows a burst of `calls` and then a steady
calls/period, and never more than `calls` within any window of `period` seconds.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


class RateLimiter:
    """`acquire(key)` returns 0.0 when the call may proceed, else the seconds to wait before retrying."""

    def __init__(self, path: str | Path, calls: int, period: float) -> None:
        self.path = str(path)
        self.calls = calls
        self.period = period
        self.emission = period / calls
        self._local = threading.local()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tat REAL NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # Throttling state may be lost on power failure without harm; don't pay for fsync.
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
        return conn

    def acquire(self, key: str, now: float | None = None) -> float:
        """Count one call for `key` at `now` (seconds, default wall clock); return 0.0 or Retry-After seconds."""
        now = time.time() if now is None else now
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT tat FROM buckets WHERE key = ?", (key,)).fetchone()
            tat = max(row[0] if row else now, now) + self.emission
            if tat - now > self.period:
                conn.execute("COMMIT")
                return tat - now - self.period
            conn.execute(
                "INSERT INTO buckets (key, tat) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET tat = excluded.tat",
                (key, tat),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return 0.0
