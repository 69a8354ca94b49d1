"""Webhook subscriptions: the registry behind the triggers' subscribe / Location / DELETE lifecycle.

A subscription's callback URL (a flow's URL carries its SAS signature) and its signing secret are
stored encrypted; `callback_hash` finds "the same callback again" without decrypting anything.
Status: `active`; `disabled` after failing for days (subscribing the same callback again revives it);
`removed` by DELETE, or when the callback answered 404 or 410 (the flow is gone).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from storage import access, events
from storage.db import Database, chunks, iso, marks, new_id
from storage.errors import Forbidden, Invalid, NotFound
from storage.models import SYSTEM, Actor
from storage.secrets import SecretBox

STATUSES = ("active", "disabled", "removed")


@dataclass(frozen=True)
class Target:
    """Where and how to deliver for one subscription: what the worker needs, decrypted."""

    id: str
    event: str
    url: str
    secret: str
    status: str


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def callback_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def origin(url: str) -> str:
    """`scheme://host[:port]` of a callback: what is shown and logged of it (its path and query are secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _entity(row: sqlite3.Row, url: str | None = None, secret: str | None = None) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "Id": row["id"],
        "Event": row["event"],
        "WebHookUri": url if url is not None else row["callback_host"] + "/…",
        "CreatedAt": row["created_at"],
        "Status": row["status"],
        "StatusReason": row["status_reason"],
        "FailingSince": row["failing_since"],
        "LastDeliveredAt": row["last_delivered_at"],
        "ApiKeyId": row["api_key_id"],
    }
    if secret is not None:
        entity["Secret"] = secret
    return entity


