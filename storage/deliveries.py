"""Webhook deliveries: notifications queued per subscription, grouped into deliveries, claimed, recorded.

The life of a notification:

1. `enqueue` writes it in the dispatcher's transaction, the one that moves its event cursor, so an
   event becomes notifications exactly once whatever crashes.
2. `assemble` groups a subscription's waiting notifications into a delivery (one POST, several
   notifications when batching) once the oldest is due. A notification about an entity (an
   enrollment, a user...) waits while an earlier one about the same entity is still undelivered, so
   a receiver never sees them out of order.
3. `claim` leases due deliveries to one worker (`sending` until `lease_until`) and counts the attempt.
   A worker that dies mid-send leaves the lease to expire; the delivery is then claimed again with
   the same id and the next attempt number: at least once, never lost.
4. `record` stores each attempt and moves the delivery on: delivered, pending again (retry), dead
   (a dead letter, kept with its reason until redelivered), or cancelled with its subscription.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from storage import access, events, leases, subscriptions
from storage.db import Database, chunks, iso, marks, new_id, parse_iso
from storage.errors import Conflict, Invalid, NotFound, clip
from storage.models import Actor

STATUSES = ("pending", "sending", "delivered", "dead", "cancelled")
UNFINISHED = ("pending", "sending")


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to a worker for one attempt."""

    id: str
    subscription_id: str
    event: str
    attempt: int
    notifications: list[dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, as the worker decided it.

    result: `delivered`; `retry` at `next_attempt_at`; `dead` (no more retries: `reason`); `gone` (the
    callback answered 404/410: the subscription is removed).
    """

    delivery_id: str
    owner: str
    attempt: int
    started_at: datetime
    result: Literal["delivered", "retry", "dead", "gone"]
    status_code: int | None = None
    latency_ms: float | None = None
    response: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        # Kept in the attempt log and shown through the API: bounded whatever the exception said.
        for name in ("response", "error", "reason"):
            object.__setattr__(self, name, clip(getattr(self, name)))


def enqueue(
    conn: sqlite3.Connection,
    subscription_id: str,
    event_seq: int,
    entity_key: str,
    notification: dict[str, Any],
    now: datetime,
    due_at: datetime,
) -> None:
    """Queue one notification inside the caller's transaction (again for the same event: ignored)."""
    conn.execute(
        "INSERT OR IGNORE INTO webhook_notifications (subscription_id, event_seq, entity_key, payload, created_at,"
        " due_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            subscription_id,
            event_seq,
            entity_key,
            json.dumps(notification, separators=(",", ":"), ensure_ascii=False),
            iso(now),
            iso(due_at),
        ),
    )


def due(db: Database) -> tuple[bool, bool]:
    """(notifications wait to be grouped, deliveries wait to be claimed), read cheaply from the partial indexes."""
    stamp = iso(db.clock())
    with db.read() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM webhook_notifications INDEXED BY webhook_notifications_due"
            " WHERE delivery_id IS NULL AND held_by IS NULL AND due_at <= ?),"
            " EXISTS (SELECT 1 FROM webhook_deliveries INDEXED BY webhook_deliveries_due"
            " WHERE status = 'pending' AND next_attempt_at <= ?)"
            " OR EXISTS (SELECT 1 FROM webhook_deliveries INDEXED BY webhook_deliveries_leased"
            " WHERE status = 'sending' AND lease_until < ?)",
            (stamp, stamp, stamp),
        ).fetchone()
    return bool(row[0]), bool(row[1])


def flush_windows(db: Database) -> int:
    """Make every notification waiting out its batch window due now; return how many."""
    stamp = iso(db.clock())
    with db.write() as conn:
        return conn.execute(
            "UPDATE webhook_notifications SET due_at = ? WHERE delivery_id IS NULL AND due_at > ?", (stamp, stamp)
        ).rowcount


