"""CalDAV calendars (RFC 4791): one session day is one calendar object resource, named by the item's handle.

The resource name `<calendar>/<handle>.ics` and the UID `<handle>@coursewire` are stable, so a create is
`PUT` with `If-None-Match: *` (RFC 4791 §5.3.2): a retry after a lost answer or a crash finds the resource
instead of adding a second event, and an update is `PUT` with `If-Match` on the ETag just read, so a change
made in between is seen (412) rather than silently lost, then overwritten: the event is ours. The object has
no METHOD (RFC 4791 §4.1) and carries a SEQUENCE that grows with every update. When the server gives no
strong ETag for a PUT (it rewrote the data, RFC 4791 §5.3.4) the ETag is read back with GET.

`discover` finds the calendars of an account from the server URL a person pastes (RFC 6764 §6, RFC 5397,
RFC 4791 §6.2.1, §5.2.3). The HTTP session is given by the caller, so its SSRF guard applies to every
address connected to, redirects and hrefs named by the server included. Answers are capped in size and XML
is parsed without DTDs, so a hostile server can neither exhaust memory nor expand entities.

`changes` and `check_calendar` make the calendar a change feed (calendars.model.ChangeFeed): CalDAV servers
push nothing to coursewire, so the worker polls with RFC 6578 sync-collection (a full PROPFIND listing where
the server has none). `get` follows an event the person moved to another of their calendars by its UID.

Speaks the few verbs itself with aiohttp (calendars/providers/dav.py: requests, bounds, Multi-Status): the
`caldav` package (2.1+) replaces urllib3 in the environment (../shared/reference/notes/calendar-sync.md §3,
dependency note).
"""

from __future__ import annotations

import asyncio
import re
import threading
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic as _monotonic
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

import aiohttp
from icalendar import Calendar

from calendars.ical import KEY_PROPERTY, event_calendar, to_bytes
from calendars.model import (
    CalendarGone,
    CalendarItem,
    Change,
    Changes,
    CursorExpired,
    EventGone,
    ProviderError,
    Rejected,
    RemoteEvent,
    Unavailable,
    Written,
    put_each,
)
from calendars.providers.dav import (
    CALDAV,
    DAV,
    MAX_BODY,
    MAX_REDIRECTS,
    TIMEOUT,
    XML,
    Answer,
    DavResponse,
    Http,
    collection_url,
    first_href,
    hrefs,
    join,
    multistatus,
    origin,
    preconditions,
    propfind,
    raise_for,
    rejected,
    strong,
    text_of,
)
from storage import names, outbound
from storage.errors import Invalid

# Tries of a read-modify-write when the event keeps changing between our read and our write (412).
WRITE_ATTEMPTS = 3

ICS = "text/calendar; charset=utf-8"


@dataclass(frozen=True)
class CalendarInfo:
    """A calendar found by `discover`: its collection URL (absolute, ends with '/') and its display name."""

    url: str
    name: str


# Seconds the list of the person's calendars (find_moved's search) is kept before it is learnt again.
CALENDARS_TTL = 30.0