def subscribe(
    db: Database, box: SecretBox, actor: Actor, api_key_id: str, event: str, callback_url: str
) -> tuple[dict[str, Any], bool]:
    """Register `callback_url` for `event` under this key; return (subscription, created).

    Subscribing the same callback to the same event with the same key again returns the existing one
    (reviving it if it was disabled), with its signing secret. Raises Forbidden for an actor who does not
    read everything: notifications carry every learner's data.
    """
    now = db.clock()
    digest = callback_hash(callback_url)
    with db.write() as conn:
        access.require_reads_all(actor, "subscribe to triggers")
        row = conn.execute(
            "SELECT * FROM webhook_subscriptions WHERE event = ? AND callback_hash = ? AND api_key_id = ?"
            " AND status != 'removed'",
            (event, digest, api_key_id),
        ).fetchone()
        if row is not None:
            if row["status"] == "disabled":
                conn.execute(
                    "UPDATE webhook_subscriptions SET status = 'active', status_reason = NULL, failing_since = NULL"
                    " WHERE id = ?",
                    (row["id"],),
                )
                events.record(conn, "WebhookEnabled", actor, now, {"SubscriptionId": row["id"], "Event": event})
                row = conn.execute("SELECT * FROM webhook_subscriptions WHERE id = ?", (row["id"],)).fetchone()
            return _entity(row, callback_url, box.open(row["secret_sealed"])), False
        sub_id = new_id()
        secret = new_secret()
        host = origin(callback_url)
        conn.execute(
            "INSERT INTO webhook_subscriptions (id, event, callback_url, callback_hash, callback_host,"
            " callback_sealed, secret_sealed, status, api_key_id, created_by, created_at)"
            " VALUES (?, ?, '', ?, ?, ?, ?, 'active', ?, ?, ?)",
            (
                sub_id,
                event,
                digest,
                host,
                box.seal(callback_url),
                box.seal(secret),
                api_key_id,
                actor.user_id,
                iso(now),
            ),
        )
        seq = events.record(
            conn, "WebhookSubscribed", actor, now, {"SubscriptionId": sub_id, "Event": event, "Origin": host}
        )
        conn.execute("UPDATE webhook_subscriptions SET since_seq = ? WHERE id = ?", (seq, sub_id))
        row = conn.execute("SELECT * FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone()
        return _entity(row, callback_url, secret), True


def _owned(row: sqlite3.Row | None, sub_id: str, actor: Actor, api_key_id: str | None) -> sqlite3.Row:
    if row is None or row["status"] == "removed":
        raise NotFound(f"no webhook subscription with id {sub_id!r}", target="Id")
    if not actor.is_admin and row["api_key_id"] != api_key_id:
        raise Forbidden("this subscription belongs to another API key; only its key or an administrator may use it")
    if not actor.reads_all and row["created_by"] != actor.user_id:
        # A learner acting through the flows' key must not read or end the flows' triggers.
        raise Forbidden(
            f"user '{actor.login_name or actor.user_id}' may not use this subscription: only administrators"
            " and its key acting as itself may"
        )
    return row


def get(db: Database, actor: Actor, api_key_id: str | None, sub_id: str) -> dict[str, Any]:
    """One live subscription (its callback shown without the query). NotFound once removed."""
    with db.read() as conn:
        row = conn.execute("SELECT * FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone()
        row = _owned(row, sub_id, actor, api_key_id)
        return _entity(row)


def list_all(
    db: Database,
    *,
    event: str | None = None,
    status: str | None = None,
    api_key_id: str | None = None,
    created_by: str | None = None,
) -> list[dict[str, Any]]:
    """Subscriptions, newest first, removed ones included when `status` asks for them; each filter that is
    not None keeps only the subscriptions with that value."""
    if status is not None and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}", target="Status")
    sql = "SELECT * FROM webhook_subscriptions WHERE 1=1"
    params: list[Any] = []
    for column, value in (("event", event), ("status", status), ("api_key_id", api_key_id), ("created_by", created_by)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    if status is None:
        sql += " AND status != 'removed'"
    with db.read() as conn:
        return [_entity(r) for r in conn.execute(sql + " ORDER BY created_at DESC", params)]


def delete(db: Database, actor: Actor, api_key_id: str | None, sub_id: str) -> None:
    """Remove a subscription and cancel what it had not been sent yet; NotFound once it is gone."""
    now = db.clock()
    with db.write() as conn:
        row = conn.execute("SELECT * FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone()
        row = _owned(row, sub_id, actor, api_key_id)
        remove_in(conn, row["id"], "unsubscribed (DELETE)", now, actor)


def remove_in(conn: sqlite3.Connection, sub_id: str, reason: str, now: datetime, actor: Actor = SYSTEM) -> None:
    """Mark removed inside the caller's transaction; pending deliveries and queued notifications end too."""
    row = conn.execute("SELECT event FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone()
    conn.execute(
        "UPDATE webhook_subscriptions SET status = 'removed', status_reason = ?, deleted_at = ? WHERE id = ?",
        (reason, iso(now), sub_id),
    )
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'cancelled', completed_at = ?, dead_reason = ?"
        " WHERE subscription_id = ? AND status IN ('pending', 'sending')",
        (iso(now), reason, sub_id),
    )
    conn.execute("DELETE FROM webhook_notifications WHERE subscription_id = ? AND delivery_id IS NULL", (sub_id,))
    events.record(
        conn, "WebhookUnsubscribed", actor, now, {"SubscriptionId": sub_id, "Event": row["event"], "Reason": reason}
    )


def disable_in(conn: sqlite3.Connection, sub_id: str, reason: str, now: datetime, *, batch: int = 100) -> None:
    """Stop delivering to a callback that has failed for too long; subscribing again revives it.

    Pending deliveries become dead letters, and so do the notifications still queued (in deliveries
    of `batch`, in order): nothing waits on a disabled subscription, and an operator can redeliver
    all of it, oldest first, once the callback works again.
    """
    why = f"subscription disabled: {reason}"
    conn.execute(
        "UPDATE webhook_subscriptions SET status = 'disabled', status_reason = ? WHERE id = ? AND status = 'active'",
        (reason, sub_id),
    )
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'dead', completed_at = ?, dead_reason = ?"
        " WHERE subscription_id = ? AND status = 'pending'",
        (iso(now), why, sub_id),
    )
    queued = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM webhook_notifications WHERE subscription_id = ? AND delivery_id IS NULL ORDER BY id",
            (sub_id,),
        )
    ]
    event = conn.execute("SELECT event FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone()[0]
    for part in chunks(queued, batch):
        delivery_id = new_id()
        conn.execute(
            "INSERT INTO webhook_deliveries (id, subscription_id, event, status, next_attempt_at, created_at,"
            " completed_at, dead_reason) VALUES (?, ?, ?, 'dead', ?, ?, ?, ?)",
            (delivery_id, sub_id, event, iso(now), iso(now), iso(now), why),
        )
        conn.execute(
            f"UPDATE webhook_notifications SET delivery_id = ?, held_by = NULL WHERE id IN ({marks(part)})",  # noqa: S608
            [delivery_id, *part],
        )
    events.record(conn, "WebhookDisabled", SYSTEM, now, {"SubscriptionId": sub_id, "Reason": reason})


def active_ids(conn: sqlite3.Connection, event: str) -> list[tuple[str, int]]:
    """(id, since_seq) of the active subscriptions to `event`: each hears of events after since_seq."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT id, since_seq FROM webhook_subscriptions WHERE event = ? AND status = 'active'", (event,)
        )
    ]


def targets(conn: sqlite3.Connection, box: SecretBox, ids: list[str]) -> dict[str, Target]:
    """Decrypted callback and secret of each subscription (whatever its status)."""
    out = {}
    for part in chunks(ids):
        for row in conn.execute(
            f"SELECT * FROM webhook_subscriptions WHERE id IN ({marks(part)})",  # noqa: S608
            part,
        ):
            out[row["id"]] = Target(
                row["id"], row["event"], box.open(row["callback_sealed"]), box.open(row["secret_sealed"]), row["status"]
            )
    return out


def seal_legacy(db: Database, box: SecretBox) -> int:
    """Encrypt callbacks stored in clear before migration 0004 and give them secrets; return how many.

    Runs at the start of `serve` and `worker`; after sealing anything it scrubs the database file.
    """
    with db.write() as conn:
        rows = conn.execute(
            "SELECT id, callback_url FROM webhook_subscriptions WHERE callback_sealed IS NULL AND callback_url != ''"
        ).fetchall()
        for row in rows:
            conn.execute(
                "UPDATE webhook_subscriptions SET callback_sealed = ?, secret_sealed = ?, callback_url = ''"
                " WHERE id = ?",
                (box.seal(row["callback_url"]), box.seal(new_secret()), row["id"]),
            )
    if rows:
        db.scrub()  # the clear URLs linger in free pages (and the dropped index's) and the WAL otherwise
    return len(rows)
