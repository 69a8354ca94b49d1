"""Handlers for the webhook triggers: subscribe (201 + Location), inspect, list and DELETE subscriptions,
and, for administrators, the delivery log and redelivery of dead letters."""

from __future__ import annotations

import sys
from typing import Any

from connector import context
from connector.handlers import key
from storage import access, deliveries, subscriptions
from webhooks import registry


def _location(sub_id: str) -> str:
    return f"{context.base_url()}/webhooks/subscriptions({sub_id})"


def _subscribe(event: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    services = context.services()
    sub, created = registry.subscribe(
        services.db,
        services.box,
        context.actor(),
        context.api_key().id,
        event,
        body.get("WebHookUri"),
        services.settings.delivery.allowed_networks,
        services.resolve,
    )
    location = _location(sub["Id"])
    return {**sub, "Location": location}, 201 if created else 200, {"Location": location}


def _trigger(event: str) -> Any:
    def handler(body: dict[str, Any]) -> Any:
        return _subscribe(event, body)

    handler.__name__ = handler.__qualname__ = event
    handler.__doc__ = f"Subscribe a callback to {event}."
    return handler


# One handler per trigger, named as connexion resolves its operationId (CourseEnrollment -> course_enrollment).
for _event in registry.EVENTS:
    _name = "".join(f"_{c.lower()}" if c.isupper() else c for c in _event).lstrip("_")
    setattr(sys.modules[__name__], _name, _trigger(_event))


def get_webhook_subscription(Id: str) -> dict[str, Any]:
    sub = subscriptions.get(context.services().db, context.actor(), context.api_key().id, key(Id))
    return {**sub, "Location": _location(sub["Id"])}


def get_webhook_subscriptions(Event: str | None = None, Status: str | None = None) -> dict[str, Any]:
    actor = context.actor()
    own_key = None if actor.is_admin else context.api_key().id
    # Users who do not read everything see only what they subscribed themselves (nothing, today).
    own_user = None if actor.reads_all else actor.user_id
    subs = subscriptions.list_all(
        context.services().db, event=Event, status=Status, api_key_id=own_key, created_by=own_user
    )
    return {"value": [{**s, "Location": _location(s["Id"])} for s in subs]}


def delete_webhook_subscription(Id: str) -> tuple[None, int]:
    subscriptions.delete(context.services().db, context.actor(), context.api_key().id, key(Id))
    return None, 204


def get_webhook_deliveries(
    Status: str | None = None, SubscriptionId: str | None = None, Event: str | None = None, top: int = 50
) -> dict[str, Any]:
    access.require_admin(context.actor(), "list webhook deliveries")
    rows = deliveries.list_deliveries(
        context.services().db, status=Status, subscription_id=SubscriptionId, event=Event, limit=top
    )
    return {"value": rows}


def get_webhook_delivery(Id: str) -> dict[str, Any]:
    access.require_admin(context.actor(), "read webhook deliveries")
    return deliveries.get(context.services().db, key(Id))


def redeliver_webhook_delivery(Id: str) -> dict[str, Any]:
    return deliveries.redeliver(context.services().db, context.actor(), key(Id))
