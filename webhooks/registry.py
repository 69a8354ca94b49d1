"""The subscription registry: which triggers exist, and subscribing a callback after checking it is safe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage import outbound, subscriptions
from storage.db import Database
from storage.errors import Invalid
from storage.models import Actor
from storage.secrets import SecretBox
from webhooks.payloads import TRIGGERS

# Every trigger: `POST /webhooks/subscribe/{Event}`. The first eleven are the LMS365 connector's.
EVENTS = tuple(dict.fromkeys(TRIGGERS.values()))


def subscribe(
    db: Database,
    box: SecretBox,
    actor: Actor,
    api_key_id: str,
    event: str,
    callback: Any,
    networks: Sequence[outbound.IPNetwork] = (),
    resolver: outbound.Resolve = outbound.resolve,
) -> tuple[dict[str, Any], bool]:
    """Subscribe a callback to an event; return (subscription, created). Raises Invalid for an unsafe URL."""
    if event not in EVENTS:
        raise Invalid(f"unknown event {event!r}; one of {', '.join(EVENTS)}", target="Event")
    url = outbound.check_url(callback, networks, resolver, field="WebHookUri")
    return subscriptions.subscribe(db, box, actor, api_key_id, event, url)