def assemble(db: Database, *, batch: bool, max_batch: int = 100, limit: int = 2000) -> int:
    """Group due notifications into deliveries; return how many deliveries were created.

    A notification whose entity has an earlier one on its way is held by that delivery instead
    (`held_by`), and released when it ends (`release`). Looks at `limit` notifications per
    subscription per call, so one call's work stays bounded whatever the backlog.
    """
    now = db.clock()
    stamp = iso(now)
    created = 0
    with db.write() as conn:
        subs = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT subscription_id FROM webhook_notifications INDEXED BY webhook_notifications_due"
                " WHERE delivery_id IS NULL AND held_by IS NULL AND due_at <= ?",
                (stamp,),
            )
        ]
        for sub_id in subs:
            sub = conn.execute("SELECT event, status FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone()
            if sub is None or sub["status"] != "active":
                continue
            waiting = conn.execute(
                "SELECT id, entity_key, due_at FROM webhook_notifications INDEXED BY webhook_notifications_waiting"
                " WHERE subscription_id = ? AND delivery_id IS NULL AND held_by IS NULL ORDER BY id LIMIT ?",
                (sub_id, limit),
            ).fetchall()
            blocker = _on_their_way(conn, sub_id, {row["entity_key"] for row in waiting})
            groups: list[tuple[str, list[int]]] = []
            held: dict[str, list[int]] = {}
            current: list[int] = []
            current_keys: set[str] = set()
            current_id = new_id()
            not_yet: set[str] = set()  # entities whose earliest waiting notification is not due yet
            for row in waiting:
                key = row["entity_key"]
                if key in blocker:  # an earlier notification about this entity is not delivered yet
                    held.setdefault(blocker[key], []).append(row["id"])
                    continue
                if not batch:
                    if key in not_yet:
                        continue
                    if row["due_at"] > stamp:
                        not_yet.add(key)
                        continue
                    delivery_id = new_id()
                    groups.append((delivery_id, [row["id"]]))
                    blocker[key] = delivery_id
                    continue
                if len(current) >= max_batch:
                    groups.append((current_id, current))
                    blocker.update(dict.fromkeys(current_keys, current_id))
                    current, current_keys, current_id = [], set(), new_id()
                    if key in blocker:
                        held.setdefault(blocker[key], []).append(row["id"])
                        continue
                current.append(row["id"])
                current_keys.add(key)
            if current:
                groups.append((current_id, current))
            for delivery_id, ids in groups:
                conn.execute(
                    "INSERT INTO webhook_deliveries (id, subscription_id, event, status, next_attempt_at, created_at)"
                    " VALUES (?, ?, ?, 'pending', ?, ?)",
                    (delivery_id, sub_id, sub["event"], stamp, stamp),
                )
                _set(conn, "delivery_id", delivery_id, ids)
                created += 1
            for holder, ids in held.items():
                _set(conn, "held_by", holder, ids)
    return created


def _set(conn: sqlite3.Connection, column: str, value: str, ids: list[int]) -> None:
    for part in chunks(ids):
        conn.execute(
            f"UPDATE webhook_notifications SET {column} = ? WHERE id IN ({marks(part)})",  # noqa: S608
            [value, *part],
        )


def _on_their_way(conn: sqlite3.Connection, sub_id: str, keys: set[str]) -> dict[str, str]:
    """entity key -> an unfinished delivery (pending or sending) with a notification about it."""
    found: dict[str, str] = {}
    for part in chunks(sorted(keys)):
        for row in conn.execute(
            "SELECT e.entity_key, e.delivery_id FROM webhook_notifications e"  # noqa: S608 (placeholders only)
            " INDEXED BY webhook_notifications_entity JOIN webhook_deliveries d ON d.id = e.delivery_id"
            f" WHERE e.subscription_id = ? AND e.entity_key IN ({marks(part)})"
            " AND e.delivery_id IS NOT NULL AND d.status IN ('pending', 'sending')",
            [sub_id, *part],
        ):
            found.setdefault(row[0], row[1])
    return found


def release(conn: sqlite3.Connection, delivery_ids: Iterable[str]) -> None:
    """Deliveries that ended (delivered, dead, cancelled) let the notifications they held go on."""
    for delivery_id in delivery_ids:
        conn.execute("UPDATE webhook_notifications SET held_by = NULL WHERE held_by = ?", (delivery_id,))


def claim(db: Database, owner: str, limit: int, lease: timedelta) -> list[Claimed]:
    """Lease up to `limit` due deliveries (and expired leases) to `owner`; each counts as an attempt."""
    if limit <= 0:
        return []
    now = db.clock()
    stamp = iso(now)
    with db.write() as conn:
        # Two walks of the partial indexes, each stopping at `limit` rows. A UNION under one ORDER BY,
        # or the planner's own pick (the status index), sorts every due row first: with a backlog,
        # that was the cost of every claim.
        due = conn.execute(
            "SELECT next_attempt_at, id FROM webhook_deliveries INDEXED BY webhook_deliveries_due"
            " WHERE status = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at LIMIT ?",
            (stamp, limit),
        ).fetchall()
        expired = conn.execute(
            "SELECT lease_until, id FROM webhook_deliveries INDEXED BY webhook_deliveries_leased"
            " WHERE status = 'sending' AND lease_until < ?"
            " ORDER BY lease_until LIMIT ?",
            (stamp, limit),
        ).fetchall()
        ids = [r[1] for r in sorted([*due, *expired], key=lambda r: r[0])[:limit]]
        if not ids:
            return []
        placeholders = marks(ids)
        conn.execute(
            f"UPDATE webhook_deliveries SET status = 'sending', lease_owner = ?, lease_until = ?,"  # noqa: S608
            f" attempts = attempts + 1 WHERE id IN ({placeholders})",
            [owner, iso(now + lease), *ids],
        )
        rows = conn.execute(
            f"SELECT id, subscription_id, event, attempts FROM webhook_deliveries WHERE id IN ({placeholders})",  # noqa: S608
            ids,
        ).fetchall()
        payloads: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for n in conn.execute(
            f"SELECT delivery_id, payload FROM webhook_notifications WHERE delivery_id IN ({placeholders}) ORDER BY id",  # noqa: S608
            ids,
        ):
            payloads[n["delivery_id"]].append(json.loads(n["payload"]))
    order = {i: n for n, i in enumerate(ids)}
    claimed = [Claimed(r["id"], r["subscription_id"], r["event"], r["attempts"], payloads[r["id"]]) for r in rows]
    return sorted(claimed, key=lambda c: order[c.id])


def release_abandoned(db: Database, host: str, alive: Callable[[int], bool]) -> int:
    """Give back the leases of workers on `host` whose process is gone (owner `host:pid:...`;
    storage.leases.release_abandoned, `alive` as storage.leases.alive).

    Their deliveries would otherwise wait out the lease; they are due again at once, under the same
    id. Returns how many were released.
    """
    now = db.clock()
    with db.write() as conn:
        return leases.release_abandoned(
            conn,
            "webhook_deliveries",
            host,
            alive,
            owner_column="lease_owner",
            where="status = 'sending'",
            set_sql="status = 'pending', next_attempt_at = ?",
            params=(iso(now),),
        )


def record(db: Database, outcomes: Iterable[Outcome], *, disable_after: timedelta | None) -> None:
    """Store attempts and move their deliveries on, in one transaction.

    An outcome whose lease was lost (the delivery was claimed again after it expired) is logged as an
    attempt but changes nothing else: the newer claim owns the delivery.
    """
    now = db.clock()
    stamp = iso(now)
    with db.write() as conn:
        for o in outcomes:
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, response,"
                " error, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    o.delivery_id,
                    o.attempt,
                    iso(o.started_at),
                    o.status_code,
                    o.latency_ms,
                    o.response,
                    o.error,
                    o.result,
                ),
            )
            row = conn.execute(
                "SELECT subscription_id FROM webhook_deliveries"
                " WHERE id = ? AND status = 'sending' AND lease_owner = ? AND attempts = ?",
                (o.delivery_id, o.owner, o.attempt),
            ).fetchone()
            if row is None:
                continue
            sub_id = row["subscription_id"]
            if o.result == "delivered":
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'delivered', completed_at = ?, last_status = ?,"
                    " last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ?",
                    (stamp, o.status_code, o.delivery_id),
                )
                conn.execute(
                    "UPDATE webhook_subscriptions SET failing_since = NULL, last_delivered_at = ? WHERE id = ?",
                    (stamp, sub_id),
                )
                release(conn, [o.delivery_id])
                continue
            error = o.error or (f"HTTP {o.status_code}" if o.status_code else "failed")
            if o.result == "gone":
                conn.execute(
                    "UPDATE webhook_deliveries SET last_status = ?, last_error = ? WHERE id = ?",
                    (o.status_code, error, o.delivery_id),
                )
                subscriptions.remove_in(conn, sub_id, o.reason or f"the callback answered {o.status_code}", now)
                continue
            conn.execute(
                "UPDATE webhook_subscriptions SET failing_since = coalesce(failing_since, ?) WHERE id = ?",
                (stamp, sub_id),
            )
            if o.result == "retry" and o.next_attempt_at is not None:
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, last_status = ?,"
                    " last_error = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
                    (iso(o.next_attempt_at), o.status_code, error, o.delivery_id),
                )
                continue
            conn.execute(
                "UPDATE webhook_deliveries SET status = 'dead', completed_at = ?, last_status = ?, last_error = ?,"
                " dead_reason = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
                (stamp, o.status_code, error, o.reason or error, o.delivery_id),
            )
            release(conn, [o.delivery_id])
            if disable_after is not None:
                since = conn.execute(
                    "SELECT failing_since FROM webhook_subscriptions WHERE id = ?", (sub_id,)
                ).fetchone()[0]
                started = parse_iso(since)
                if started is not None and now - started >= disable_after:
                    subscriptions.disable_in(
                        conn, sub_id, f"every delivery failed since {since}; subscribe again to resume", now
                    )


