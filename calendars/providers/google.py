"""Google Calendar (API v3): one person's calendar as a calendars.model.Provider.

Each session day is one event whose id we choose (`CalendarItem.handle`, 32 characters of base32hex), so a
retry after a lost answer, a crash or a reconnection finds the same event instead of adding a second one: an
insert answered `409 duplicate` (the event exists, perhaps cancelled because the person deleted it, which
Google keeps as `status: cancelled`) becomes an update of that id with `status: confirmed`. Writes are
`events.insert` and `events.update` (PUT), never `events.patch`, which costs 3 quota units where Google
recommends get+update. Facts and sources: ../shared/reference/notes/calendar-sync.md §2.2 ([GO1] the
discovery document, [GO4] the error table, [GO5] quotas, [GO9] patch cost).

Errors (Google's `{"error": {"code", "message", "errors": [{"domain", "reason", "message"}], "status"}}`):

| answer | raised |
|---|---|
| 401 (`authError`) | `tokens.refresh()` once and the request again; a second 401 → AuthorizationLost |
| 403 `insufficientPermissions` (the person unticked the calendar scope) | AuthorizationLost |
| 403/429 `rateLimitExceeded`, 403 `userRateLimitExceeded`, any 429 | Throttled, `Retry-After` or 30 s |
| 403 `quotaExceeded`/`dailyLimitExceeded` (Workspace usage limits, not a retry-soon error) | Throttled, 3600 s |
| 5xx (`backendError`), network errors, timeouts | Unavailable |
| other 4xx | Rejected, with Google's status, reason and message |

On the calendar as a whole (events.list, events.watch, calendars.get) a 404, or a 410 `deleted`, is
CalendarGone: the calendar was deleted or is no longer shared with the person, which is not a deletion of its
events. On a syncToken a 410 (`fullSyncRequired`, `updatedMinTooLongAgo`) is CursorExpired.

Two-way (calendars.model ChangeFeed and Watchable, §2.2 [GO1]-[GO3] and push notifications [GO2]):
- `changes` reads events.list with the same parameters every time (`maxResults=250`, nothing Google forbids
  next to a syncToken), at most `MAX_PAGES` pages per call. The cursor it returns is the query of the next
  request, URL-encoded: `syncToken=T` (a finished listing: changes since T next), `pageToken=P` (a full listing
  cut at the page cap: its next page), or `syncToken=T&pageToken=P` (an incremental listing cut at the cap).
  Any other cursor is CursorExpired, so a stored cursor of another shape starts a full listing.
- `watch` opens an events.watch channel; Google has no renewal, so `renew` opens a new one and stops the old.
- An event the person moved to another of their calendars (events.move) is gone from the connected calendar;
  `get` looks for it under the same id in their other calendars (calendarList, writer or owner, at most
  `MAX_OTHER_CALENDARS`) and names it `<calendarId>/<eventId>` from then on. Event ids are base32hex, so a '/'
  never occurs in a plain id and the two cannot be confused; put, delete and get accept both.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from calendars.model import (
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
from storage.outbound import retry_after

# Google sends no Retry-After with rateLimitExceeded and asks for exponential backoff [GO4]; this is the hint
# given to the engine, which owns the backoff. quotaExceeded means the Workspace usage limits for the calendar
# ("Calendar usage limits exceeded"), which lift over hours, so coming back within minutes only spends quota.
THROTTLE_HINT = 30.0
QUOTA_HINT = 3600.0
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
# Without attendees nobody is notified either way; `none` also keeps Google from mailing if one is ever added.
WRITE_PARAMS = {"sendUpdates": "none"}
SOURCE_TITLE = "Session details"
# Bounds on what Google sends: pages per `changes` call (250 events each), bytes per answer, the other
# calendars searched for a moved event, and the length of the ids and keys taken from an answer.
PAGE_SIZE = 250
MAX_PAGES = 20
MAX_ANSWER_BYTES = 16 * 1024 * 1024
MAX_OTHER_CALENDARS = 25
MAX_LIST_PAGES = 4
MAX_ID_LENGTH = 1024
MAX_KEY_LENGTH = 256
CURSOR_EXPIRED_REASONS = frozenset({"fullSyncRequired", "updatedMinTooLongAgo"})
WRITER_ROLES = frozenset({"writer", "owner"})
# Roles that read a calendar's events (`freeBusyReader` reads only free/busy) [GO1 CalendarList resource].
READER_ROLES = frozenset({"reader", "writer", "owner"})


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]


class GoogleProvider:
    """One Google calendar (`calendar`, default the person's `primary`) reached at `base_url` (the
    `https://www.googleapis.com/calendar/v3` of COURSEWIRE_GOOGLE_CALENDAR_URL) with the person's tokens.

    The aiohttp session is shared and not closed here; `timeout` (seconds) bounds each request.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        tokens: TokenSource,
        calendar: str = "primary",
        *,
        timeout: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.session = session
        self.tokens = tokens
        self.calendar = calendar
        self.base_url = base_url.rstrip("/")
        self.calendar_url = f"{self.base_url}/calendars/{quote(calendar, safe='')}"
        self.events_url = f"{self.calendar_url}/events"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.clock = clock

    async def put(self, item: CalendarItem, written: Written | None, *, recreate: bool = True) -> Written:
        """Insert the item's event under `item.handle` (written is None) or update it with PUT (written given).

        Insert answered 409 `duplicate` (our event exists: a retry after a lost answer, or the person deleted
        it and Google keeps it cancelled) → PUT to that id with `status: confirmed`, so one event stays.
        Update answered 404/410 (gone for good) → insert again. `written.provider_id` may name an event the
        person moved (`<calendarId>/<eventId>`, see `get`): it is updated where it is and keeps that id.
        With `recreate` False an update reads the event first (a PUT would bring back an event the person
        deleted, which Google keeps cancelled): gone or cancelled there, it is looked for in the person's other
        calendars as `get` does (moved: updated there, `Written.elsewhere`), else EventGone and nothing written.
        Returns the event id and its etag.
        Raises Throttled, Unavailable, AuthorizationLost, Rejected (also for a time zone that is not IANA) or
        EventGone.
        """
        event = event_body(item)
        if written is not None and not recreate:
            current = await self._send("GET", written.provider_id, None, passthrough=(404, 410))
            if current.status != 200 or current.body.get("status") == "cancelled":
                # Moved by the person before the mirror read it (events.move keeps the id): updated where it is.
                calendar, event_id = split_id(written.provider_id)
                found = await self._find(event_id, skip=calendar)
                if found is None:
                    raise EventGone(f"event {written.provider_id} is no longer in the calendar")
                written = Written(found.provider_id, found.etag)
        if written is not None:
            answer = await self._send("PUT", written.provider_id, event, passthrough=(404, 410))
            if answer.status == 200:
                return _written(answer, written.provider_id)
        answer = await self._send("POST", None, {"id": item.handle, **event}, passthrough=(409,))
        if answer.status == 409:
            answer = await self._send("PUT", item.handle, event)
        return _written(answer)

    async def put_many(
        self, batch: Sequence[tuple[CalendarItem, Written | None]], *, recreate: bool = True
    ) -> list[Written | ProviderError]:
        """`put` for each item in order, one request after another (no HTTP batch: Google counts a batch of n
        calls as n against the same per-user quota [GO6], so it saves round trips, not quota).

        Once an answer concerns the connection rather than the item (Throttled, Unavailable,
        AuthorizationLost), the items after it get that same error without a request: sending them would
        spend quota on answers known in advance. A Rejected item does not stop the others.
        """
        results: list[Written | ProviderError] = []
        stop: ProviderError | None = None
        for item, written in batch:
            if stop is not None:
                results.append(stop)
                continue
            try:
                results.append(await self.put(item, written, recreate=recreate))
            except (Rejected, EventGone) as exc:
                results.append(exc)
            except ProviderError as exc:
                results.append(exc)
                stop = exc
        return results

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        """DELETE the event. 404 and 410 `deleted` (deleted before, by us or the person) are success.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected."""
        await self._send("DELETE", written.provider_id, None, passthrough=(404, 410))

    async def get(self, written: Written, *, uid: str | None = None) -> RemoteEvent | None:
        """GET the event where we last knew it; `extra` holds `timeZone`, `status` and `htmlLink` as Google
        gives them.

        Gone there (404, 410, or `status: cancelled`, which is how Google keeps an event the person deleted):
        it may have been moved (events.move keeps the id), so it is looked for under the same id in the
        connected calendar and in the person's other calendars they can write to (calendarList with
        `minAccessRole=writer`, at most MAX_OTHER_CALENDARS); found elsewhere, it is returned with provider_id
        `<calendarId>/<eventId>`. Found nowhere: None (deleted), unless the connected calendar itself is gone,
        which raises CalendarGone rather than passing for a deletion by the person.
        Raises CalendarGone, Throttled, Unavailable, AuthorizationLost or Rejected."""
        answer = await self._send("GET", written.provider_id, None, passthrough=(404, 410))
        if answer.status == 200 and answer.body.get("status") != "cancelled":
            return _remote(answer.body, written.provider_id)
        calendar, event_id = split_id(written.provider_id)
        found = await self._find(event_id, skip=calendar)
        if found is None:
            await self.check_calendar()
        return found

    async def changes(self, cursor: str | None) -> Changes:
        """Events changed since `cursor` (see the module's docstring for its shape), or every event of the
        calendar when None (`full=True`, also on the continuations of that listing), following nextPageToken
        for at most MAX_PAGES pages of PAGE_SIZE; then `more=True` with a cursor that continues.

        Each event of ours (tagged) becomes Change(id, key); each `status: cancelled` one (a deletion, or an
        event moved away, in an incremental listing) Change(id, key if tagged, removed=True); the person's own
        events are left out. Raises CursorExpired (410 on a syncToken or page token, or a cursor of another
        shape), CalendarGone (404 or 410 `deleted` on the calendar), Throttled, Unavailable, AuthorizationLost
        or Rejected [GO1][GO3]."""
        params = {"maxResults": str(PAGE_SIZE)}
        sync_token: str | None = None
        page_token: str | None = None
        if cursor is not None:
            sync_token, page_token = parse_cursor(cursor)
        full = sync_token is None
        found: list[Change] = []
        for _ in range(MAX_PAGES):
            query = dict(params)
            if sync_token is not None:
                query["syncToken"] = sync_token
            if page_token is not None:
                query["pageToken"] = page_token
            answer = await self._call("GET", self.events_url, query, None, passthrough=(404, 410))
            if answer.status == 410:
                reason = _reason(answer.body)
                expired = reason in CURSOR_EXPIRED_REASONS or (cursor is not None and reason != "deleted")
                raise (CursorExpired if expired else CalendarGone)(_text(answer))
            if answer.status == 404:
                raise CalendarGone(_text(answer))
            found.extend(_changes(answer.body, full=full))
            next_page = _token(answer.body.get("nextPageToken"))
            next_sync = _token(answer.body.get("nextSyncToken"))
            if next_page is not None:
                page_token = next_page
                continue
            if next_sync is None:
                raise Unavailable("Google Calendar ended a listing without nextSyncToken")
            return Changes(found, format_cursor(next_sync, None), full=full)
        assert page_token is not None
        return Changes(found, format_cursor(sync_token, page_token), full=full, more=True)

    async def check_calendar(self) -> None:
        """GET calendars/{calendarId}. Raises CalendarGone (404, 410), AuthorizationLost (401 after a refresh,
        403 insufficientPermissions), Throttled, Unavailable or Rejected [GO1][GO4]."""
        answer = await self._call("GET", self.calendar_url, None, None, passthrough=(404, 410))
        if answer.status in (404, 410):
            raise CalendarGone(_text(answer))

    async def reaches(self, written: Written) -> bool:
        """Whether the person can still read the events of the calendar of `written` (`<calendarId>/<eventId>`;
        a plain id is the connected one, True here: check_calendar judges it).

        GET users/me/calendarList/{calendarId} (CalendarList: get, [GO1] and
        https://developers.google.com/workspace/calendar/api/v3/reference/calendarList/get): True only when the
        entry's `accessRole` is `reader`, `writer` or `owner`. False on 404/410 (the calendar deleted, or no
        longer in the person's list), on an entry marked `deleted`, and on `freeBusyReader` ("read access to
        free/busy information", CalendarList resource): what a colleague who stops sharing a calendar usually
        leaves inside a Google Workspace domain, whose default sharing is free/busy. calendars.get answers 200
        to such a reader while events.get answers 404, so a 200 on the calendar does not mean its events can be
        read. Google documents calendarList.get, like calendarList.list (`_other_calendars`), under the scopes
        calendar, calendar.readonly, calendar.calendarlist(.readonly) (and calendar.app.created for get), none of
        them the calendar.events that calendars/oauth.py SCOPES asks for.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected as `_call`'s table says."""
        calendar, _ = split_id(written.provider_id)
        if calendar is None:
            return True
        url = f"{self.base_url}/users/me/calendarList/{quote(calendar, safe='')}"
        answer = await self._call("GET", url, None, None, passthrough=(404, 410))
        if answer.status in (404, 410) or answer.body.get("deleted") is True:
            return False
        return answer.body.get("accessRole") in READER_ROLES

    async def watch(self, address: str, secret: str, expires_at: datetime) -> Watch:
        """POST calendars/{id}/events/watch {id: a new UUID, type: web_hook, address, token: secret,
        params: {ttl: whole seconds until expires_at}} [GO2]. Google may shorten the channel's life: the Watch
        carries the answer's `expiration` (ms since the epoch) and `resourceId`, which stopping it needs.
        Raises CalendarGone (404), Throttled, Unavailable, AuthorizationLost or Rejected (e.g. an address Google
        refuses: it wants https with a CA-signed certificate)."""
        ttl = max(1, math.ceil((expires_at - self.clock()).total_seconds()))
        body = {
            "id": str(uuid.uuid4()),
            "type": "web_hook",
            "address": address,
            "token": secret,
            "params": {"ttl": str(ttl)},
        }
        answer = await self._call("POST", f"{self.events_url}/watch", None, body, passthrough=(404,))
        if answer.status == 404:
            raise CalendarGone(_text(answer))
        channel_id, resource_id = _token(answer.body.get("id")), _token(answer.body.get("resourceId"))
        try:
            expiration = datetime.fromtimestamp(int(str(answer.body.get("expiration"))) / 1000, UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            expiration = None
        if channel_id is None or resource_id is None or expiration is None:
            raise Unavailable("Google Calendar answered events.watch without id, resourceId or expiration")
        return Watch(id=channel_id, expires_at=expiration, resource_id=resource_id)

    async def renew(self, watch: Watch, address: str, secret: str, expires_at: datetime) -> Watch:
        """Google cannot extend a channel [GO2]: open a new one (`watch`), then stop the old one. Channels
        overlap for a moment, which the receiver expects; failing to stop the old one is not an error, since it
        ends by itself at its expiration. Raises like `watch`."""
        fresh = await self.watch(address, secret, expires_at)
        with contextlib.suppress(Throttled, Unavailable, Rejected):
            await self.unwatch(watch)
        return fresh

    async def unwatch(self, watch: Watch) -> None:
        """POST channels/stop {id, resourceId}; a channel Google does not know (404) is already stopped.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected [GO2]."""
        body = {"id": watch.id}
        if watch.resource_id is not None:
            body["resourceId"] = watch.resource_id
        await self._call("POST", f"{self.base_url}/channels/stop", None, body, passthrough=(404,))

    async def close(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    async def _send(
        self, method: str, event_id: str | None, body: dict[str, Any] | None, *, passthrough: tuple[int, ...] = ()
    ) -> _Answer:
        """One request about an event (`event_id` plain or `<calendarId>/<eventId>`, None: the connected
        calendar's events collection), with `sendUpdates=none` on writes."""
        params = WRITE_PARAMS if method in ("POST", "PUT", "DELETE") else None
        return await self._call(method, self._event_url(event_id), params, body, passthrough=passthrough)

    async def _call(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        body: dict[str, Any] | None,
        *,
        passthrough: tuple[int, ...] = (),
    ) -> _Answer:
        """One request with the access token, again once after `tokens.refresh()` when Google answers 401.
        Returns 2xx answers and those in `passthrough`; raises the table's error for the others."""
        token = await self.tokens.access_token()
        for attempt in (1, 2):
            answer = await self._exchange(method, url, params, body, token)
            if answer.status == 401 and attempt == 1:
                token = await self.tokens.refresh()
                continue
            if 200 <= answer.status < 300 or answer.status in passthrough:
                return answer
            raise error_for(answer.status, answer.body, answer.headers)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self, method: str, url: str, params: Mapping[str, str] | None, body: dict[str, Any] | None, token: str
    ) -> _Answer:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            async with self.session.request(
                method, url, params=params, json=body, headers=headers, timeout=self.timeout
            ) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                if len(raw) > MAX_ANSWER_BYTES:
                    raise Unavailable(f"Google Calendar answered more than {MAX_ANSWER_BYTES} bytes")
                return _Answer(response.status, _json_object(raw), response.headers.copy())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"Google Calendar could not be reached: {exc.__class__.__name__}: {exc}") from exc

    def _event_url(self, provider_id: str | None) -> str:
        if provider_id is None:
            return self.events_url
        calendar, event_id = split_id(provider_id)
        events = self.events_url if calendar is None else f"{self.base_url}/calendars/{quote(calendar, safe='')}/events"
        return f"{events}/{quote(event_id, safe='')}"

    async def _find(self, event_id: str, skip: str | None) -> RemoteEvent | None:
        """The live event `event_id` in a calendar other than `skip` (the one just read; None: the connected
        calendar): the connected one, then those the person can write to. None when none holds it."""
        candidates: list[str | None] = [] if skip is None else [None]
        for other in await self._other_calendars():
            if other != skip and len(candidates) < MAX_OTHER_CALENDARS:
                candidates.append(other)
        for calendar in candidates:
            provider_id = event_id if calendar is None else f"{calendar}/{event_id}"
            answer = await self._send("GET", provider_id, None, passthrough=(403, 404, 410))
            if answer.status == 403:
                error = error_for(answer.status, answer.body, answer.headers)
                if isinstance(error, Throttled | AuthorizationLost):
                    raise error  # a rate limit or a lost grant says nothing about where the event is
                continue  # no access to that calendar: not there for us
            if answer.status == 200 and answer.body.get("status") != "cancelled":
                return _remote(answer.body, provider_id)
        return None

    async def _other_calendars(self) -> list[str]:
        """Ids of the person's calendars they can write to, the connected one left out (calendarList)."""
        found: list[str] = []
        params = {"minAccessRole": "writer", "maxResults": "250"}
        for _ in range(MAX_LIST_PAGES):
            answer = await self._call("GET", f"{self.base_url}/users/me/calendarList", params, None)
            items = answer.body.get("items")
            for entry in items if isinstance(items, list) else []:
                if not isinstance(entry, dict) or entry.get("accessRole") not in WRITER_ROLES:
                    continue
                calendar = _token(entry.get("id"))
                connected = calendar == self.calendar or (self.calendar == "primary" and entry.get("primary"))
                if calendar is not None and not connected and len(found) < MAX_OTHER_CALENDARS:
                    found.append(calendar)
            next_page = _token(answer.body.get("nextPageToken"))
            if next_page is None or len(found) >= MAX_OTHER_CALENDARS:
                break
            params = {**params, "pageToken": next_page}
        return found