class CalDAVProvider:
    """One CalDAV calendar collection of one account (calendars.model.Provider).

    calendar_url: the collection (as `discover` returns it); username/password: the account's credentials
    (iCloud: an app-specific password), sent with HTTP Basic auth over the given session. `clock` gives
    DTSTAMP (aware; default: the wall clock). Written.provider_id is the resource's absolute URL.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        calendar_url: str,
        username: str,
        password: str,
        *,
        clock: Callable[[], datetime] | None = None,
        timeout: float = TIMEOUT,
        max_body: int = MAX_BODY,
    ) -> None:
        self.calendar_url = calendar_url if calendar_url.endswith("/") else calendar_url + "/"
        self._clock = clock or (lambda: datetime.now(UTC))
        self._http = Http(
            session, username, password, entry=self.calendar_url, timeout=timeout, max_body=max_body, clock=self._clock
        )
        # The person's calendars on this server, learnt by find_moved, and when (_monotonic()): learnt again
        # after CALENDARS_TTL, so a calendar the person made since (to move an event into) is searched too.
        self._calendars: list[str] | None = None
        self._calendars_at = 0.0

    def __repr__(self) -> str:  # never the password
        return f"CalDAVProvider({self.calendar_url!r})"

    def resource_url(self, item: CalendarItem) -> str:
        """Where the item's event lives: `<calendar>/<handle>.ics`."""
        return urljoin(self.calendar_url, f"{item.handle}.ics")

    async def put(self, item: CalendarItem, written: Written | None, *, recreate: bool = True) -> Written:
        """Create or replace the item's event; returns its URL and ETag (None if the server has none).

        Without `written`: PUT with `If-None-Match: *` at `resource_url(item)`; 412 (it exists: a retry after a
        crash) continues as an update. With `written`, or after that 412: GET the event (its SEQUENCE and
        current ETag), then PUT it with SEQUENCE + 1 and `If-Match` on that ETag; a 412 (changed or deleted
        meanwhile) reads again. `written.etag` is not trusted: an event the person edited since is overwritten
        all the same, the calendar mirrors the session.

        Where: at `written.provider_id` when it is a resource of this server (an event the person moved to
        another of their calendars stays there, `get`), else at `resource_url(item)`. An event missing there is
        first looked for by its UID in the person's calendars (`find_moved`: moved, and not seen yet), then
        created again in the connected calendar (the person deleted it), or, with `recreate` False, EventGone.
        Raises AuthorizationLost (401/403), Throttled (429, 503 with Retry-After), Unavailable (no connection,
        timeout, 5xx, or still changing after WRITE_ATTEMPTS reads) or Rejected (any other 4xx, e.g. 409
        no-uid-conflict, 413; an answer over the size cap; an address the session's SSRF guard refuses).
        """
        home = self.resource_url(item)
        url = home
        if written is None:
            created = await self._create(item, home)
            if created is not None:
                return created
        elif self._ours(written.provider_id):
            url = written.provider_id
        searched = written is None
        for _ in range(WRITE_ATTEMPTS):
            current = await self._fetch(url)
            if current is None:
                if not searched:
                    searched = True
                    found = await self.find_moved(item.uid, gone=url)
                    if found is not None:
                        url = found[0]
                        continue
                if not recreate and written is not None:
                    raise EventGone(f"{url} is no longer in the calendar")
                url = home
                created = await self._create(item, home)
                if created is not None:
                    return created
                continue
            event, etag = current
            headers = {"Content-Type": ICS}
            if etag:
                headers["If-Match"] = etag
            body = self._body(item, _sequence(event) + 1)
            answer = await self._http.send("PUT", url, headers=headers, data=body)
            if answer.status in (200, 201, 204):
                return await self._written(url, answer)
            if answer.status != 412:
                rejected(answer, f"PUT {url}")
        raise Unavailable(f"PUT {url}: the event changed between each of {WRITE_ATTEMPTS} reads and writes")

    async def put_many(
        self, batch: Sequence[tuple[CalendarItem, Written | None]], *, recreate: bool = True
    ) -> list[Written | ProviderError]:
        """`put` for each item in turn (CalDAV has no batch write)."""
        return await put_each(self, batch, recreate=recreate)

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        """DELETE the event at `written.provider_id`; 404/410 (already gone) is success.
        Raises AuthorizationLost, Throttled, Unavailable or Rejected (other 4xx)."""
        url = written.provider_id
        answer = await self._http.send("DELETE", url)
        if answer.status not in (200, 202, 204, 404, 410):
            rejected(answer, f"DELETE {url}")

    async def get(self, written: Written, *, uid: str | None = None) -> RemoteEvent | None:
        """The event at `written.provider_id` (start/end in UTC, key from X-COURSEWIRE-KEY, extra: uid and
        sequence), or None when it is gone (404/410) and not found elsewhere.

        An event gone from its URL may have been moved by the person to another of their calendars (deleted
        here, created there with the same UID): `find_moved` looks for its UID -- `uid` when given, else the
        one the URL's resource name tells when it is one of ours (`<handle>.ics`, giving `<handle>@coursewire`;
        an event followed to a name the person's app chose tells none) -- and the event found is returned
        with its new URL as provider_id; `elsewhere` says the URL is outside the connected collection. Raises
        AuthorizationLost, Throttled, Unavailable (also: the search took longer than SEARCH_DEADLINE) or Rejected
        (other 4xx, or a body that holds no VEVENT)."""
        url = written.provider_id
        fetched = await self._fetch(url)
        if fetched is None:
            uid = uid or uid_of(url)
            found = await self.find_moved(uid, gone=url) if uid is not None else None
            if found is None:
                return None
            url, event, etag = found
        else:
            event, etag = fetched
        start = _instant(event.get("DTSTART"))
        if start is None:
            raise Rejected(f"GET {url}: the event has no DTSTART")
        end = _instant(event.get("DTEND"))
        if end is None:
            duration = event.get("DURATION")
            end = start + (duration.dt if duration is not None and isinstance(duration.dt, timedelta) else timedelta())
        key = event.get(KEY_PROPERTY)
        return RemoteEvent(
            provider_id=url,
            etag=etag,
            subject=str(event.get("SUMMARY", "")),
            start=start,
            end=end,
            key=str(key) if key is not None else None,
            cancelled=str(event.get("STATUS", "")).upper() == "CANCELLED",
            extra={"uid": str(event.get("UID", "")), "sequence": str(_sequence(event))},
            elsewhere=not url.startswith(self.calendar_url),
        )

    async def find_moved(self, uid: str, *, gone: str) -> tuple[str, Any, str | None] | None:
        """Where the event with `uid` is now, among the person's calendars: (its URL, its VEVENT, its ETag), or
        None. `gone`: the URL it was at (not taken as an answer).

        The calendars are those of the person's calendar homes on this server (DAV:current-user-principal of the
        connected calendar, then `_calendars_of`: at most MAX_HOMES homes and MAX_CALENDARS calendars, learnt
        again after CALENDARS_TTL and after a miss), the connected one first; calendars on another origin are
        not searched (the server does not choose where coursewire sends the person's credentials). Each is asked with a
        calendar-query REPORT whose UID prop-filter has a text-match (RFC 4791 §7.8, §9.7.5: a substring,
        case-sensitive with i;octet), at most MAX_MATCHES answers read, each confirmed by GET with an exact
        UID. The whole search takes at most SEARCH_DEADLINE seconds. Raises AuthorizationLost, Throttled,
        Unavailable (also past the deadline) or Rejected (an answer over the size cap or not XML)."""
        searched: set[str] = set()
        try:
            async with asyncio.timeout(SEARCH_DEADLINE):
                # The calendars learnt within CALENDARS_TTL first; on a miss, learnt again (the person may have
                # made one just now to move the event into), and only those not searched yet are asked.
                for fresh in (False, True):
                    learnt_at = self._calendars_at
                    for calendar in await self._person_calendars(fresh=fresh):
                        if calendar in searched:
                            continue
                        searched.add(calendar)
                        for url in await self._query_uid(calendar, uid):
                            if url == gone:
                                continue
                            fetched = await self._fetch(url)
                            if fetched is not None and str(fetched[0].get("UID", "")) == uid:
                                return url, fetched[0], fetched[1]
                    if self._calendars_at != learnt_at:
                        break  # the list was just learnt: learning it again would say the same
        except TimeoutError:
            raise Unavailable(
                f"{self.calendar_url}: looking for a moved event took longer than {SEARCH_DEADLINE:g} s"
            ) from None
        return None

    async def changes(self, cursor: str | None) -> Changes:
        """What changed in the calendar since `cursor` (calendars.model.ChangeFeed), by RFC 6578 sync-collection.

        REPORT DAV:sync-collection on the calendar (Depth 0) with DAV:sync-token `cursor` (empty when None: the
        initial listing), DAV:sync-level 1 and DAV:prop getetag (RFC 6578 §3.2). Each member of the calendar
        with a propstat is a Change (provider_id: its absolute URL; key None: the engine knows our events by
        URL), each member answered 404 a removed Change (§3.5.2); the answer's DAV:sync-token is the next cursor
        (at most MAX_TOKEN characters); `full` when `cursor` is None; a 507 on the calendar itself means the
        server cut the answer: `more`, continue with the cursor (§3.6). Members outside the calendar collection,
        and the collection itself, are ignored.

        A server without sync-collection (405, 501, 403 DAV:supported-report, or a 207 without DAV:sync-token)
        gets a full listing by PROPFIND Depth 1 instead, on every call: the cursor is then LISTING_CURSOR, which
        lists fully again next time (a server that gains sync-collection is used once the cursor expires or is
        reset). Answers are at most MAX_LISTING_BODY bytes and MAX_MEMBERS members, else Rejected.

        Raises CursorExpired (403/409/412 with the DAV:valid-sync-token precondition, §3.2: call with None),
        CalendarGone (404/410 on the calendar), AuthorizationLost (401, or 403 without such a precondition),
        Throttled, Unavailable or Rejected (other 4xx, a malformed or oversized answer).
        """
        if cursor == LISTING_CURSOR:
            return await self._listing()
        what = f"REPORT sync-collection {self.calendar_url}"
        answer = await self._http.send(
            "REPORT",
            self.calendar_url,
            headers={"Depth": "0", "Content-Type": XML},
            data=_sync_collection(cursor or ""),
            keep=(403, 501),
            max_body=MAX_LISTING_BODY,
        )
        if answer.status in (403, 409, 412):
            said = preconditions(answer)
            if f"{{{DAV}}}valid-sync-token" in said:
                if cursor is None:  # refusing the empty token is refusing every listing: not a cursor to drop
                    rejected(answer, what)
                raise CursorExpired(f"{what}: {answer.status}: the server no longer knows the sync token")
            if f"{{{DAV}}}supported-report" in said:
                return await self._listing()
            if answer.status == 403:
                raise_for(403, None, answer.body, self.calendar_url, self._clock())
            rejected(answer, what)
        if answer.status in (404, 410):
            raise CalendarGone(f"{what}: {answer.status}: the calendar is gone")
        if answer.status in (405, 501):
            return await self._listing()
        if answer.status != 207:
            rejected(answer, what)
        # Off the event loop (webhook deliveries share it): a listing may be 16 MiB of XML.
        root, responses = await asyncio.to_thread(multistatus, answer, what, limit=MAX_MEMBERS)
        token = (root.findtext(f"{{{DAV}}}sync-token") or "").strip()
        if not token:
            return await self._listing()
        if len(token) > MAX_TOKEN:
            raise Rejected(f"{what}: the sync token is longer than {MAX_TOKEN} characters")
        found: dict[str, Change] = {}
        more = False
        for response in responses:
            member = self._member(response.href)
            if self._is_calendar(response.href):
                more = more or response.status == 507
            elif member is not None:
                found[member] = Change(member, removed=response.status in (404, 410), handle=resource_handle(member))
        return Changes(list(found.values()), cursor=token, full=cursor is None, more=more)

    async def reaches(self, written: Written) -> bool:
        """Whether the collection holding `written` (its URL's parent) is still an event calendar the person can
        read, judged as `check_calendar` judges the connected one: PROPFIND Depth 0 answers 207 and the
        collection's own response (in the DAV:multistatus) names an event calendar (`_is_event_calendar`).

        False, the event's absence saying nothing about the person leaving the session, when the calendar was
        deleted or is no longer shared (403/404/410, RFC 4918 §9.1, RFC 3744 §7.1.1; or a 207 whose response or
        propstat for the collection says 403/404), or the address no longer holds a calendar of events (a plain
        collection, an address book, a task list). Redirects are followed on the calendar's origin (at most
        MAX_REDIRECTS); one elsewhere, or any other 3xx, is False: the calendar is not where the event was, and
        the person's credentials go nowhere else. The connected calendar itself, or an address on another
        origin, is True here (check_calendar judges the first). Raises AuthorizationLost (401), Throttled,
        Unavailable or Rejected (other 4xx, e.g. 405; a 207 that is not a DAV:multistatus)."""
        url = written.provider_id
        if url.startswith(self.calendar_url) or not self._ours(url):
            return True
        collection = url.rsplit("/", 1)[0] + "/"
        for _ in range(MAX_REDIRECTS + 1):
            what = f"PROPFIND {collection}"
            answer = await self._http.send(
                "PROPFIND",
                collection,
                headers={"Depth": "0", "Content-Type": XML},
                data=PROPFIND_CALENDARS,
                keep=(403, 404, 410),
            )
            location = answer.headers.get("Location")
            if answer.status in (301, 302, 303, 307, 308) and location:
                collection = join(collection, location)
                if origin(collection) != origin(self.calendar_url):
                    return False
                continue
            if answer.status in (403, 404, 410) or 300 <= answer.status < 400:
                return False
            if answer.status != 207:
                rejected(answer, what)
            responses = multistatus(answer, what)[1]
            own = [r for r in responses if _path(r.href) == _path(collection)] or responses[:1]
            if not own or (own[0].status is not None and not 200 <= own[0].status < 300):
                return False  # the collection's own DAV:status (404, 403): gone or unshared
            return _is_event_calendar(own[0].props)
        return False

    async def check_calendar(self) -> None:
        """Return if the calendar exists and the credentials reach it: PROPFIND Depth 0 on it answers 207 naming
        an event calendar. Raises CalendarGone (404/410, or no longer a calendar collection), AuthorizationLost
        (401/403), Throttled, Unavailable or Rejected (other 4xx)."""
        what = f"PROPFIND {self.calendar_url}"
        answer = await self._http.send(
            "PROPFIND", self.calendar_url, headers={"Depth": "0", "Content-Type": XML}, data=PROPFIND_CALENDARS
        )
        if answer.status in (404, 410):
            raise CalendarGone(f"{what}: {answer.status}: the calendar is gone")
        if answer.status != 207:
            rejected(answer, what)
        responses = multistatus(answer, what)[1]
        own = [r for r in responses if self._is_calendar(r.href)] or responses[:1]
        if not own or not _is_event_calendar(own[0].props):
            raise CalendarGone(f"{what}: the address is no longer a calendar of events")

    async def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""

    def _ours(self, url: str) -> bool:
        """Whether `url` is a resource on the connected calendar's origin (where a moved event may be)."""
        return origin(url) == origin(self.calendar_url) and not url.endswith("/")

    def _is_calendar(self, href: str) -> bool:
        return _path(href) == _path(self.calendar_url)

    def _member(self, href: str) -> str | None:
        """The URL of `href` when it names a resource directly inside the connected calendar collection, else
        None. Only the path is taken from the server: the URL is rebuilt on the calendar's own origin, so a
        listing cannot send later requests (get, delete) to another host."""
        path = urlsplit(href).path
        parent, _, name = _path(href).rpartition("/")
        if href.endswith("/") or not name or parent != _path(self.calendar_url):
            return None
        return urljoin(self.calendar_url, path)

    async def _listing(self) -> Changes:
        """Every resource of the calendar by PROPFIND Depth 1 (no sync-collection there): a full Changes whose
        cursor, LISTING_CURSOR, asks for this listing again."""
        what = f"PROPFIND {self.calendar_url}"
        answer = await self._http.send(
            "PROPFIND",
            self.calendar_url,
            headers={"Depth": "1", "Content-Type": XML},
            data=PROPFIND_LISTING,
            max_body=MAX_LISTING_BODY,
        )
        if answer.status in (404, 410):
            raise CalendarGone(f"{what}: {answer.status}: the calendar is gone")
        if answer.status != 207:
            rejected(answer, what)
        found: dict[str, Change] = {}
        for response in (await asyncio.to_thread(multistatus, answer, what, limit=MAX_MEMBERS))[1]:
            kind = response.props.get(f"{{{DAV}}}resourcetype")
            is_collection = kind is not None and kind.find(f"{{{DAV}}}collection") is not None
            member = self._member(response.href)
            if member is not None and not is_collection and response.status in (None, 200):
                found[member] = Change(member, handle=resource_handle(member))
        return Changes(list(found.values()), cursor=LISTING_CURSOR, full=True)

    async def _person_calendars(self, *, fresh: bool = False) -> list[str]:
        """The connected calendar, then the person's other event calendars on its origin (see `find_moved`):
        learnt again when older than CALENDARS_TTL, or when `fresh`."""
        if fresh or self._calendars is None or _monotonic() - self._calendars_at > CALENDARS_TTL:
            calendars = [self.calendar_url]
            context = await propfind(self._http, self.calendar_url, 0, PROPFIND_CONTEXT, tolerate=True)
            principal = first_href(context[0].props.get(f"{{{DAV}}}current-user-principal")) if context else None
            if principal is not None:
                try:
                    found = await _calendars_of(self._http, join(context[0].href, principal))
                except Rejected:  # no calendar home named: only the connected calendar is searched
                    found = []
                calendars += [c.url for c in found if origin(c.url) == origin(self.calendar_url)]
            self._calendars, self._calendars_at = list(dict.fromkeys(calendars)), _monotonic()
        return self._calendars

    async def _query_uid(self, calendar: str, uid: str) -> list[str]:
        """The URLs of at most MAX_MATCHES resources of `calendar` whose UID contains `uid` (calendar-query
        REPORT, RFC 4791 §7.8); [] when the calendar is gone or refuses the query (403, 405, 501...): another
        calendar of the person may be shared with them read-only, which says nothing of the connection."""
        what = f"REPORT calendar-query {calendar}"
        answer = await self._http.send(
            "REPORT",
            calendar,
            headers={"Depth": "1", "Content-Type": XML},
            data=_calendar_query(uid),
            keep=(403, 501),
        )
        if answer.status != 207:
            return []
        found = [r.href for r in multistatus(answer, what)[1] if r.status in (None, 200) and not r.href.endswith("/")]
        return list(dict.fromkeys(h for h in found if origin(h) == origin(calendar)))[:MAX_MATCHES]

    def _body(self, item: CalendarItem, sequence: int) -> bytes:
        return to_bytes(event_calendar(item, sequence=sequence, dtstamp=self._clock(), method=None))

    async def _create(self, item: CalendarItem, url: str) -> Written | None:
        """PUT with If-None-Match: *; None when the resource exists already (412)."""
        headers = {"Content-Type": ICS, "If-None-Match": "*"}
        answer = await self._http.send("PUT", url, headers=headers, data=self._body(item, 0))
        if answer.status in (200, 201, 204):
            return await self._written(url, answer)
        if answer.status == 412:
            return None
        rejected(answer, f"PUT {url}")

    async def _written(self, url: str, answer: Answer) -> Written:
        etag = strong(answer.headers.get("ETag"))
        if etag is None:  # RFC 4791 §5.3.4: the server changed what we sent; learn the version it keeps
            fetched = await self._fetch(url)
            etag = fetched[1] if fetched else None
        return Written(provider_id=url, etag=etag, elsewhere=not url.startswith(self.calendar_url))

    async def _fetch(self, url: str) -> tuple[Any, str | None] | None:
        """GET the resource: (its VEVENT, its strong ETag or None), None on 404/410."""
        answer = await self._http.send("GET", url, redirects=True)
        if answer.status in (404, 410):
            return None
        if answer.status != 200:
            rejected(answer, f"GET {url}")
        try:
            calendar = Calendar.from_ical(answer.body)
        except ValueError as exc:
            raise Rejected(f"GET {url}: not an iCalendar object ({exc})") from exc
        events = calendar.walk("VEVENT")
        if not events:
            raise Rejected(f"GET {url}: the object holds no VEVENT")
        return events[0], strong(answer.headers.get("ETag"))


