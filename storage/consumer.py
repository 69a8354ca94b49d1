"""Consuming the event log: one step of a consumer (webhook dispatch, the calendar mirror), exactly once.

A consumer has a name and a cursor (table event_cursors: the last sequence number it consumed). `consume`
reads the events after the cursor, lets the consumer's handler write what they cause, and moves the cursor
past the events handled, all in one write transaction: a crash leaves either both or neither, so no event is
lost or handled twice. Handlers touch the database only; network work happens later, from what they queued,
so the write lock is held for a short, bounded step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from storage import events
from storage.db import Database
from storage.models import Event

Handler = Callable[[sqlite3.Connection, Sequence[Event]], int]


def consume(db: Database, consumer: str, handle: Handler, *, limit: int = 500) -> int:
    """Hand the next events after `consumer`'s cursor to `handle`; return how many it consumed.

    In one write transaction: read up to `limit` events after the cursor (oldest first), call
    `handle(conn, events)` with the transaction's connection, which returns how many of the events, from the
    first, it consumed (fewer than all to stop early, such as after a cap on the work one step does), and move
    the cursor to the last consumed event. Returns 0, calling nothing, when no event is waiting. Raises
    ValueError (and writes nothing) when `handle` claims a count outside 0..len(events); an exception from
    `handle` rolls back everything it wrote, and the cursor stays.
    """
    with db.write() as conn:
        batch = events.read_after(db, events.cursor(db, consumer), limit=limit)  # both read through `conn`
        if not batch:
            return 0
        consumed = handle(conn, batch)
        if not 0 <= consumed <= len(batch):
            raise ValueError(f"the {consumer} handler consumed {consumed} of {len(batch)} events")
        if consumed:
            events.advance_cursor(conn, consumer, batch[consumed - 1].seq, db.clock())
    return consumed


def backlog(db: Database, consumer: str) -> int:
    """How many events were written after `consumer`'s cursor (all of them when it never ran)."""
    with db.read() as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(max(seq), 0) FROM events)"
            " - coalesce((SELECT seq FROM event_cursors WHERE consumer = ?), 0)",
            (consumer,),
        ).fetchone()
    return int(row[0])