def split_id(provider_id: str) -> tuple[str | None, str]:
    """(calendar id, event id) of a provider id: `<calendarId>/<eventId>` for an event found in another of the
    person's calendars, else (None, the id) for one in the connected calendar. Event ids are base32hex, so the
    last '/' is the separator."""
    calendar, slash, event_id = provider_id.rpartition("/")
    return (calendar, event_id) if slash and calendar else (None, provider_id)


def format_cursor(sync_token: str | None, page_token: str | None) -> str:
    """The `changes` cursor: the syncToken and/or pageToken of the next events.list, URL-encoded."""
    query = {}
    if sync_token is not None:
        query["syncToken"] = sync_token
    if page_token is not None:
        query["pageToken"] = page_token
    return urlencode(query)


def parse_cursor(cursor: str) -> tuple[str | None, str | None]:
    """(syncToken, pageToken) of a cursor `format_cursor` made; raises CursorExpired for any other string."""
    try:
        query = parse_qs(cursor, strict_parsing=True)
    except ValueError:
        raise CursorExpired("not a Google Calendar cursor: listing everything again") from None
    sync_tokens, page_tokens = query.pop("syncToken", []), query.pop("pageToken", [])
    if query or len(sync_tokens) > 1 or len(page_tokens) > 1 or not (sync_tokens or page_tokens):
        raise CursorExpired("not a Google Calendar cursor: listing everything again")
    return (sync_tokens[0] if sync_tokens else None), (page_tokens[0] if page_tokens else None)