def uid_of(url: str) -> str | None:
    """The UID coursewire gave the event at `url` when its resource name is one of ours (`<handle>.ics`, see
    CalendarItem.handle and .uid), else None (a resource the person named: its UID is not known)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    match = re.fullmatch(r"([0-9a-f]{32})\.ics", name)
    return f"{match.group(1)}@coursewire" if match else None


def _path(url: str) -> str:
    """The decoded path of `url` without a final '/', to compare the hrefs of one resource."""
    return unquote(urlsplit(url).path).rstrip("/")


def _sync_collection(token: str) -> bytes:
    """The DAV:sync-collection REPORT body (RFC 6578 §6.1): `token` (empty: initial), level 1, getetag."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:">'
        f"<d:sync-token>{escape(token)}</d:sync-token><d:sync-level>1</d:sync-level>"
        "<d:prop><d:getetag/></d:prop></d:sync-collection>"
    ).encode()


def _calendar_query(uid: str) -> bytes:
    """The CALDAV:calendar-query REPORT body (RFC 4791 §7.8) matching VEVENTs whose UID contains `uid`."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/></d:prop>'
        '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"><c:prop-filter name="UID">'
        f'<c:text-match collation="i;octet">{escape(uid)}</c:text-match>'
        "</c:prop-filter></c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"
    ).encode()


def _sequence(event: Any) -> int:
    try:
        return max(0, int(event.get("SEQUENCE", 0)))
    except (TypeError, ValueError):
        return 0


def _instant(prop: Any) -> datetime | None:
    """A DTSTART/DTEND value in UTC: aware times converted, floating times read as UTC, dates at midnight UTC."""
    if prop is None:
        return None
    value = prop.dt
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    return None


# --- the change feed --------------------------------------------------------------------------------------------

# The cursor of a calendar whose server has no sync-collection: every call lists the calendar fully.
LISTING_CURSOR = "coursewire:propfind-listing"
MAX_TOKEN = 2048  # characters of a sync token kept as the cursor (Radicale's are 92)
# A change listing, or a full listing of a calendar: 20,000 events of the person's own fit in either.
MAX_LISTING_BODY = 16 * 1024 * 1024
MAX_MEMBERS = 20_000
MAX_MATCHES = 5  # resources read back of one calendar-query by UID (one is expected)
SEARCH_DEADLINE = 20.0  # seconds for looking for a moved event in all of the person's calendars
PROPFIND_LISTING = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/><d:resourcetype/></d:prop></d:propfind>'
)


# --- discovery -----------------------------------------------------------------------------------------------

PROPFIND_CONTEXT = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop>'
    b"<d:current-user-principal/><d:resourcetype/><d:displayname/><c:supported-calendar-component-set/>"
    b"</d:prop></d:propfind>"
)
PROPFIND_HOME = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop>'
    b"<c:calendar-home-set/></d:prop></d:propfind>"
)
PROPFIND_CALENDARS = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop>'
    b"<d:resourcetype/><d:displayname/><c:supported-calendar-component-set/></d:prop></d:propfind>"
)


# Discovery's bounds: a server the person names (perhaps their own, written to attack coursewire) can neither
# hold a thread of the API for long, nor make coursewire follow, keep or store an unbounded list.
DISCOVERY_DEADLINE = 20.0  # seconds for the whole discovery: every request, redirect and DNS lookup
MAX_HOMES = 5  # calendar homes followed (RFC 4791 §6.2.1 allows several; servers name one or two)
MAX_CALENDARS = 100  # event calendars examined and offered, in the server's order; the rest are ignored
MAX_NAME = 200  # characters of a calendar's display name kept
MAX_CALENDAR_URL = 512  # characters of a calendar's URL; a calendar at a longer one is not offered
# Discoveries one server process runs at once, and per person: one.
DISCOVERIES_PER_PROCESS = 4
DISCOVERY_RETRY_AFTER = 5  # seconds a refused discovery is told to wait (Retry-After)

_slots = threading.BoundedSemaphore(DISCOVERIES_PER_PROCESS)
_running: set[str] = set()
_running_lock = threading.Lock()


class DiscoveryBusy(Exception):
    """No discovery may start now: `yours` when this person's own discovery is still running, else every one
    of the process's DISCOVERIES_PER_PROCESS slots is taken (try again after `retry_after` seconds)."""

    def __init__(self, message: str, *, yours: bool) -> None:
        super().__init__(message)
        self.message = message
        self.yours = yours
        self.retry_after = DISCOVERY_RETRY_AFTER