def redeliver(db: Database, actor: Actor, delivery_id: str) -> dict[str, Any]:
    """Send a dead letter again, now, under the same id. Conflict unless it is dead and its subscription live."""
    now = db.clock()
    with db.write() as conn:
        access.require_admin(actor, "redeliver webhook deliveries")
        row = conn.execute("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise NotFound(f"no webhook delivery with id {delivery_id!r}", target="Id")
        if row["status"] != "dead":
            raise Conflict(f"delivery {delivery_id} is {row['status']}; only dead letters are redelivered", target="Id")
        sub = conn.execute(
            "SELECT status FROM webhook_subscriptions WHERE id = ?", (row["subscription_id"],)
        ).fetchone()
        if sub["status"] != "active":
            raise Conflict(
                f"the subscription of delivery {delivery_id} is {sub['status']}; subscribe again first", target="Id"
            )
        _check_order(conn, row["subscription_id"], delivery_id)
        conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, completed_at = NULL,"
            " dead_reason = NULL WHERE id = ?",
            (iso(now), delivery_id),
        )
        events.record(conn, "WebhookRedelivered", actor, now, {"DeliveryId": delivery_id})
    return get(db, delivery_id)


def _check_order(conn: sqlite3.Connection, sub_id: str, delivery_id: str) -> None:
    """Conflict if sending `delivery_id` again would put notifications about one entity out of order:
    another delivery about the same entity is on its way, or a later one was delivered already."""
    clash = conn.execute(
        "SELECT mine.entity_key, other.delivery_id, d.status FROM webhook_notifications mine"
        " JOIN webhook_notifications other INDEXED BY webhook_notifications_entity"
        " ON other.subscription_id = mine.subscription_id AND other.entity_key = mine.entity_key"
        " AND other.delivery_id IS NOT NULL AND other.delivery_id != mine.delivery_id"
        " JOIN webhook_deliveries d ON d.id = other.delivery_id"
        " WHERE mine.delivery_id = ? AND mine.subscription_id = ?"
        " AND (d.status IN ('pending', 'sending') OR (d.status = 'delivered' AND other.id > mine.id))"
        " LIMIT 1",
        (delivery_id, sub_id),
    ).fetchone()
    if clash is None:
        return
    key, other, status = clash
    if status == "delivered":
        why = f"a later notification about {key} was delivered since (delivery {other}); sending this one now"
        why += " would deliver them out of order"
    else:
        why = f"delivery {other} about {key} is on its way; redeliver this one once it has ended"
    raise Conflict(f"delivery {delivery_id} is not redelivered: {why}", target="Id")


