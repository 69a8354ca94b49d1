"""Dispatch past its caps: a backlog bigger than one round's event and notification caps, several
subscribers, a real receiver on 127.0.0.1, and rounds of the worker until it is idle."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from hooks import make_worker, subscribe
from receiver import Receiver
from support import Api, Clock

from storage import deliveries, events, users
from storage.models import CLI
from webhooks.worker import CONSUMER, Worker, backlog

# webhooks/worker.py's dispatch() caps a round at 500 events, or at the event that brings the
# notifications it queued to 2,000; assemble() takes 2,000 notifications per subscription per round.
EVENT_CAP = 500
NOTIFICATION_CAP = 2000
SUBSCRIBERS = 5
UNHEARD = 600  # users created before anyone subscribed: events past the cursor that notify nobody
HEARD = 2100  # users created after: each one a notification for every subscriber


@dataclass
class Round:
    events: int  # how far the round moved the cursor
    queued: int  # notifications it queued
    started: int  # deliveries it started


async def run_rounds(worker: Worker, clock: Clock) -> list[Round]:
    """One `tick` and `drain` per round until nothing is left; then end the batch windows by moving the
    clock, and go on until idle again."""
    db = worker.db
    rounds: list[Round] = []

    def notifications() -> int:
        with db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM webhook_notifications").fetchone()[0])

    async with worker:
        for _ in range(2):
            while len(rounds) < 200:
                cursor, queued = events.cursor(db, CONSUMER), notifications()
                started = worker.tick()
                await worker.drain()
                rounds.append(Round(events.cursor(db, CONSUMER) - cursor, notifications() - queued, started))
                if not started and not backlog(db) and deliveries.due(db) == (False, False):
                    break
            clock.advance(seconds=1)  # past the batch window of everything queued
    return rounds


def test_every_notification_arrives_once_when_dispatch_stops_at_its_caps(
    api: Api, receiver: Receiver, clock: Clock
) -> None:
    """A backlog larger than a round's caps is dispatched over several rounds and every (event, subscriber)
    notification reaches its receiver exactly once: a round that stops early never skips what it left."""
    for i in range(UNHEARD):
        users.create(api.db, CLI, {"LoginName": f"early{i}@x.example"})
    for s in range(SUBSCRIBERS):
        subscribe(api, "UserCreated", f"{receiver.url}/s{s}")
    heard = {f"u{i}@x.example" for i in range(HEARD)}
    for login in sorted(heard):
        users.create(api.db, CLI, {"LoginName": login})

    rounds = asyncio.run(run_rounds(make_worker(api, batch_window=0.25), clock))

    got: dict[str, Counter[str]] = {f"/s{s}": Counter() for s in range(SUBSCRIBERS)}
    for received in receiver.received:
        got[received.path].update(n["LoginName"] for n in received.body["Notifications"])
    for path, logins in got.items():
        assert set(logins) == heard, f"{path} missed {len(heard - set(logins))} notifications"
        assert max(logins.values()) == 1, f"{path} got some twice: {[k for k, v in logins.items() if v > 1][:5]}"
    assert deliveries.counts(api.db).get("delivered") == len(receiver.received)
    # The backlog really was past both caps: some rounds stopped at 500 events, others at 2,000 notifications.
    assert sum(r.events for r in rounds) == backlog_total(api)
    assert max(r.events for r in rounds) == EVENT_CAP
    capped = [r for r in rounds if r.queued >= NOTIFICATION_CAP]
    assert capped and all(r.events < EVENT_CAP for r in capped)
    assert all(r.queued < NOTIFICATION_CAP + SUBSCRIBERS for r in rounds)
    # And sending too: 2,100 waiting per subscription are grouped over two rounds (2,000 at most in one).
    assert len([r for r in rounds if r.started]) > 1


def backlog_total(api: Api) -> int:
    """Every event written: the worker's cursor must have passed them all."""
    with api.db.read() as conn:
        return int(conn.execute("SELECT max(seq) FROM events").fetchone()[0])
