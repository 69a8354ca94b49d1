"""Every SQL statement one API call runs, each SELECT timed on its own and with its EXPLAIN QUERY PLAN.

The call is replayed in this process through the real app (`connector.app.create_app` and connexion's
test client), on a `Database` whose connections record each statement and its parameters. Re-running a
SELECT alone says how much of a slow call is that statement; its plan says why (a SCAN of a big table,
or a temporary B-tree to sort many rows).

Statements are re-run and explained with their `?` parameters bound, as the app runs them, never with
the values spelled into the SQL: SQLite may plan a literal differently from a parameter (it does for
`user_id = '...' COLLATE NOCASE ... ORDER BY registered_at`), so only the bound form shows the real plan.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.app import create_app
from connector.settings import Settings
from storage.db import Database

if TYPE_CHECKING:
    from data_scale import Call


@dataclass(frozen=True)
class SqlStatement:
    """One statement with its parameters, its best time alone in ms (SELECTs only) and its plan."""

    sql: str
    params: tuple[Any, ...]
    ms: float | None
    plan: list[str]


class _RecordingConnection:
    """Delegates to a sqlite3 connection, recording `execute` and `executemany` statements first."""

    def __init__(self, conn: sqlite3.Connection, sink: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._conn = conn
        self._sink = sink

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._sink.append((sql, tuple(params)))
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self._sink.append((sql, ()))
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class TracingDatabase(Database):
    """A Database whose every connection appends `(sql, params)` of the statements it runs to `statements`."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def _connect(self) -> sqlite3.Connection:
        return _RecordingConnection(super()._connect(), self.statements)  # type: ignore[return-value]


def plan(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[str]:
    """EXPLAIN QUERY PLAN as the sqlite3 shell prints it: one line per step, indented by depth."""
    depth: dict[int, int] = {0: 0}
    lines = []
    for node, parent, _, detail in conn.execute("EXPLAIN QUERY PLAN " + sql, params):
        depth[node] = depth.get(parent, 0) + 1
        lines.append("  " * (depth[node] - 1) + detail)
    return lines


def time_select(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = (), repeat: int = 3) -> float:
    """Best of `repeat` runs of a SELECT (fetching every row), in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(sql, params).fetchall()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def trace_call(database: Path, authorization: str, call: Call) -> list[SqlStatement]:
    """Run `call` once in-process against `database`; return its statements, SELECTs timed and explained."""
    db = TracingDatabase(database)
    app = create_app(Settings(data_dir=database.parent, database_url=f"sqlite:///{database}", rate_limit=None), db=db)
    client: Any = app.test_client()
    headers = {"Authorization": authorization}
    response = client.request(call.method, call.path, json=call.body, headers=headers)
    if response.status_code != call.status:
        raise RuntimeError(f"traced {call.method} {call.path} answered {response.status_code}: {response.text}")
    alone = sqlite3.connect(database)
    try:
        out = []
        for sql, params in db.statements:
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                out.append(SqlStatement(sql, params, time_select(alone, sql, params), plan(alone, sql, params)))
            else:
                out.append(SqlStatement(sql, params, None, []))
        return out
    finally:
        alone.close()
