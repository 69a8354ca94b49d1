"""What the mirror writes and the one narrow interface every calendar provider implements.

A `CalendarItem` is one session day as it should appear in one person's calendar; its `key` is ours and
stable (`<user id>.<session day id>`), so a retry, a crash or a reconnection finds the same event again
instead of adding a second one. Providers map the key to their own idempotency handle: Graph
`transactionId`, a client-chosen Google event id, a CalDAV resource name and `UID`
(../shared/reference/notes/calendar-sync.md §2).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Protocol

# Marks an event as coursewire's: Graph single-value extended property name, Google private extended
# property name, iCalendar property `X-COURSEWIRE-KEY`.
TAG = "coursewire-key"
# The GUID namespace of the Graph extended property (`String {GUID} Name coursewire-key`).
GRAPH_PROPERTY_SET = "{7a3f2b1e-0c4d-4e5f-9a8b-6c7d8e9f0a1b}"
PROVIDERS = ("Microsoft365", "Google", "CalDAV")


@dataclass(frozen=True)
class CalendarItem:
    """One session day for one person.

    start/end: aware datetimes in UTC; time_zone: the session's IANA zone (providers convert: Windows
    names for Graph, IANA for Google, a VTIMEZONE for iCalendar). body_text/body_html carry the details,
    meeting URL, room, instructors and the link back; location is the room (or the meeting URL).
    """

    user_id: str
    session_id: str
    day_id: str
    subject: str
    start: datetime
    end: datetime
    time_zone: str
    body_text: str
    body_html: str
    location: str | None = None
    meeting_url: str | None = None
    link: str | None = None  # the calendar page / session link shown in the body
    role: str = "Learner"  # Learner | Instructor
    windows_time_zone: str | None = None  # the session's TimeZone as the API takes it (a Windows id), for Graph

    @property
    def key(self) -> str:
        return f"{self.user_id}.{self.day_id}"

    @property
    def handle(self) -> str:
        """32 lower-case hex characters derived from `key`: valid as a Google event id (base32hex, 5-1024
        chars), a Graph transactionId and a CalDAV resource name."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    @property
    def uid(self) -> str:
        """The iCalendar UID, the same across updates (RFC 5546 §2.1.5), for CalDAV and iMIP alike."""
        return f"{self.handle}@coursewire"

    def digest(self) -> str:
        """A hash of everything written: equal digests mean the provider's copy needs no write."""
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Written:
    """What a provider answered for a written event: its id there and the version it holds. `elsewhere`: the
    write found the event in another of the person's calendars than the connected one (moved there by the
    person: Google `<calendarId>/<eventId>`, a CalDAV URL outside the collection) and updated it there."""

    provider_id: str
    etag: str | None = None
    elsewhere: bool = False


@dataclass(frozen=True)
class RemoteEvent:
    """An event read back from a provider (`Provider.get`)."""

    provider_id: str
    etag: str | None
    subject: str
    start: datetime
    end: datetime
    key: str | None  # our tag, when the event carries it
    cancelled: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    # Found in another of the person's calendars than the connected one under the same provider_id (Graph: an
    # ImmutableId stays the same when the event moves [MS16]); Google and CalDAV give a moved event another id.
    elsewhere: bool = False


class ProviderError(Exception):
    """A provider call failed. `retry_after` (seconds) is set when the provider said when to come back."""

    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Throttled(ProviderError):
    """429/503 with `Retry-After`, Google `rateLimitExceeded`/`userRateLimitExceeded`: try again later."""


class Unavailable(ProviderError):
    """The provider could not be reached or answered 5xx: try again later."""


class AuthorizationLost(ProviderError):
    """The credentials no longer work and refreshing cannot fix it (`invalid_grant`, revoked consent, a
    changed password, 401 after a refresh): the connection needs the person to authorize again."""


class ApplicationRefused(AuthorizationLost):
    """The application's own grant for a whole Microsoft 365 tenant was refused (client credentials: an expired
    or wrong secret, the application removed or its consent withdrawn; Graph 401 after a new token). Only an
    administrator can fix it, once for everybody: the people's connections keep their status and their writes
    wait (`TENANT_RETRY` in calendars/sync.py) instead of asking each person to authorize again."""


class Rejected(ProviderError):
    """The provider refused this item for good (4xx other than the above): retrying the same write fails
    the same way; the connection is marked Error with the message."""


class EventGone(ProviderError):
    """An update found the event gone from the calendar (the person deleted it, and the mirror has not decided
    about that yet): raised by `put(..., recreate=False)` instead of creating the event again, so a session
    edit arriving before the deletion is noticed does not undo it (calendars/inbound.py decides first)."""


class CursorExpired(ProviderError):
    """The change cursor is no longer valid: Graph `410 Gone` or `syncStateNotFound` on a delta link, Google
    `410 fullSyncRequired`, a CalDAV `DAV:valid-sync-token` precondition (RFC 6578 §3.2): list everything again
    with `changes(None)`."""


class CalendarGone(ProviderError):
    """The calendar itself is gone or no longer shared with the person (404/403/410 on the calendar, not on one
    event): none of its events were deleted by the person; the connection is marked Error with the message."""


@dataclass(frozen=True)
class Change:
    """One event a provider reports as changed since a cursor.

    provider_id: the provider's id of the event (Graph event id, Google event id, CalDAV resource URL);
    key: our tag (`CalendarItem.key`) when the answer carried it (deletions usually carry only the id);
    removed: reported as deleted (Graph `@removed`, Google `status: cancelled`, a CalDAV 404 member). A removed
    change is only a hint: the engine confirms it with `Provider.get` before acting on it;
    handle: the item's `handle` when the event shows it without our tag (a CalDAV resource named `<handle>.ics`,
    a Graph transactionId made from it), so `coursewire calendar resync` recognizes events of ours.
    """

    provider_id: str
    key: str | None = None
    removed: bool = False
    handle: str | None = None  # CalendarItem.handle, when the provider can tell it (resource name, transactionId)