@contextmanager
def discovery_slot(person: str) -> Iterator[None]:
    """Hold one of the process's discovery slots for `person` (a user id) while the block runs.

    Never waits: raises DiscoveryBusy(yours=True) when `person` already holds one (a second form sent, a
    script), DiscoveryBusy(yours=False) when all DISCOVERIES_PER_PROCESS are taken. Thread-safe: the API runs
    discoveries on its worker threads, the calendar page on the event loop.
    """
    with _running_lock:
        if person in _running:
            raise DiscoveryBusy("a calendar search for this person is already in progress", yours=True)
        if not _slots.acquire(blocking=False):
            raise DiscoveryBusy(
                f"{DISCOVERIES_PER_PROCESS} calendar searches are already running on this server", yours=False
            )
        _running.add(person)
    try:
        yield
    finally:
        with _running_lock:
            _running.discard(person)
            _slots.release()


def check_credentials(username: Any, password: Any) -> tuple[str, str]:
    """`(username, password)` as given, once both can be sent in HTTP Basic auth (RFC 7617 §2) and stored.

    Raises Invalid naming `Username` when it is empty, holds a `:` (Basic auth cannot carry one in a user name)
    or a character storage.names.refused turns away (controls, format characters such as U+202E, other
    invisible ones: the user name is stored and shown as the account); Invalid naming `Password` when it is
    empty or holds a control character (Cc) or a lone surrogate (not UTF-8). Messages never quote the password.
    """
    if not isinstance(username, str) or not username:
        raise Invalid("Username must not be empty", target="Username")
    if not isinstance(password, str) or not password:
        raise Invalid("Password must not be empty", target="Password")
    names.check(username, "Username")
    if ":" in username:
        raise Invalid(
            "Username must not contain ':' (HTTP Basic authentication cannot send one, RFC 7617 §2)",
            target="Username",
        )
    for index, char in enumerate(password):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise Invalid(
                f"Password contains a control character at character {index + 1}: remove it", target="Password"
            )
    return username, password


