"""What the delivery tests do again and again: subscribe through the API, and run a worker until idle."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from support import Api

from storage.secrets import SecretBox
from webhooks.worker import Worker


def subscribe(api: Api, event: str, url: str) -> dict[str, Any]:
    response = api.post(f"/webhooks/subscribe/{event}", json={"WebHookUri": url})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def make_worker(api: Api, **config: Any) -> Worker:
    """A worker on the test's database and settings (jitter fixed at its middle: retries fall due on the schedule)."""
    settings = dataclasses.replace(api.settings.delivery, **config)
    return Worker(api.db, SecretBox.for_database(api.db.path), settings, rng=lambda: 0.5)


def deliver(worker: Worker) -> None:
    """Dispatch, send and record everything due at the injected clock's time."""

    async def go() -> None:
        async with worker:
            await worker.run_until_idle()

    asyncio.run(go())
