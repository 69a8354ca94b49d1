"""Leases: who holds a row being worked on, and taking back the rows of processes that died holding them.

A worker that claims rows (webhook deliveries, the calendar mirror's dirty queue) writes its owner,
`host:pid:random` (`new_owner`), and a lease end. Another worker takes a row back once the lease has
expired; on start, a worker also takes back at once the rows leased by processes of its own host that are
no longer running (`release_abandoned`), so a crash costs no wait. The host part names the PID namespace
too, so containers sharing a host name never judge each other's process ids.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any


def host_identity() -> str:
    """This host as lease owners name it: the host name and, on Linux, the PID namespace
    (`web-1/pidns4026531836`), so that containers sharing a host name never judge each other's process ids."""
    try:
        namespace = f"/pidns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        namespace = ""
    return socket.gethostname() + namespace


def new_owner() -> str:
    """A lease owner for this process: `host:pid:random` (host_identity(), os.getpid(), 8 hex digits), unique
    per worker even within one process, and telling a restarted worker of its host which leases are dead."""
    return f"{host_identity()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def pid_of(owner: str) -> int | None:
    """The process id in an owner `host:pid:random`, or None when `owner` is not of that form."""
    parts = owner.split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def alive(pid: int) -> bool:
    """True if a process `pid` runs on this host (in this PID namespace): signal 0 reaches it, or it exists
    but belongs to another user (PermissionError)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _identifier(name: str) -> str:
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not an SQL identifier")
    return name


def release_abandoned(
    conn: sqlite3.Connection,
    table: str,
    host: str,
    alive: Callable[[int], bool],
    *,
    owner_column: str = "owner",
    lease_column: str = "lease_until",
    where: str = "",
    set_sql: str = "",
    params: Sequence[Any] = (),
) -> int:
    """Give back the rows of `table` leased by processes of `host` that are gone; return how many.

    Runs inside the caller's write transaction `conn`. A row is abandoned when its `owner_column` is
    `host:pid:...` (compared as a prefix, not with LIKE: `_` in a host name would match any character) and
    `alive(pid)` is False. Each such row gets `owner_column` and `lease_column` set to NULL and, when given,
    `set_sql` too (an SQL assignment list such as `"status = 'pending', next_attempt_at = ?"`, its parameters
    in `params`). `where` (SQL, no parameters) narrows the rows looked at, such as `"status = 'sending'"`.
    Rows are addressed by rowid, so `table` must be a rowid table. Raises ValueError for a table or column
    name that is no identifier.
    """
    table, owner, lease = (_identifier(n) for n in (table, owner_column, lease_column))
    narrow = f" AND ({where})" if where else ""
    rows = conn.execute(
        f"SELECT rowid, {owner} FROM {table} WHERE {owner} IS NOT NULL"  # noqa: S608 (identifiers checked above)
        f" AND substr({owner}, 1, ?) = ?{narrow}",
        (len(host) + 1, f"{host}:"),
    ).fetchall()
    dead = [row[0] for row in rows if (pid := pid_of(row[1])) is not None and not alive(pid)]
    assignments = f"{owner} = NULL, {lease} = NULL" + (f", {set_sql}" if set_sql else "")
    for rowid in dead:
        conn.execute(f"UPDATE {table} SET {assignments} WHERE rowid = ?", (*params, rowid))  # noqa: S608
    return len(dead)
