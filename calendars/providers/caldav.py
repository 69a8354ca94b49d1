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

Speaks the few verbs itself with aiohttp: the `caldav` package (2.1+) replaces urllib3 in the environment
(../shared/reference/notes/calendar-sync.md §3, dependency note).
"""

from __future__ import annotations

import asyncio
import re
import threading
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NoReturn
from urllib.parse import unquote, urljoin, urlsplit
from xml.parsers import expat

import aiohttp
from icalendar import Calendar

from calendars.ical import KEY_PROPERTY, event_calendar, to_bytes
from calendars.model import (
    AuthorizationLost,
    CalendarItem,
    ProviderError,
    Rejected,
    RemoteEvent,
    Throttled,
    Unavailable,
    Written,
    put_each,
)
from storage import names, outbound
from storage.errors import Invalid

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
# The largest answer read from a CalDAV server: a calendar object or a PROPFIND listing of a home with
# hundreds of calendars stays far below it; anything larger is refused, not read.
MAX_BODY = 4 * 1024 * 1024
TIMEOUT = 30.0  # seconds for one request, answer included
MAX_REDIRECTS = 5  # RFC 6764 §5: /.well-known/caldav redirects to the context path
# Tries of a read-modify-write when the event keeps changing between our read and our write (412).
WRITE_ATTEMPTS = 3

ICS = "text/calendar; charset=utf-8"
XML = "application/xml; charset=utf-8"


@dataclass(frozen=True)
class CalendarInfo:
    """A calendar found by `discover`: its collection URL (absolute, ends with '/') and its display name."""

    url: str
    name: str


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str  # the URL that answered (after redirects)


class _Http:
    """One account's requests: Basic auth, a timeout, a size cap, redirects, and the error mapping of every verb.

    The session's SSRF guard (storage.outbound.GuardedResolver) checks every host name it resolves, but aiohttp
    never resolves an IP address written in a URL. The URL the person gave was checked when it was accepted
    (storage.outbound.check_url); any other URL the server names (hrefs, redirects) may therefore change host
    only to a host *name*, never to a literal address (`entry`: the accepted URL).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        username: str,
        password: str,
        *,
        entry: str,
        timeout: float,
        max_body: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.session = session
        self.authorization = aiohttp.encode_basic_auth(username, password)
        self.entry_host = (urlsplit(entry).hostname or "").lower()
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_body = max_body
        self.clock = clock

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        redirects: bool = False,
    ) -> _Answer:
        """The answer to one request, after at most MAX_REDIRECTS redirects when `redirects` (the method kept,
        as CalDAV clients do for PROPFIND; never from https to http). 401/403, 429, 5xx and transport failures
        raise (see `_raise_for`); every other status is returned for the caller to judge."""
        for _ in range(MAX_REDIRECTS + 1):
            answer = await self._once(method, url, headers, data)
            location = answer.headers.get("Location")
            if not (redirects and answer.status in (301, 302, 303, 307, 308) and location):
                return answer
            url = _join(url, location)
        raise Rejected(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:  # never repeated: it may hold a password
            raise Rejected(f"{parts.scheme}://{parts.hostname}: put the user name and password in their own fields")
        host = (parts.hostname or "").lower()
        if outbound.literal(host) is not None and host != self.entry_host:
            raise Rejected(f"{url}: the server points to the address {host}, which coursewire does not follow")

    async def _once(self, method: str, url: str, headers: Mapping[str, str] | None, data: bytes | None) -> _Answer:
        self._check(url)
        try:
            async with self.session.request(
                method,
                outbound.request_url(url),
                headers={**(headers or {}), "Authorization": self.authorization},
                data=data,
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if status in (401, 403, 429) or status >= 500:
                    body = await _read(response, 64 * 1024, url, truncate=True)
                    _raise_for(status, response.headers.get("Retry-After"), body, url, self.clock())
                return _Answer(status, response.headers, await _read(response, self.max_body, url), url)
        except ProviderError:
            raise
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise Rejected(f"{url}: not a usable URL ({exc})") from exc
        except TimeoutError as exc:
            raise Unavailable(f"{url}: no answer within {self.timeout.total:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, outbound.BlockedAddress):  # the session's SSRF guard refused the address
                raise Rejected(f"{url}: {exc.os_error}") from exc
            raise Unavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{url}: {type(exc).__name__}: {exc}") from exc


async def _read(response: aiohttp.ClientResponse, limit: int, url: str, *, truncate: bool = False) -> bytes:
    """The body, at most `limit` bytes (after content decoding). Larger bodies raise Rejected, or with
    `truncate` are cut (error answers only need an excerpt). The rest is never read."""
    if not truncate and response.content_length is not None and response.content_length > limit:
        raise Rejected(f"{url}: the answer is {response.content_length} bytes, more than the {limit} accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            if truncate:
                break
            raise Rejected(f"{url}: the answer is larger than the {limit} bytes accepted")
    return b"".join(chunks)[:limit]


def _raise_for(status: int, retry_after_header: str | None, body: bytes, url: str, now: datetime) -> NoReturn:
    retry_after = outbound.retry_after(retry_after_header, now)
    said = _excerpt(body)
    where = f"{url}: {status}" + (f" ({said})" if said else "")
    if status in (401, 403):
        raise AuthorizationLost(f"{where}: the server refused the user name or app password")
    if status == 429 or (status == 503 and retry_after is not None):
        raise Throttled(where, retry_after=retry_after)
    raise Unavailable(where, retry_after=retry_after)


def _rejected(answer: _Answer, what: str) -> NoReturn:
    said = _excerpt(answer.body)
    raise Rejected(f"{what}: {answer.status}" + (f" ({said})" if said else ""))


def _excerpt(body: bytes, length: int = 200) -> str:
    """The server's message in a few words: markup removed, whitespace collapsed, at most `length` characters."""
    text = re.sub(r"<[^>]*>", " ", body[: length * 20].decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def _strong(etag: str | None) -> str | None:
    """The ETag when it can be used in If-Match (strong, RFC 9110 §13.1.1), else None."""
    if not etag or etag.startswith("W/"):
        return None
    return etag


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
        self._http = _Http(
            session, username, password, entry=self.calendar_url, timeout=timeout, max_body=max_body, clock=self._clock
        )

    def __repr__(self) -> str:  # never the password
        return f"CalDAVProvider({self.calendar_url!r})"

    def resource_url(self, item: CalendarItem) -> str:
        """Where the item's event lives: `<calendar>/<handle>.ics`."""
        return urljoin(self.calendar_url, f"{item.handle}.ics")

    async def put(self, item: CalendarItem, written: Written | None) -> Written:
        """Create or replace the item's event; returns its URL and ETag (None if the server has none).

        Without `written`: PUT with `If-None-Match: *`; 412 (it exists: a retry after a crash) continues as an
        update. With `written`, or after that 412: GET the event (its SEQUENCE and current ETag), then PUT it
        with SEQUENCE + 1 and `If-Match` on that ETag; a 412 (changed or deleted meanwhile) reads again, a
        missing event is created again (the person deleted it). `written.etag` is not trusted: an event the
        person edited since is overwritten all the same, the calendar mirrors the session. The event is always
        written at `resource_url(item)`; `written` only says whether it should exist already.
        Raises AuthorizationLost (401/403), Throttled (429, 503 with Retry-After), Unavailable (no connection,
        timeout, 5xx, or still changing after WRITE_ATTEMPTS reads) or Rejected (any other 4xx, e.g. 409
        no-uid-conflict, 413; an answer over the size cap; an address the session's SSRF guard refuses).
        """
        url = self.resource_url(item)
        if written is None:
            created = await self._create(item, url)
            if created is not None:
                return created
        for _ in range(WRITE_ATTEMPTS):
            current = await self._fetch(url)
            if current is None:
                created = await self._create(item, url)
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
                _rejected(answer, f"PUT {url}")
        raise Unavailable(f"PUT {url}: the event changed between each of {WRITE_ATTEMPTS} reads and writes")

    async def put_many(self, batch: Sequence[tuple[CalendarItem, Written | None]]) -> list[Written | ProviderError]:
        """`put` for each item in turn (CalDAV has no batch write)."""
        return await put_each(self, batch)

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        """DELETE the event at `written.provider_id`; 404/410 (already gone) is success.
        Raises AuthorizationLost, Throttled, Unavailable or Rejected (other 4xx)."""
        url = written.provider_id
        answer = await self._http.send("DELETE", url)
        if answer.status not in (200, 202, 204, 404, 410):
            _rejected(answer, f"DELETE {url}")

    async def get(self, written: Written) -> RemoteEvent | None:
        """The event at `written.provider_id` (start/end in UTC, key from X-COURSEWIRE-KEY, extra: uid and
        sequence), or None when it is gone (404/410). Raises AuthorizationLost, Throttled, Unavailable or
        Rejected (other 4xx, or a body that holds no VEVENT)."""
        fetched = await self._fetch(written.provider_id)
        if fetched is None:
            return None
        event, etag = fetched
        start = _instant(event.get("DTSTART"))
        if start is None:
            raise Rejected(f"GET {written.provider_id}: the event has no DTSTART")
        end = _instant(event.get("DTEND"))
        if end is None:
            duration = event.get("DURATION")
            end = start + (duration.dt if duration is not None and isinstance(duration.dt, timedelta) else timedelta())
        key = event.get(KEY_PROPERTY)
        return RemoteEvent(
            provider_id=written.provider_id,
            etag=etag,
            subject=str(event.get("SUMMARY", "")),
            start=start,
            end=end,
            key=str(key) if key is not None else None,
            cancelled=str(event.get("STATUS", "")).upper() == "CANCELLED",
            extra={"uid": str(event.get("UID", "")), "sequence": str(_sequence(event))},
        )

    async def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""

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
        _rejected(answer, f"PUT {url}")

    async def _written(self, url: str, answer: _Answer) -> Written:
        etag = _strong(answer.headers.get("ETag"))
        if etag is None:  # RFC 4791 §5.3.4: the server changed what we sent; learn the version it keeps
            fetched = await self._fetch(url)
            etag = fetched[1] if fetched else None
        return Written(provider_id=url, etag=etag)

    async def _fetch(self, url: str) -> tuple[Any, str | None] | None:
        """GET the resource: (its VEVENT, its strong ETag or None), None on 404/410."""
        answer = await self._http.send("GET", url, redirects=True)
        if answer.status in (404, 410):
            return None
        if answer.status != 200:
            _rejected(answer, f"GET {url}")
        try:
            calendar = Calendar.from_ical(answer.body)
        except ValueError as exc:
            raise Rejected(f"GET {url}: not an iCalendar object ({exc})") from exc
        events = calendar.walk("VEVENT")
        if not events:
            raise Rejected(f"GET {url}: the object holds no VEVENT")
        return events[0], _strong(answer.headers.get("ETag"))


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
    http = _Http(
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


async def _find(http: _Http, url: str) -> list[CalendarInfo]:
    """The event calendars discovery finds (at most MAX_CALENDARS), before `_Gate` judges their URLs."""
    responses = await _propfind(http, url, 0, PROPFIND_CONTEXT, tolerate=True)
    context = responses[0] if responses else None
    if context is not None and _is_event_calendar(context.props):
        return [CalendarInfo(_collection(context.href), _name(context))]
    principal = _first_href(context.props.get(f"{{{DAV}}}current-user-principal")) if context else None
    base = context.href if context else url
    if principal is None:
        well_known = urljoin(url, "/.well-known/caldav")
        if urlsplit(well_known).path != urlsplit(url).path:
            responses = await _propfind(http, well_known, 0, PROPFIND_CONTEXT, tolerate=True)
            if responses:
                principal = _first_href(responses[0].props.get(f"{{{DAV}}}current-user-principal"))
                base = responses[0].href
    if principal is None:
        raise Rejected(f"{url}: no CalDAV account found there (no DAV:current-user-principal)")
    principal_url = _join(base, principal)
    responses = await _propfind(http, principal_url, 0, PROPFIND_HOME)
    homes = _hrefs(responses[0].props.get(f"{{{CALDAV}}}calendar-home-set")) if responses else []
    if not homes:
        raise Rejected(f"{principal_url}: the account has no CALDAV:calendar-home-set")
    found: dict[str, CalendarInfo] = {}
    for home in list(dict.fromkeys(homes))[:MAX_HOMES]:
        for response in await _propfind(http, _join(principal_url, home), 1, PROPFIND_CALENDARS):
            if _is_event_calendar(response.props):
                info = CalendarInfo(_collection(response.href), _name(response))
                found.setdefault(info.url, info)
                if len(found) >= MAX_CALENDARS:
                    return list(found.values())
    return list(found.values())


class _Gate:
    """Which calendar URLs discovery may return (see `discover`): same origin as the entry URL, or accepted by
    storage.outbound.check_url; DNS answers are remembered for the discovery, so a list naming the same host
    a hundred times costs one lookup."""

    def __init__(self, entry: str, networks: Sequence[outbound.IPNetwork], resolve: outbound.Resolve) -> None:
        self.origin = _origin(entry)
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
            if self.origin is not None and _origin(url) == self.origin:
                names.web_url(url, "calendar")
            else:
                await asyncio.to_thread(outbound.check_url, url, self.networks, self._lookup, field="calendar")
        except Invalid as exc:
            self.refused.append(exc.message)
            return False
        return True


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit (RFC 6454 §4); None when it has none."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return None
    if port is None or not parts.hostname:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port


@dataclass(frozen=True)
class _DavResponse:
    href: str  # absolute
    props: dict[str, ET.Element]  # properties found (2xx propstat), by Clark name


async def _propfind(http: _Http, url: str, depth: int, body: bytes, *, tolerate: bool = False) -> list[_DavResponse]:
    """The DAV:response elements of a PROPFIND's 207 Multi-Status (RFC 4918 §9.1, §14.16), hrefs made absolute.
    With `tolerate`, a 404/405/501-like refusal (no WebDAV there) gives [] instead of Rejected."""
    headers = {"Depth": str(depth), "Content-Type": XML}
    answer = await http.send("PROPFIND", url, headers=headers, data=body, redirects=True)
    if answer.status != 207:
        if tolerate and answer.status in (400, 404, 405, 406, 415):
            return []
        _rejected(answer, f"PROPFIND {url}")
    root = parse_xml(answer.body, url)
    if root.tag != f"{{{DAV}}}multistatus":
        raise Rejected(f"PROPFIND {url}: the answer is not a DAV:multistatus")
    found = []
    for response in root.findall(f"{{{DAV}}}response"):
        href = response.findtext(f"{{{DAV}}}href")
        if not href:
            continue
        props: dict[str, ET.Element] = {}
        for propstat in response.findall(f"{{{DAV}}}propstat"):
            if not _ok(propstat.findtext(f"{{{DAV}}}status", "")):
                continue
            for prop in propstat.findall(f"{{{DAV}}}prop"):
                props.update((child.tag, child) for child in prop)
        found.append(_DavResponse(_join(answer.url, href.strip()), props))
    return found


def _ok(status_line: str) -> bool:
    parts = status_line.split()
    return len(parts) >= 2 and parts[1].startswith("2")


def _join(base: str, href: str) -> str:
    """`href` resolved against `base`; Rejected unless http(s), and never from https down to http."""
    joined = urljoin(base, href)
    scheme = urlsplit(joined).scheme
    if scheme not in ("http", "https") or (urlsplit(base).scheme == "https" and scheme != "https"):
        raise Rejected(f"{base}: the server points to {joined}, which coursewire does not follow")
    return joined


def _collection(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _first_href(prop: ET.Element | None) -> str | None:
    hrefs = _hrefs(prop)
    return hrefs[0] if hrefs else None


def _hrefs(prop: ET.Element | None) -> list[str]:
    if prop is None:
        return []
    return [h.text.strip() for h in prop.iter(f"{{{DAV}}}href") if h.text and h.text.strip()]


def _is_event_calendar(props: dict[str, ET.Element]) -> bool:
    kind = props.get(f"{{{DAV}}}resourcetype")
    if kind is None or kind.find(f"{{{CALDAV}}}calendar") is None:
        return False
    components = props.get(f"{{{CALDAV}}}supported-calendar-component-set")
    if components is None:
        return True
    return any(c.get("name", "").upper() == "VEVENT" for c in components.iter(f"{{{CALDAV}}}comp"))


def _name(response: _DavResponse) -> str:
    """The calendar's DAV:displayname, else the last segment of its path: without control or format characters
    (a name is shown on the calendar page), at most MAX_NAME characters."""
    shown = _text(response.props.get(f"{{{DAV}}}displayname"))
    if not shown:
        shown = unquote(urlsplit(response.href).path.rstrip("/").rsplit("/", 1)[-1])
    visible = "".join(c for c in shown if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    return " ".join(visible.split())[:MAX_NAME]


def _text(prop: ET.Element | None) -> str:
    return "".join(prop.itertext()).strip() if prop is not None else ""


def parse_xml(data: bytes, url: str) -> ET.Element:
    """The document as an ElementTree element with Clark names (`{DAV:}href`). A document type declaration
    (where entities would be declared: billion laughs, external entities) or malformed XML raises Rejected."""
    builder = ET.TreeBuilder()

    def clark(name: str) -> str:
        namespace, _, local = name.rpartition(" ")
        return f"{{{namespace}}}{local}" if namespace else local

    def start(name: str, attributes: dict[str, str]) -> None:
        builder.start(clark(name), {clark(k): v for k, v in attributes.items()})

    def refuse(*_: object) -> NoReturn:
        raise Rejected(f"{url}: the answer declares a DTD or entities, which coursewire does not read")

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    parser.EndElementHandler = lambda name: builder.end(clark(name))
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
        return builder.close()
    except (expat.ExpatError, AssertionError) as exc:
        raise Rejected(f"{url}: the answer is not well-formed XML ({exc})") from exc