@dataclass(frozen=True)
class Changes:
    """One answer of `ChangeFeed.changes`.

    changes: changed events, those of coursewire's (tagged) and every removal (which carry no tag);
    cursor: what to pass next time (Graph deltaLink, Google nextSyncToken, CalDAV sync-token);
    full: the listing started over (cursor None or expired), so it names every event of ours the calendar holds
    and no removals -- an event of ours it does not name is a removal to confirm; more: the listing was cut at
    the provider's page cap, call again with `cursor` (then it is a continuation, not a new listing).
    """

    changes: list[Change]
    cursor: str
    full: bool = False
    more: bool = False


@dataclass(frozen=True)
class Watch:
    """A push channel telling coursewire that a calendar changed: a Graph subscription (id) or a Google
    events.watch channel (id, resource_id). expires_at: aware UTC."""

    id: str
    expires_at: datetime
    resource_id: str | None = None


class ChangeFeed(Protocol):
    """What a provider implements to make the mirror two-way (calendar-sync.md §2.1-2.3)."""

    async def changes(self, cursor: str | None) -> Changes:
        """Events changed since `cursor`, or every event of the calendar when `cursor` is None, at most a
        provider-chosen number of pages per call (`Changes.more`). Raises CursorExpired, CalendarGone, Throttled,
        Unavailable, AuthorizationLost or Rejected."""
        ...

    async def check_calendar(self) -> None:
        """Return if the connected calendar exists and the credentials reach it. Raises CalendarGone,
        AuthorizationLost, Throttled, Unavailable or Rejected."""
        ...

    async def reaches(self, written: Written) -> bool:
        """Whether the calendar that held `written` (an event followed to another of the person's calendars)
        can still be read: False when it was deleted or is no longer shared with the person, so the event's
        absence says nothing about the person leaving the session. Raises Throttled, Unavailable,
        AuthorizationLost or Rejected."""
        ...


class Watchable(Protocol):
    """What a provider with push notifications implements (Graph subscriptions, Google events.watch)."""

    async def watch(self, address: str, secret: str, expires_at: datetime) -> Watch:
        """Ask the provider to POST changes of the calendar to `address` (https in production), with `secret`
        (Graph clientState, at most 128 characters; Google channel token) in each notification, until about
        `expires_at` (the provider may shorten it: the returned Watch says when it ends). Raises Throttled,
        Unavailable, AuthorizationLost or Rejected (for instance an address the provider cannot reach)."""
        ...

    async def renew(self, watch: Watch, address: str, secret: str, expires_at: datetime) -> Watch:
        """Extend `watch` (Graph PATCH /subscriptions/{id}) or replace it (Google has no renewal: a new channel,
        then the old one stopped). A watch the provider no longer knows is created again. Raises like `watch`."""
        ...

    async def unwatch(self, watch: Watch) -> None:
        """Stop `watch`; one already gone is success. Raises Throttled, Unavailable or AuthorizationLost."""
        ...


class TokenSource(Protocol):
    """Access tokens for one OAuth connection (calendars/oauth.py)."""

    async def access_token(self) -> str:
        """A valid access token, refreshed first when it expires within a minute. Raises AuthorizationLost."""
        ...

    async def refresh(self) -> str:
        """A new access token after the provider refused the current one (401). Raises AuthorizationLost."""
        ...


class Provider(Protocol):
    """One connected calendar. Every method is idempotent; 404/410 on delete is success."""

    async def put(self, item: CalendarItem, written: Written | None, *, recreate: bool = True) -> Written:
        """Create the item's event (written is None) or replace it (written: what we wrote last).

        Creating an event that already exists under the item's handle (a retry after a crash) updates
        it instead of adding another. An event the person deleted is created again, unless `recreate` is
        False (a two-way connection whose deletion is not decided yet): then EventGone.
        Raises Throttled, Unavailable, AuthorizationLost, Rejected or EventGone.
        """
        ...

    async def put_many(
        self, batch: Sequence[tuple[CalendarItem, Written | None]], *, recreate: bool = True
    ) -> list[Written | ProviderError]:
        """`put` for several items of one person, in order; a provider may send them in one request
        (Graph `$batch`, 20 at most). Each result is the Written or the error of that item."""
        ...

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        """Remove the event; an event already gone is success. Raises Throttled, Unavailable,
        AuthorizationLost or Rejected."""
        ...

    async def get(self, written: Written, *, uid: str | None = None) -> RemoteEvent | None:
        """Read the event back; None when it is gone (404/410, Google `status: cancelled`).

        An event the person moved to another of their calendars is found where it is now (Graph keeps its
        immutable id; Google and CalDAV look for it by id or UID in the person's other calendars) and returned
        with its new `provider_id`, which put/delete/get accept from then on. `uid`: the UID the event was
        written with (CalendarItem.uid), for CalDAV to look for it by when it is gone from an address the
        person's app named (one it was followed to), which does not tell the UID.
        Raises Throttled, Unavailable, AuthorizationLost or Rejected."""
        ...

    async def close(self) -> None:
        """Release what the provider holds (not the shared HTTP session)."""
        ...


async def put_each(
    provider: Provider, batch: Sequence[tuple[CalendarItem, Written | None]], *, recreate: bool = True
) -> list[Written | ProviderError]:
    """`put_many` for providers without a batch request: one `put` after another."""
    results: list[Written | ProviderError] = []
    for item, written in batch:
        try:
            results.append(await provider.put(item, written, recreate=recreate))
        except ProviderError as exc:
            results.append(exc)
    return results
