"""The SQLite database: connections per thread, one transaction per domain operation, the clock."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import sqlite_utils

Clock = Callable[[], datetime]

T = TypeVar("T")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new entity key: a lower-case GUID string."""
    return str(uuid.uuid4())


def iso(moment: datetime | None) -> str | None:
    """Serialize a UTC instant as stored and as sent on the wire: `2026-11-21T09:30:00.000Z`."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("naive datetime: storage keeps UTC instants only")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str | None) -> datetime | None:
    """Read back a timestamp written by `iso`."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _identifiers(*names: str) -> str:
    """Table and column names come from code, never from requests; this proves it at run time."""
    for name in names:
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not an SQL identifier: {name!r}")
    return ", ".join(names)


def chunks(items: Sequence[T], size: int = 900) -> Iterator[Sequence[T]]:
    """`items` in slices SQLite accepts as host parameters of one statement."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(items: Sized) -> str:
    """`?,?,...`: one placeholder per item, for `IN (...)`."""
    return ",".join("?" * len(items))


def insert_sql(table: str, columns: Iterable[str]) -> str:
    """`INSERT INTO table (a, b) VALUES (?, ?)` for the given column names."""
    names = list(columns)
    return f"INSERT INTO {_identifiers(table)} ({_identifiers(*names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608


def update_sql(table: str, columns: Iterable[str]) -> str:
    """`UPDATE table SET a = ?, b = ? WHERE id = ?` for the given column names."""
    names = list(columns)
    _identifiers(table, *names)
    return f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in names)} WHERE id = ?"  # noqa: S608


def connect_wal(path: str | Path, busy_timeout_s: float = 10.0) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` in WAL mode (autocommit, usable from any thread).

    Switching a new file to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at once instead of
    calling the busy handler when another connection holds it (https://sqlite.org/wal.html, "Activating And
    Configuring WAL Mode"): two processes opening a new file together (two server workers on a fresh data
    folder) would fail with "database is locked". So the switch is retried until `busy_timeout_s` passes.
    Raises sqlite3.OperationalError after that.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01)


class Database:
    """One SQLite database file shared by threads and processes.

    Each thread gets its own connection (WAL mode, foreign keys on, busy timeout). Writes go through
    `write()`, which takes SQLite's write lock up front (`BEGIN IMMEDIATE`) so check-then-write logic
    such as seat counting is serialized across threads and processes.
    """

    def __init__(self, path: str | Path, *, clock: Clock = utcnow, busy_timeout_ms: int = 10_000) -> None:
        self.path = str(path)
        self.clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._memory_uri: str | None = None
        self._memory_keepalive: sqlite3.Connection | None = None
        if self.path == ":memory:":
            # A named shared-cache memory database so every thread sees the same data.
            self._memory_uri = f"file:coursewire-{uuid.uuid4().hex}?mode=memory&cache=shared"
            self._memory_keepalive = self._connect()
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        if self._memory_uri:
            conn = sqlite3.connect(self._memory_uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            conn = connect_wal(self.path)
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on any exception."""
        conn = self.conn
        if conn.in_transaction:
            raise RuntimeError("nested write transaction: one transaction per domain operation")
        # Threads of one process queue here, in order, instead of in SQLite's busy handler, which
        # sleeps in steps of up to 100 ms and favours no one (POST p99 fell from 667 to 186 ms).
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one snapshot."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def utils(self) -> sqlite_utils.Database:
        """sqlite-utils over this thread's connection (schema work, migrations)."""
        return sqlite_utils.Database(self.conn)

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        from storage.migrations import migrations

        db = self.utils()
        pending = [m.name for m in migrations.pending(db)]
        migrations.apply(db)
        return pending

    def scrub(self) -> None:
        """Rewrite the file (VACUUM) and empty the WAL, so nothing overwritten or deleted stays on disk.

        SQLite keeps old row versions in free pages and WAL frames until they are reused; after
        encrypting what was stored in clear, this makes sure the clear text is gone.
        """
        with self._write_lock:
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close this thread's connection (other threads close theirs when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._memory_keepalive is not None:
            self._memory_keepalive.close()
            self._memory_keepalive = None
