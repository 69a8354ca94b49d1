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
  `timeMax`, pages with `maxResults` (default 250, at most 2500) and `pageToken`.
- Incremental sync [GO1][GO3]: each calendar keeps a change log; the last page of a list carries
  `nextSyncToken` (the log's position when the listing began); a list with `syncToken` returns every event
  changed since, deletions included as `{"kind", "etag", "id", "status": "cancelled"}` (only the id is
  promised), and answers 400 `invalid` when combined with `iCalUID`, `orderBy`, `privateExtendedProperty`, `q`,
  `sharedExtendedProperty`, `timeMin`, `timeMax` or `updatedMin`. `invalidate_sync_tokens` makes every token
  (and page token) issued before it answer 410 `fullSyncRequired`.
- `POST …/events/{eventId}/move?destination=` (events.move): the event leaves the calendar (its id reads 404
  there and shows as cancelled in that calendar's change feed) and enters the destination under the same id.
- `GET /calendar/v3/calendars/{calendarId}` (calendars.get, answered on any role, `freeBusyReader` too),
  `GET /calendar/v3/users/me/calendarList` (`minAccessRole`, `maxResults` default 100 at most 250, `pageToken`):
  the calendars shared with the account, with `accessRole` and `primary`, and `GET
  /calendar/v3/users/me/calendarList/{calendarId}` (calendarList.get: that one entry, `primary` the account's
  own; 404 `notFound` when the account has no role on it). A deleted calendar (`delete_calendar`) answers 404
  `notFound` to everything. Writing to a calendar the account only reads is 403 `requiredAccessLevel`; reading
  one event (events.get) of a calendar where the account is only `freeBusyReader` is 404 `notFound`, as Google
  answers for an event the caller cannot see.
- Push notifications [GO2]: `POST …/events/watch {id, type: "web_hook", address, token?, params: {ttl}}` answers
  the Channel `{kind: "api#channel", id, resourceId, resourceUri, token, expiration}` (`expiration`: ms since the
  epoch as a string, `ttl` capped at 30 days: implementers report 7 to about 30 days [GO2-b]); an id in use is
  400 `channelIdNotUnique`. The address must be http(s) (Google demands https with a CA-signed certificate;
  tests receive on plain http on 127.0.0.1) and is only ever posted to when it is on the loopback interface.
  The channel first POSTs `sync` (message number 1), then `exists` on every change of the calendar's events,
  made through the API or by the hooks acting as the person (`person_deletes`, `person_edits`, `person_moves`,
  `delete_calendar`): headers X-Goog-Channel-ID, -Channel-Token, -Channel-Expiration (RFC 1123), -Message-Number
  (increasing per channel), -Resource-ID, -Resource-State, -Resource-URI, and no body. Expired and stopped
  channels send nothing. `POST /calendar/v3/channels/stop {id, resourceId}` answers 204, or 404 for a channel
  it does not know. `drop_next`, `duplicate_next` and `hold_next`/`release` make the next notifications go
  missing (a gap in message numbers, as when Google drops one), arrive twice, or arrive late and out of order;
  `pushed` records each POST and its answer, `settle()` waits until everything due has been delivered.
- Bearer tokens are checked by `authorize(token) -> account or None` (401 `authError` otherwise), which a
  test may replace (e.g. with the shared OAuth token fake); `issue_token`/`revoke` serve tests without one.
- Per-user rate limit: `rate_limit = N` requests answered per sliding 60 s of `clock` (those refused do not
  count) → 403 `rateLimitExceeded`; `random_throttle(p, seed)` answers `rateLimitExceeded` at random (403 or
  429, as Google does both); `fail_next(status, reason)` scripts the next answers; `lose_answers` carries
  requests out and closes the connection unanswered; `person_deletes` (alias `delete_as_person`) cancels an
  event as the person's calendar app would; `log` keeps every request.
Error body: `{"error": {"code", "message", "errors": [{"domain", "reason", "message"}], "status"}}`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ipaddress
import json
import random
import re
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calendars import oauth

EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
PREFIX = "/calendar/v3"
ROUTE = re.compile(r"/calendar/v3/calendars/(?P<calendar>[^/]+)/events(?:/(?P<event>[^/]+)(?P<move>/move)?)?")
CALENDAR_ROUTE = re.compile(r"/calendar/v3/calendars/(?P<calendar>[^/]+)")
CALENDAR_LIST = "/calendar/v3/users/me/calendarList"
CALENDAR_LIST_ENTRY = re.compile(r"/calendar/v3/users/me/calendarList/(?P<calendar>[^/]+)")
CHANNELS_STOP = "/calendar/v3/channels/stop"
# The OAuth scopes each method accepts, any one of them, as the Calendar API v3 discovery document lists them
# (https://www.googleapis.com/discovery/v1/apis/calendar/v3/rest, "scopes" of each method; the granular
# calendar.* scopes of 2024 included). A token without one is answered 403 insufficientPermissions [GO4].
_AUTH = "https://www.googleapis.com/auth/"
SCOPES_EVENTS_READ = frozenset(
    _AUTH + s for s in ("calendar", "calendar.readonly", "calendar.events", "calendar.events.readonly",
                        "calendar.events.owned", "calendar.events.owned.readonly", "calendar.app.created")
)  # fmt: skip
SCOPES_EVENTS_WRITE = frozenset(
    _AUTH + s for s in ("calendar", "calendar.events", "calendar.events.owned", "calendar.app.created")
)
SCOPES_CALENDARS_GET = frozenset(
    _AUTH + s for s in ("calendar", "calendar.readonly", "calendar.calendars", "calendar.calendars.readonly",
                        "calendar.app.created")
)  # fmt: skip
SCOPES_CALENDAR_LIST_READ = frozenset(
    _AUTH + s for s in ("calendar", "calendar.readonly", "calendar.calendarlist", "calendar.calendarlist.readonly",
                        "calendar.app.created")
)  # fmt: skip
# What a token carries unless the test says otherwise: exactly what coursewire asks people to consent to.
DEFAULT_SCOPES = frozenset(oauth.SCOPES["Google"])
# Parameters Google refuses next to a syncToken [GO3].
NOT_WITH_SYNC_TOKEN = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
ROLES = ("freeBusyReader", "reader", "writer", "owner")
MAX_TTL = timedelta(days=30)
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "GONE",
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
    "fullSyncRequired": "Sync token is no longer valid, a full sync is required.",
    "requiredAccessLevel": "You need to have writer access to this calendar.",
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
    summary: str = ""
    roles: dict[str, str] = field(default_factory=dict)  # account -> accessRole
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id, in insertion order
    changes: list[str] = field(default_factory=list)  # event ids in the order they changed: the sync log
    resource_id: str = field(default_factory=lambda: uuid.uuid4().hex[:27])


@dataclass
class Channel:
    """An events.watch channel [GO2]."""

    id: str
    calendar_id: str
    resource_id: str
    resource_uri: str
    address: str
    token: str | None
    expiration: datetime
    account: str
    messages: int = 0  # the last message number used
    stopped: bool = False


@dataclass
class Pushed:
    """One notification POSTed (or dropped): `status` is the receiver's answer, 0 when it could not be reached,
    None when it was dropped or not sent (not a loopback address)."""

    channel_id: str
    number: int
    state: str
    address: str
    headers: dict[str, str]
    status: int | None = None


class GoogleCalendarFake:
    """Start with `start()` (or as a context manager); `base_url` is what GoogleProvider takes."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.calendars: dict[str, Calendar] = {}
        self.tokens: dict[str, str] = {}  # access token -> account
        self.token_scopes: dict[str, frozenset[str]] = {}  # access token -> its scopes (absent: DEFAULT_SCOPES)
        self.authorize: Callable[[str], str | None] = self.tokens.get
        self.rate_limit: int | None = None  # requests per sliding minute per account
        self.log: list[Logged] = []
        self.channels: dict[str, Channel] = {}
        self.pushed: list[Pushed] = []
        self.lock = threading.RLock()
        self._script: deque[GoogleError] = deque()
        self._path_script: dict[str, deque[GoogleError]] = {}  # fail_at: errors for one path
        self._lose = 0
        self._windows: dict[str, deque[datetime]] = {}
        self._rng: random.Random | None = None
        self._throttle_probability = 0.0
        self._etags = 3181161784712000
        self._token_count = 0
        self._epoch = 0  # sync and page tokens of an older epoch answer 410 fullSyncRequired
        self._outbox: deque[Pushed] = deque()
        self._held: list[Pushed] = []
        self._drop = self._duplicate = self._hold = 0
        self._in_flight = 0
        self._delivering = threading.Lock()  # one deliverer at a time, so notifications leave in order
        self._settled = threading.Condition(self.lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- the test's side -------------------------------------------------------------------------------

    def add_calendar(
        self,
        account: str,
        time_zone: str = "UTC",
        *,
        calendar_id: str | None = None,
        summary: str | None = None,
        role: str = "owner",
    ) -> Calendar:
        """The account's primary calendar (its id is the account address, as at Google), or with `calendar_id`
        another calendar that the account reaches with `role` (adding an account to an existing one shares it)."""
        with self.lock:
            calendar_id = calendar_id or account
            calendar = self.calendars.setdefault(calendar_id, Calendar(calendar_id, time_zone, summary or calendar_id))
            calendar.roles[account] = role
            return calendar

    def issue_token(self, account: str, scopes: Iterable[str] | None = None) -> str:
        """A new access token for the account (the default `authorize` accepts it until revoked), carrying
        `scopes` (default: those coursewire requests, calendars.oauth.SCOPES)."""
        with self.lock:
            self._token_count += 1
            token = f"ya29.fake-{self._token_count}"
            self.tokens[token] = account
            if scopes is not None:
                self.token_scopes[token] = frozenset(scopes)
            return token

    def revoke(self, token: str | None = None, *, account: str | None = None) -> None:
        """Stop accepting one access token (it expired), or every token of an account (consent revoked)."""
        with self.lock:
            for known, owner in list(self.tokens.items()):
                if known == token or owner == account:
                    del self.tokens[known]

    def fail_at(self, path: str, status: int, reason: str, count: int = 1) -> None:
        """Answer the next `count` requests for `path` (e.g. `/calendar/v3/calendars/{id}/events/{eventId}`),
        after the token check, with this error; other paths are answered as usual."""
        with self.lock:
            self._path_script.setdefault(path, deque()).extend(GoogleError(status, reason) for _ in range(count))

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

    def person_deletes(self, calendar_id: str, event_id: str) -> None:
        """What the person's calendar app does on delete: the event stays, cancelled (not a logged request)."""
        with self.lock:
            calendar = self.calendars[calendar_id]
            event = calendar.events[event_id]
            event["status"] = "cancelled"
            self._touch(event)
            self._changed(calendar, event_id)
        self._deliver()

    delete_as_person = person_deletes

    def person_edits(self, calendar_id: str, event_id: str, **fields: Any) -> None:
        """The person changes fields of the event in their calendar app (e.g. summary="Mine now")."""
        with self.lock:
            calendar = self.calendars[calendar_id]
            event = calendar.events[event_id]
            event.update(copy.deepcopy(fields))
            self._touch(event)
            self._changed(calendar, event_id)
        self._deliver()

    def person_moves(self, calendar_id: str, event_id: str, destination: str) -> None:
        """The person moves the event to another of their calendars, as events.move does."""
        with self.lock:
            self._move(self.calendars[calendar_id], event_id, self.calendars[destination])
        self._deliver()

    def delete_calendar(self, calendar_id: str) -> None:
        """The calendar is deleted as a whole: its channels say so once more (`exists`), then everything about
        it answers 404."""
        with self.lock:
            calendar = self.calendars.pop(calendar_id)
            self._notify(calendar.id, "exists")
            for channel in self.channels.values():
                if channel.calendar_id == calendar.id:
                    channel.stopped = True
        self._deliver()

    def invalidate_sync_tokens(self) -> None:
        """Every sync token and page token issued so far answers 410 fullSyncRequired (Google's tokens expire)."""
        with self.lock:
            self._epoch += 1

    def drop_next(self, count: int = 1) -> None:
        """The next `count` notifications are never sent (their message numbers are spent: a gap)."""
        with self.lock:
            self._drop += count

    def duplicate_next(self, count: int = 1) -> None:
        """The next `count` notifications arrive twice, with the same message number."""
        with self.lock:
            self._duplicate += count

    def hold_next(self, count: int = 1) -> None:
        """The next `count` notifications wait until `release()`, so later ones overtake them."""
        with self.lock:
            self._hold += count

    def release(self) -> None:
        """Send the held notifications now, the last held first."""
        with self.lock:
            self._outbox.extend(reversed(self._held))
            self._held.clear()
        self._deliver()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every notification due has been delivered (answers in flight included)."""
        with self._settled:
            if not self._settled.wait_for(lambda: not self._outbox and not self._in_flight, timeout):
                raise TimeoutError("notifications still in flight")

    def stored(self, calendar_id: str, *, deleted: bool = False) -> list[dict[str, Any]]:
        """Copies of the events held (cancelled ones only with deleted=True), as Google would answer them."""
        with self.lock:
            calendar = self.calendars[calendar_id]
            return [
                self._render(calendar, e) for e in calendar.events.values() if deleted or e["status"] != "cancelled"
            ]

    def requests(self, method: str | None = None, path: str | None = None) -> list[Logged]:
        """The logged requests, those with this method and/or a path ending with `path`."""
        with self.lock:
            return [
                e
                for e in self.log
                if (method is None or e.method == method) and (path is None or e.path.endswith(path))
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
        return f"http://{host!s}:{port}{PREFIX}"

    # --- the API ---------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        """Answer one request: (status, JSON body or None, extra headers); status 0: answer nothing, close.
        Notifications the request caused are sent by `deliver_after` once the answer is out."""
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

    def deliver_after(self) -> None:
        """Called by the server after each answer: send the notifications that are due."""
        self._deliver()

    def _dispatch(self, entry: Logged, headers: dict[str, str]) -> tuple[int, Any]:
        route = ROUTE.fullmatch(entry.path)
        calendar_route = CALENDAR_ROUTE.fullmatch(entry.path)
        list_entry = CALENDAR_LIST_ENTRY.fullmatch(entry.path)
        known = route is not None or calendar_route is not None or list_entry is not None
        if not known and entry.path not in (CALENDAR_LIST, CHANNELS_STOP):
            raise GoogleError(404, "notFound")
        authorization = headers.get("authorization", "")
        account = self.authorize(authorization[7:]) if authorization.startswith("Bearer ") else None
        if account is None:
            raise GoogleError(401, "authError")
        entry.account = account
        granted = self.token_scopes.get(authorization[7:], DEFAULT_SCOPES)
        if not granted & _accepted(entry, route, list_entry):
            raise GoogleError(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
        if self._script:
            raise self._script.popleft()
        with self.lock:
            scripted = self._path_script.get(entry.path)
            if scripted:
                raise scripted.popleft()
        self._count(account)
        if self._rng is not None and self._rng.random() < self._throttle_probability:
            raise GoogleError(self._rng.choice((403, 429)), "rateLimitExceeded")
        method, body, query = entry.method, entry.body, entry.query
        if entry.path == CALENDAR_LIST:
            if method != "GET":
                raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")
            return 200, self._calendar_list(account, query)
        if list_entry is not None:
            if method != "GET":
                raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")
            return 200, self._list_entry(account, self._calendar(account, unquote(list_entry["calendar"])))
        if entry.path == CHANNELS_STOP:
            if method != "POST":
                raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")
            return self._stop(_object(body))
        calendar_id = unquote((route or calendar_route)["calendar"])  # type: ignore[index]
        calendar = self._calendar(account, calendar_id)
        if route is None:
            if method != "GET":
                raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")
            return 200, {
                "kind": "calendar#calendar",
                "etag": f'"{calendar.resource_id}"',
                "id": calendar.id,
                "summary": calendar.summary,
                "timeZone": calendar.time_zone,
            }
        event_id = unquote(route["event"]) if route["event"] else None
        send_updates = query.get("sendUpdates", ["false"])[-1]
        if send_updates not in ("all", "externalOnly", "none", "false"):
            raise GoogleError(400, "invalidParameter", f"Invalid value for: sendUpdates: {send_updates}")
        if event_id == "watch" and method == "POST" and not route["move"]:  # 'w' is no base32hex: not an id
            return 200, self._watch(calendar, account, _object(body))
        if method != "GET":
            self._require_writer(calendar, account)
        if event_id is None and method == "POST":
            return 200, self._insert(calendar, _object(body))
        if event_id is None and method == "GET":
            return 200, self._list(calendar, query)
        if event_id is None:
            raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")
        event = calendar.events.get(event_id)
        if event is None or (method == "GET" and calendar.roles[account] == "freeBusyReader"):
            raise GoogleError(404, "notFound")  # free/busy only: the event is not there for this account
        if_match = headers.get("if-match")
        if if_match and if_match not in ("*", event["etag"]):
            raise GoogleError(412, "conditionNotMet")
        if route["move"]:
            if method != "POST":
                raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")
            destination = self._calendar(account, query.get("destination", [""])[-1])
            self._require_writer(destination, account)
            moved = self._move(calendar, event_id, destination)
            return 200, self._render(destination, moved)
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
            self._changed(calendar, event_id)
            return 204, None
        raise GoogleError(405, "httpMethodNotAllowed", "Method Not Allowed")

    def _calendar(self, account: str, calendar_id: str) -> Calendar:
        calendar = self.calendars.get(account if calendar_id == "primary" else calendar_id)
        if calendar is None or account not in calendar.roles:
            raise GoogleError(404, "notFound")
        return calendar

    def _require_writer(self, calendar: Calendar, account: str) -> None:
        if calendar.roles.get(account) not in ("writer", "owner"):
            raise GoogleError(403, "requiredAccessLevel")

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
        self._changed(calendar, event_id)
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
        self._changed(calendar, event["id"])
        return self._render(calendar, event)

    def _patch(self, calendar: Calendar, event: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        merged = _merge(copy.deepcopy(event), {k: v for k, v in body.items() if k not in (*READ_ONLY, "id")})
        return self._update(calendar, event, merged)

    def _move(self, source: Calendar, event_id: str, destination: Calendar) -> dict[str, Any]:
        """events.move: the event leaves `source` (404 there, cancelled in its change feed) for `destination`,
        under the same id, organized by the destination calendar."""
        if event_id in destination.events:
            raise GoogleError(409, "duplicate")
        event = source.events.pop(event_id)
        event["organizer"] = {"email": destination.id, "self": True}
        self._touch(event)
        destination.events[event_id] = event
        self._changed(source, event_id)
        self._changed(destination, event_id)
        return event

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
        size = min(int(query.get("maxResults", ["250"])[-1]), 2500)
        sync_token = query.get("syncToken", [None])[-1]
        page_token = query.get("pageToken", [None])[-1]
        if sync_token is not None:
            forbidden = [name for name in NOT_WITH_SYNC_TOKEN if name in query]
            if forbidden:
                raise GoogleError(400, "invalid", f"The parameter {forbidden[0]} cannot be used with syncToken.")
        if page_token is not None:  # carries the listing it continues
            state = self._token(calendar, page_token, "pageToken")
            since, until, offset = state["since"], state["until"], state["offset"]
        else:
            since = None if sync_token is None else self._token(calendar, sync_token, "syncToken")["at"]
            until, offset = len(calendar.changes), 0
        if since is not None:
            changed = dict.fromkeys(reversed(calendar.changes[since:until]))  # each id once, at its last change
            items = [
                self._render(calendar, calendar.events[i]) if self._live(calendar, i) else self._gone(i)
                for i in reversed(changed)
            ]
        else:
            items = [self._render(calendar, e) for e in self._matching(calendar, query)]
        page: dict[str, Any] = {
            "kind": "calendar#events",
            "summary": calendar.summary,
            "timeZone": calendar.time_zone,
            "accessRole": calendar.roles.get(calendar.id, "owner"),
            "defaultReminders": [],
            "items": items[offset : offset + size],
        }
        if offset + size < len(items):
            state = {"since": since, "until": until, "offset": offset + size}
            page["nextPageToken"] = self._mint(calendar, state)
        else:
            page["nextSyncToken"] = self._mint(calendar, {"at": until})
        return page

    def _matching(self, calendar: Calendar, query: dict[str, list[str]]) -> list[dict[str, Any]]:
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
        return items

    def _live(self, calendar: Calendar, event_id: str) -> bool:
        return event_id in calendar.events and calendar.events[event_id]["status"] != "cancelled"

    def _gone(self, event_id: str) -> dict[str, Any]:
        """A deletion in a change feed: only the id is promised [GO1]."""
        self._etags += 1
        return {"kind": "calendar#event", "etag": f'"{self._etags}"', "id": event_id, "status": "cancelled"}

    def _mint(self, calendar: Calendar, state: dict[str, Any]) -> str:
        data = json.dumps({"c": calendar.id, "e": self._epoch, **state}).encode()
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def _token(self, calendar: Calendar, token: str, name: str) -> dict[str, Any]:
        try:
            state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except ValueError:
            raise GoogleError(400, "invalid", f"Invalid {name} value.") from None
        if not isinstance(state, dict) or state.get("c") != calendar.id:
            raise GoogleError(400, "invalid", f"Invalid {name} value.")
        if state.get("e") != self._epoch:
            raise GoogleError(410, "fullSyncRequired")
        return state

    def _calendar_list(self, account: str, query: dict[str, list[str]]) -> dict[str, Any]:
        least = query.get("minAccessRole", ["freeBusyReader"])[-1]
        if least not in ROLES:
            raise GoogleError(400, "invalidParameter", f"Invalid value for: minAccessRole: {least}")
        entries = [
            self._list_entry(account, c)
            for c in self.calendars.values()
            if ROLES.index(c.roles.get(account, least)) >= ROLES.index(least) and account in c.roles
        ]
        size = min(int(query.get("maxResults", ["100"])[-1]), 250)
        offset = int(query.get("pageToken", ["0"])[-1])
        page: dict[str, Any] = {"kind": "calendar#calendarList", "items": entries[offset : offset + size]}
        if offset + size < len(entries):
            page["nextPageToken"] = str(offset + size)
        return page

    def _list_entry(self, account: str, calendar: Calendar) -> dict[str, Any]:
        """The account's CalendarList entry for a calendar it has a role on."""
        return {
            "kind": "calendar#calendarListEntry",
            "id": calendar.id,
            "summary": calendar.summary,
            "timeZone": calendar.time_zone,
            "accessRole": calendar.roles[account],
            **({"primary": True} if calendar.id == account else {}),
        }

    def _watch(self, calendar: Calendar, account: str, body: dict[str, Any]) -> dict[str, Any]:
        channel_id, address = body.get("id"), body.get("address")
        if not isinstance(channel_id, str) or not channel_id:
            raise GoogleError(400, "required", "Required channel id")
        if channel_id in self.channels:
            raise GoogleError(400, "channelIdNotUnique", f"Channel id {channel_id} not unique")
        if body.get("type") not in ("web_hook", "webhook"):
            raise GoogleError(400, "invalid", "Invalid channel type")
        if not isinstance(address, str) or urlsplit(address).scheme not in ("http", "https"):
            raise GoogleError(400, "push.webhookUrlNotHttps", "WebHook callback must be HTTPS")
        ttl = MAX_TTL
        with contextlib.suppress(TypeError, ValueError):
            ttl = min(timedelta(seconds=int((body.get("params") or {})["ttl"])), MAX_TTL)
        expiration = (self.clock() + ttl).replace(microsecond=0)
        token = body.get("token")
        channel = Channel(
            id=channel_id,
            calendar_id=calendar.id,
            resource_id=calendar.resource_id,
            resource_uri=f"https://www.googleapis.com/calendar/v3/calendars/{calendar.id}/events?alt=json",
            address=address,
            token=token if isinstance(token, str) else None,
            expiration=expiration,
            account=account,
        )
        self.channels[channel_id] = channel
        self._push(channel, "sync")
        answer = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
            "expiration": str(int(expiration.timestamp() * 1000)),
        }
        if channel.token is not None:
            answer["token"] = channel.token
        return answer

    def _stop(self, body: dict[str, Any]) -> tuple[int, Any]:
        channel = self.channels.get(str(body.get("id")))
        if channel is None or channel.stopped or channel.resource_id != body.get("resourceId"):
            raise GoogleError(404, "notFound", f"Channel '{body.get('id')}' not found for project '1'")
        channel.stopped = True
        return 204, None

    # --- notifications ---------------------------------------------------------------------------------

    def _changed(self, calendar: Calendar, event_id: str) -> None:
        calendar.changes.append(event_id)
        self._notify(calendar.id, "exists")

    def _notify(self, calendar_id: str, state: str) -> None:
        now = self.clock()
        for channel in self.channels.values():
            if channel.calendar_id == calendar_id and not channel.stopped and channel.expiration > now:
                self._push(channel, state)

    def _push(self, channel: Channel, state: str) -> None:
        channel.messages += 1
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": format_datetime(channel.expiration, usegmt=True),
            "X-Goog-Message-Number": str(channel.messages),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": state,
            "X-Goog-Resource-URI": channel.resource_uri,
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        message = Pushed(channel.id, channel.messages, state, channel.address, headers)
        if self._drop:
            self._drop -= 1
            self.pushed.append(message)
            return
        copies = 1
        if self._duplicate:
            self._duplicate -= 1
            copies = 2
        for _ in range(copies):
            if self._hold:
                self._hold -= 1
                self._held.append(copy.deepcopy(message))
            else:
                self._outbox.append(copy.deepcopy(message))

    def _deliver(self) -> None:
        """POST what is in the outbox, in order, one deliverer at a time."""
        with self._delivering:
            while True:
                with self.lock:
                    if not self._outbox:
                        self._settled.notify_all()
                        return
                    message = self._outbox.popleft()
                    self._in_flight += 1
                message.status = _post(message.address, message.headers)
                with self.lock:
                    self.pushed.append(message)
                    self._in_flight -= 1
                    self._settled.notify_all()

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


def _post(address: str, headers: dict[str, str]) -> int | None:
    """POST a notification with no body; only to the loopback interface (tests never reach further)."""
    host = urlsplit(address).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    request = urllib.request.Request(address, data=b"", headers=headers, method="POST")  # noqa: S310 (http(s) only)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return 0


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
            try:
                self._answer(status, body, extra)
            finally:
                fake.deliver_after()  # the answer is out first, as Google answers watch before its `sync`

        def _answer(self, status: int, body: Any, extra: dict[str, str]) -> None:
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
            self.wfile.flush()

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


def _accepted(entry: Logged, route: re.Match[str] | None, list_entry: re.Match[str] | None) -> frozenset[str]:
    """The scopes the method of this request accepts (see SCOPES_EVENTS_READ and the others)."""
    if route is not None:
        watch = route.group("event") == "watch"
        return SCOPES_EVENTS_READ if entry.method == "GET" or watch else SCOPES_EVENTS_WRITE
    if entry.path == CALENDAR_LIST or list_entry is not None:
        return SCOPES_CALENDAR_LIST_READ
    if entry.path == CHANNELS_STOP:
        return SCOPES_EVENTS_READ | SCOPES_CALENDARS_GET | SCOPES_CALENDAR_LIST_READ
    return SCOPES_CALENDARS_GET
