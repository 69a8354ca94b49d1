"""Helpers the entity definitions are written with: plain columns, links that follow the base URL."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from storage.db import chunks, marks
from storage.odata.model import BOOLEAN, Property


def col(name: str, type_: str, column: str, *, nullable: bool = False, **extra: Any) -> Property:
    """A property read from one column of the set's own row (`{t}.<column>`)."""
    return Property(name, type_, nullable=nullable, sql=f"{{t}}.{column}", **extra)


def flag(name: str, column: str) -> Property:
    """A boolean property stored as 0/1."""
    return col(name, BOOLEAN, column)


def link_sql(stored: str) -> str:
    """SQL for a link stored relative to the public base URL (`catalogs/academy/first-aid`), as read.

    An absolute http(s) URL (a course Url a client gave as one) stays as it is; a relative one hangs off
    the ReadContext's base_url (one `?`, context `("base_url",)`), so links follow COURSEWIRE_PUBLIC_URL
    or the request's host when they are read, not as they were when the row was written.
    """
    return (
        f"CASE WHEN {stored} IS NULL THEN NULL"
        f" WHEN {stored} LIKE 'http://%' OR {stored} LIKE 'https://%' THEN {stored}"
        f" ELSE ? || '/' || {stored} END"
    )


def absolute_link(stored: str | None, base_url: str) -> str | None:
    """The Python twin of `link_sql`, for code that holds a stored link rather than SQL."""
    if stored is None:
        return None
    if stored[:8].lower().startswith(("http://", "https://")):
        return stored
    return f"{base_url.rstrip('/')}/{stored}"


def rows_by(conn: sqlite3.Connection, sql: str, ids: Sequence[str], *params: object) -> list[sqlite3.Row]:
    """Run `sql` (with `{ids}` where the keys go, and `params` before them) over `ids` in chunks."""
    rows: list[sqlite3.Row] = []
    for chunk in chunks(list(dict.fromkeys(ids))):
        rows.extend(conn.execute(sql.format(ids=marks(chunk)), [*params, *chunk]))
    return rows