async def discover(
    session: aiohttp.ClientSession,
    url: str,
    username: str,
    password: str,
    *,
    networks: Sequence[outbound.IPNetwork] = (),
    resolve: outbound.Resolve = outbound.resolve,
    timeout: float = TIMEOUT,
    max_body: int = MAX_BODY,
    deadline: float | None = None,
) -> list[CalendarInfo]:
    """The calendars of the account that can hold events, in the server's order.

    url: the server (`https://caldav.example.com/`), any URL on it, or a calendar collection itself (then the
    list is that calendar). Steps: PROPFIND Depth 0 on `url` for DAV:current-user-principal (RFC 5397), or on
    `/.well-known/caldav` when `url` names none (RFC 6764 §5, redirects followed); PROPFIND the principal for
    CALDAV:calendar-home-set (RFC 4791 §6.2.1); PROPFIND Depth 1 on each home, keeping collections whose
    DAV:resourcetype has CALDAV:calendar and whose CALDAV:supported-calendar-component-set includes VEVENT
    (absent means every component, RFC 4791 §5.2.3).

    Bounds: the whole discovery takes at most `deadline` seconds (DISCOVERY_DEADLINE when None), each request
    at most `timeout`; at most MAX_HOMES homes are followed and MAX_CALENDARS calendars examined. Names are
    cut to MAX_NAME characters, without control or format characters.

    Every calendar returned is where coursewire will later write the person's events with their credentials,
    so it is not the server's to choose freely: a calendar URL on the origin of `url` (scheme, host and port)
    is kept; one elsewhere only when storage.outbound.check_url accepts it (`networks`: the operator's allowed
    networks, `resolve`: the DNS lookup in use); others, and URLs over MAX_CALENDAR_URL characters, are dropped.
    When every calendar found was dropped, Rejected says so.

    Raises AuthorizationLost (401/403: wrong user name or app password), Throttled, Unavailable (no
    connection, 5xx, past the deadline) or Rejected (not a CalDAV server, an href leaving https, an answer over
    `max_body` bytes or with a DTD, an address the session's SSRF guard refuses, or another 4xx). The caller
    checks the URL a person typed first (storage.outbound.check_url: https, public addresses).
    """
    http = Http(
        session, username, password, entry=url, timeout=timeout, max_body=max_body, clock=lambda: datetime.now(UTC)
    )
    limit = DISCOVERY_DEADLINE if deadline is None else deadline
    gate = _Gate(url, networks, resolve)
    try:
        async with asyncio.timeout(limit):
            found = await _find(http, url)
            kept = [c for c in found if await gate.allows(c.url)]
    except TimeoutError:
        raise Unavailable(f"{url}: the calendar search took longer than {limit:g} s") from None
    if found and not kept:
        raise Rejected(
            f"{url}: the server lists its calendars only at addresses coursewire does not write to"
            f" ({gate.refused[0]}); give the address of a calendar on this server"
        )
    return kept


