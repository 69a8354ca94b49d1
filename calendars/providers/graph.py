"""Microsoft 365 / Outlook.com calendars through Microsoft Graph v1.0 (delegated access, one mailbox).

Protocol facts (../shared/reference/notes/calendar-sync.md §2.1, §2.5): events are created with `POST
/me/events` (or `/me/calendars/{id}/events`, `/users/{id}/...`) carrying a `transactionId`, so a retried create
returns the event the first attempt made [MS2-b]; they are tagged with a single-value extended property
`String {GRAPH_PROPERTY_SET} Name coursewire-key` [MS13]; times go as `dateTimeTimeZone` with a Windows zone
name [MS3]; every request sends `Prefer: IdType="ImmutableId"` so stored ids survive the event being moved
[MS16]; several writes go in one JSON `$batch` of at most 20 requests, each inner request answered (and
throttled) on its own [MS11]; Outlook allows 4 concurrent requests per mailbox and app [MS11-b].

Two-way (calendars.model.ChangeFeed, Watchable): changes come from `calendarView/delta` over a fixed window, paged
with `Prefer: odata.maxpagesize`, deletions as `@removed`, an expired token as `410 Gone` or `syncStateNotFound`
[MS10][MS10-b]; pushes come from a change-notification subscription on the calendar's events, with `clientState`
(at most 128 characters) and a lifetime of at most 10,080 minutes, renewed with PATCH [MS4][MS5][MS7][MS15].
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
from yarl import URL

from calendars.model import (
    GRAPH_PROPERTY_SET,
    TAG,
    AuthorizationLost,
    CalendarGone,
    CalendarItem,
    Change,
    Changes,
    CursorExpired,
    EventGone,
    ProviderError,
    Rejected,
    RemoteEvent,
    Throttled,
    TokenSource,
    Unavailable,
    Watch,
    Written,
)
from calendars.timezones import canonical_zone, iana_zone, windows_zone
from storage.outbound import retry_after

# The extended property that carries our key, as Graph names it: `String {GUID} Name <name>` [MS13].
PROPERTY_ID = f"String {GRAPH_PROPERTY_SET} Name {TAG}"
# Outlook: at most 4 concurrent requests per (app, mailbox) [MS11-b]; a $batch holds up to 4 of them.
MAILBOX_CONCURRENCY = 4
# JSON batching: at most 20 requests in one $batch [MS11].
BATCH_LIMIT = 20
PREFER_IMMUTABLE = 'IdType="ImmutableId"'
_EXPAND = quote(f"singleValueExtendedProperties($filter=id eq '{PROPERTY_ID}')", safe="()$=',")
_STEPS = 4  # create, a PATCH after a transactionId answer, a create after that event was deleted, one spare
# An answer larger than this is refused (a page of 100 events with HTML bodies is well under it).
MAX_ANSWER_BYTES = 8 * 1024 * 1024
# calendarView/delta: events per page (`Prefer: odata.maxpagesize`) and pages per `changes` call [MS10].
DELTA_PAGE_SIZE = 100
DELTA_PAGE_CAP = 20
# The delta window, fixed when a listing starts: from a day ago to three years ahead.
DELTA_PAST = timedelta(days=1)
DELTA_YEARS = 3
# Error codes of an expired delta token besides `410 Gone` [MS10-b].
EXPIRED_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
# Outlook event subscriptions live at most 10,080 minutes [MS4]; ask a little less so clock skew cannot push a
# request over the limit (Graph refuses it, it does not shorten it).
SUBSCRIPTION_LIFETIME = timedelta(minutes=10_070)
CLIENT_STATE_LIMIT = 128  # [MS5]


@dataclass(frozen=True)
class Reply:
    """One Graph answer (outer, or one inner response of a $batch): status, headers with lower-case names, the
    JSON object of the body ({} when empty or not an object)."""

    status: int
    headers: Mapping[str, str]  # keys in lower case
    body: dict[str, Any]


class GraphTransport(Protocol):
    """How a GraphProvider's requests reach Graph: `DirectTransport` sends each as its own HTTP request with the
    person's delegated token; calendars.tenant's `MailboxTransport` queues them into `$batch` calls shared by
    every mailbox of a tenant (application permissions). `batches` says whether the transport groups requests
    into `$batch` itself (then the provider never builds a `$batch` of its own)."""

    batches: bool

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None, *, slots: int = 1, prefer: str = ...
    ) -> Reply:
        """Send one request (`path` relative to the version root, leading slash, escaped) and return the
        answer, whatever its status; a 401 is retried once after refreshing the token, a second one raises
        AuthorizationLost. Raises Unavailable (network, unreadable or oversized answer), AuthorizationLost,
        Throttled (a transport that waits out throttling itself and gave up)."""
        ...


@dataclass(frozen=True)
class _Op:
    """One write request for one item: what to send, and what we last knew of its event."""

    index: int
    item: CalendarItem
    method: str  # POST | PATCH
    path: str  # relative to the version root, with a leading slash (as $batch wants it)
    body: dict[str, Any]
    written: Written | None  # the event a PATCH addresses / a POST replaces
    step: int = 1
    recreate: bool = True  # False: a PATCH answered 404 is EventGone, not a new event


class GraphProvider:
    """One person's Microsoft calendar (calendars.model.Provider) through Microsoft Graph.

    session: the shared aiohttp session (not closed here); base_url: Graph's version root
    (`https://graph.microsoft.com/v1.0`, COURSEWIRE_GRAPH_URL); tokens: the connection's OAuth tokens;
    calendar: a calendar id, None for the mailbox's default calendar; mailbox: `me` (delegated access) or a
    user id / UPN (`/users/{id}`, tenant-wide application access, calendars.tenant); timeout: seconds per
    request; clock: now as an aware datetime, for Retry-After given as an HTTP date; transport: how requests
    are sent (default: a DirectTransport with `tokens`, holding at most 4 requests at once [MS11-b]).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        tokens: TokenSource,
        calendar: str | None = None,
        *,
        mailbox: str = "me",
        timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
        transport: GraphTransport | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._tokens = tokens
        self._owner = "/me" if mailbox == "me" else f"/users/{quote(mailbox, safe='@')}"
        self._events = (
            f"{self._owner}/events"
            if calendar is None
            else f"{self._owner}/calendars/{quote(calendar, safe='')}/events"
        )
        self._calendar = (
            f"{self._owner}/calendar" if calendar is None else f"{self._owner}/calendars/{quote(calendar, safe='')}"
        )
        # calendarView/delta of the default calendar is `/me/calendarView/delta` [MS10].
        self._view = f"{self._owner}/calendarView" if calendar is None else f"{self._calendar}/calendarView"
        self._clock = clock or (lambda: datetime.now(UTC))
        self._transport: GraphTransport = transport or DirectTransport(session, self._base, tokens, timeout=timeout)
        self._calendar_id: str | None = None  # the connected calendar's id, once check_calendar read it

    async def put(self, item: CalendarItem, written: Written | None, *, recreate: bool = True) -> Written:
        """Create the item's event (POST with its transactionId) or update it (PATCH by id); an event the person
        deleted (PATCH 404) is created again, or with `recreate` False raises EventGone. A create answered with
        an older copy of the event (a retry after a lost answer, the item changed since) is brought up to date
        with a PATCH. Raises Throttled, Unavailable, AuthorizationLost, Rejected (Graph's error code and
        message) or EventGone."""
        op = self._first_op(0, item, written, recreate)
        for _ in range(_STEPS):
            reply = await self._call(op.method, op.path, op.body)
            outcome = self._step(op, reply)
            if isinstance(outcome, Written):
                return outcome
            if isinstance(outcome, ProviderError):
                raise outcome
            op = outcome
        raise Unavailable("Graph: the event changed under every write; trying again later")

    async def put_many(
        self, batch: Sequence[tuple[CalendarItem, Written | None]], *, recreate: bool = True
    ) -> list[Written | ProviderError]:
        """`put` for several items, as JSON `$batch` requests of at most 20 (relative URLs, one result per inner
        request). An inner 429 becomes Throttled with the inner Retry-After for that item only; a follow-up a
        `put` would make (create after a PATCH 404, PATCH after an older copy) goes in the next round. Nothing
        is retried beyond that: the caller retries what failed. Results are in the order of `batch`."""
        results: list[Written | ProviderError | None] = [None] * len(batch)
        pending = [self._first_op(i, item, written, recreate) for i, (item, written) in enumerate(batch)]
        refreshed = False
        while pending:
            chunks = [pending[i : i + BATCH_LIMIT] for i in range(0, len(pending), BATCH_LIMIT)]
            answers = await asyncio.gather(*(self._send_ops(chunk) for chunk in chunks))
            pending = []
            unauthorized = []
            for chunk, answer in zip(chunks, answers, strict=True):
                for op in chunk:
                    reply = answer if isinstance(answer, ProviderError) else answer.get(op.index)
                    if reply is None:
                        results[op.index] = Unavailable("Graph: the $batch answer has no response for this request")
                    elif isinstance(reply, ProviderError):
                        results[op.index] = reply
                    elif reply.status == 401:
                        unauthorized.append(op)
                    else:
                        outcome = self._step(op, reply)
                        if isinstance(outcome, _Op) and outcome.step > _STEPS:
                            outcome = Unavailable("Graph: the event changed under every write; trying again later")
                        if isinstance(outcome, _Op):
                            pending.append(outcome)
                        else:
                            results[op.index] = outcome
            if unauthorized:
                if refreshed:
                    for op in unauthorized:
                        results[op.index] = AuthorizationLost("Graph refused the access token after a refresh (401)")
                else:
                    try:
                        await self._tokens.refresh()
                    except ProviderError as exc:
                        for op in unauthorized:
                            results[op.index] = exc
                    else:
                        refreshed = True
                        pending.extend(unauthorized)
        return [r if r is not None else Unavailable("Graph: no result") for r in results]

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        """DELETE the event by id; 404/410 (already gone) is success. Raises Throttled, Unavailable,
        AuthorizationLost or Rejected."""
        reply = await self._call("DELETE", self._event_path(written.provider_id), None)
        if reply.status in (200, 202, 204, 404, 410):
            return
        raise self._error(reply)

    async def get(self, written: Written, *, uid: str | None = None) -> RemoteEvent | None:
        """GET the event by id with our extended property expanded, then its calendar (`/events/{id}/calendar`);
        None when either is gone (404/410): an event deleted in Outlook is moved to Deleted Items, where its
        ImmutableId still finds it, but it is in no calendar [MS16]. An event moved to another calendar keeps its
        ImmutableId and is found there: `elsewhere` is set when its calendar is not the connected one (known
        once `check_calendar` ran on this provider; before that, False). Times come back as aware UTC datetimes.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected."""
        path = self._event_path(written.provider_id)
        reply = await self._call("GET", f"{path}?$expand={_EXPAND}", None)
        if reply.status in (404, 410):
            return None
        if reply.status != 200:
            raise self._error(reply)
        # An event deleted in Outlook goes to Deleted Items, where its ImmutableId still finds it: only an event
        # that is in a calendar (its `calendar` navigation property answers) is still there for the person.
        held = await self._call("GET", f"{path}/calendar?$select=id", None)
        if held.status in (404, 410):
            return None
        if held.status != 200:
            raise self._error(held)
        found = _remote(reply.body)
        held_in = held.body.get("id") if isinstance(held.body, dict) else None
        if self._calendar_id is not None and isinstance(held_in, str) and held_in != self._calendar_id:
            found = replace(found, elsewhere=True)
        return found

    # -- the change feed (calendars.model.ChangeFeed) ---------------------------------------------------------

    async def changes(self, cursor: str | None) -> Changes:
        """The calendar's events changed since `cursor` (a deltaLink or nextLink Graph gave), or every event of
        the window from a day ago to three years ahead when `cursor` is None, by `calendarView/delta` with
        `Prefer: odata.maxpagesize=100` [MS10]. At most 20 pages per call: then `more` is set and `cursor` is the
        nextLink to continue with; else `cursor` is the deltaLink. Each event is a Change by its (immutable) id,
        keyed when the answer carries our extended property (delta answers usually do not: the engine maps them
        by id); `@removed` entries are removals. Raises CursorExpired (410 Gone, `syncStateNotFound`, a cursor
        that is not a link to this Graph), CalendarGone (403/404 on the calendar), Throttled, Unavailable,
        AuthorizationLost or Rejected."""
        if cursor is None:
            now = self._clock().astimezone(UTC)
            start, end = now - DELTA_PAST, _years_later(now, DELTA_YEARS)
            path = f"{self._view}/delta?startDateTime={_query_time(start)}&endDateTime={_query_time(end)}"
        else:
            relative = self._relative(cursor)
            if relative is None:
                raise CursorExpired("Graph: the stored delta link does not point at this Graph endpoint")
            path = relative
        found: dict[str, Change] = {}  # by id, in first-seen order; a later page's version of an event wins
        prefer = f"{PREFER_IMMUTABLE}, odata.maxpagesize={DELTA_PAGE_SIZE}"
        linked = cursor is not None  # the request follows a link Graph gave, so a 410 is about its token
        for _ in range(DELTA_PAGE_CAP):
            reply = await self._call("GET", path, None, prefer=prefer)
            if reply.status != 200:
                raise self._feed_error(reply, linked=linked)
            for entry in reply.body.get("value") or []:
                change = _change(entry)
                if change is not None:
                    found.pop(change.provider_id, None)
                    found[change.provider_id] = change
            delta, following = reply.body.get("@odata.deltaLink"), reply.body.get("@odata.nextLink")
            if isinstance(delta, str) and delta:
                if self._relative(delta) is None:
                    raise Unavailable("Graph answered with a delta link to another endpoint")
                return Changes(list(found.values()), delta, full=cursor is None)
            if not isinstance(following, str) or not following:
                raise Unavailable("Graph answered a delta page with neither a nextLink nor a deltaLink")
            following_path = self._relative(following)
            if following_path is None:
                raise Unavailable("Graph answered with a next link to another endpoint")
            path, linked = following_path, True
        return Changes(list(found.values()), self._base + path, full=cursor is None, more=True)

    async def check_calendar(self) -> None:
        """GET the connected calendar: return when it exists and the token reaches it (its id is kept, for `get`
        to tell an event moved to another calendar). Raises CalendarGone (403/404/410), AuthorizationLost (401
        after a refresh), Throttled, Unavailable or Rejected."""
        reply = await self._call("GET", self._calendar, None)
        if reply.status == 200:
            held = reply.body.get("id") if isinstance(reply.body, dict) else None
            self._calendar_id = held if isinstance(held, str) else None
            return
        if reply.status in (403, 404, 410):
            code, message = graph_error(reply.body)
            raise CalendarGone(f"Graph {reply.status} on the calendar {code}: {message}")
        raise self._error(reply)

    async def reaches(self, written: Written) -> bool:
        """True: every calendar of a mailbox is read with the same token, and an event gone with a calendar the
        person deleted went with the person's own action (Graph has no calendars shared into a mailbox's list
        that coursewire writes to)."""
        return True

    # -- push (calendars.model.Watchable) -------------------------------------------------------------------

    async def watch(self, address: str, secret: str, expires_at: datetime) -> Watch:
        """POST /subscriptions for created, updated and deleted events of the calendar, notifications and
        lifecycle notifications to `address`, `clientState` = `secret`, until `expires_at` or 10,070 minutes
        from now, whichever is sooner [MS4][MS5][MS7]. Graph first checks `address` with a validation request
        [MS6]. Returns the Watch with the expiry Graph set (it raises values under 45 minutes to 45 [MS15]).
        Raises ValueError for a secret over 128 characters; Rejected (Graph's message) when Graph refuses,
        e.g. the address failed validation; Throttled, Unavailable or AuthorizationLost."""
        if len(secret) > CLIENT_STATE_LIMIT:
            raise ValueError(f"a Graph clientState holds at most {CLIENT_STATE_LIMIT} characters")
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": address,
            "lifecycleNotificationUrl": address,
            "resource": self._events.lstrip("/"),
            "expirationDateTime": _graph_instant(self._expiry(expires_at)),
            "clientState": secret,
        }
        reply = await self._call("POST", "/subscriptions", body)
        if reply.status not in (200, 201):
            raise self._error(reply)
        return _watch(reply.body)

    async def renew(self, watch: Watch, address: str, secret: str, expires_at: datetime) -> Watch:
        """PATCH /subscriptions/{id} with the new expiry (capped as in `watch`) [MS4]; a subscription Graph no
        longer knows (404) is created again with `watch`. Raises like `watch`."""
        body = {"expirationDateTime": _graph_instant(self._expiry(expires_at))}
        reply = await self._call("PATCH", f"/subscriptions/{quote(watch.id, safe='')}", body)
        if reply.status == 404:
            return await self.watch(address, secret, expires_at)
        if reply.status != 200:
            raise self._error(reply)
        return _watch(reply.body)

    async def unwatch(self, watch: Watch) -> None:
        """DELETE /subscriptions/{id}; one already gone (404) is success. Raises Throttled, Unavailable,
        AuthorizationLost or Rejected."""
        reply = await self._call("DELETE", f"/subscriptions/{quote(watch.id, safe='')}", None)
        if reply.status in (200, 202, 204, 404):
            return
        raise self._error(reply)

    async def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""
        return None

    # -- requests -------------------------------------------------------------------------------------------

    def _expiry(self, expires_at: datetime) -> datetime:
        return min(expires_at.astimezone(UTC), self._clock().astimezone(UTC) + SUBSCRIPTION_LIFETIME)

    def _relative(self, link: str) -> str | None:
        """A link Graph gave (absolute, under the version root) as a path after it; None for any other link,
        so the access token never goes to another host."""
        if not link.startswith(self._base + "/") or any(c in link for c in "\r\n\x00 "):
            return None
        return link[len(self._base) :]

    def _feed_error(self, reply: Reply, *, linked: bool) -> ProviderError:
        """A failed delta answer: an expired token [MS10-b], the calendar gone, or what `_error` says."""
        code, message = graph_error(reply.body)
        if 400 <= reply.status < 500 and code.casefold() in EXPIRED_CODES:
            return CursorExpired(f"Graph {reply.status} {code}: the delta token expired")
        if reply.status == 410 and linked:
            return CursorExpired(f"Graph 410 {code}: the delta token expired")
        if reply.status in (403, 404, 410):
            return CalendarGone(f"Graph {reply.status} on the calendar {code}: {message}")
        return self._error(reply)

    def _event_path(self, provider_id: str) -> str:
        # Ids are case-sensitive base64 that may hold '/', '+' or '=' [MS16]: every character is escaped.
        return f"{self._owner}/events/{quote(provider_id, safe='')}"

    def _first_op(self, index: int, item: CalendarItem, written: Written | None, recreate: bool = True) -> _Op:
        if written is None:
            return _Op(index, item, "POST", self._events, _payload(item, transaction_id(item.handle)), None)
        path = self._event_path(written.provider_id)
        return _Op(index, item, "PATCH", path, _payload(item, None), written, recreate=recreate)

    def _step(self, op: _Op, reply: Reply) -> Written | ProviderError | _Op:
        """What one answer to `op` means: the item's result, or the request to make next."""
        if op.method == "PATCH" and reply.status in (404, 410):
            # The person deleted the event: create it again. Not under the item's own transactionId: Graph may
            # still know that id from the deleted event (the docs do not say); a retry of this create sends the
            # same `written` again and so the same derived id.
            assert op.written is not None
            if not op.recreate:
                return EventGone(f"event {op.written.provider_id} is no longer in the calendar")
            txid = transaction_id(f"{op.item.handle}:{op.written.provider_id}")
            return _Op(op.index, op.item, "POST", self._events, _payload(op.item, txid), op.written, op.step + 1)
        if reply.status not in (200, 201):
            return self._error(reply)
        event_id = reply.body.get("id")
        if not isinstance(event_id, str) or not event_id:
            return Unavailable(f"Graph answered {op.method} {reply.status} without an event id")
        written = Written(event_id, _etag(reply.body))
        if op.method == "POST" and not _matches(reply.body, op.item):
            # transactionId returned the event an earlier attempt created, from an older version of the item.
            return _Op(
                op.index, op.item, "PATCH", self._event_path(event_id), _payload(op.item, None), written, op.step + 1
            )
        return written

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None, *, slots: int = 1, prefer: str = PREFER_IMMUTABLE
    ) -> Reply:
        """One request through the transport (GraphTransport.call)."""
        return await self._transport.call(method, path, body, slots=slots, prefer=prefer)

    async def _send_ops(self, ops: Sequence[_Op]) -> dict[int, Reply | ProviderError] | ProviderError:
        """Up to 20 ops: one $batch of our own, or, when the transport batches itself (tenant mode), each op as
        its own request (the transport groups them with other mailboxes' requests). Replies by op index, or the
        error of the whole request."""
        if not self._transport.batches:
            return await self._send_batch(ops)

        async def one(op: _Op) -> Reply | ProviderError:
            try:
                return await self._call(op.method, op.path, op.body)
            except ProviderError as exc:
                return exc

        answers = await asyncio.gather(*(one(op) for op in ops))
        return {op.index: answer for op, answer in zip(ops, answers, strict=True)}

    async def _send_batch(self, ops: Sequence[_Op]) -> dict[int, Reply | ProviderError] | ProviderError:
        """One $batch for up to 20 ops: inner replies by op index, or the error of the whole request."""
        requests = [
            {
                "id": str(op.index),
                "method": op.method,
                "url": op.path,
                "headers": {"Content-Type": "application/json", "Prefer": PREFER_IMMUTABLE},
                "body": op.body,
            }
            for op in ops
        ]
        try:
            reply = await self._call("POST", "/$batch", {"requests": requests}, slots=len(ops))
        except ProviderError as exc:
            return exc
        if reply.status != 200:
            return self._error(reply)
        return {index: inner for index, inner in batch_responses(reply.body).items()}

    def _error(self, reply: Reply) -> ProviderError:
        """The ProviderError for a failed answer (outer or inner): 429, and 503/504 with Retry-After, are
        Throttled; other 5xx Unavailable; 401 AuthorizationLost; other 4xx Rejected."""
        code, message = graph_error(reply.body)
        text = f"Graph {reply.status} {code}: {message}"
        retry = retry_after(reply.headers.get("retry-after"), self._clock())
        if reply.status == 429 or (reply.status in (503, 504) and retry is not None):
            return Throttled(text, retry_after=retry)
        if reply.status >= 500:
            return Unavailable(text)
        if reply.status == 401:
            return AuthorizationLost(text)
        return Rejected(f"{code}: {message}")


