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
- Application access (tenant-wide, `APP` tokens) [MS1]: `/users/{id or userPrincipalName}` (GET: `id`, `mail`,
  `userPrincipalName`; needs `User.Read.All`, else 403 Authorization_RequestDenied; unknown: 404
  Request_ResourceNotFound), `GET /users?$top=` (the same, needs User.Read.All; `$filter=mail eq` answers 400
  Request_BadRequest for an address in `unfilterable`), and every `/users/{id}/...`
  route above (needs `Calendars.ReadWrite`, else 403 ErrorAccessDenied). `app_permissions` holds what admin
  consent granted.
- `throttle_mailbox(user, count, retry_after)`: the next `count` requests to that mailbox (inside a $batch or
  not) answer 429 ApplicationThrottled with Retry-After. With `enforce_retry_after`, every 429 opens a window
  (measured by `monotonic`, which tests replace with their virtual clock) during which that mailbox -- or, for
  an outer 429, the whole application -- keeps being answered 429 with the time left, and each such early
  request is counted in `counters["early"]` [MS12] (not the other requests of the $batch that got the 429:
  they were sent before the client could know).
- Random 429s (`throttle_rate` outside, `batch_throttle_rate` inside $batch) from a seeded generator.
- Bearer tokens: `token_check(token) -> user id | APP | None` decides; by default the tokens `issue_token`
  gave out, minus those of users `revoke`d. A shared OAuth fake can replace `token_check`.
- `fail_next(kind)`: 'throttle' (429 + Retry-After), 'unavailable' (503), 'auth' (401), 'lose' (the request
  is carried out and the connection closed without an answer, as when a response is lost).
- `GET .../calendar` and `.../calendars/{id}`: the calendar, 404 once `delete_calendar` removed it.
- `GET .../calendarView/delta` (`/me/calendarView/delta` for the default calendar, `.../calendars/{id}/...`)
  [MS10]: the first request needs `startDateTime` and `endDateTime` and lists the events of that window; pages
  of `Prefer: odata.maxpagesize` (10 without it) linked by an absolute `@odata.nextLink` (`$skiptoken`), the
  last page with an absolute `@odata.deltaLink` (`$deltatoken`). A deltaLink lists what changed in the calendar
  since it was given (each calendar keeps a change log), deletions and moves out as
  `{"id", "@removed": {"reason": "deleted"}}`. Delta answers carry no extended properties (delta takes no
  `$expand`). `expire_delta` makes every token given so far fail as Graph's do when its cache dropped them
  [MS10-b]: `410 Gone` with a `Location` whose `$deltatoken` is empty, or `400 syncStateNotFound`.
- `/v1.0/subscriptions` (POST, GET, `/{id}` GET, PATCH, DELETE) [MS4][MS5][MS6][MS7][MS15]: a create first
  POSTs `?validationToken=<token>` (empty body) to `notificationUrl` and to `lifecycleNotificationUrl`, and
  answers 400 "Subscription validation request failed..." unless each answers 200, `text/plain`, the decoded
  token, within `validation_timeout` (10 s); `clientState` at most 128 characters; expirations over 10,080
  minutes ahead are refused, under 45 minutes raised to 45; at most 1,000 per mailbox; an expired one is gone.
  `https` is required except on 127.0.0.1 and localhost (tests cannot get a certificate).