def _delivery(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "Id": row["id"],
        "SubscriptionId": row["subscription_id"],
        "Event": row["event"],
        "Status": row["status"],
        "Attempts": row["attempts"],
        "NextAttemptAt": row["next_attempt_at"] if row["status"] in UNFINISHED else None,
        "CreatedAt": row["created_at"],
        "CompletedAt": row["completed_at"],
        "LastStatusCode": row["last_status"],
        "LastError": row["last_error"],
        "DeadReason": row["dead_reason"],
        "Notifications": row["notifications"],
    }


_SELECT = (
    "SELECT d.*, (SELECT count(*) FROM webhook_notifications n WHERE n.delivery_id = d.id) AS notifications"
    " FROM webhook_deliveries d"
)


def list_deliveries(
    db: Database,
    *,
    status: str | None = None,
    subscription_id: str | None = None,
    event: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Deliveries, newest first, filtered by status, subscription and event."""
    if status is not None and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}", target="Status")
    clauses, params = [], []
    for column, value in (("status", status), ("subscription_id", subscription_id), ("event", event)):
        if value is not None:
            clauses.append(f"d.{column} = ?")
            params.append(value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    with db.read() as conn:
        rows = conn.execute(f"{_SELECT}{where} ORDER BY d.created_at DESC, d.rowid DESC LIMIT ?", [*params, limit])
        return [_delivery(r) for r in rows]


def get(db: Database, delivery_id: str) -> dict[str, Any]:
    """One delivery with its notifications and every attempt."""
    with db.read() as conn:
        row = conn.execute(f"{_SELECT} WHERE d.id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise NotFound(f"no webhook delivery with id {delivery_id!r}", target="Id")
        out = _delivery(row)
        out["Payload"] = [
            json.loads(r[0])
            for r in conn.execute(
                "SELECT payload FROM webhook_notifications WHERE delivery_id = ? ORDER BY id", (delivery_id,)
            )
        ]
        out["AttemptLog"] = [
            {
                "Attempt": a["attempt"],
                "StartedAt": a["started_at"],
                "StatusCode": a["status_code"],
                "LatencyMs": a["latency_ms"],
                "Response": a["response"],
                "Error": a["error"],
                "Outcome": a["outcome"],
            }
            for a in conn.execute(
                "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY attempt, id", (delivery_id,)
            )
        ]
    return out


def counts(db: Database) -> dict[str, int]:
    """How many deliveries are in each status, and how many notifications wait to be grouped."""
    with db.read() as conn:
        out = {s: 0 for s in STATUSES}
        for r in conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY status"):
            out[r[0]] = r[1]
        out["queued"] = conn.execute("SELECT count(*) FROM webhook_notifications WHERE delivery_id IS NULL").fetchone()[
            0
        ]
    return out