async def _bounded(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, at most MAX_ANSWER_BYTES. Raises Unavailable beyond."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        raise Unavailable(f"Graph answered with more than {MAX_ANSWER_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise Unavailable(f"Graph answered with more than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class DirectTransport:
    """Each request as its own HTTP request to Graph with a bearer token from `tokens`, at most `concurrency`
    slots held at once (Outlook allows 4 concurrent requests per app and mailbox [MS11-b]; a $batch holds as
    many slots as Graph runs of it at a time against the mailbox)."""

    batches = False

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        tokens: TokenSource,
        *,
        timeout: float = 30.0,
        concurrency: int = MAILBOX_CONCURRENCY,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._tokens = tokens
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = _Slots(concurrency)

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None, *, slots: int = 1, prefer: str = PREFER_IMMUTABLE
    ) -> Reply:
        """One request holding `slots` of the limit; a 401 refreshes the token once and sends it again, a second
        401 is AuthorizationLost. Raises Unavailable for network errors, unreadable answers and answers over
        MAX_ANSWER_BYTES."""
        token = await self._tokens.access_token()
        reply = await self._send(method, path, body, token, slots, prefer)
        if reply.status != 401:
            return reply
        reply = await self._send(method, path, body, await self._tokens.refresh(), slots, prefer)
        if reply.status == 401:
            code, message = graph_error(reply.body)
            raise AuthorizationLost(f"Graph refused the access token after a refresh (401 {code}: {message})")
        return reply

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None, token: str, slots: int, prefer: str
    ) -> Reply:
        async with self._slots.hold(slots):
            return await send_request(self._session, self._base, method, path, body, token, prefer, self._timeout)


async def send_request(
    session: aiohttp.ClientSession,
    base: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    token: str,
    prefer: str,
    timeout: aiohttp.ClientTimeout,
) -> Reply:
    """One HTTP request to `base + path` (escaped by the caller) with a bearer token; the answer bounded to
    MAX_ANSWER_BYTES and read as JSON. Raises Unavailable (unreachable, timeout, too large, a 2xx that is not
    JSON)."""
    headers = {"Authorization": f"Bearer {token}", "Prefer": prefer, "Accept": "application/json"}
    url = URL(base + path, encoded=True)  # paths and queries are escaped by us, once
    try:
        async with session.request(
            method, url, json=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            raw = await _bounded(response)
            status = response.status
            got = {k.lower(): v for k, v in response.headers.items()}
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"Graph could not be reached: {exc.__class__.__name__} {exc}") from None
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        if 200 <= status < 300:
            raise Unavailable(f"Graph answered {status} with a body that is not JSON") from None
        parsed = {}
    return Reply(status, got, parsed if isinstance(parsed, dict) else {})


def batch_responses(body: Mapping[str, Any]) -> dict[int, Reply]:
    """The inner responses of a `$batch` answer by their numeric `id` [MS11] (responses may come in any order;
    ones without a numeric id or status are skipped)."""
    out: dict[int, Reply] = {}
    for answer in body.get("responses") or []:
        if not isinstance(answer, dict):
            continue
        try:
            index = int(answer.get("id", ""))
            status = int(answer.get("status", 0))
        except (TypeError, ValueError):
            continue
        headers, inner = answer.get("headers"), answer.get("body")
        headers = headers if isinstance(headers, dict) else {}
        inner = inner if isinstance(inner, dict) else {}
        out[index] = Reply(status, {str(k).lower(): str(v) for k, v in headers.items()}, inner)
    return out


# -- the event as Graph takes it --------------------------------------------------------------------------------


def transaction_id(seed: str) -> str:
    """A GUID-shaped transactionId (8-4-4-4-12 lower-case hex) derived from `seed`: the item's handle (32 hex
    characters, used as they are) or any other text (hashed first). Deterministic, so a retry sends the same."""
    digits = seed if re.fullmatch(r"[0-9a-f]{32}", seed) else hashlib.sha256(seed.encode()).hexdigest()[:32]
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}"