- Change notifications [MS5]: every create, update and delete of an event in a subscribed calendar, through the
  API or by the person's hooks, POSTs `{"value": [{subscriptionId, subscriptionExpirationDateTime, changeType,
  resource, resourceData {@odata.type, @odata.id, @odata.etag, id}, clientState, tenantId}]}` to the
  notificationUrl, one change per POST, in order, from the fake's own loop; `flush()` waits until all were
  sent. The ids are ImmutableIds when the subscription was created with `Prefer: IdType="ImmutableId"`
  [MS16]. `drop_next`, `duplicate_next`, `hold` and `release(reverse=True)` make delivery lose, repeat or
  reorder notifications as Graph may; nothing is retried (Graph retries for up to 4 hours; a test sees a
  failed delivery in `deliveries`). `lifecycle(id, event)` POSTs a lifecycle notification [MS7];
  `subscriptionRemoved` also removes the subscription. A subscription on `me/events` is, in this fake, one on
  the default calendar's events; moving an event to another calendar is a `deleted` in the calendar it left and
  a `created` in the one it reached (the docs do not say what Graph sends). `delete_calendar` sends `deleted`
  for each of its events unless `notify=False` (the docs do not say either; this is the harder case).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

APP = "*application*"  # token_check's answer for an application token (any mailbox of the tenant)
BATCH_LIMIT = 20
MAILBOX_CONCURRENCY = 4
BATCH_PARALLELISM = 4  # Graph sends at most 4 requests of one batch to Outlook at a time [MS11-b]
TENANT_ID = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
SUBSCRIPTION_MAX = timedelta(minutes=10_080)  # Outlook events [MS4]
SUBSCRIPTION_MIN = timedelta(minutes=45)  # shorter requests are raised to this [MS15]
SUBSCRIPTIONS_PER_MAILBOX = 1_000  # [MS4-b]
CLIENT_STATE_MAX = 128  # [MS5]
DELTA_DEFAULT_PAGE = 10
DELTA_MAX_PAGE = 1_000
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")

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


# The folder an event deleted in Outlook goes to: not a calendar (not in Mailbox.calendars).
DELETED_ITEMS = "DeletedItems"


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
    seq: int = 0  # the last change's number, across the mailbox
    # calendar id -> its change log: (number, immutable id, regular id then, removed from the calendar)
    log: dict[str, list[tuple[int, str, str, bool]]] = field(default_factory=dict)
    delta_epoch: int = 0  # delta tokens of an earlier epoch are expired
    expired_as: tuple[int, str] = (410, "resyncRequired")
    upn: str | None = None  # userPrincipalName when it differs from `address`
    throttles: deque[int] = field(default_factory=deque)  # Retry-After of the next requests to answer 429
    blocked_until: float = 0.0  # monotonic(): 429 until then (enforce_retry_after)
    blocked_by: int = 0  # the HTTP call whose 429 opened the window: its other requests were sent before it


@dataclass
class Subscription:
    id: str
    user_id: str
    calendar: str  # the calendar whose events it watches
    resource: str  # as the app sent it
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime
    immutable: bool  # created with Prefer: IdType="ImmutableId": notifications carry ImmutableIds [MS16]

    def render(self) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": "24d3b144-21ae-4080-943f-7067b395b913",
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _zulu(self.expires),
            "creatorId": self.user_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "notificationUrlAppId": None,
        }


@dataclass(frozen=True)
class Delivery:
    """One POST the fake made to a receiver: the URL, the JSON body, the status (None: no answer)."""

    url: str
    body: dict[str, Any]
    status: int | None


@dataclass
class _DeltaRound:
    """A delta answer being paged: what it lists, fixed at its first page, and the token it ends with."""

    user_id: str
    calendar: str
    entries: list[tuple[str, str, bool]]  # (immutable id, regular id, removed)
    offset: int
    upto: int
    window: tuple[str, str]
    epoch: int


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
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # subscription expiry is measured by it
        self.monotonic: Callable[[], float] = time.monotonic  # Retry-After windows are measured by it
        self.enforce_retry_after = False
        self.app_permissions = {"Calendars.ReadWrite", "User.Read.All"}
        self.unfilterable: set[str] = set()  # addresses (any case) whose `mail eq` $filter Graph answers 400
        self._app_blocked_until = 0.0
        self.validation_timeout = 10.0  # seconds a receiver has to answer the validation request [MS6]
        self.subscriptions: dict[str, Subscription] = {}
        self.validations: list[tuple[str, bool]] = []  # (URL validated, passed)
        self.deliveries: list[Delivery] = []  # every notification POSTed, in order
        self.dropped: list[dict[str, Any]] = []  # notifications drop_next swallowed
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self._held: list[tuple[str, dict[str, Any]]] = []
        self._holding = False
        self._drop = self._duplicate = 0
        self._sender: asyncio.Task[None] | None = None
        self._client: ClientSession | None = None
        self._rounds: dict[str, _DeltaRound] = {}

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
        self._client = ClientSession()
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
        asyncio.run_coroutine_threadsafe(self._shutdown_client(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    async def _shutdown_client(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    def __enter__(self) -> GraphFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the test's side -------------------------------------------------------------------------------------

    def add_user(self, user_id: str, address: str, *, upn: str | None = None) -> Mailbox:
        """A mailbox with its default calendar ("Calendar"); `upn`: its userPrincipalName when not `address`."""
        with self._lock:
            calendar = _opaque("AAMkAGCal")
            mailbox = Mailbox(user_id, address, calendar, {calendar: "Calendar"}, upn=upn)
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

    def throttle_mailbox(self, user_id: str, count: int = 1, retry_after: int = 7) -> None:
        """The next `count` requests to the mailbox answer 429 with `retry_after` seconds."""
        with self._lock:
            self.mailboxes[user_id].throttles.extend([retry_after] * count)

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
        """The person deletes the event in Outlook: it leaves the calendar (GET, PATCH and DELETE give 404); the
        calendar's subscriptions hear `deleted` and its delta lists the removal."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            found = _find(mailbox, event_id)
            if found is not None:
                del mailbox.events[found.immutable_id]
                self._changed(mailbox, found, "deleted")

    def trash_as_person(self, user_id: str, event_id: str) -> None:
        """The person deletes the event in Outlook, which moves it to Deleted Items: it leaves the calendar (its
        subscriptions hear `deleted`, its delta lists the removal) but is still found by its ImmutableId
        (`GET /events/{id}` answers 200); `GET /events/{id}/calendar` answers 404, since it is in no calendar."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            found = _find(mailbox, event_id)
            assert found is not None
            before = replace(found)
            found.calendar = DELETED_ITEMS
            self._changed(mailbox, before, "deleted")

    def move_as_person(self, user_id: str, event_id: str, calendar: str) -> None:
        """The person moves the event to another calendar: its regular id changes, its ImmutableId does not
        [MS16]; the calendar it left hears `deleted`, the one it reached `created`."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            found = _find(mailbox, event_id)
            assert found is not None
            before = replace(found)
            found.calendar, found.regular_id = calendar, _opaque("AAMkAGEv")
            self._changed(mailbox, before, "deleted")
            self._changed(mailbox, found, "created")

    def edit_as_person(self, user_id: str, event_id: str, **changes: Any) -> None:
        """The person edits the event's fields (as stored: `subject`, `start`, ...): subscriptions hear
        `updated`."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            found = _find(mailbox, event_id)
            assert found is not None
            found.fields.update(changes)
            found.change_key = _opaque("")[:16]
            self._changed(mailbox, found, "updated")

    def delete_calendar(self, user_id: str, calendar: str, *, notify: bool = True) -> None:
        """The person deletes a whole (non-default) calendar: it and its events are gone (GET on it, its delta
        and its events give 404); with `notify`, its subscriptions hear `deleted` for each event."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            assert calendar != mailbox.default_calendar, "the default calendar cannot be deleted"
            del mailbox.calendars[calendar]
            for event in [e for e in mailbox.events.values() if e.calendar == calendar]:
                del mailbox.events[event.immutable_id]
                if notify:
                    self._changed(mailbox, event, "deleted")
            mailbox.log.pop(calendar, None)

    def expire_delta(self, user_id: str, status: int = 410, code: str = "resyncRequired") -> None:
        """Every delta and skip token given so far for the mailbox fails from now on, as when Graph's token cache
        dropped them [MS10-b]: `410` answers with a `Location` whose `$deltatoken` is empty, any status with
        the error `code` (`syncStateNotFound` with 400, as Graph answers some expired tokens)."""
        with self._lock:
            mailbox = self.mailboxes[user_id]
            mailbox.delta_epoch += 1
            mailbox.expired_as = (status, code)

    # -- notifications, as the test steers them ------------------------------------------------------------

    def drop_next(self, count: int = 1) -> None:
        """The next `count` change notifications are never sent (Graph drops some [MS5])."""
        with self._lock:
            self._drop += count

    def duplicate_next(self, count: int = 1) -> None:
        """The next `count` change notifications are each sent twice."""
        with self._lock:
            self._duplicate += count

    def hold(self) -> None:
        """Change notifications wait until `release()`."""
        with self._lock:
            self._holding = True

    def release(self, *, reverse: bool = False) -> None:
        """Send the held notifications, last first when `reverse` (out of order), and stop holding."""
        with self._lock:
            held, self._held, self._holding = self._held, [], False
            self._outbox.extend(reversed(held) if reverse else held)
        self._kick()

    def flush(self, timeout: float = 10) -> None:
        """Wait until every notification queued so far has been POSTed (and answered, or failed)."""
        self._on_loop(self._drain, timeout)

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """POST a lifecycle notification for the subscription to its lifecycleNotificationUrl [MS7];
        `subscriptionRemoved` also removes the subscription. Waits until it was answered."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(event)
        with self._lock:
            sub = self.subscriptions[subscription_id]
            if event == "subscriptionRemoved":
                del self.subscriptions[subscription_id]
            note = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": _zulu(sub.expires),
                "tenantId": TENANT_ID,
                "clientState": sub.client_state,
                "lifecycleEvent": event,
            }
            if sub.lifecycle_url is not None:
                self._outbox.append((sub.lifecycle_url, {"value": [note]}))
        self._kick()
        self.flush()

    def subscriptions_of(self, user_id: str) -> list[Subscription]:
        """The mailbox's subscriptions that have not expired."""
        with self._lock:
            self._expire_subscriptions()
            return [s for s in self.subscriptions.values() if s.user_id == user_id]

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

    def _on_loop(self, step: Callable[[], Any], timeout: float = 10) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(step(), self._loop).result(timeout)

    # -- changes: the delta log and the notifications (the lock is held by the caller) ----------------------

    def _changed(self, mailbox: Mailbox, event: Event, change: str) -> None:
        """Record that `event` (as it is, or as it was just before leaving its calendar) changed: its
        calendar's change log, and a notification to each subscription on that calendar."""
        mailbox.seq += 1
        removed = change == "deleted"
        mailbox.log.setdefault(event.calendar, []).append((mailbox.seq, event.immutable_id, event.regular_id, removed))
        self._expire_subscriptions()
        for sub in self.subscriptions.values():
            if sub.user_id != mailbox.user_id or sub.calendar != event.calendar or change not in sub.change_types:
                continue
            event_id = event.immutable_id if sub.immutable else event.regular_id
            resource = f"Users/{mailbox.user_id}/Events/{event_id}"
            note = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": _zulu(sub.expires),
                "changeType": change,
                "resource": resource,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Event",
                    "@odata.id": resource,
                    "@odata.etag": f'W/"{event.change_key}"',
                    "id": event_id,
                },
                "clientState": sub.client_state,
                "tenantId": TENANT_ID,
            }
            self._queue(sub.notification_url, {"value": [note]})

    def _queue(self, url: str, body: dict[str, Any]) -> None:
        if self._drop:
            self._drop -= 1
            self.dropped.append(body)
            return
        copies = 1
        if self._duplicate:
            self._duplicate -= 1
            copies = 2
        for _ in range(copies):
            (self._held if self._holding else self._outbox).append((url, body))
        if not self._holding:
            self._kick()

    def _expire_subscriptions(self) -> None:
        now = self.clock()
        for sub_id in [s.id for s in self.subscriptions.values() if s.expires <= now]:
            del self.subscriptions[sub_id]

    def _kick(self) -> None:
        """Start the sender on the fake's loop (from any thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_sender)

    def _start_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        """POST queued notifications one after another, in order."""
        while True:
            with self._lock:
                if not self._outbox:
                    return
                url, body = self._outbox.popleft()
            status: int | None = None
            assert self._client is not None
            try:
                async with self._client.post(url, json=body, timeout=ClientTimeout(total=10)) as answer:
                    await answer.read()
                    status = answer.status
            except (ClientError, TimeoutError):
                status = None
            with self._lock:
                self.deliveries.append(Delivery(url, body, status))

    async def _drain(self) -> None:
        while True:
            self._start_sender_if_queued()
            sender = self._sender
            if sender is None or sender.done():
                return
            await asyncio.shield(sender)

    def _start_sender_if_queued(self) -> None:
        with self._lock:
            queued = bool(self._outbox)
        if queued:
            self._start_sender()

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
            if self.enforce_retry_after:
                left = self._app_blocked_until - self.monotonic()
                if left > 0:
                    with self._lock:
                        self.counters["early"] += 1
                    raise GraphError(
                        429, "TooManyRequests", "Too many requests.", {"Retry-After": str(max(1, round(left)))}
                    )
            if failure is not None and failure[0] != "lose":
                kind, retry = failure
                if kind == "throttle":
                    if self.enforce_retry_after and str(retry).isdigit():
                        self._app_blocked_until = self.monotonic() + int(retry)
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
            if path == "/v1.0/users" and request.method == "GET":
                return self._users(principal, query)
            if path == "/v1.0/subscriptions" or path.startswith("/v1.0/subscriptions/"):
                return await self._subscriptions(
                    principal, request.method, path[len("/v1.0/subscriptions") :], headers, body
                )
            return await self._run(principal, request.method, path[len("/v1.0") :], query, headers, body)
        except GraphError as exc:
            return _error(exc)

    def _users(self, principal: str, query: str) -> _Answer:
        """`GET /users`, with `$top` and `$filter=mail eq '<address>'` (the one filter coursewire sends; `mail`
        compares ignoring case, and a quote in the literal is doubled); another $filter is refused as Graph
        refuses what a property does not support."""
        if principal != APP or "User.Read.All" not in self.app_permissions:
            raise _insufficient()
        params = dict(parse_qsl(query))
        top = int(params.get("$top", "100") or 100)
        wanted: str | None = None
        if "$filter" in params:
            found = re.fullmatch(r"mail eq '((?:[^']|'')*)'", params["$filter"].strip())
            if found is None:
                raise GraphError(400, "Request_UnsupportedQuery", "Unsupported Query.")
            wanted = found.group(1).replace("''", "'").lower()
        with self._lock:
            if wanted is not None and wanted in {a.lower() for a in self.unfilterable}:
                raise GraphError(400, "Request_BadRequest", "Invalid filter clause")
            users = [m for m in self.mailboxes.values() if wanted is None or m.address.lower() == wanted]
            listed = [_user(m) for m in users[: max(1, min(top, 999))]]
        return _Answer(200, {"value": listed})

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
        with self._lock:
            self.counters["calls"] += 1
            call = self.counters["calls"]
        for wave in range(0, len(requests), BATCH_PARALLELISM):
            answers = await asyncio.gather(
                *(self._inner(principal, r, call) for r in requests[wave : wave + BATCH_PARALLELISM])
            )
            responses.extend(answers)
        with self._lock:
            self._rng.shuffle(responses)  # "responses might appear in a different order" [MS11]
        return _Answer(200, {"responses": responses})

    async def _inner(self, principal: str, request: dict[str, Any], call: int = 0) -> dict[str, Any]:
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
            if path == "/users" and method == "GET":
                answer = self._users(principal, query)
            else:
                answer = await self._run(principal, method, path, query, headers, request.get("body"), call)
        except GraphError as exc:
            answer = _error(exc)
        out: dict[str, Any] = {"id": rid, "status": answer.status, "headers": answer.headers}
        if answer.body is not None:
            out["body"] = answer.body
        return out

    async def _run(
        self, principal: str, method: str, path: str, query: str, headers: dict[str, str], body: Any, call: int = 0
    ) -> _Answer:
        """One request to a mailbox, holding one of its 4 slots for `latency` seconds."""
        segments = [unquote(s) for s in path.strip("/").split("/")]
        mailbox, rest = self._mailbox(principal, segments)
        if principal == APP:
            needed = "User.Read.All" if not rest else "Calendars.ReadWrite"
            if needed not in self.app_permissions:
                raise _insufficient() if not rest else GraphError(403, "ErrorAccessDenied", "Access is denied.")
        with self._lock:
            now = self.monotonic()
            if self.enforce_retry_after and mailbox.blocked_until > now:
                if not call or call != mailbox.blocked_by:
                    self.counters["early"] += 1
                raise _throttled("Application is over its request limit.", max(1, round(mailbox.blocked_until - now)))
            if mailbox.throttles:
                seconds = mailbox.throttles.popleft()
                self.counters["mailbox_throttled"] += 1
                if self.enforce_retry_after:
                    mailbox.blocked_until, mailbox.blocked_by = now + seconds, call
                raise _throttled("Application is over its MailboxConcurrency limit.", seconds)
            if mailbox.active >= MAILBOX_CONCURRENCY:
                self.counters["concurrency"] += 1
                if self.enforce_retry_after:
                    mailbox.blocked_until, mailbox.blocked_by = now + 1, call
                raise _throttled("Application is over its MailboxConcurrency limit.", 1)
            mailbox.active += 1
            mailbox.peak = max(mailbox.peak, mailbox.active)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if self._gate is not None:
                await self._gate.wait()
            with self._lock:
                return self._operate(mailbox, method, rest, dict(parse_qsl(query)), headers, body, path)
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
                (m for m in self.mailboxes.values() if (m.upn or m.address).lower() == wanted.lower()), None
            )
        if mailbox is None:
            if segments[:1] == ["users"] and len(segments) == 2:  # a directory look-up
                raise GraphError(
                    404, "Request_ResourceNotFound", f"Resource '{wanted}' does not exist or one of its queried"
                    " reference-property objects are not present."
                )  # fmt: skip
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{wanted}' is invalid.")
        if principal not in (APP, mailbox.user_id):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return mailbox, rest

    def _operate(
        self,
        mailbox: Mailbox,
        method: str,
        rest: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        path: str = "",
    ) -> _Answer:
        prefer = headers.get("prefer", "")
        immutable = bool(re.search(r'IdType\s*=\s*"ImmutableId"', prefer, re.IGNORECASE))
        view = _View(mailbox, immutable, _prefer_zone(prefer), query.get("$expand"))
        if not rest:
            if method == "GET":
                return _Answer(200, _user(mailbox))
            raise GraphError(405, "BadRequest", "Method not allowed.")
        calendar: str | None = None
        if rest[0] == "calendar":
            calendar, rest = mailbox.default_calendar, rest[1:]
        elif rest[0] == "calendars" and len(rest) >= 2:
            calendar, rest = rest[1], rest[2:]
            if calendar not in mailbox.calendars:
                raise _not_found()
        if calendar is not None and not rest:
            if method == "GET":
                return _Answer(200, _render_calendar(mailbox, calendar))
            raise GraphError(405, "BadRequest", "Method not allowed.")
        if rest == ["calendarView", "delta"]:
            if method != "GET":
                raise GraphError(405, "BadRequest", "Method not allowed.")
            link = f"{self.url}/v1.0{path}"
            return self._delta(mailbox, calendar or mailbox.default_calendar, query, prefer, immutable, link)
        if len(rest) == 3 and rest[0] == "events" and rest[2] == "calendar" and method == "GET":
            held = _find(mailbox, rest[1])  # the event's calendar (navigation property): none in Deleted Items
            if held is None or held.calendar not in mailbox.calendars:
                raise _not_found()
            return _Answer(200, _render_calendar(mailbox, held.calendar))
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
            self._changed(mailbox, event, "updated")
            return _Answer(200, view.render(event, written=True))
        if method == "DELETE":
            del mailbox.events[event.immutable_id]
            self._changed(mailbox, event, "deleted")
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
        self._changed(mailbox, event, "created")
        return _Answer(201, view.render(event, written=True))

    # -- calendarView/delta [MS10] --------------------------------------------------------------------------

    def _delta(
        self, mailbox: Mailbox, calendar: str, query: dict[str, str], prefer: str, immutable: bool, link: str
    ) -> _Answer:
        size = DELTA_DEFAULT_PAGE
        wanted = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer, re.IGNORECASE)
        if wanted:
            size = min(max(int(wanted.group(1)), 1), DELTA_MAX_PAGE)
        if "$skiptoken" in query:
            found = self._rounds.get(query["$skiptoken"])
            if found is None or found.user_id != mailbox.user_id or found.calendar != calendar:
                raise GraphError(400, "syncStateNotFound", _EXPIRED_MESSAGE)
            if found.epoch < mailbox.delta_epoch:
                raise self._expired(mailbox, link, found.window)
            rnd = found
        elif query.get("$deltatoken"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["$deltatoken"].encode()))
                since, window, epoch = int(token["s"]), (str(token["w"][0]), str(token["w"][1])), int(token["e"])
                same = token["c"] == calendar and token["u"] == mailbox.user_id
            except (ValueError, KeyError, TypeError, IndexError):
                raise GraphError(400, "syncStateNotFound", _EXPIRED_MESSAGE) from None
            if not same:
                raise GraphError(400, "syncStateNotFound", _EXPIRED_MESSAGE)
            if epoch < mailbox.delta_epoch:
                raise self._expired(mailbox, link, window)
            rnd = self._round(mailbox, calendar, window, since)
        else:
            start, end = query.get("startDateTime"), query.get("endDateTime")
            if not start or not end:
                raise GraphError(
                    400,
                    "ErrorInvalidParameter",
                    "This request requires a time window specified by the query string parameters StartDateTime "
                    "and EndDateTime.",
                )
            try:
                _window((start, end))
            except ValueError:
                raise GraphError(400, "ErrorInvalidParameter", "Invalid StartDateTime or EndDateTime.") from None
            rnd = self._round(mailbox, calendar, (start, end), None)
        page, rest = rnd.entries[rnd.offset : rnd.offset + size], rnd.offset + size < len(rnd.entries)
        view = _View(mailbox, immutable, _prefer_zone(prefer), None)
        values: list[dict[str, Any]] = []
        for immutable_id, regular_id, removed in page:
            event = mailbox.events.get(immutable_id)
            if removed or event is None or event.calendar != calendar:
                values.append(
                    {
                        "@odata.type": "#microsoft.graph.event",
                        "id": immutable_id if immutable else regular_id,
                        "@removed": {"reason": "deleted"},
                    }
                )
            else:
                values.append({"@odata.type": "#microsoft.graph.event", **view.render(event, written=False)})
        out: dict[str, Any] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)"}
        out["value"] = values
        if rest:
            skip = secrets.token_urlsafe(24)
            self._rounds[skip] = replace(rnd, offset=rnd.offset + size)
            out["@odata.nextLink"] = f"{link}?$skiptoken={skip}"
        else:
            token = {"u": mailbox.user_id, "c": calendar, "s": rnd.upto, "w": list(rnd.window), "e": rnd.epoch}
            encoded = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            out["@odata.deltaLink"] = f"{link}?$deltatoken={quote(encoded, safe='')}"
        return _Answer(200, out)

    def _round(self, mailbox: Mailbox, calendar: str, window: tuple[str, str], since: int | None) -> _DeltaRound:
        """What a delta request lists: every event of the window (since None), or the calendar's changes after
        change number `since` (the last state of each event), in change order."""
        start, end = _window(window)

        def inside(event: Event) -> bool:
            return instant(event.fields["start"]) < end and instant(event.fields["end"]) > start

        entries: list[tuple[str, str, bool]] = []
        if since is None:
            entries = [
                (e.immutable_id, e.regular_id, False)
                for e in mailbox.events.values()
                if e.calendar == calendar and inside(e)
            ]
        else:
            last: dict[str, tuple[str, bool]] = {}
            for number, immutable_id, regular_id, removed in mailbox.log.get(calendar, []):
                if number > since:
                    last.pop(immutable_id, None)
                    last[immutable_id] = (regular_id, removed)
            for immutable_id, (regular_id, removed) in last.items():
                event = mailbox.events.get(immutable_id)
                gone = removed or event is None or event.calendar != calendar
                if gone or (event is not None and inside(event)):
                    entries.append((immutable_id, regular_id, gone))
        return _DeltaRound(mailbox.user_id, calendar, entries, 0, mailbox.seq, window, mailbox.delta_epoch)

    def _expired(self, mailbox: Mailbox, link: str, window: tuple[str, str]) -> GraphError:
        status, code = mailbox.expired_as
        headers = {}
        if status == 410:
            start, end = (quote(w, safe="") for w in window)
            headers["Location"] = f"{link}?startDateTime={start}&endDateTime={end}&$deltatoken="
        return GraphError(status, code, _EXPIRED_MESSAGE, headers)

    # -- subscriptions [MS4][MS5][MS6][MS7][MS15] -----------------------------------------------------------

    async def _subscriptions(
        self, principal: str, method: str, tail: str, headers: dict[str, str], body: Any
    ) -> _Answer:
        sub_id = unquote(tail.strip("/"))
        if not sub_id:
            if method == "POST":
                return await self._subscribe(principal, headers, body)
            if method == "GET":
                with self._lock:
                    self._expire_subscriptions()
                    mine = [s.render() for s in self.subscriptions.values() if self._owns(principal, s)]
                return _Answer(200, {"value": mine})
            raise GraphError(405, "BadRequest", "Method not allowed.")
        with self._lock:
            self._expire_subscriptions()
            sub = self.subscriptions.get(sub_id)
            if sub is None or not self._owns(principal, sub):
                raise GraphError(404, "ResourceNotFound", f"The object was not found. Subscription Id '{sub_id}'.")
            if method == "GET":
                return _Answer(200, sub.render())
            if method == "DELETE":
                del self.subscriptions[sub_id]
                return _Answer(204)
            if method == "PATCH":
                if not isinstance(body, dict) or "expirationDateTime" not in body:
                    raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
                sub.expires = self._expiration(body["expirationDateTime"])
                return _Answer(200, sub.render())
        raise GraphError(405, "BadRequest", "Method not allowed.")

    def _owns(self, principal: str, sub: Subscription) -> bool:
        return principal in (APP, sub.user_id)

    async def _subscribe(self, principal: str, headers: dict[str, str], body: Any) -> _Answer:
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        change_types = tuple(t.strip() for t in str(body.get("changeType") or "").split(","))
        if not change_types or any(t not in CHANGE_TYPES for t in change_types):
            raise GraphError(400, "InvalidRequest", f"Invalid changeType {body.get('changeType')!r}.")
        notification, lifecycle = body.get("notificationUrl"), body.get("lifecycleNotificationUrl")
        for url in (notification, lifecycle) if lifecycle is not None else (notification,):
            if not isinstance(url, str) or not _reachable(url):
                raise GraphError(
                    400,
                    "InvalidRequest",
                    "Subscription validation request failed. Notification endpoint must be https.",
                )
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > CLIENT_STATE_MAX):
            raise GraphError(400, "InvalidRequest", "clientState must be at most 128 characters.")
        resource = body.get("resource")
        if not isinstance(resource, str) or not resource.strip("/"):
            raise GraphError(400, "InvalidRequest", "resource is required.")
        mailbox, calendar = self._subscription_target(principal, resource)
        with self._lock:
            expires = self._expiration(body.get("expirationDateTime"))
            self._expire_subscriptions()
            if sum(s.user_id == mailbox.user_id for s in self.subscriptions.values()) >= SUBSCRIPTIONS_PER_MAILBOX:
                raise GraphError(
                    403,
                    "ExtensionError",
                    "Operation: Create; Exception: [Status Code: Forbidden; Reason: The maximum number of "
                    "subscriptions for this mailbox has been reached.]",
                )
        assert isinstance(notification, str)
        for url in (notification, lifecycle):  # both validated, even when they are one URL [MS6]
            if url is not None and not await self._validate(url):
                raise GraphError(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK to "
                    "validation request.",
                )
        prefer = headers.get("prefer", "")
        sub = Subscription(
            str(uuid.uuid4()),
            mailbox.user_id,
            calendar,
            resource,
            change_types,
            notification,
            lifecycle,
            client_state,
            expires,
            bool(re.search(r'IdType\s*=\s*"ImmutableId"', prefer, re.IGNORECASE)),
        )
        with self._lock:
            self.subscriptions[sub.id] = sub
        return _Answer(201, sub.render())

    def _subscription_target(self, principal: str, resource: str) -> tuple[Mailbox, str]:
        """The mailbox and calendar whose events `resource` names: `me/events` (here: the default calendar),
        `me/calendar/events`, `me/calendars/{id}/events`, or the same under `users/{id}`."""
        segments = [unquote(s) for s in resource.strip("/").split("/")]
        if segments[:1] and segments[0].lower() in ("me", "users"):
            segments[0] = segments[0].lower()
        mailbox, rest = self._mailbox(principal, segments)
        lowered = [s.lower() for s in rest]
        with self._lock:
            if lowered in (["events"], ["calendar", "events"]):
                return mailbox, mailbox.default_calendar
            if len(rest) == 3 and lowered[0] == "calendars" and lowered[2] == "events":
                if rest[1] not in mailbox.calendars:
                    raise _not_found()
                return mailbox, rest[1]
        raise GraphError(400, "InvalidRequest", f"The resource '{resource}' is not supported for subscriptions.")

    def _expiration(self, value: Any) -> datetime:
        """The expiry to store for a requested `expirationDateTime` [MS4][MS15]."""
        try:
            wanted = datetime.fromisoformat(_FRACTION_Z.sub(r"\1", str(value)).replace("Z", "+00:00"))
        except ValueError:
            raise GraphError(400, "BadRequest", "Invalid expirationDateTime.") from None
        if wanted.tzinfo is None:
            wanted = wanted.replace(tzinfo=UTC)
        now = self.clock()
        if wanted <= now:
            raise GraphError(400, "InvalidRequest", "Subscription expiration can only be in the future.")
        if wanted > now + SUBSCRIPTION_MAX:
            raise GraphError(400, "InvalidRequest", "Subscription expiration can only be 10080 minutes in the future.")
        return max(wanted, now + SUBSCRIPTION_MIN)

    async def _validate(self, url: str) -> bool:
        """The validation request [MS6]: POST `?validationToken=` (URL-encoded) with an empty body; the
        receiver must answer 200, text/plain, the decoded token, within `validation_timeout`."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
        assert self._client is not None
        passed = False
        try:
            async with self._client.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=ClientTimeout(total=self.validation_timeout),
            ) as answer:
                text = (await answer.content.read(4096)).decode("utf-8", "replace")
                passed = answer.status == 200 and answer.content_type == "text/plain" and text == token
        except (ClientError, TimeoutError):
            passed = False
        with self._lock:
            self.validations.append((url, passed))
        return passed


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


_EXPIRED_MESSAGE = (
    "The sync state generation is not found. The delta token is expired and data must be synchronized again."
)
_FRACTION_Z = re.compile(r"(\.\d{1,6})\d*(?=Z|[+-]\d\d:\d\d|$)")


def _render_calendar(mailbox: Mailbox, calendar: str) -> dict[str, Any]:
    return {
        "id": calendar,
        "name": mailbox.calendars[calendar],
        "isDefaultCalendar": calendar == mailbox.default_calendar,
        "canEdit": True,
        "owner": {"name": mailbox.address, "address": mailbox.address},
    }


def _window(window: tuple[str, str]) -> tuple[datetime, datetime]:
    """A calendarView window's bounds as aware datetimes (UTC when the text has no offset). Raises ValueError."""
    out = []
    for text in window:
        moment = datetime.fromisoformat(_FRACTION_Z.sub(r"\1", text).replace("Z", "+00:00"))
        out.append(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    return out[0], out[1]


def _reachable(url: str) -> bool:
    """Graph takes https notification URLs only; the fake also takes http on 127.0.0.1 and localhost."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost"))


def _zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


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


def _user(mailbox: Mailbox) -> dict[str, Any]:
    return {"id": mailbox.user_id, "mail": mailbox.address, "userPrincipalName": mailbox.upn or mailbox.address}


def _insufficient() -> GraphError:
    return GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


def _not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _error(exc: GraphError) -> _Answer:
    inner = {"date": _now()[:19], "request-id": secrets.token_hex(16), "client-request-id": secrets.token_hex(16)}
    body = {"error": {"code": exc.code, "message": exc.message, "innerError": inner}}
    return _Answer(exc.status, body, dict(exc.headers))
