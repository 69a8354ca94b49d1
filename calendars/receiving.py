"""The public endpoints under `/calendar/notifications/` where Microsoft Graph and Google tell the two-way mirror that a
connected calendar changed.

They take only what they expect, answer within the providers' deadlines, and do no provider I/O: a notification
whose channel is known and whose secret matches marks that connection's check due (storage.calendar_watch.notified,
one short write per connection); the worker reads the changes after. Everything else is ignored (counted in one
WARNING line, never with the secret) but still acknowledged, so a stranger learns nothing and a provider does not
retry what we will never accept.

| route | what it does |
|---|---|
| POST /calendar/notifications/microsoft365 | `?validationToken=`: echoed (text/plain); else a notification batch: 202 |
| POST /calendar/notifications/google | an events.watch push (X-Goog-* headers, no body): 200 |

Other methods answer 405 with Allow, other paths under /calendar/notifications 404; errors have the OData error
body {"error": {"code", "message", "target"}}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from storage import calendar_watch
from storage.db import Database

log = logging.getLogger(__name__)

PREFIX = "/calendar/notifications"
MICROSOFT = PREFIX + "/microsoft365"
GOOGLE = PREFIX + "/google"

# Graph's validation token is opaque text of a few hundred characters; anything far longer is not Graph [MS6].
MAX_VALIDATION_TOKEN = 1024
# A Graph notification batch without resource data is small (about 1 KB an entry); 1 MiB and 1,000 entries leave
# room for what Graph sends and nothing for a flood [MS5].
MAX_GRAPH_BODY = 1 << 20
MAX_ENTRIES = 1000
# Graph's clientState is at most 128 characters [MS5]; subscription ids are GUIDs. Google's channel id is at most
# 64 characters, its token at most 256 [GO2]. Longer values are refused before any lookup.
MAX_ID = 256
MAX_SECRET = 256
# Google sends no body [GO2]; a little is read and dropped, more is refused.
MAX_GOOGLE_BODY = 64 * 1024

CODES = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalServerError",
}
# Graph lifecycle events [MS7] -> (full listing, renew/recreate the subscription).
LIFECYCLE = {
    "reauthorizationRequired": (False, True),
    "subscriptionRemoved": (True, True),
    "missed": (True, False),
}
GOOGLE_CHANGES = frozenset({"exists", "not_exists"})


class Refused(Exception):
    """A request refused with `status` and the OData error body naming `target` (a field, header or parameter)."""

    def __init__(self, status: int, message: str, target: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.target, self.headers = status, message, target, headers or {}


def error_response(
    status: int, message: str, target: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """The OData error body, as connector/errors.py renders it (calendars/ does not import connector/)."""
    error: dict[str, Any] = {"code": CODES.get(status, "Error"), "message": message}
    if target:
        error["target"] = target
    body = json.dumps({"error": error}, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


@dataclass
class Due:
    """What one request asks of one connection: a check, a full listing, a new channel."""

    full: bool = False
    rewatch: bool = False


class NotificationReceiver:
    """The ASGI app of `/calendar/notifications/...` (see the module docstring).

    db: the database; clock: the time a notification arrived (default db.clock, which tests inject).
    """

    def __init__(self, db: Database, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.clock = clock or db.clock
        self.ignored = IgnoredLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except Refused as exc:
            response = error_response(exc.status, exc.message, exc.target, exc.headers)
        except Exception:
            log.exception("calendar notification %s %s failed", scope.get("method"), scope.get("path", "")[:100])
            response = error_response(500, "The notification could not be taken; send it again.")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        path = request.scope["path"]
        if path not in (MICROSOFT, GOOGLE):
            raise Refused(404, "There is no notification endpoint at this address.")
        if request.scope["method"] != "POST":
            raise Refused(405, "This address answers POST only.", headers={"Allow": "POST"})
        if path == MICROSOFT:
            return await self._microsoft(request)
        return await self._google(request)

    # -- Microsoft Graph ------------------------------------------------------------------------------------

    async def _microsoft(self, request: Request) -> Response:
        """Graph's validation handshake (at once, no database) or a batch of change and lifecycle notifications
        (202 with no body, after one write per connection concerned) [MS5][MS6][MS7]."""
        token = request.query_params.get("validationToken")
        if token is not None:
            # Graph sends it for notificationUrl and lifecycleNotificationUrl alike and waits 10 s [MS6].
            if len(token) > MAX_VALIDATION_TOKEN:
                raise Refused(
                    400, f"validationToken is longer than {MAX_VALIDATION_TOKEN} characters.", "validationToken"
                )
            return Response(token, status_code=200, media_type="text/plain")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refused(415, "Send the notifications as application/json.", "Content-Type")
        body = await _read(request, MAX_GRAPH_BODY)
        entries = parse_graph(body)
        due: dict[str, Due] = {}
        ignored = {"unknown channel": 0, "wrong secret": 0}
        await asyncio.to_thread(self._graph_lookup, entries, due, ignored)
        await self._mark(due)
        self.ignored.note("Microsoft365", ignored)
        return Response(status_code=202)

    def _graph_lookup(self, entries: list[GraphEntry], due: dict[str, Due], ignored: dict[str, int]) -> None:
        for entry in entries:
            watch = calendar_watch.by_channel(self.db, entry.subscription_id)
            if watch is None or watch.provider != "Microsoft365":
                ignored["unknown channel"] += 1
                continue
            if not calendar_watch.secret_matches(watch.secret_hash, entry.client_state):
                ignored["wrong secret"] += 1
                continue
            wanted = due.setdefault(watch.connection_id, Due())
            full, rewatch = LIFECYCLE.get(entry.lifecycle_event or "", (False, False))
            wanted.full |= full
            wanted.rewatch |= rewatch

    # -- Google -----------------------------------------------------------------------------------------------

    async def _google(self, request: Request) -> Response:
        """An events.watch push: `sync` (the first message of a channel) changes nothing, `exists` / `not_exists`
        mark the check due, when the channel, its token and its resource id are ours [GO2]. 200, no body."""
        headers = request.headers
        channel_id = _header(headers.get("x-goog-channel-id"), "X-Goog-Channel-ID", MAX_ID, required=True)
        state = _header(headers.get("x-goog-resource-state"), "X-Goog-Resource-State", MAX_ID, required=True)
        resource_id = _header(headers.get("x-goog-resource-id"), "X-Goog-Resource-ID", MAX_ID)
        token = _header(headers.get("x-goog-channel-token"), "X-Goog-Channel-Token", MAX_SECRET)
        number = _header(headers.get("x-goog-message-number"), "X-Goog-Message-Number", 20)
        if number is not None and not number.isdigit():
            raise Refused(400, "X-Goog-Message-Number must be a whole number.", "X-Goog-Message-Number")
        await _read(request, MAX_GOOGLE_BODY)
        assert channel_id is not None and state is not None
        ignored = {"unknown channel": 0, "wrong secret": 0}
        watch = await asyncio.to_thread(calendar_watch.by_channel, self.db, channel_id)
        if watch is None or watch.provider != "Google" or resource_id is None or resource_id != watch.resource_id:
            ignored["unknown channel"] += 1
        elif not calendar_watch.secret_matches(watch.secret_hash, token):
            ignored["wrong secret"] += 1
        elif state in GOOGLE_CHANGES:
            await self._mark({watch.connection_id: Due()})
        elif state != "sync":
            log.info("calendar notification from Google with resource state %r ignored", state[:40])
        self.ignored.note("Google", ignored)
        return Response(status_code=200)

    # -- shared -----------------------------------------------------------------------------------------------

    async def _mark(self, due: dict[str, Due]) -> None:
        if not due:
            return
        now = self.clock()

        def mark() -> None:
            for connection_id, wanted in due.items():
                calendar_watch.notified(self.db, connection_id, now, full=wanted.full, rewatch=wanted.rewatch)

        await asyncio.to_thread(mark)


@dataclass(frozen=True)
class GraphEntry:
    """One entry of a Graph notification batch: a change (`lifecycle_event` None) or a lifecycle event."""

    subscription_id: str
    client_state: str | None
    lifecycle_event: str | None


def parse_graph(body: bytes) -> list[GraphEntry]:
    """The entries of a Graph notification body `{"value": [...]}` [MS5][MS7]: each has `subscriptionId`,
    `clientState` (absent: matches no secret) and either `changeType` (with `resource`, `resourceData`) or
    `lifecycleEvent`. At most MAX_ENTRIES. Raises Refused 400 naming the field that is wrong."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(400, "The body is not valid JSON.", "body") from None
    if not isinstance(document, dict) or not isinstance(document.get("value"), list):
        raise Refused(400, 'The body must be an object with a "value" array of notifications.', "value")
    value = document["value"]
    if len(value) > MAX_ENTRIES:
        raise Refused(400, f"value holds more than {MAX_ENTRIES} notifications.", "value")
    entries = []
    for i, item in enumerate(value):
        where = f"value[{i}]"
        if not isinstance(item, dict):
            raise Refused(400, "Each notification must be an object.", where)
        subscription_id = _field(item, "subscriptionId", where, MAX_ID, required=True)
        client_state = _field(item, "clientState", where, MAX_SECRET)
        lifecycle_event = _field(item, "lifecycleEvent", where, MAX_ID)
        if lifecycle_event is None and _field(item, "changeType", where, MAX_ID) is None:
            raise Refused(400, "A notification needs changeType or lifecycleEvent.", f"{where}.changeType")
        assert subscription_id is not None
        entries.append(GraphEntry(subscription_id, client_state, lifecycle_event))
    return entries


