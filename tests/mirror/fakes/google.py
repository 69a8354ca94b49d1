"""A Google Calendar API v3 fake on 127.0.0.1: the events collection as Google documents it, on its own thread.

Faithful to ../shared/reference/notes/calendar-sync.md §2.2 ([GO1] discovery document, [GO4] errors):
- `POST|GET /calendar/v3/calendars/{calendarId}/events` (insert, list) and `GET|PUT|PATCH|DELETE
  …/events/{eventId}`; `primary` is the token owner's calendar, another person's calendar is 404.
- A client-chosen id must be base32hex (`a-v`, `0-9`), 5-1024 characters (else 400 `invalid`); an id that
  exists answers 409 `duplicate`, also when the event was deleted (Google keeps it as `status: cancelled`).
- Delete marks the event cancelled; deleting it again answers 410 `deleted`; GET still returns it, cancelled;
  list leaves it out unless `showDeleted=true`; update (PUT) with `status: confirmed` brings it back.
- `dateTime` needs an offset unless `timeZone` (an IANA name) is given; answers show the time in the event's
  zone. `If-Match` with another etag is 412 `conditionNotMet`. Patch merges objects, replaces the rest.
- list filters on `privateExtendedProperty`/`sharedExtendedProperty=name=value` (several must all match: the
  discovery document's reading; Google's guide says they are OR-ed, the notes flag the conflict), `timeMin`,
  `timeMax`, pages with `maxResults` (default 250, at most 2500) and `pageToken`. No syncToken.
- Bearer tokens are checked by `authorize(token) -> account or None` (401 `authError` otherwise), which a
  test may replace (e.g. with the shared OAuth token fake); `issue_token`/`revoke` serve tests without one.
- Per-user rate limit: `rate_limit = N` requests answered per sliding 60 s of `clock` (those refused do not
  count) → 403 `rateLimitExceeded`; `random_throttle(p, seed)` answers `rateLimitExceeded` at random (403 or
  429, as Google does both); `fail_next(status, reason)` scripts the next answers; `lose_answers` carries
  requests out and closes the connection unanswered; `delete_as_person` cancels an event as the person's
  calendar app would; `log` keeps every request.
Error body: `{"error": {"code", "message", "errors": [{"domain", "reason", "message"}], "status"}}`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import re
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
ROUTE = re.compile(r"/calendar/v3/calendars/(?P<calendar>[^/]+)/events(?:/(?P<event>[^/]+))?")
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
MESSAGES = {
    "authError": "Invalid Credentials",
    "notFound": "Not Found",
    "duplicate": "The requested identifier already exists.",
    "deleted": "Resource has been deleted",
    "conditionNotMet": "Precondition Failed",
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
    "backendError": "Backend Error",
    "insufficientPermissions": "Request had insufficient authentication scopes.",
}
# Fields Google sets itself: a client's value on insert/update is ignored.
READ_ONLY = ("kind", "etag", "htmlLink", "created", "updated", "creator", "organizer", "iCalUID")


class GoogleError(Exception):
    def __init__(self, status: int, reason: str, message: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message or MESSAGES.get(reason, reason))
        self.status, self.reason, self.headers = status, reason, headers or {}

    @property
    def body(self) -> dict[str, Any]:
        message = str(self)
        error: dict[str, Any] = {
            "code": self.status,
            "message": message,
            "errors": [{"domain": "global", "reason": self.reason, "message": message}],
        }
        if self.status in STATUS_NAMES:
            error["status"] = STATUS_NAMES[self.status]
        return {"error": error}


@dataclass
class Logged:
    """One request the fake received: path without the query, the query, the JSON body, the answer's status."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int = 0
    account: str | None = None


@dataclass
class Calendar:
    id: str
    time_zone: str = "UTC"
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id, in insertion order


