"""A Microsoft Graph v1.0 fake for calendar tests: mailboxes with calendars and events, served on 127.0.0.1.

It does what ../shared/reference/notes/calendar-sync.md §2.1 documents, and nothing it does not:
- `/v1.0/me/...` and `/v1.0/users/{id or UPN}/...`: `events`, `calendar/events`, `calendars/{id}/events`
  (GET list with `$top`/`$skip`/`@odata.nextLink` and the extended-property `$filter`, POST), and
  `.../events/{id}` (GET, PATCH, DELETE); `/v1.0/me` for the account address (User.Read).
- POST answers 201; a POST whose `transactionId` the mailbox has seen answers 201 with the event that id made,
  unchanged, while that event exists (the docs say only that the server avoids the redundant POST [MS2-b]).
- Ids are opaque and case-sensitive. An event has a regular id that changes when it moves to another calendar,
  and an ImmutableId that does not; an answer carries the ImmutableId only when the request sent
  `Prefer: IdType="ImmutableId"` [MS16]. Both find the event.
- Times are stored as sent (`dateTimeTimeZone` with a Windows name; IANA names are refused unless
  `accept_iana`, so a test sees a zone a provider did not convert, although Graph takes about 90 of them
  [MS3]); POST and PATCH answer in the zone sent, GET in UTC unless `Prefer: outlook.timezone` [MS3-b].
- Single-value extended properties are stored and returned with
  `$expand=singleValueExtendedProperties($filter=id eq '...')` [MS13]; unknown event properties are a 400
  RequestBodyRead, as Graph answers them.
- `$batch`: at most 20 requests (400 above), relative URLs, `Content-Type` required with a body, inner
  requests run 4 at a time and answered in an order of their own, each throttled on its own [MS11].
- Per mailbox, at most 4 requests at once [MS11-b]: one more is a 429 ApplicationThrottled
  "MailboxConcurrency" with Retry-After, inside a $batch too. `latency` (seconds each request holds its slot)
  makes requests overlap; `peak` records the most seen at once.
- Random 429s (`throttle_rate` outside, `batch_throttle_rate` inside $batch) from a seeded generator.
- Bearer tokens: `token_check(token) -> user id | APP | None` decides; by default the tokens `issue_token`
  gave out, minus those of users `revoke`d. A shared OAuth fake can replace `token_check`.
- `fail_next(kind)`: 'throttle' (429 + Retry-After), 'unavailable' (503), 'auth' (401), 'lose' (the request
  is carried out and the connection closed without an answer, as when a response is lost).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import secrets
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

APP = "*application*"  # token_check's answer for an application token (any mailbox of the tenant)
BATCH_LIMIT = 20
MAILBOX_CONCURRENCY = 4
BATCH_PARALLELISM = 4  # Graph sends at most 4 requests of one batch to Outlook at a time [MS11-b]

WRITABLE = {
    "subject", "body", "start", "end", "location", "locations", "isReminderOn", "reminderMinutesBeforeStart",
    "responseRequested", "allowNewTimeProposals", "transactionId", "singleValueExtendedProperties", "showAs",
    "sensitivity", "importance", "categories", "isAllDay", "attendees", "isOnlineMeeting",
    "onlineMeetingProvider", "hideAttendees",
}  # fmt: skip
_PROPERTY = re.compile(
    r"^(String|Integer|Boolean|SystemTime|Binary|Double|Long) "
    r"\{([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\} "
    r"(Name \S.*|Id 0x[0-9a-fA-F]{1,4})$"
)
_EXPAND = re.compile(r"^singleValueExtendedProperties(?:\(\$filter=id eq '([^']+)'\))?$", re.IGNORECASE)
_FILTER = re.compile(
    r"^singleValueExtendedProperties/Any\(ep: ep/id eq '([^']+)' and ep/value eq '([^']*)'\)$", re.IGNORECASE
)
_FRACTION = re.compile(r"(\.\d{1,6})\d*$")


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class Event:
    immutable_id: str
    regular_id: str
    calendar: str
    fields: dict[str, Any]  # writable fields as last written (start/end as sent)
    properties: dict[str, str]  # extended property id (GUID in lower case) -> value
    created: str
    modified: str
    change_key: str


@dataclass
class Mailbox:
    user_id: str
    address: str
    default_calendar: str
    calendars: dict[str, str] = field(default_factory=dict)  # id -> name
    events: dict[str, Event] = field(default_factory=dict)  # by immutable id
    transactions: dict[str, str] = field(default_factory=dict)  # transactionId -> immutable id
    active: int = 0
    peak: int = 0


@dataclass
class _Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class GraphFake:
    """The fake; start() it (or use it as a context manager), then point a provider at `url + "/v1.0"`."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: float = 0.0,
        throttle_rate: float = 0.0,
        batch_throttle_rate: float = 0.0,
        retry_after: int = 7,
        accept_iana: bool = False,
    ) -> None:
        self.latency = latency
        self.throttle_rate = throttle_rate
        self.batch_throttle_rate = batch_throttle_rate
        self.retry_after = retry_after
        self.accept_iana = accept_iana
        self.mailboxes: dict[str, Mailbox] = {}
        self.tokens: dict[str, str] = {}  # token -> user id or APP
        self.revoked: set[str] = set()
        self.token_check: Callable[[str], str | None] = self._default_token_check
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request, in order
        self.batch_requests: list[tuple[str, str]] = []  # (method, path) of every request inside a $batch
        self.counters: Counter[str] = Counter()
        self._failures: deque[tuple[str, int | str, str | None]] = deque()
        self._rng = random.Random(seed)  # noqa: S311 (reproducible test behaviour, not secrets)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._gate: asyncio.Event | None = None  # cleared: requests wait in their mailbox slot (pause())
        self.url = ""

    # -- running ---------------------------------------------------------------------------------------------

    def start(self) -> GraphFake:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._startup())
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="graph-fake", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Graph fake did not start")
        return self

    async def _startup(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._gate is not None:
            self.resume()  # a test that failed while paused leaves no request waiting
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> GraphFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the test's side -------------------------------------------------------------------------------------

    def add_user(self, user_id: str, address: str) -> Mailbox:
        """A mailbox with its default calendar ("Calendar")."""
        with self._lock:
            calendar = _opaque("AAMkAGCal")
            mailbox = Mailbox(user_id, address, calendar, {calendar: "Calendar"})
            self.mailboxes[user_id] = mailbox
            return mailbox

    def add_calendar(self, user_id: str, name: str) -> str:
        with self._lock:
            calendar = _opaque("AAMkAGCal")
            self.mailboxes[user_id].calendars[calendar] = name
            return calendar

    def issue_token(self, user_id: str) -> str:
        """A new access token for the user (or APP): what a token endpoint would hand out."""
        token = f"graph-{secrets.token_urlsafe(12)}"
        with self._lock:
            self.tokens[token] = user_id
        return token

    def revoke(self, user_id: str) -> None:
        """The user's consent is gone: every token of theirs, issued or to come, is refused."""
        with self._lock:
            self.revoked.add(user_id)

    def fail_next(
        self, kind: str, count: int = 1, retry_after: int | str | None = None, method: str | None = None
    ) -> None:
        """The next `count` requests (with that HTTP method, when given) fail: 'throttle' (429 + Retry-After),
        'unavailable' (503), 'auth' (401), 'lose' (carried out, then the connection is closed unanswered)."""
        if kind not in ("throttle", "unavailable", "auth", "lose"):
            raise ValueError(kind)
        seconds = self.retry_after if retry_after is None else retry_after
        with self._lock:
            self._failures.extend([(kind, seconds, method)] * count)

    def _next_failure(self, method: str) -> tuple[str, int | str] | None:
        for entry in self._failures:
            if entry[2] in (None, method):
                self._failures.remove(entry)
                return entry[0], entry[1]
        return None

    def stored(self, user_id: str, calendar: str | None = None) -> list[Event]:
        """The events a calendar holds now (the default calendar when None), oldest first."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            wanted = calendar or mailbox.default_calendar
            return [e for e in mailbox.events.values() if e.calendar == wanted]

    def event(self, user_id: str, event_id: str) -> Event | None:
        with self._lock:
            return _find(self.mailboxes[user_id], event_id)

    def delete_as_person(self, user_id: str, event_id: str) -> None:
        """The person deletes the event in Outlook: it leaves the calendar (GET, PATCH and DELETE give 404)."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            found = _find(mailbox, event_id)
            if found is not None:
                del mailbox.events[found.immutable_id]

    def move_as_person(self, user_id: str, event_id: str, calendar: str) -> None:
        """The person moves the event to another calendar: its regular id changes, its ImmutableId does not."""
        with self._lock:
            found = _find(self.mailboxes[user_id], event_id)
            assert found is not None
            found.calendar, found.regular_id = calendar, _opaque("AAMkAGEv")

    def edit_as_person(self, user_id: str, event_id: str, **changes: Any) -> None:
        with self._lock:
            found = _find(self.mailboxes[user_id], event_id)
            assert found is not None
            found.fields.update(changes)
            found.change_key = _opaque("")[:16]

    def pause(self) -> None:
        """From now on every request waits, holding its mailbox slot, until resume(): the test can then see
        how many are in progress at once without relying on timing."""
        self._on_loop(self._close_gate)

    def resume(self) -> None:
        self._on_loop(self._open_gate)

    async def _close_gate(self) -> None:
        assert self._gate is not None
        self._gate.clear()

    async def _open_gate(self) -> None:
        assert self._gate is not None
        self._gate.set()

    def _on_loop(self, step: Callable[[], Any]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(step(), self._loop).result(10)

    def active(self, user_id: str) -> int:
        """How many requests this mailbox has in progress now."""
        with self._lock:
            return self.mailboxes[user_id].active

    def peak(self, user_id: str) -> int:
        """The most requests this mailbox ever had in progress at once."""
        with self._lock:
            return self.mailboxes[user_id].peak

    def _default_token_check(self, token: str) -> str | None:
        owner = self.tokens.get(token)
        return None if owner is None or owner in self.revoked else owner

    # -- HTTP ------------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.raw_path.split("?", 1)[0]
        with self._lock:
            self.requests.append((request.method, unquote(path)))
            self.counters[request.method] += 1
            failure = self._next_failure(request.method)
        answer = await self._answer(request, path, raw, failure)
        if failure is not None and failure[0] == "lose":
            assert request.transport is not None
            request.transport.abort()
        return (
            web.json_response(answer.body, status=answer.status, headers=answer.headers)
            if answer.body
            else (web.Response(status=answer.status, headers=answer.headers))
        )

    async def _answer(
        self, request: web.Request, path: str, raw: bytes, failure: tuple[str, int | str] | None
    ) -> _Answer:
        try:
            if failure is not None and failure[0] != "lose":
                kind, retry = failure
                if kind == "throttle":
                    raise GraphError(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(retry)})
                if kind == "unavailable":
                    raise GraphError(503, "serviceNotAvailable", "The service is temporarily unavailable.")
                raise _unauthorized()
            principal = self.token_check(_bearer(request.headers.get("Authorization", "")))
            if principal is None:
                raise _unauthorized()
            if not path.startswith("/v1.0/"):
                raise GraphError(400, "BadRequest", "Invalid version.")
            with self._lock:
                random_429 = self.throttle_rate and self._rng.random() < self.throttle_rate
            if random_429:
                self.counters["throttled"] += 1
                raise _throttled("Application is over its request limit.", self.retry_after)
            body = _json(raw) if raw else None
            headers = {k.lower(): v for k, v in request.headers.items()}
            if path == "/v1.0/$batch" and request.method == "POST":
                return await self._batch(principal, body)
            query = request.raw_path.split("?", 1)[1] if "?" in request.raw_path else ""
            return await self._run(principal, request.method, path[len("/v1.0") :], query, headers, body)
        except GraphError as exc:
            return _error(exc)

    async def _batch(self, principal: str, body: Any) -> _Answer:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise GraphError(400, "BadRequest", "The batch request body must have a non-empty 'requests' array.")
        if len(requests) > BATCH_LIMIT:
            raise GraphError(400, "BadRequest", f"The number of batch requests exceeds the maximum of {BATCH_LIMIT}.")
        ids = [r.get("id") if isinstance(r, dict) else None for r in requests]
        if len(set(map(str, ids))) != len(ids) or None in ids:
            raise GraphError(400, "BadRequest", "Each batch request needs an id, unique within the batch.")
        responses: list[dict[str, Any]] = []
        for wave in range(0, len(requests), BATCH_PARALLELISM):
            answers = await asyncio.gather(
                *(self._inner(principal, r) for r in requests[wave : wave + BATCH_PARALLELISM])
            )
            responses.extend(answers)
        with self._lock:
            self._rng.shuffle(responses)  # "responses might appear in a different order" [MS11]
        return _Answer(200, {"responses": responses})

    async def _inner(self, principal: str, request: dict[str, Any]) -> dict[str, Any]:
        rid, method, url = str(request["id"]), str(request.get("method", "")).upper(), request.get("url")
        headers = {str(k).lower(): str(v) for k, v in (request.get("headers") or {}).items()}
        try:
            if not isinstance(url, str) or "://" in url:
                raise GraphError(400, "BadRequest", "Batch request URLs must be relative.")
            path, _, query = ("/" + url.lstrip("/")).partition("?")
            with self._lock:
                self.batch_requests.append((method, unquote(path)))
                self.counters[f"batch {method}"] += 1
                random_429 = self.batch_throttle_rate and self._rng.random() < self.batch_throttle_rate
            if "body" in request and "content-type" not in headers:
                raise GraphError(400, "BadRequest", "Content-Type header is required for a request with a body.")
            if random_429:
                self.counters["throttled"] += 1
                raise _throttled("Application is over its request limit.", self.retry_after)
            answer = await self._run(principal, method, path, query, headers, request.get("body"))
        except GraphError as exc:
            answer = _error(exc)
        out: dict[str, Any] = {"id": rid, "status": answer.status, "headers": answer.headers}
        if answer.body is not None:
            out["body"] = answer.body
        return out

    async def _run(
        self, principal: str, method: str, path: str, query: str, headers: dict[str, str], body: Any
    ) -> _Answer:
        """One request to a mailbox, holding one of its 4 slots for `latency` seconds."""
        segments = [unquote(s) for s in path.strip("/").split("/")]
        mailbox, rest = self._mailbox(principal, segments)
        with self._lock:
            if mailbox.active >= MAILBOX_CONCURRENCY:
                self.counters["concurrency"] += 1
                raise _throttled("Application is over its MailboxConcurrency limit.", 1)
            mailbox.active += 1
            mailbox.peak = max(mailbox.peak, mailbox.active)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if self._gate is not None:
                await self._gate.wait()
            with self._lock:
                return self._operate(mailbox, method, rest, dict(parse_qsl(query)), headers, body)
        finally:
            with self._lock:
                mailbox.active -= 1

    def _mailbox(self, principal: str, segments: list[str]) -> tuple[Mailbox, list[str]]:
        if segments[:1] == ["me"]:
            if principal == APP:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            wanted, rest = principal, segments[1:]
        elif segments[:1] == ["users"] and len(segments) >= 2:
            wanted, rest = segments[1], segments[2:]
        else:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")
        with self._lock:
            mailbox = self.mailboxes.get(wanted) or next(
                (m for m in self.mailboxes.values() if m.address.lower() == wanted.lower()), None
            )
        if mailbox is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{wanted}' is invalid.")
        if principal not in (APP, mailbox.user_id):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return mailbox, rest

    def _operate(
        self, mailbox: Mailbox, method: str, rest: list[str], query: dict[str, str], headers: dict[str, str], body: Any
    ) -> _Answer:
        prefer = headers.get("prefer", "")
        immutable = bool(re.search(r'IdType\s*=\s*"ImmutableId"', prefer, re.IGNORECASE))
        view = _View(mailbox, immutable, _prefer_zone(prefer), query.get("$expand"))
        if not rest:
            if method == "GET":
                return _Answer(
                    200, {"id": mailbox.user_id, "mail": mailbox.address, "userPrincipalName": mailbox.address}
                )
            raise GraphError(405, "BadRequest", "Method not allowed.")
        calendar: str | None = None
        if rest[0] == "calendar":
            calendar, rest = mailbox.default_calendar, rest[1:]
        elif rest[0] == "calendars" and len(rest) >= 2:
            calendar, rest = rest[1], rest[2:]
            if calendar not in mailbox.calendars:
                raise _not_found()
        if not rest or rest[0] != "events" or len(rest) > 2:
            raise GraphError(400, "BadRequest", "Resource not found for the segment.")
        if len(rest) == 1:
            if method == "POST":
                return self._create(mailbox, calendar or mailbox.default_calendar, body, view)
            if method == "GET":
                return _list(mailbox, calendar or mailbox.default_calendar, query, view)
            raise GraphError(405, "BadRequest", "Method not allowed.")
        event = _find(mailbox, rest[1])
        if event is None or (calendar is not None and event.calendar != calendar):
            raise _not_found()
        if method == "GET":
            return _Answer(200, view.render(event, written=False))
        if method == "PATCH":
            fields, properties = _validate(body, create=False, accept_iana=self.accept_iana)
            if "transactionId" in fields and fields["transactionId"] != event.fields.get("transactionId"):
                raise GraphError(400, "ErrorInvalidRequest", "The transactionId of an event cannot be changed.")
            merged = {**event.fields, **fields}
            _check_times(merged)
            event.fields, event.modified, event.change_key = merged, _now(), _opaque("")[:16]
            event.properties.update(properties)
            return _Answer(200, view.render(event, written=True))
        if method == "DELETE":
            del mailbox.events[event.immutable_id]
            return _Answer(204)
        raise GraphError(405, "BadRequest", "Method not allowed.")

    def _create(self, mailbox: Mailbox, calendar: str, body: Any, view: _View) -> _Answer:
        fields, properties = _validate(body, create=True, accept_iana=self.accept_iana)
        _check_times(fields)
        transaction = fields.get("transactionId")
        if transaction and transaction in mailbox.transactions:
            earlier = mailbox.events.get(mailbox.transactions[transaction])
            if earlier is not None:
                self.counters["deduplicated"] += 1
                return _Answer(201, view.render(earlier, written=True))
        now = _now()
        event = Event(
            _opaque("AAkALgAA"), _opaque("AAMkAGEv"), calendar, fields, properties, now, now, _opaque("")[:16]
        )
        mailbox.events[event.immutable_id] = event
        if transaction:
            mailbox.transactions[transaction] = event.immutable_id
        self.counters["created"] += 1
        return _Answer(201, view.render(event, written=True))


@dataclass
class _View:
    """How events are shown to one request: id kind, time zone, expanded properties."""

    mailbox: Mailbox
    immutable: bool
    zone: str | None
    expand: str | None

    def render(self, event: Event, *, written: bool) -> dict[str, Any]:
        f = event.fields
        event_id = event.immutable_id if self.immutable else event.regular_id
        body = f.get("body") or {"contentType": "text", "content": ""}
        location = f.get("location") or {}
        out: dict[str, Any] = {
            "@odata.etag": f'W/"{event.change_key}"',
            "id": event_id,
            "createdDateTime": event.created,
            "lastModifiedDateTime": event.modified,
            "changeKey": event.change_key,
            "categories": f.get("categories", []),
            "transactionId": f.get("transactionId"),
            "originalStartTimeZone": f["start"]["timeZone"],
            "originalEndTimeZone": f["end"]["timeZone"],
            "iCalUId": "040000008200E00074C5B7101A82E008" + event.immutable_id.encode().hex()[:32].upper(),
            "reminderMinutesBeforeStart": f.get("reminderMinutesBeforeStart", 15),
            "isReminderOn": f.get("isReminderOn", True),
            "subject": f.get("subject", ""),
            "bodyPreview": re.sub(r"<[^>]*>", "", str(body.get("content", "")))[:255],
            "importance": f.get("importance", "normal"),
            "sensitivity": f.get("sensitivity", "normal"),
            "isAllDay": f.get("isAllDay", False),
            "isCancelled": False,
            "isOrganizer": True,
            "responseRequested": f.get("responseRequested", True),
            "showAs": f.get("showAs", "busy"),
            "type": "singleInstance",
            "webLink": f"https://outlook.office365.com/owa/?itemid={quote(event_id, safe='')}&path=/calendar/item",
            "isOnlineMeeting": f.get("isOnlineMeeting", False),
            "allowNewTimeProposals": f.get("allowNewTimeProposals", True),
            "body": body,
            "start": self._time(f["start"], written),
            "end": self._time(f["end"], written),
            "location": {"displayName": location.get("displayName", ""), "locationType": "default"},
            "attendees": f.get("attendees", []),
            "organizer": {"emailAddress": {"name": self.mailbox.address, "address": self.mailbox.address}},
        }
        wanted = _EXPAND.match(self.expand or "")
        if wanted:
            chosen = {
                k: v
                for k, v in event.properties.items()
                if wanted.group(1) is None or k == _property_key(wanted.group(1))
            }
            if chosen:
                out["singleValueExtendedProperties"] = [{"id": k, "value": v} for k, v in chosen.items()]
        return out

    def _time(self, value: dict[str, str], written: bool) -> dict[str, str]:
        if written:
            return {"dateTime": _graph_datetime(_wall(value)), "timeZone": value["timeZone"]}
        zone = self.zone if self.zone and _zone(self.zone, True) is not None else "UTC"
        tz = _zone(zone, True)
        assert tz is not None
        return {"dateTime": _graph_datetime(instant(value).astimezone(tz)), "timeZone": zone}


def _list(mailbox: Mailbox, calendar: str, query: dict[str, str], view: _View) -> _Answer:
    events = [e for e in mailbox.events.values() if e.calendar == calendar]
    if "$filter" in query:
        wanted = _FILTER.match(query["$filter"])
        if wanted is None:
            raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes.")
        key, value = _property_key(wanted.group(1)), wanted.group(2)
        events = [e for e in events if e.properties.get(key) == value]
    try:
        top, skip = int(query.get("$top", "10")), int(query.get("$skip", "0"))
    except ValueError:
        raise GraphError(400, "BadRequest", "Invalid $top or $skip.") from None
    page = events[skip : skip + min(max(top, 1), 1000)]
    out: dict[str, Any] = {"value": [view.render(e, written=False) for e in page]}
    if skip + len(page) < len(events):
        out["@odata.nextLink"] = f"?$top={top}&$skip={skip + len(page)}"
    return _Answer(200, out)


def _validate(body: Any, *, create: bool, accept_iana: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The writable fields and extended properties of an event body; GraphError 400 for anything Graph
    refuses (unknown properties, malformed times or zones, malformed extended property ids)."""
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    for name in body:
        if name not in WRITABLE and not name.startswith("@odata"):
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{name}' does not exist on type 'microsoft.graph.event'. Make sure to only use "
                "property names that are defined by the type or mark the type as open type.",
            )
    fields = {k: v for k, v in body.items() if k != "singleValueExtendedProperties" and not k.startswith("@")}
    if create and ("start" not in fields or "end" not in fields):
        raise GraphError(400, "ErrorInvalidRequest", "An event needs a start and an end.")
    for name in ("start", "end"):
        if name in fields:
            value = fields[name]
            if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
                raise GraphError(400, "BadRequest", f"'{name}' must be a dateTimeTimeZone.")
            zone = value.get("timeZone") or "UTC"
            if _zone(zone, accept_iana) is None:
                raise GraphError(
                    400,
                    "TimeZoneNotSupportedException",
                    "A valid TimeZone value must be specified. "
                    f"The following TimeZone value is not supported: '{zone}'.",
                )
            try:
                _wall({"dateTime": value["dateTime"], "timeZone": zone})
            except ValueError:
                raise GraphError(400, "BadRequest", f"Cannot convert the literal '{value['dateTime']}'.") from None
            fields[name] = {"dateTime": value["dateTime"], "timeZone": zone}
    properties = {}
    for prop in body.get("singleValueExtendedProperties") or []:
        if not isinstance(prop, dict) or not isinstance(prop.get("id"), str) or _PROPERTY.match(prop["id"]) is None:
            raise GraphError(400, "BadRequest", f"Invalid extended property id {prop!r}.")
        properties[_property_key(prop["id"])] = str(prop.get("value", ""))
    return fields, properties


def _check_times(fields: dict[str, Any]) -> None:
    if instant(fields["end"]) < instant(fields["start"]):
        raise GraphError(400, "ErrorInvalidRequest", "The end of the event is before its start.")


def _property_key(property_id: str) -> str:
    match = _PROPERTY.match(property_id.strip())
    if match is None:
        return property_id
    kind, guid, name = match.groups()
    return f"{kind} {{{guid.lower()}}} {name}"


def _zone(name: str, accept_iana: bool) -> ZoneInfo | None:
    target = WINDOWS_TO_OLSON.get(name)
    if target is None and not accept_iana:
        return None
    try:
        return ZoneInfo(target or name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _wall(value: dict[str, str]) -> datetime:
    """The stored wall-clock time, aware in its zone."""
    moment = datetime.fromisoformat(_FRACTION.sub(r"\1", value["dateTime"]))
    if moment.tzinfo is not None:
        raise ValueError("dateTime takes no offset")
    tz = _zone(value["timeZone"], True)
    if tz is None:
        raise ValueError(value["timeZone"])
    return moment.replace(tzinfo=tz)


def instant(value: dict[str, str]) -> datetime:
    return _wall(value).astimezone(UTC)


def _graph_datetime(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0"


def _prefer_zone(prefer: str) -> str | None:
    match = re.search(r'outlook\.timezone\s*=\s*"([^"]+)"', prefer, re.IGNORECASE)
    return match.group(1) if match else None


def _find(mailbox: Mailbox, event_id: str) -> Event | None:
    found = mailbox.events.get(event_id)
    if found is None:
        found = next((e for e in mailbox.events.values() if e.regular_id == event_id), None)
    return found


def _opaque(prefix: str) -> str:
    # Real ids are base64 and may end in '=' or hold '-' and '_' (URL-safe alphabet); keep that shape.
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(46)).decode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _unauthorized() -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        "Access token is empty or invalid.",
        {"WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common"'},
    )


def _throttled(message: str, retry_after: int) -> GraphError:
    return GraphError(429, "ApplicationThrottled", message, {"Retry-After": str(retry_after)})


def _not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _error(exc: GraphError) -> _Answer:
    inner = {"date": _now()[:19], "request-id": secrets.token_hex(16), "client-request-id": secrets.token_hex(16)}
    body = {"error": {"code": exc.code, "message": exc.message, "innerError": inner}}
    return _Answer(exc.status, body, dict(exc.headers))