def _field(item: dict[str, Any], name: str, where: str, limit: int, *, required: bool = False) -> str | None:
    value = item.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Refused(400, f"{name} must be text of 1 to {limit} characters.", f"{where}.{name}")
    return value


def _header(value: str | None, name: str, limit: int, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise Refused(400, f"The {name} header is missing.", name)
        return None
    if len(value) > limit:
        raise Refused(400, f"The {name} header is longer than {limit} characters.", name)
    return value


async def _read(request: Request, limit: int) -> bytes:
    """The body, at most `limit` bytes (a declared or streamed excess: Refused 413)."""
    too_large = Refused(413, f"This address takes at most {limit:,} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


class IgnoredLog:
    """Counts the notifications ignored (unknown channel, wrong secret, ...) by provider and reason and says so
    in one WARNING line at most every `every` seconds, so a flood of forged ones cannot flood the log. Ids and
    secrets stay out: they are the sender's to choose."""

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.counts: dict[tuple[str, str], int] = {}
        self.said_at: float | None = None

    def note(self, provider: str, ignored: dict[str, int]) -> None:
        for why, n in ignored.items():
            if n:
                self.counts[(provider, why)] = self.counts.get((provider, why), 0) + n
        now = self.clock()
        if self.counts and (self.said_at is None or now - self.said_at >= self.every):
            log.warning(
                "calendar notifications ignored%s: %s",
                "" if self.said_at is None else f" in the last {now - self.said_at:.0f} s",
                ", ".join(f"{p} {why}: {n}" for (p, why), n in sorted(self.counts.items())),
            )
            self.counts.clear()
            self.said_at = now