async def _find(http: Http, url: str) -> list[CalendarInfo]:
    """The event calendars discovery finds (at most MAX_CALENDARS), before `_Gate` judges their URLs."""
    responses = await propfind(http, url, 0, PROPFIND_CONTEXT, tolerate=True)
    context = responses[0] if responses else None
    if context is not None and _is_event_calendar(context.props):
        return [CalendarInfo(collection_url(context.href), _name(context))]
    principal = first_href(context.props.get(f"{{{DAV}}}current-user-principal")) if context else None
    base = context.href if context else url
    if principal is None:
        well_known = urljoin(url, "/.well-known/caldav")
        if urlsplit(well_known).path != urlsplit(url).path:
            responses = await propfind(http, well_known, 0, PROPFIND_CONTEXT, tolerate=True)
            if responses:
                principal = first_href(responses[0].props.get(f"{{{DAV}}}current-user-principal"))
                base = responses[0].href
    if principal is None:
        raise Rejected(f"{url}: no CalDAV account found there (no DAV:current-user-principal)")
    return await _calendars_of(http, join(base, principal))


async def _calendars_of(http: Http, principal_url: str) -> list[CalendarInfo]:
    """The event calendars in the principal's calendar homes (RFC 4791 §6.2.1): at most MAX_HOMES homes
    followed, at most MAX_CALENDARS calendars, in the server's order. Raises Rejected when it names no home."""
    responses = await propfind(http, principal_url, 0, PROPFIND_HOME)
    homes = hrefs(responses[0].props.get(f"{{{CALDAV}}}calendar-home-set")) if responses else []
    if not homes:
        raise Rejected(f"{principal_url}: the account has no CALDAV:calendar-home-set")
    found: dict[str, CalendarInfo] = {}
    for home in list(dict.fromkeys(homes))[:MAX_HOMES]:
        for response in await propfind(http, join(principal_url, home), 1, PROPFIND_CALENDARS):
            if _is_event_calendar(response.props):
                info = CalendarInfo(collection_url(response.href), _name(response))
                found.setdefault(info.url, info)
                if len(found) >= MAX_CALENDARS:
                    return list(found.values())
    return list(found.values())