class GoogleCalendarFake:
    """Start with `start()` (or as a context manager); `base_url` is what GoogleProvider takes."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.calendars: dict[str, Calendar] = {}
        self.tokens: dict[str, str] = {}  # access token -> account
        self.authorize: Callable[[str], str | None] = self.tokens.get
        self.rate_limit: int | None = None  # requests per sliding minute per account
        self.log: list[Logged] = []
        self.lock = threading.RLock()
        self._script: deque[GoogleError] = deque()
        self._lose = 0
        self._windows: dict[str, deque[datetime]] = {}
        self._rng: random.Random | None = None
        self._throttle_probability = 0.0
        self._etags = 3181161784712000
        self._token_count = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- the test's side -------------------------------------------------------------------------------

    def add_calendar(self, account: str, time_zone: str = "UTC") -> Calendar:
        """The account's primary calendar (its id is the account address, as at Google)."""
        with self.lock:
            return self.calendars.setdefault(account, Calendar(account, time_zone))

    def issue_token(self, account: str) -> str:
        """A new access token for the account (the default `authorize` accepts it until revoked)."""
        with self.lock:
            self._token_count += 1
            token = f"ya29.fake-{self._token_count}"
            self.tokens[token] = account
            return token

    def revoke(self, token: str | None = None, *, account: str | None = None) -> None:
        """Stop accepting one access token (it expired), or every token of an account (consent revoked)."""
        with self.lock:
            for known, owner in list(self.tokens.items()):
                if known == token or owner == account:
                    del self.tokens[known]

    def fail_next(
        self,
        status: int,
        reason: str,
        count: int = 1,
        *,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `count` requests (after the token check) with this error."""
        with self.lock:
            self._script.extend(GoogleError(status, reason, message, headers) for _ in range(count))

    def lose_answers(self, count: int = 1) -> None:
        """Carry out the next `count` requests but close the connection instead of answering (a lost answer)."""
        with self.lock:
            self._lose += count

    def random_throttle(self, probability: float, seed: int) -> None:
        """Answer that share of requests with `rateLimitExceeded` (403 or 429, drawn from the seeded rng)."""
        with self.lock:
            self._rng, self._throttle_probability = random.Random(seed), probability  # noqa: S311 (a test's dice)

    def delete_as_person(self, calendar_id: str, event_id: str) -> None:
        """What the person's calendar app does on delete: the event stays, cancelled (not a logged request)."""
        with self.lock:
            event = self.calendars[calendar_id].events[event_id]
            event["status"] = "cancelled"
            self._touch(event)

    def stored(self, calendar_id: str, *, deleted: bool = False) -> list[dict[str, Any]]:
        """Copies of the events held (cancelled ones only with deleted=True), as Google would answer them."""
        with self.lock:
            calendar = self.calendars[calendar_id]
            return [
                self._render(calendar, e) for e in calendar.events.values() if deleted or e["status"] != "cancelled"
            ]

    def start(self) -> GoogleCalendarFake:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="google-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(10)
        self._server = None

    def __enter__(self) -> GoogleCalendarFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/calendar/v3"

    # --- the API ---------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        """Answer one request: (status, JSON body or None, extra headers); status 0: answer nothing, close."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        with self.lock:
            entry = Logged(method, parts.path, query, None)
            self.log.append(entry)
            try:
                try:
                    entry.body = json.loads(raw) if raw else None
                except ValueError:
                    raise GoogleError(400, "parseError", "Parse Error") from None
                status, body = self._dispatch(entry, headers)
            except GoogleError as error:
                entry.status = error.status
                extra = dict(error.headers)
                if error.status == 401:
                    extra["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
                return error.status, error.body, extra
            entry.status = status
            if self._lose:
                self._lose -= 1
                return 0, None, {}
            return status, body, {}

    def _dispatch(self, entry: Logged, headers: dict[str, str]) -> tuple[int, Any]:
        route = ROUTE.fullmatch(entry.path)
        if route is None:
            raise GoogleError(404, "notFound")
        authorization = headers.get("authorization", "")
        account = self.authorize(authorization[7:]) if authorization.startswith("Bearer ") else None
        if account is None:
            raise GoogleError(401, "authError")
        entry.account = account
        if self._script:
            raise self._script.popleft()
        self._count(account)
        if self._rng is not None and self._rng.random() < self._throttle_probability:
            raise GoogleError(self._rng.choice((403, 429)), "rateLimitExceeded")
        calendar_id = unquote(route["calendar"])
        calendar = self.calendars.get(account if calendar_id == "primary" else calendar_id)
        if calendar is None or calendar.id != account:
            raise GoogleError(404, "notFound")
        event_id = unquote(route["event"]) if route["event"] else None
        method, body, query = entry.method, entry.body, entry.query
        send_updates = query.get("sendUpdates", ["false"])[-1]
        if send_updates not in ("all", "externalOnly", "none", "false"):
            raise GoogleError(400, "invalidParameter", f"Invalid value for: sendUpdates: {send_updates}")
        if event_id is None and method == "POST":
            return 200, self._insert(calendar, _object(body))
        if event_id is None and method == "GET":
            return 200, self._list(calendar, query)
        if event_id is None:
            raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")
        event = calendar.events.get(event_id)
        if event is None:
            raise GoogleError(404, "notFound")
        if_match = headers.get("if-match")
        if if_match and if_match not in ("*", event["etag"]):
            raise GoogleError(412, "conditionNotMet")
        if method == "GET":
            return 200, self._render(calendar, event)
        if method == "PUT":
            return 200, self._update(calendar, event, _object(body))
        if method == "PATCH":
            return 200, self._patch(calendar, event, _object(body))
        if method == "DELETE":
            if event["status"] == "cancelled":
                raise GoogleError(410, "deleted")
            event["status"] = "cancelled"
            self._touch(event)
            return 204, None
        raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")

    def _count(self, account: str) -> None:
        if self.rate_limit is None:
            return
        now = self.clock()
        window = self._windows.setdefault(account, deque())
        while window and (now - window[0]).total_seconds() >= 60:
            window.popleft()
        if len(window) >= self.rate_limit:
            raise GoogleError(403, "rateLimitExceeded")
        window.append(now)

    def _insert(self, calendar: Calendar, body: dict[str, Any]) -> dict[str, Any]:
        event_id = body.get("id")
        if event_id is not None and body.get("iCalUID") is not None:
            raise GoogleError(400, "invalid", "Only one of id and iCalUID may be given.")
        if event_id is None:
            event_id = uuid.uuid4().hex  # hex digits are base32hex too
        if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            raise GoogleError(400, "invalid", "Invalid resource id value.")
        if event_id in calendar.events:  # cancelled ones too: the id stays taken
            raise GoogleError(409, "duplicate")
        event = self._validated(body)
        now = _stamp(self.clock())
        event.update(
            kind="calendar#event",
            id=event_id,
            created=now,
            htmlLink=f"https://www.google.com/calendar/event?eid={event_id}",
            iCalUID=f"{event_id}@google.com",
            creator={"email": calendar.id, "self": True},
            organizer={"email": calendar.id, "self": True},
            sequence=0,
        )
        event.setdefault("status", "confirmed")
        event.setdefault("reminders", {"useDefault": True})
        event.setdefault("eventType", "default")
        self._touch(event)
        calendar.events[event_id] = event
        return self._render(calendar, event)

    def _update(self, calendar: Calendar, event: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        kept = {name: event[name] for name in (*READ_ONLY, "id", "sequence") if name in event}
        fresh = self._validated(body)
        fresh.setdefault("status", "confirmed")
        fresh.setdefault("reminders", {"useDefault": True})
        fresh.setdefault("eventType", "default")
        if fresh["start"] != event["start"] or fresh["end"] != event["end"]:
            kept["sequence"] = event.get("sequence", 0) + 1
        event.clear()
        event.update(fresh, **kept)
        self._touch(event)
        return self._render(calendar, event)

    def _patch(self, calendar: Calendar, event: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        merged = _merge(copy.deepcopy(event), {k: v for k, v in body.items() if k not in (*READ_ONLY, "id")})
        return self._update(calendar, event, merged)

    def _validated(self, body: dict[str, Any]) -> dict[str, Any]:
        event = {k: copy.deepcopy(v) for k, v in body.items() if k not in (*READ_ONLY, "id")}
        if event.get("status", "confirmed") not in ("confirmed", "tentative", "cancelled"):
            raise GoogleError(400, "invalid", "Invalid value for status.")
        for end in ("start", "end"):
            if not isinstance(event.get(end), dict) or not (event[end].get("dateTime") or event[end].get("date")):
                raise GoogleError(400, "required", f"Missing {end} time.")
            event[end]["_at"] = _instant(event[end], end)
        if ("date" in event["start"]) != ("date" in event["end"]):
            raise GoogleError(400, "invalid", "Start and end times must either both be date or both be dateTime.")
        if event["end"]["_at"] < event["start"]["_at"]:
            raise GoogleError(400, "timeRangeEmpty", "The specified time range is empty.")
        source = event.get("source")
        if source is not None and not str((source or {}).get("url", "")).startswith(("http://", "https://")):
            raise GoogleError(400, "invalid", "Invalid source url.")
        return event

    def _list(self, calendar: Calendar, query: dict[str, list[str]]) -> dict[str, Any]:
        wanted = [("private", _pair(p)) for p in query.get("privateExtendedProperty", [])]
        wanted += [("shared", _pair(p)) for p in query.get("sharedExtendedProperty", [])]
        show_deleted = query.get("showDeleted", ["false"])[-1] == "true"
        time_min = _bound(query, "timeMin")
        time_max = _bound(query, "timeMax")
        items = []
        for event in calendar.events.values():
            properties = event.get("extendedProperties") or {}
            if event["status"] == "cancelled" and not show_deleted:
                continue
            if any((properties.get(scope) or {}).get(name) != value for scope, (name, value) in wanted):
                continue
            if time_min is not None and event["end"]["_at"] <= time_min:
                continue
            if time_max is not None and event["start"]["_at"] >= time_max:
                continue
            items.append(event)
        size = min(int(query.get("maxResults", ["250"])[-1]), 2500)
        offset = int(query.get("pageToken", ["0"])[-1])
        page: dict[str, Any] = {
            "kind": "calendar#events",
            "summary": calendar.id,
            "timeZone": calendar.time_zone,
            "accessRole": "owner",
            "defaultReminders": [],
            "items": [self._render(calendar, e) for e in items[offset : offset + size]],
        }
        if offset + size < len(items):
            page["nextPageToken"] = str(offset + size)
        return page

    def _touch(self, event: dict[str, Any]) -> None:
        self._etags += 1
        event["etag"] = f'"{self._etags}"'
        event["updated"] = _stamp(self.clock())

    def _render(self, calendar: Calendar, event: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(event)
        for end in ("start", "end"):
            at = out[end].pop("_at")
            if "dateTime" in out[end]:
                zone = ZoneInfo(out[end].get("timeZone") or calendar.time_zone)
                out[end]["dateTime"] = at.astimezone(zone).isoformat(timespec="seconds")
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads: nothing outlives the fixture

    def __init__(self, fake: GoogleCalendarFake) -> None:
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        handler = _handler(fake)
        super().__init__(("127.0.0.1", 0), handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self.open_lock:
            self.open.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self.open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive connections, so their handler threads return and server_close() can join them."""
        with self.open_lock:
            for connection in self.open:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)


def _handler(fake: GoogleCalendarFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One write per answer (handle_one_request flushes) and no Nagle: head and body in separate small
        # segments meet the client's delayed ACK and cost 40 ms a request.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, extra = fake.handle(self.command, self.path, headers, raw)
            if status == 0:
                self.close_connection = True
                return
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GoogleError(400, "required", "Required")
    return body


def _instant(value: dict[str, Any], end: str) -> datetime:
    """The moment an EventDateTime means: dateTime with its offset, else in timeZone (required then)."""
    zone_name = value.get("timeZone")
    zone: ZoneInfo | None = None
    if zone_name is not None:
        try:
            zone = ZoneInfo(str(zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise GoogleError(400, "invalid", f"Invalid time zone definition for {end} time.") from None
    if value.get("dateTime"):
        try:
            moment = datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00"))
        except ValueError:
            raise GoogleError(400, "invalid", f"Invalid {end} time.") from None
        if moment.tzinfo is None:
            if zone is None:
                raise GoogleError(400, "required", f"Missing time zone definition for {end} time.")
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    try:
        day = datetime.fromisoformat(str(value["date"]))
    except ValueError:
        raise GoogleError(400, "invalid", f"Invalid {end} time.") from None
    return day.replace(tzinfo=zone or UTC).astimezone(UTC)


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise GoogleError(400, "invalid", "Invalid extended property constraint: expected propertyName=value.")
    return name, value


def _bound(query: dict[str, list[str]], name: str) -> datetime | None:
    if name not in query:
        return None
    try:
        moment = datetime.fromisoformat(query[name][-1].replace("Z", "+00:00"))
    except ValueError:
        raise GoogleError(400, "badRequest", "Bad Request") from None
    if moment.tzinfo is None:
        raise GoogleError(400, "badRequest", "Bad Request")
    return moment


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for name, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            _merge(target[name], value)
        elif value is None:
            target.pop(name, None)
        else:
            target[name] = copy.deepcopy(value)
    return target


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
