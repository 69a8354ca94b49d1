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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from calendars.model import (
    TAG,
    AuthorizationLost,
    CalendarItem,
    ProviderError,
    Rejected,
    RemoteEvent,
    Throttled,
    TokenSource,
    Unavailable,
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
    ) -> None:
        self.session = session
        self.tokens = tokens
        self.calendar = calendar
        self.events_url = f"{base_url.rstrip('/')}/calendars/{quote(calendar, safe='')}/events"
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def put(self, item: CalendarItem, written: Written | None) -> Written:
        """Insert the item's event under `item.handle` (written is None) or update it with PUT (written given).

        Insert answered 409 `duplicate` (our event exists: a retry after a lost answer, or the person deleted
        it and Google keeps it cancelled) → PUT to that id with `status: confirmed`, so one event stays.
        Update answered 404/410 (gone for good) → insert again. Returns the event id and its etag.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected (also for a time zone that is not IANA).
        """
        event = event_body(item)
        if written is not None:
            answer = await self._send("PUT", written.provider_id, event, passthrough=(404, 410))
            if answer.status == 200:
                return _written(answer)
        answer = await self._send("POST", None, {"id": item.handle, **event}, passthrough=(409,))
        if answer.status == 409:
            answer = await self._send("PUT", item.handle, event)
        return _written(answer)

    async def put_many(self, batch: Sequence[tuple[CalendarItem, Written | None]]) -> list[Written | ProviderError]:
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
                results.append(await self.put(item, written))
            except Rejected as exc:
                results.append(exc)
            except ProviderError as exc:
                results.append(exc)
                stop = exc
        return results

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        """DELETE the event. 404 and 410 `deleted` (deleted before, by us or the person) are success.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected."""
        await self._send("DELETE", written.provider_id, None, passthrough=(404, 410))

    async def get(self, written: Written) -> RemoteEvent | None:
        """GET the event: None when it is gone (404, 410, or `status: cancelled`, which is how Google keeps an
        event the person deleted). `extra` holds `timeZone`, `status` and `htmlLink` as Google gives them.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected."""
        answer = await self._send("GET", written.provider_id, None, passthrough=(404, 410))
        if answer.status != 200 or answer.body.get("status") == "cancelled":
            return None
        return remote_event(answer.body)

    async def close(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    async def _send(
        self, method: str, event_id: str | None, body: dict[str, Any] | None, *, passthrough: tuple[int, ...] = ()
    ) -> _Answer:
        """One request with the access token, again once after `tokens.refresh()` when Google answers 401.
        Returns 2xx answers and those in `passthrough`; raises the table's error for the others."""
        url = self.events_url if event_id is None else f"{self.events_url}/{quote(event_id, safe='')}"
        params = WRITE_PARAMS if method in ("POST", "PUT", "DELETE") else None
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
                raw = await response.read()
                return _Answer(response.status, _json_object(raw), response.headers.copy())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"Google Calendar could not be reached: {exc.__class__.__name__}: {exc}") from exc


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


def _written(answer: _Answer) -> Written:
    if not answer.body.get("id"):
        raise Unavailable(f"Google Calendar answered {answer.status} without the event's id")
    return Written(provider_id=str(answer.body["id"]), etag=answer.body.get("etag"))


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