class _Gate:
    """Which calendar URLs discovery may return (see `discover`): same origin as the entry URL, or accepted by
    storage.outbound.check_url; DNS answers are remembered for the discovery, so a list naming the same host
    a hundred times costs one lookup."""

    def __init__(self, entry: str, networks: Sequence[outbound.IPNetwork], resolve: outbound.Resolve) -> None:
        self.origin = origin(entry)
        self.networks = tuple(networks)
        self.resolve = resolve
        self.answers: dict[str, list[str]] = {}
        self.refused: list[str] = []

    def _lookup(self, host: str) -> list[str]:
        if host not in self.answers:
            self.answers[host] = self.resolve(host)
        return self.answers[host]

    async def allows(self, url: str) -> bool:
        try:
            if len(url) > MAX_CALENDAR_URL:
                raise Invalid(f"the URL is longer than {MAX_CALENDAR_URL} characters")
            if self.origin is not None and origin(url) == self.origin:
                names.web_url(url, "calendar")
            else:
                await asyncio.to_thread(outbound.check_url, url, self.networks, self._lookup, field="calendar")
        except Invalid as exc:
            self.refused.append(exc.message)
            return False
        return True


def _is_event_calendar(props: dict[str, ET.Element]) -> bool:
    kind = props.get(f"{{{DAV}}}resourcetype")
    if kind is None or kind.find(f"{{{CALDAV}}}calendar") is None:
        return False
    components = props.get(f"{{{CALDAV}}}supported-calendar-component-set")
    if components is None:
        return True
    return any(c.get("name", "").upper() == "VEVENT" for c in components.iter(f"{{{CALDAV}}}comp"))


def _name(response: DavResponse) -> str:
    """The calendar's DAV:displayname, else the last segment of its path: without control or format characters
    (a name is shown on the calendar page), at most MAX_NAME characters."""
    shown = text_of(response.props.get(f"{{{DAV}}}displayname"))
    if not shown:
        shown = unquote(urlsplit(response.href).path.rstrip("/").rsplit("/", 1)[-1])
    visible = "".join(c for c in shown if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    return " ".join(visible.split())[:MAX_NAME]


def resource_handle(url: str) -> str | None:
    """The CalendarItem.handle a resource URL was named after (`.../<32 hex>.ics`, `CalDAVProvider.resource_url`),
    or None for a resource named otherwise (the person's own, or one their app renamed)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if re.fullmatch(r"[0-9a-f]{32}\.ics", name) else None
