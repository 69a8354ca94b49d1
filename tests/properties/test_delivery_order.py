"""Per-entity order of webhook deliveries, whatever happens: hypothesis drives the delivery tables
(storage/deliveries.py) through queueing, grouping with and without batching, claims, successes,
retries, dead letters and redeliveries, and checks that a receiver never sees notifications about
one entity out of order and that none is ever delivered twice; then, with a receiver that answers
2xx, that every notification is delivered or dead with a reason (all delivered when none was given
up on), so a pipeline that refused or held everything could not pass."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import apikeys, deliveries, subscriptions
from storage.db import Database
from storage.deliveries import Outcome
from storage.errors import Conflict
from storage.models import CLI
from storage.secrets import SecretBox

Step = tuple[list[tuple[int, int]], int, list[str], bool]
STEP = st.tuples(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1)), max_size=5),  # (entity, seconds until due)
    st.integers(1, 5),  # claims
    st.lists(st.sampled_from(["delivered", "delivered", "retry", "dead"]), min_size=5, max_size=5),
    st.booleans(),  # try to redeliver the oldest dead letter
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.booleans(),
    max_batch=st.sampled_from([1, 2, 3, 100]),
    steps=st.lists(STEP, max_size=25),
    recovers=st.booleans(),  # failures are retried, never given up on
)
def test_notifications_about_one_entity_arrive_in_order_and_once(
    batch: bool, max_batch: int, steps: list[Step], recovers: bool
) -> None:
    """A receiver never sees notifications about one entity out of order or twice, and once it answers 2xx
    every notification ends delivered or dead with a reason (all delivered when none was given up on)."""
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "t.db", clock=clock)
        db.migrate()
        key = apikeys.create(db, "k").key
        box = SecretBox(Fernet.generate_key())
        sub, _ = subscriptions.subscribe(db, box, CLI, key.id, "UserCreated", "https://flow.example/cb")
        seq = 0
        received: dict[str, list[int]] = {}

        def send(claims: int, results: list[str]) -> None:
            outcomes = []
            for claimed, result in zip(deliveries.claim(db, "w", claims, timedelta(seconds=60)), results, strict=False):
                if result == "delivered":
                    for n in claimed.notifications:
                        received.setdefault(n["entity"], []).append(n["seq"])
                retry_at = clock.now + timedelta(seconds=1) if result == "retry" else None
                reason = "gave up" if result == "dead" else None
                outcomes.append(
                    Outcome(
                        claimed.id, "w", claimed.attempt, clock.now, result, next_attempt_at=retry_at, reason=reason
                    )
                )  # type: ignore[arg-type]
            deliveries.record(db, outcomes, disable_after=None)

        for new, claims, results, redeliver in steps:
            with db.write() as conn:
                for entity, wait in new:
                    seq += 1
                    item = {"seq": seq, "entity": f"e{entity}"}
                    due = clock.now + timedelta(seconds=wait)
                    deliveries.enqueue(conn, sub["Id"], seq, f"e{entity}", item, clock.now, due)
            deliveries.assemble(db, batch=batch, max_batch=max_batch)
            send(claims, ["retry" if recovers and r == "dead" else r for r in results])
            dead = deliveries.list_deliveries(db, status="dead", limit=1000)
            if redeliver and dead:
                try:
                    deliveries.redeliver(db, CLI, dead[-1]["Id"])
                except Conflict as refused:  # only when sending it now would break the order
                    assert "would deliver them out of order" in refused.message or "is on its way" in refused.message
            clock.now += timedelta(seconds=1)

        # The receiver answers 2xx from now on: the worker's rounds (past leases of sends that never
        # reported) must empty the queue, holding nothing back for ever.
        for _ in range(2 * seq + 5):
            counts = deliveries.counts(db)
            if counts["queued"] == counts["pending"] == counts["sending"] == 0:
                break
            deliveries.assemble(db, batch=batch, max_batch=max_batch)
            send(1000, ["delivered"] * 1000)
            clock.now += timedelta(seconds=61)
        else:
            raise AssertionError(f"deliveries never drained: {deliveries.counts(db)}")
        with db.read() as conn:
            ends = {
                n["event_seq"]: (n["status"], n["dead_reason"])
                for n in conn.execute(
                    "SELECT n.event_seq, d.status, d.dead_reason FROM webhook_notifications n"
                    " JOIN webhook_deliveries d ON d.id = n.delivery_id"
                )
            }
        db.close()
    for entity, seqs in received.items():
        assert seqs == sorted(set(seqs)), f"{entity} arrived as {seqs}"
    assert set(ends) == set(range(1, seq + 1)), "some notifications were never grouped into a delivery"
    delivered = {s for s, (status, _) in ends.items() if status == "delivered"}
    assert {s for seqs in received.values() for s in seqs} == delivered
    assert all(status == "dead" and reason for s, (status, reason) in ends.items() if s not in delivered)
    if recovers:
        assert delivered == set(range(1, seq + 1))