def event_body(item: CalendarItem) -> dict[str, Any]:
    """The events.insert/update resource for an item, without `id` [GO1 Event resource]:

    summary, description (the HTML body; Google renders a subset of HTML), location (the room, else the
    meeting URL), start/end as `{dateTime: local time with its offset, timeZone: IANA name}`, our key in
    `extendedProperties.private`, `source {title, url}` when the item links back, `status: confirmed` and
    no attendees, so Google sends no invitations. Raises Rejected when `item.time_zone` is no IANA zone.
    """
    try:
        zone = ZoneInfo(item.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Rejected(f"time zone {item.time_zone!r} is not an IANA time zone name") from None
    event: dict[str, Any] = {
        "summary": item.subject,
        "description": item.body_html or item.body_text,
        "start": {"dateTime": item.start.astimezone(zone).isoformat(timespec="seconds"), "timeZone": item.time_zone},
        "end": {"dateTime": item.end.astimezone(zone).isoformat(timespec="seconds"), "timeZone": item.time_zone},
        "extendedProperties": {"private": {TAG: item.key}},
        "status": "confirmed",
    }
    location = item.location or item.meeting_url
    if location:
        event["location"] = location
    if item.link and item.link.startswith(("https://", "http://")):  # Google accepts only http(s) source URLs
        event["source"] = {"title": SOURCE_TITLE, "url": item.link}
    return event


def remote_event(body: Mapping[str, Any]) -> RemoteEvent:
    """A RemoteEvent from Google's event resource (`start`/`end` as `dateTime` or all-day `date`)."""
    private = (body.get("extendedProperties") or {}).get("private") or {}
    start, end = body.get("start") or {}, body.get("end") or {}
    extra = {
        name: str(value)
        for name, value in (
            ("timeZone", start.get("timeZone")),
            ("status", body.get("status")),
            ("htmlLink", body.get("htmlLink")),
        )
        if value
    }
    return RemoteEvent(
        provider_id=str(body["id"]),
        etag=body.get("etag"),
        subject=str(body.get("summary") or ""),
        start=event_time(start),
        end=event_time(end),
        key=private.get(TAG),
        cancelled=body.get("status") == "cancelled",
        extra=extra,
    )


def event_time(value: Mapping[str, Any]) -> datetime:
    """An aware datetime from Google's EventDateTime: `dateTime` (RFC 3339, offset included in what Google
    returns), else all-day `date` as midnight in `timeZone` (UTC without one)."""
    zone = _zone(value.get("timeZone"))
    if value.get("dateTime"):
        moment = datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=zone)
    return datetime.combine(date.fromisoformat(str(value["date"])), time(), tzinfo=zone)


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> ProviderError:
    """The ProviderError for a Google error answer, as the module's table says [GO4]."""
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    details = error.get("errors")
    details = details if isinstance(details, list) else []
    reason = next((str(d["reason"]) for d in details if isinstance(d, dict) and d.get("reason")), "")
    message = str(error.get("message") or "")
    text = f"Google Calendar answered {status}{f' {reason}' if reason else ''}: {message or '(no message)'}"
    asked = retry_after(headers.get("Retry-After"), datetime.now(UTC))
    if status == 401:
        return AuthorizationLost(text)
    if status == 403 and reason == "insufficientPermissions":
        return AuthorizationLost(text)
    if reason in QUOTA_REASONS:
        return Throttled(text, retry_after=asked if asked is not None else QUOTA_HINT)
    if status == 429 or (status == 403 and reason in RATE_REASONS):
        return Throttled(text, retry_after=asked if asked is not None else THROTTLE_HINT)
    if status >= 500:
        return Unavailable(text, retry_after=asked)
    return Rejected(text)


