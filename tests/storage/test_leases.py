"""Lease owners and reclaim (storage/leases.py): a worker that starts takes back at once what dead processes of its
host held, and never what live processes or other hosts hold. Process ids come from real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from storage import leases
from storage.db import Database


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that ran and was reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def add(db: Database, session: str, owner: str | None, lease: str | None = "2030-03-01T08:05:00.000000Z") -> None:
    with db.write() as conn:
        conn.execute(
            "INSERT INTO calendar_dirty (user_id, session_id, due_at, owner, lease_until, attempts)"
            " VALUES ('u1', ?, '2030-03-01T08:00:00.000000Z', ?, ?, 1)",
            (session, owner, lease if owner else None),
        )


def owners(db: Database) -> dict[str, str | None]:
    with db.read() as conn:
        return dict(conn.execute("SELECT session_id, owner FROM calendar_dirty").fetchall())


def test_a_new_owner_names_this_host_and_process() -> None:
    owner = leases.new_owner()
    assert owner.startswith(leases.host_identity() + ":")
    assert re.fullmatch(r"[^:]+:\d+:[0-9a-f]{8}", owner)
    assert leases.pid_of(owner) == os.getpid()
    assert leases.new_owner() != owner  # two workers in one process hold their own leases


def test_pid_of_reads_only_owners_of_the_form_host_pid_random() -> None:
    assert leases.pid_of("web-1/pidns4026531836:4242:0a1b2c3d") == 4242
    assert leases.pid_of("worker-a") is None
    assert leases.pid_of("web-1:4242") is None
    assert leases.pid_of("web-1:x42:0a1b2c3d") is None


def test_alive_tells_running_processes_from_gone_ones(dead_pid: int) -> None:
    assert leases.alive(os.getpid())
    assert not leases.alive(dead_pid)


def test_the_calendar_queue_gets_back_what_dead_processes_of_this_host_held(db: Database, dead_pid: int) -> None:
    """Rows of a dead local process are free again (owner and lease cleared, the rest kept); rows of a live
    process, of another host or of no one stay as they are."""
    host = leases.host_identity()
    add(db, "dead", f"{host}:{dead_pid}:0a1b2c3d")
    add(db, "live", f"{host}:{os.getpid()}:0a1b2c3d")
    add(db, "elsewhere", f"other-host:{dead_pid}:0a1b2c3d")
    add(db, "free", None)
    with db.write() as conn:
        released = leases.release_abandoned(conn, "calendar_dirty", host, leases.alive)
    assert released == 1
    assert owners(db) == {
        "dead": None,
        "live": f"{host}:{os.getpid()}:0a1b2c3d",
        "elsewhere": f"other-host:{dead_pid}:0a1b2c3d",
        "free": None,
    }
    with db.read() as conn:
        row = conn.execute(
            "SELECT lease_until, attempts, due_at FROM calendar_dirty WHERE session_id = 'dead'"
        ).fetchone()
    assert tuple(row) == (None, 1, "2030-03-01T08:00:00.000000Z")


def test_a_host_name_is_compared_as_text_not_as_a_pattern(db: Database, dead_pid: int) -> None:
    """`_` in a host name matches itself only (a LIKE pattern would match any character)."""
    add(db, "other", f"webXhost:{dead_pid}:0a1b2c3d")
    add(db, "ours", f"web_host:{dead_pid}:0a1b2c3d")
    with db.write() as conn:
        assert leases.release_abandoned(conn, "calendar_dirty", "web_host", leases.alive) == 1
    assert owners(db) == {"other": f"webXhost:{dead_pid}:0a1b2c3d", "ours": None}


def test_set_sql_and_where_shape_the_release(db: Database, dead_pid: int) -> None:
    """The caller sets more columns on release (parameters in order, then the row) and narrows the rows looked at."""
    add(db, "a", f"h:{dead_pid}:1")
    add(db, "b", f"h:{dead_pid}:2")
    with db.write() as conn:
        released = leases.release_abandoned(
            conn,
            "calendar_dirty",
            "h",
            leases.alive,
            where="session_id = 'a'",
            set_sql="due_at = ?, last_error = ?",
            params=("2030-03-01T09:00:00.000000Z", "the worker died"),
        )
    assert released == 1
    with db.read() as conn:
        rows = conn.execute("SELECT session_id, owner, due_at, last_error FROM calendar_dirty ORDER BY 1").fetchall()
    assert [tuple(r) for r in rows] == [
        ("a", None, "2030-03-01T09:00:00.000000Z", "the worker died"),
        ("b", f"h:{dead_pid}:2", "2030-03-01T08:00:00.000000Z", None),
    ]


def test_table_and_column_names_must_be_identifiers(db: Database) -> None:
    with db.write() as conn, pytest.raises(ValueError, match="not an SQL identifier"):
        leases.release_abandoned(conn, "calendar_dirty; DROP TABLE events", "h", leases.alive)
