"""The event-log consumer step (storage/consumer.py): each event reaches a consumer once, in order, and what the
handler writes commits together with the cursor or not at all."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import pytest

from storage import consumer, events
from storage.db import Database
from storage.models import CLI, Event


def append(db: Database, count: int) -> list[int]:
    """Write `count` events; return their sequence numbers."""
    with db.write() as conn:
        return [events.record(conn, "UserCreated", CLI, db.clock(), {"n": n}) for n in range(count)]


def handled(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT seq FROM seen ORDER BY seq")]


@pytest.fixture
def seen(db: Database) -> Database:
    """A table the handlers below write to, as dispatch writes notifications."""
    with db.write() as conn:
        conn.execute("CREATE TABLE seen (seq INTEGER PRIMARY KEY)")
    return db


def keep_all(conn: sqlite3.Connection, batch: Sequence[Event]) -> int:
    conn.executemany("INSERT INTO seen (seq) VALUES (?)", [(e.seq,) for e in batch])
    return len(batch)


def test_every_event_is_handled_once_in_order(seen: Database) -> None:
    db = seen
    written = append(db, 7)
    assert consumer.backlog(db, "mirror") == 7
    assert [consumer.consume(db, "mirror", keep_all, limit=3) for _ in range(4)] == [3, 3, 1, 0]
    with db.read() as conn:
        assert handled(conn) == written
    assert consumer.backlog(db, "mirror") == 0
    assert events.cursor(db, "mirror") == written[-1]


def test_a_handler_that_stops_early_gets_the_rest_next_time(seen: Database) -> None:
    """A handler consumes a prefix (dispatch stops at max_notifications); the cursor moves past that prefix only."""
    db = seen
    written = append(db, 5)

    def two(conn: sqlite3.Connection, batch: Sequence[Event]) -> int:
        return keep_all(conn, batch[:2])

    assert consumer.consume(db, "mirror", two) == 2
    assert events.cursor(db, "mirror") == written[1]
    assert consumer.backlog(db, "mirror") == 3
    assert consumer.consume(db, "mirror", keep_all) == 3
    with db.read() as conn:
        assert handled(conn) == written


def test_a_failing_handler_leaves_neither_its_writes_nor_a_moved_cursor(seen: Database) -> None:
    db = seen
    written = append(db, 3)

    def fails(conn: sqlite3.Connection, batch: Sequence[Event]) -> int:
        keep_all(conn, batch)
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError):
        consumer.consume(db, "mirror", fails)
    with db.read() as conn:
        assert handled(conn) == []
    assert consumer.backlog(db, "mirror") == 3
    assert consumer.consume(db, "mirror", keep_all) == 3
    with db.read() as conn:
        assert handled(conn) == written


def test_a_count_beyond_the_events_given_is_refused_and_nothing_written(seen: Database) -> None:
    db = seen
    append(db, 2)

    def claims_too_many(conn: sqlite3.Connection, batch: Sequence[Event]) -> int:
        keep_all(conn, batch)
        return len(batch) + 1

    with pytest.raises(ValueError, match="consumed 3 of 2"):
        consumer.consume(db, "mirror", claims_too_many)
    with db.read() as conn:
        assert handled(conn) == []
    assert consumer.backlog(db, "mirror") == 2


def test_consumers_keep_their_own_cursors(seen: Database) -> None:
    """The calendar mirror and webhook dispatch read the same log without taking events from each other."""
    db = seen
    append(db, 4)
    assert consumer.consume(db, "webhooks", lambda conn, batch: len(batch)) == 4
    assert consumer.backlog(db, "webhooks") == 0
    assert consumer.backlog(db, "calendars") == 4
    assert consumer.consume(db, "calendars", lambda conn, batch: len(batch)) == 4


def test_an_empty_log_calls_no_handler(db: Database) -> None:
    def never(conn: sqlite3.Connection, batch: Sequence[Event]) -> int:
        raise AssertionError("called without events")

    assert consumer.consume(db, "mirror", never) == 0
    assert consumer.backlog(db, "mirror") == 0
