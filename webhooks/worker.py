"""The delivery worker: events to notifications, notifications to signed POSTs, outcomes to the log.

One loop, three steps, each its own short SQLite transaction:

- **dispatch**: read events after the `webhooks` cursor; queue a notification per active
  subscription of the trigger each fires; move the cursor, all in one transaction.
- **assemble**: group due notifications into deliveries (storage/deliveries.py).
- **send**: claim due deliveries (leased), POST each concurrently with aiohttp, and record every
  outcome. A slow callback holds only its own task; the loop keeps claiming others.

Several workers (in `coursewire serve` processes or `coursewire worker`) can share one database:
the write lock serializes dispatch and claims, and leases keep a delivery with one worker at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from standardwebhooks.webhooks import Webhook

from storage import consumer, deliveries, leases, outbound, subscriptions
from storage.db import Database
from storage.deliveries import Claimed, Outcome
from storage.models import Event
from storage.secrets import SecretBox
from webhooks import payloads
from webhooks.config import DeliveryConfig

log = logging.getLogger("coursewire.webhooks")

CONSUMER = "webhooks"
RESPONSE_EXCERPT = 2048
# Power Platform answers a payload that does not match the trigger's schema with this code.
SCHEMA_MISMATCH = "TriggerInputSchemaMismatch"


def dispatch(db: Database, config: DeliveryConfig, *, limit: int = 500, max_notifications: int = 2000) -> int:
    """Turn the next events into queued notifications; return how many events were consumed.

    One transaction (storage.consumer.consume), ended after `limit` events or the event that brings the
    notifications queued to `max_notifications`, so a backlog with many subscribers never holds the write lock
    for long.
    """
    now = db.clock()
    due = now + timedelta(seconds=config.batch_window)

    def handle(conn: sqlite3.Connection, batch: Sequence[Event]) -> int:
        subscribers: dict[str, list[tuple[str, int]]] = {}
        queued = consumed = 0
        for event in batch:
            consumed += 1
            built = payloads.notification(event)
            if built is None:
                continue
            trigger, item = built
            if trigger not in subscribers:
                subscribers[trigger] = subscriptions.active_ids(conn, trigger)
            if not subscribers[trigger]:
                continue
            item, problems = payloads.conform(trigger, item)
            if problems:  # a bug, never the caller's doing: keep the pipeline moving and say so loudly
                log.error(
                    "event %s (%s) makes an invalid %s notification: %s", event.seq, event.type, trigger, problems
                )
                continue
            key = payloads.entity_key(event)
            for sub_id, since in subscribers[trigger]:
                if event.seq > since:
                    deliveries.enqueue(conn, sub_id, event.seq, key, item, now, due)
                    queued += 1
            if queued >= max_notifications:
                break
        return consumed

    return consumer.consume(db, CONSUMER, handle, limit=limit)


def backlog(db: Database) -> int:
    """Events written but not yet dispatched."""
    return consumer.backlog(db, CONSUMER)


class Worker:
    """Delivers webhook notifications from one database; see the module docstring.

    `tick()` runs each step once and starts sends without waiting for them; `drain()` waits for the
    sends in flight and records them. Tests drive those with an injected clock; `run()` loops them.
    """

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        config: DeliveryConfig,
        *,
        owner: str | None = None,
        rng: Callable[[], float] = random.random,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        self.db = db
        self.box = box
        self.config = config
        # host:pid:random, so a restarted worker can tell the leases of dead processes on its host.
        self.owner = owner or leases.new_owner()
        self.rng = rng
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[Outcome]] = set()
        self._done: list[Outcome] = []
        self._wake = asyncio.Event()
        self.busy = False  # events are still waiting to be dispatched after the last tick

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        released = deliveries.release_abandoned(self.db, leases.host_identity(), leases.alive)
        if released:
            log.warning("took back %d deliveries leased by workers of this host that are no longer running", released)
        if self._session is None:
            self._session = outbound.guarded_session(
                self.config.allowed_networks,
                user_agent="coursewire-webhooks/1",
                timeout=self.config.timeout,
                limit=self.config.concurrency,
                resolver=self._resolver,
            )

    async def close(self) -> None:
        await self.drain()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def tick(self) -> int:
        """Dispatch, assemble, record finished sends and start due ones; return how many were started.

        A read first tells which steps have anything to do, so an idle worker polls without taking
        the write lock the API's requests need. One dispatch per tick: a backlog of events is worked
        through between sends (`busy` says more is waiting), not before the first of them.
        """
        self.busy = False
        self._record_done()
        with self.db.read():  # one snapshot, and an idle round takes no write lock
            waiting, claimable = deliveries.due(self.db)
            undispatched = backlog(self.db)
        if undispatched:
            consumed = dispatch(self.db, self.config)
            self.busy = consumed > 0 and backlog(self.db) > 0
            waiting = waiting or consumed > 0
        if waiting:
            created = deliveries.assemble(self.db, batch=self.config.batch_window > 0, max_batch=self.config.max_batch)
            claimable = claimable or created > 0
        room = self.config.concurrency - len(self._inflight)
        claimed = deliveries.claim(self.db, self.owner, room, self.config.lease) if room > 0 and claimable else []
        if claimed:
            try:
                targets = self._targets(claimed)
            except Exception:  # the claims are attempts now: record them as failed, on the schedule
                log.exception("cannot read the callbacks of %d claimed deliveries", len(claimed))
                error = "coursewire could not decrypt the callback (is COURSEWIRE_SECRET_KEY the key that sealed it?)"
                started = self.db.clock()
                self._done += [self._failure(c, started, None, None, error, 0.0) for c in claimed]
                return 0
            for c in claimed:
                task = asyncio.get_running_loop().create_task(self._send(c, targets.get(c.subscription_id)))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
        return len(claimed)

    def _targets(self, claimed: list[Claimed]) -> dict[str, subscriptions.Target]:
        with self.db.read() as conn:
            return subscriptions.targets(conn, self.box, sorted({c.subscription_id for c in claimed}))

    def _finished(self, task: asyncio.Task[Outcome]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._done.append(task.result())
        self._wake.set()

    def _record_done(self) -> None:
        if self._done:
            done, self._done = self._done, []
            try:
                deliveries.record(self.db, done, disable_after=timedelta(seconds=self.config.disable_after))
            except BaseException:
                self._done = done + self._done  # recorded next round: an unrecorded send would go again
                raise

    async def drain(self) -> None:
        """Wait for every send in flight, then record them."""
        while self._inflight:
            await asyncio.wait(set(self._inflight))
        self._record_done()

    async def run_until_idle(self, *, rounds: int = 100, flush: bool = False) -> None:
        """Tick and drain until nothing is due at the current (injected) time: for tests and the CLI.

        `flush` ends batch windows at once (`worker --once`: no later round would send what waits in
        them); retries stay scheduled.
        """
        while True:
            started = self.tick()
            await self.drain()
            if flush and deliveries.flush_windows(self.db):
                continue
            if not started and not backlog(self.db):
                return
            if not self.busy:  # working through a backlog of events is progress; anything else counts
                rounds -= 1
                if rounds <= 0:
                    raise RuntimeError("deliveries kept falling due: is the clock moving?")

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, polling every `poll_interval` seconds while idle."""
        await self.start()
        loop = asyncio.get_running_loop()
        stopper = loop.create_task(stop.wait())
        stopper.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                self._wake.clear()  # sends finishing from here on wake the next round (they call back only at awaits)
                try:
                    self.tick()
                except Exception:
                    log.exception("webhook worker step failed; retrying")
                    self.busy = False  # wait a poll interval before trying again
                if self.busy:
                    await asyncio.sleep(0)  # let sends progress, then keep working through the backlog
                    continue
                timer = loop.call_later(self.config.poll_interval, self._wake.set)
                await self._wake.wait()
                timer.cancel()
        finally:
            stopper.cancel()
            await self.close()

    def body(self, claimed: Claimed) -> dict[str, Any]:
        return {
            "Id": claimed.id,
            "Attempt": claimed.attempt,
            "Properties": {"SubscriptionId": claimed.subscription_id, "Event": claimed.event},
            "Notifications": claimed.notifications,
        }

    async def _send(self, claimed: Claimed, target: subscriptions.Target | None) -> Outcome:
        started = self.db.clock()
        try:
            return await self._attempt(claimed, target, started)
        except Exception as exc:  # a bug, or an answer nobody foresaw: a failed attempt, retried on the schedule
            log.exception("delivery %s attempt %d failed inside coursewire", claimed.id, claimed.attempt)
            return self._failure(claimed, started, None, None, f"{type(exc).__name__} inside coursewire", 0.0)

    async def _attempt(self, claimed: Claimed, target: subscriptions.Target | None, started: datetime) -> Outcome:
        if target is None or target.status != "active":
            return self._outcome(claimed, started, "dead", error="the subscription is no longer active")
        payload = json.dumps(self.body(claimed), separators=(",", ":"), ensure_ascii=False)
        signed_at = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": claimed.id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": Webhook(target.secret).sign(claimed.id, signed_at, payload),
        }
        address = outbound.literal(urlsplit(target.url).hostname or "")
        if address is not None and not outbound.allowed(address, self.config.allowed_networks):
            return self._failure(claimed, started, None, None, f"{address} is not a public address", 0.0)
        assert self._session is not None
        t0 = time.perf_counter()
        try:
            # The callback as registered, byte for byte: a flow's signed query must reach it unchanged.
            url = outbound.request_url(target.url)
            async with self._session.post(url, data=payload.encode(), headers=headers, allow_redirects=False) as r:
                text = (await r.content.read(RESPONSE_EXCERPT)).decode("utf-8", "replace")
                status, retry = r.status, r.headers.get("Retry-After")
        except TimeoutError:
            return self._failure(claimed, started, None, None, f"timed out after {self.config.timeout:g} s", t0)
        except outbound.BlockedAddress as exc:
            return self._failure(claimed, started, None, None, str(exc), t0)
        except aiohttp.ClientConnectorError as exc:
            blocked = exc.os_error if isinstance(exc.os_error, outbound.BlockedAddress) else None
            error = str(blocked) if blocked else outbound.describe(exc, target.url)
            return self._failure(claimed, started, None, None, error, t0)
        except (aiohttp.ClientError, OSError) as exc:
            return self._failure(claimed, started, None, None, outbound.describe(exc, target.url), t0)
        latency = (time.perf_counter() - t0) * 1000
        if 200 <= status < 300:
            return self._outcome(claimed, started, "delivered", status=status, latency=latency, response=text)
        if status in (404, 410):
            reason = f"the callback answered {status}: the flow or endpoint is gone"
            return self._outcome(claimed, started, "gone", status=status, latency=latency, response=text, reason=reason)
        if status == 400 and SCHEMA_MISMATCH in text:
            reason = (
                "the callback rejected the payload as not matching the trigger's schema (TriggerInputSchemaMismatch)"
            )
            return self._outcome(claimed, started, "dead", status=status, latency=latency, response=text, reason=reason)
        return self._failure(claimed, started, status, text, f"HTTP {status}", t0, retry)

    def _failure(
        self,
        claimed: Claimed,
        started: datetime,
        status: int | None,
        response: str | None,
        error: str,
        t0: float,
        retry_after_header: str | None = None,
    ) -> Outcome:
        latency = (time.perf_counter() - t0) * 1000 if t0 else None
        schedule = self.config.retry_schedule
        if claimed.attempt > len(schedule):
            reason = f"gave up after {claimed.attempt} attempts; last: {error}"
            return self._outcome(
                claimed, started, "dead", status=status, latency=latency, response=response, error=error, reason=reason
            )
        base = schedule[claimed.attempt - 1]
        delay = base * (1 + self.config.jitter * (2 * self.rng() - 1))
        asked = outbound.retry_after(retry_after_header, started)
        if asked is not None:
            delay = max(delay, min(asked, 86400.0))
        return self._outcome(
            claimed,
            started,
            "retry",
            status=status,
            latency=latency,
            response=response,
            error=error,
            next_attempt_at=self.db.clock() + timedelta(seconds=delay),
        )

    def _outcome(self, claimed: Claimed, started: datetime, result: Any, **kw: Any) -> Outcome:
        return Outcome(
            delivery_id=claimed.id,
            owner=self.owner,
            attempt=claimed.attempt,
            started_at=started,
            result=result,
            status_code=kw.get("status"),
            latency_ms=kw.get("latency"),
            response=kw.get("response"),
            error=kw.get("error"),
            next_attempt_at=kw.get("next_attempt_at"),
            reason=kw.get("reason"),
        )
