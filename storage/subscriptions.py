"""Webhook subscriptions: the registry behind the triggers' subscribe / Location / DELETE lifecycle."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage import events
from storage.db import Database, iso, new_id
from storage.errors import NotFound
from storage.models import Actor


def _entity(row: sqlite3.Row) -> dict[str, Any]:
    return {"Id": row["id"], "Event": row["event"], "WebHookUri": row["callback_url"], "CreatedAt": row["created_at"]}


def subscribe(
    db: Database, actor: Actor, api_key_id: str, event: str, callback_url: str
) -> tuple[dict[str, Any], bool]:
    """Register `callback_url` for `event` under this key; return (subscription, created).

    Subscribing the same callback to the same event with the same key again returns the existing one.
    """
    now = db.clock()
    with db.write() as conn:
        row = conn.execute(
            "SELECT * FROM webhook_subscriptions WHERE event = ? AND callback_url = ? AND api_key_id = ?"
            " AND deleted_at IS NULL",
            (event, callback_url, api_key_id),
        ).fetchone()
        if row is not None:
            return _entity(row), False
        sub_id = new_id()
        conn.execute(
            "INSERT INTO webhook_subscriptions (id, event, callback_url, api_key_id, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sub_id, event, callback_url, api_key_id, actor.user_id, iso(now)),
        )
        row = conn.execute("SELECT * FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone()
        # The callback URL is a bearer secret (SAS-signed): the log keeps only its host.
        host = callback_url.split("/")[2] if "//" in callback_url else ""
        events.record(conn, "WebhookSubscribed", actor, now, {"SubscriptionId": sub_id, "Event": event, "Host": host})
        return _entity(row), True


def get(db: Database, sub_id: str) -> dict[str, Any]:
    with db.read() as conn:
        row = conn.execute(
            "SELECT * FROM webhook_subscriptions WHERE id = ? AND deleted_at IS NULL", (sub_id,)
        ).fetchone()
    if row is None:
        raise NotFound(f"no webhook subscription with id {sub_id!r}", target="Id")
    return _entity(row)


def delete(db: Database, actor: Actor, sub_id: str) -> None:
    """Remove a subscription; raises NotFound once it is gone (DELETE is answered 404 the second time)."""
    now = db.clock()
    with db.write() as conn:
        row = conn.execute(
            "SELECT * FROM webhook_subscriptions WHERE id = ? AND deleted_at IS NULL", (sub_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no webhook subscription with id {sub_id!r}", target="Id")
        conn.execute("UPDATE webhook_subscriptions SET deleted_at = ? WHERE id = ?", (iso(now), sub_id))
        events.record(conn, "WebhookUnsubscribed", actor, now, {"SubscriptionId": sub_id, "Event": row["event"]})