def _written(answer: _Answer, provider_id: str | None = None) -> Written:
    """The Written of an answer; `provider_id` keeps the `<calendarId>/<eventId>` of a moved event."""
    if not answer.body.get("id"):
        raise Unavailable(f"Google Calendar answered {answer.status} without the event's id")
    found = provider_id or str(answer.body["id"])
    return Written(provider_id=found, etag=answer.body.get("etag"), elsewhere=split_id(found)[0] is not None)


def _remote(body: Mapping[str, Any], provider_id: str) -> RemoteEvent:
    """The event read at `provider_id`; one of another calendar (`<calendarId>/<eventId>`) is `elsewhere`."""
    return replace(remote_event(body), provider_id=provider_id, elsewhere=split_id(provider_id)[0] is not None)


def _changes(body: Mapping[str, Any], *, full: bool) -> list[Change]:
    """The Changes of one events.list page: ours and every cancellation (none in a full listing)."""
    items = body.get("items")
    found: list[Change] = []
    for event in items if isinstance(items, list) else []:
        if not isinstance(event, dict):
            continue
        event_id = _token(event.get("id"))
        if event_id is None:
            continue
        private = (event.get("extendedProperties") or {}).get("private") or {}
        key = private.get(TAG) if isinstance(private, dict) else None
        key = key if isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH else None
        removed = event.get("status") == "cancelled"
        if (removed and not full) or (key is not None and not removed):
            found.append(Change(provider_id=event_id, key=key, removed=removed))
    return found


def _token(value: object) -> str | None:
    """A non-empty string of bounded length from an answer (ids, page and sync tokens), else None."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


def _reason(body: Mapping[str, Any]) -> str:
    error = body.get("error")
    details = error.get("errors") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("reason"):
            return str(detail["reason"])
    return ""


def _text(answer: _Answer) -> str:
    return str(error_for(answer.status, answer.body, answer.headers))


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _zone(name: object) -> ZoneInfo:
    try:
        return ZoneInfo(str(name)) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