def graph_times(item: CalendarItem) -> tuple[str, str, str]:
    """(start dateTime, end dateTime, timeZone) for the item as Graph's `dateTimeTimeZone` takes them [MS3]:
    wall-clock times in the session's zone under its Windows name (the item's own `windows_time_zone` when it
    names the same zone, else the name calendars.timezones finds). UTC times with `UTC` when the zone has no
    Windows name, or when a time falls in an hour the zone repeats (a Windows name cannot tell which one)."""
    tz, windows = _zone(item)
    if tz is not None and windows is not None:
        start, end = item.start.astimezone(tz), item.end.astimezone(tz)
        if not _repeated(start) and not _repeated(end):
            return _wall(start), _wall(end), windows
    return _wall(item.start.astimezone(UTC)), _wall(item.end.astimezone(UTC)), "UTC"


def _zone(item: CalendarItem) -> tuple[tzinfo | None, str | None]:
    try:
        tz = ZoneInfo(item.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return None, None
    own = item.windows_time_zone
    target = iana_zone(own) if own else None
    if own and target is not None and canonical_zone(target) == canonical_zone(item.time_zone):
        return tz, own
    return tz, windows_zone(item.time_zone)


def _repeated(local: datetime) -> bool:
    other = local.replace(fold=1 - local.fold)
    return other.utcoffset() != local.utcoffset()


def _wall(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat()


def _payload(item: CalendarItem, transaction: str | None) -> dict[str, Any]:
    start, end, zone = graph_times(item)
    body: dict[str, Any] = {
        "subject": item.subject,
        "body": {"contentType": "HTML", "content": item.body_html},
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        "location": {"displayName": item.location or ""},
        "isReminderOn": True,
        # No attendees: the event is the person's own, so Outlook sends no meeting request or updates.
        "responseRequested": False,
        "allowNewTimeProposals": False,
        "singleValueExtendedProperties": [{"id": PROPERTY_ID, "value": item.key}],
    }
    if transaction is not None:  # create only: Graph does not let an update change it [MS2-b]
        body["transactionId"] = transaction
    return body


def _matches(event: Mapping[str, Any], item: CalendarItem) -> bool:
    """Whether a created event holds the item's subject, times and location (a transactionId answer may be an
    earlier attempt's event). The body is not compared: Exchange rewrites HTML."""
    location = event.get("location")
    place = location.get("displayName") if isinstance(location, dict) else None
    try:
        start, end = _instant(event.get("start")), _instant(event.get("end"))
    except ValueError:
        return False
    return (
        event.get("subject") == item.subject
        and start == item.start
        and end == item.end
        and (place or "") == (item.location or "")
    )


# -- reading answers --------------------------------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{1,6})\d*$")


def _instant(value: object) -> datetime:
    """An aware datetime from a `dateTimeTimeZone` (`2030-03-01T08:00:00.0000000`, `UTC` or a Windows or IANA
    zone name). Raises ValueError for anything else."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise ValueError("not a dateTimeTimeZone")
    moment = datetime.fromisoformat(_FRACTION.sub(r"\1", value["dateTime"]))
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    name = value.get("timeZone") or "UTC"
    zone: tzinfo
    if name in ("UTC", "Etc/UTC", "tzone://Microsoft/Utc"):
        zone = UTC
    else:
        try:
            zone = ZoneInfo(iana_zone(name) or name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
    return moment.replace(tzinfo=zone).astimezone(UTC)


def _remote(event: Mapping[str, Any]) -> RemoteEvent:
    try:
        start, end = _instant(event.get("start")), _instant(event.get("end"))
    except ValueError as exc:
        raise Unavailable(f"Graph returned an event with unreadable times: {exc}") from None
    key = None
    for prop in event.get("singleValueExtendedProperties") or []:
        if isinstance(prop, dict) and str(prop.get("id", "")).casefold() == PROPERTY_ID.casefold():
            key = prop.get("value") if isinstance(prop.get("value"), str) else None
    extra = {
        name: event[name]
        for name in ("transactionId", "originalStartTimeZone", "webLink", "changeKey")
        if isinstance(event.get(name), str)
    }
    return RemoteEvent(
        provider_id=str(event.get("id", "")),
        etag=_etag(event),
        subject=str(event.get("subject") or ""),
        start=start,
        end=end,
        key=key,
        cancelled=bool(event.get("isCancelled")),
        extra=extra,
    )


def _change(entry: object) -> Change | None:
    """One delta entry as a Change: `@removed` entries carry only the id [MS10]; others are events, keyed when
    they carry our extended property. None for an entry without an id."""
    if not isinstance(entry, dict):
        return None
    event_id = entry.get("id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 1024:
        return None
    if "@removed" in entry:
        return Change(event_id, removed=True)
    key = None
    for prop in entry.get("singleValueExtendedProperties") or []:
        if isinstance(prop, dict) and str(prop.get("id", "")).casefold() == PROPERTY_ID.casefold():
            key = prop.get("value") if isinstance(prop.get("value"), str) else None
    return Change(event_id, key=key)


def _watch(subscription: Mapping[str, Any]) -> Watch:
    """The Watch of a subscription answer. Raises Unavailable when it lacks an id or a readable expiry."""
    sub_id, expiry = subscription.get("id"), subscription.get("expirationDateTime")
    if not isinstance(sub_id, str) or not sub_id or not isinstance(expiry, str):
        raise Unavailable("Graph answered a subscription request without an id or expirationDateTime")
    try:
        expires_at = _parse_instant(expiry)
    except ValueError:
        raise Unavailable(f"Graph answered an unreadable expirationDateTime {expiry[:40]!r}") from None
    return Watch(sub_id, expires_at)


def _parse_instant(text: str) -> datetime:
    """An aware UTC datetime from Graph's `2030-03-01T08:00:00.1234567Z` (7 fraction digits, `Z` or an
    offset). Raises ValueError."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    value = re.sub(r"(\.\d{1,6})\d*(?=[+-]\d\d:\d\d$|$)", r"\1", value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _graph_instant(moment: datetime) -> str:
    """`2030-03-01T08:00:00.000000Z`: UTC, as Graph's DateTimeOffset properties take it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _query_time(moment: datetime) -> str:
    """A calendarView bound for the query string: UTC to the second, `Z`, nothing to escape."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _years_later(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _etag(event: Mapping[str, Any]) -> str | None:
    value = event.get("@odata.etag") or event.get("changeKey")
    return value if isinstance(value, str) else None


def graph_error(body: Mapping[str, Any]) -> tuple[str, str]:
    """(code, message) of Graph's error body `{"error": {"code", "message"}}`."""
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("code") or "unknown"), str(error.get("message") or "")
    return "unknown", ""


# -- the per-mailbox limit --------------------------------------------------------------------------------------


class _Slots:
    """A counting limit whose holders take several slots at once, first come first served: a request takes
    one, a $batch as many as Graph runs of it at a time against the mailbox (up to 4) [MS11-b]."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def hold(self, count: int) -> AsyncIterator[None]:
        count = max(1, min(count, self.size))
        await self._acquire(count)
        try:
            yield
        finally:
            self.free += count
            self._wake()

    async def _acquire(self, count: int) -> None:
        if not self._waiters and self.free >= count:
            self.free -= count
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted just as it was cancelled: give it back
                self.free += count
            elif entry in self._waiters:
                self._waiters.remove(entry)
            self._wake()
            raise

    def _wake(self) -> None:
        while self._waiters and self.free >= self._waiters[0][0]:
            count, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self.free -= count
            waiter.set_result(None)
