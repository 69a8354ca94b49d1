"""Tenant-wide Microsoft 365: the application's own token (client credentials), one `$batch` sender per tenant
shared by every mailbox's provider, and the roster that connects people whose DirectoryObjectId or e-mail
address names a mailbox of the tenant (storage.calendar_tenant keeps the state).

Protocol facts (../shared/reference/notes/calendar-sync.md §2.1): application permission `Calendars.ReadWrite`
reaches every mailbox of a tenant through `/users/{id}/...` [MS1] (User.Read.All to look people up), with a
token from the client credentials grant (`grant_type=client_credentials`, `scope=https://graph.microsoft.com/
.default`, Microsoft identity platform v2.0 token endpoint of that one tenant). JSON `$batch` takes at most 20
requests, relative URLs, each inner request throttled on its own with its own 429 and Retry-After [MS11];
Outlook allows 4 concurrent requests per (app, mailbox) [MS11-b]; after a 429 the client waits Retry-After and
keeps honouring it while throttled [MS12].

`TenantBatcher` queues requests from all mailboxes and sends up to 20 per `$batch`, never more than 4 in flight
per mailbox (counted across batches); a mailbox answered 429 waits its Retry-After before its next request
while the others go on; an outer 429 pauses everything for its Retry-After. Each caller awaits its own inner
answer. Time is the injected `clock` (seconds, monotonic) and `sleep`, so tests move it without waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp

from calendars.config import CalendarConfig
from calendars.model import ApplicationRefused, ProviderError, Rejected, Throttled, Unavailable
from calendars.providers.graph import (
    BATCH_LIMIT,
    MAILBOX_CONCURRENCY,
    PREFER_IMMUTABLE,
    GraphProvider,
    Reply,
    batch_responses,
    graph_error,
    send_request,
)
from storage import calendar_tenant
from storage.calendar import Connection
from storage.db import Database
from storage.outbound import retry_after
from storage.secrets import SecretBox

log = logging.getLogger("coursewire.calendars")

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# An application token is fetched again when it expires within this.
REFRESH_MARGIN = timedelta(seconds=60)
DEFAULT_LIFETIME = timedelta(hours=1)
TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=30)
# The roster: people looked up per round, how long a person without a mailbox waits before the next look-up
# (unless they change), and how often a tenant-made connection is checked against the directory again.
ROSTER_LIMIT = 200
RELOOK = timedelta(days=1)
RECHECK = timedelta(days=1)
# Retry-After when a 429 carries none (Graph normally sends one [MS12]).
DEFAULT_RETRY = 5.0
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")


def tenant_ready(config: CalendarConfig) -> str | None:
    """The name of the first variable that keeps tenant-wide mode from being enabled (for a 400), None when it
    can be: COURSEWIRE_MICROSOFT_CLIENT_ID and COURSEWIRE_MICROSOFT_CLIENT_SECRET set, and
    COURSEWIRE_MICROSOFT_TENANT naming one tenant (a GUID or a domain such as contoso.onmicrosoft.com; not
    common, organizations or consumers, which the client credentials grant cannot use)."""
    missing = config.missing("Microsoft365")
    if missing:
        return missing
    tenant = (config.microsoft_tenant or "").strip()
    if tenant.lower() in calendar_tenant.SHARED_AUTHORITIES or not (_GUID.match(tenant) or _DOMAIN.match(tenant)):
        return "COURSEWIRE_MICROSOFT_TENANT"
    return None


def token_url(config: CalendarConfig, tenant: str) -> str:
    """`<login>/<tenant>/oauth2/v2.0/token`."""
    return f"{config.microsoft_login_url.rstrip('/')}/{quote(tenant, safe='')}/oauth2/v2.0/token"


class TenantTokens:
    """The application's access token for one tenant (calendars.model.TokenSource), by the client credentials
    grant (RFC 6749 §4.4; Microsoft identity platform v2.0 with `scope=https://graph.microsoft.com/.default`).
    Kept in memory only and fetched again REFRESH_MARGIN before it expires; `clock` is now (aware).

    Raises from `access_token` and `refresh`: ApplicationRefused (an AuthorizationLost) when Microsoft refuses
    the application (any OAuth error, e.g. AADSTS7000215 a wrong secret, AADSTS700016 the application unknown
    in the tenant, AADSTS90002 no such tenant, AADSTS7000222 an expired secret): an administrator has to fix
    it; Throttled (429); Unavailable (unreachable, 5xx, no token in the answer)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: CalendarConfig,
        tenant: str,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.session = session
        self.config = config
        self.tenant = tenant
        self.clock = clock or (lambda: datetime.now(UTC))
        self.fetches = 0
        self._token: str | None = None
        self._expires = datetime.min.replace(tzinfo=UTC)
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        """The cached token, or a new one when it expires within REFRESH_MARGIN."""
        async with self._lock:
            if self._token is None or self._expires - REFRESH_MARGIN <= self.clock():
                await self._fetch()
            assert self._token is not None
            return self._token

    async def refresh(self) -> str:
        """A new token whatever the cached one's expiry (Graph answered 401). A refresh asked for by several
        requests at once that were refused the same token fetches once."""
        stale = self._token
        async with self._lock:
            if self._token is None or self._token == stale:
                await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> None:
        client_id, client_secret = self.config.microsoft_client_id, self.config.microsoft_client_secret
        if not client_id or not client_secret:
            raise ApplicationRefused(
                f"the Microsoft client is not configured: set {self.config.missing('Microsoft365')}"
            )
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": GRAPH_SCOPE,
        }
        now = self.clock()
        try:
            async with self.session.post(
                token_url(self.config, self.tenant),
                data=form,
                headers={"Accept": "application/json"},
                timeout=TOKEN_TIMEOUT,
                allow_redirects=False,
            ) as response:
                status, text = response.status, await response.text()
                wait = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the Microsoft token endpoint could not be reached ({type(exc).__name__})") from None
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        token = answer.get("access_token")
        if status == 200 and isinstance(token, str) and token:
            self.fetches += 1
            try:
                seconds = float(answer.get("expires_in", DEFAULT_LIFETIME.total_seconds()))
            except (TypeError, ValueError):
                seconds = DEFAULT_LIFETIME.total_seconds()
            self._token, self._expires = token, now + timedelta(seconds=max(0.0, seconds))
            return
        self._token = None
        error, description = answer.get("error"), answer.get("error_description")
        said = str(error) if isinstance(error, str) else f"HTTP {status}"
        if isinstance(description, str) and description.strip():
            said += f": {description.strip().splitlines()[0][:300]}"
        if status == 429:
            raise Throttled(f"Microsoft token endpoint: too many requests ({said})", retry_after=_seconds(wait))
        if isinstance(error, str) and 400 <= status < 500:
            raise ApplicationRefused(
                f"Microsoft refused coursewire's application for tenant {self.tenant} ({said}); an administrator"
                " has to fix the application (a new COURSEWIRE_MICROSOFT_CLIENT_SECRET, admin consent) or connect"
                " the tenant again"
            )
        raise Unavailable(f"Microsoft token endpoint answered HTTP {status} ({said})", retry_after=_seconds(wait))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


# -- the cross-mailbox $batch sender ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Request:
    mailbox: str | None  # None: not a mailbox request (a directory look-up), no per-mailbox limit
    method: str
    path: str
    body: dict[str, Any] | None
    prefer: str
    future: asyncio.Future[Reply]
    direct: bool = False  # sent on its own, not in a $batch (delta pages, subscriptions)
    attempts: int = 0
    max_wait: float = 0.0  # a Retry-After longer than this goes back to the caller as a 429


@dataclass
class _Mailbox:
    in_flight: int = 0
    not_before: float = 0.0  # clock() value before which nothing is sent to it (its Retry-After)


@dataclass
class BatcherStats:
    """What the batcher did: $batch calls, requests sent alone, inner and outer 429s it waited out."""

    batches: int = 0
    direct: int = 0
    inner_throttled: int = 0
    outer_throttled: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class TenantBatcher:
    """Requests of every mailbox of one tenant, sent as JSON `$batch` calls (module docstring).

    session: the worker's HTTP session; base_url: Graph's version root; tokens: the tenant's TokenSource;
    clock/sleep: seconds (monotonic) and how to wait them (tests pass a virtual clock); per_mailbox: requests in
    flight per mailbox [MS11-b]; max_batches: `$batch` calls in flight at once; attempts: how often one request
    is sent before its 429 is handed to the caller; max_wait: a Retry-After longer than this is handed to the
    caller at once (as a 429 answer: the provider raises Throttled and the worker comes back later) for
    directory look-ups (mailbox None), mailbox_wait the same for a mailbox's requests: short, because a write
    waiting out a Retry-After here would hold the worker's whole round of pairs, while handed back it is
    retried after its Retry-After by the dirty queue and the round goes on (bench/results/calendar_tenant.md);
    timeout: seconds per HTTP request.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        tokens: TenantTokens | Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        per_mailbox: int = MAILBOX_CONCURRENCY,
        max_batches: int = 8,
        attempts: int = 5,
        max_wait: float = 120.0,
        mailbox_wait: float = 1.0,
        timeout: float = 60.0,
    ) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.tokens = tokens
        self.clock = clock
        self.sleep = sleep
        self.per_mailbox = per_mailbox
        self.max_batches = max_batches
        self.attempts = attempts
        self.max_wait = max_wait
        self.mailbox_wait = mailbox_wait
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.stats = BatcherStats()
        self._queue: deque[_Request] = deque()
        self._boxes: dict[str, _Mailbox] = {}
        self._paused_until = 0.0
        self._sending = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self, mailbox: str | None, method: str, path: str, body: dict[str, Any] | None, prefer: str = PREFER_IMMUTABLE
    ) -> Reply:
        """Send one request in a `$batch` and return its inner answer, whatever its status, after waiting out
        429s (up to `attempts` sends). Raises AuthorizationLost (the tenant's token), Unavailable (the `$batch`
        failed or its answer lacks this request)."""
        wait = self.max_wait if mailbox is None else self.mailbox_wait
        return await self._enqueue(_Request(mailbox, method, path, body, prefer, self._future(), max_wait=wait))

    async def direct(
        self, mailbox: str | None, method: str, path: str, body: dict[str, Any] | None, prefer: str = PREFER_IMMUTABLE
    ) -> Reply:
        """Send one request on its own (a delta page, a subscription), under the same per-mailbox limit and
        Retry-After as batched ones. Raises like `submit`."""
        wait = self.max_wait if mailbox is None else self.mailbox_wait
        request = _Request(mailbox, method, path, body, prefer, self._future(), direct=True, max_wait=wait)
        return await self._enqueue(request)

    def _future(self) -> asyncio.Future[Reply]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, request: _Request) -> Reply:
        self._queue.append(request)
        self._kick()
        return await request.future

    def _kick(self) -> None:
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._dispatch())

    def _box(self, mailbox: str | None) -> _Mailbox:
        """The mailbox's state; directory requests (mailbox None) share one, without the per-mailbox limit."""
        return self._boxes.setdefault("" if mailbox is None else mailbox.lower(), _Mailbox())

    async def _dispatch(self) -> None:
        """Send what may be sent; wait for an answer, a new request or the end of a Retry-After; stop when the
        queue is empty (the next request starts it again)."""
        while self._queue:
            # Let requests made in the same turn of the loop (a gather of writes) join this batch.
            for _ in range(3):
                await asyncio.sleep(0)
            self._changed.clear()
            now = self.clock()
            if now < self._paused_until:
                await self._wait(self._paused_until - now)
                continue
            chosen, directs, wake = self._pick(now)
            for request in directs:
                self._spawn(self._send_direct(request))
            if chosen:
                self._spawn(self._send_batch(chosen))
            if chosen or directs:
                continue
            await self._wait(None if wake is None else wake - now)
        self._boxes = {k: v for k, v in self._boxes.items() if v.in_flight or v.not_before > self.clock()}

    def _spawn(self, step: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, seconds: float | None) -> None:
        """Until something changed (an answer, a new request) or `seconds` passed."""
        changed = asyncio.ensure_future(self._changed.wait())
        waits: set[asyncio.Future[Any]] = {changed}
        if seconds is not None:
            waits.add(asyncio.ensure_future(self.sleep(max(0.0, seconds))))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _pick(self, now: float) -> tuple[list[_Request], list[_Request], float | None]:
        """The next `$batch` (up to 20 requests in queue order, at most `per_mailbox` in flight per mailbox),
        the direct requests that may go now, and when the earliest waiting mailbox may go again."""
        chosen: list[_Request] = []
        directs: list[_Request] = []
        wake: float | None = None
        room = BATCH_LIMIT if self._sending < self.max_batches else 0
        kept: deque[_Request] = deque()
        while self._queue:
            request = self._queue.popleft()
            if request.future.done():  # the caller gave up (cancelled)
                continue
            box = self._box(request.mailbox)
            if box.not_before > now:
                if box.not_before - now > request.max_wait:
                    request.future.set_result(_throttled(box.not_before - now))
                    continue
                wake = box.not_before if wake is None else min(wake, box.not_before)
                kept.append(request)
                continue
            if request.mailbox is not None and box.in_flight >= self.per_mailbox:
                kept.append(request)
                continue
            if request.direct:
                directs.append(request)
            elif len(chosen) < room:
                chosen.append(request)
            else:
                kept.append(request)
                continue
            box.in_flight += 1
        self._queue = kept
        if chosen:
            self._sending += 1
        return chosen, directs, wake

    def _release(self, requests: list[_Request]) -> None:
        for request in requests:
            self._box(request.mailbox).in_flight -= 1
        self._changed.set()

    def _retry(self, request: _Request, reply: Reply) -> bool:
        """After a 429 for `request`: the mailbox waits the Retry-After and the request goes back to the front
        of the queue; False when it was sent `attempts` times already (the caller gets the 429)."""
        seconds = retry_after(reply.headers.get("retry-after"), datetime.now(UTC))
        seconds = DEFAULT_RETRY if seconds is None else seconds
        box = self._box(request.mailbox)
        box.not_before = max(box.not_before, self.clock() + seconds)
        request.attempts += 1
        if request.attempts >= self.attempts:
            return False
        self._queue.appendleft(request)
        return True

    async def _post(self, method: str, path: str, body: dict[str, Any] | None, prefer: str) -> Reply:
        """One HTTP request with the tenant's token; a 401 fetches a new token and sends it once more."""
        reply = await send_request(
            self.session, self.base, method, path, body, await self.tokens.access_token(), prefer, self.timeout
        )
        if reply.status == 401:
            token = await self.tokens.refresh()
            reply = await send_request(self.session, self.base, method, path, body, token, prefer, self.timeout)
            if reply.status == 401:
                code, message = graph_error(reply.body)
                raise ApplicationRefused(f"Graph refused the tenant's application token (401 {code}: {message})")
        return reply

    async def _send_batch(self, requests: list[_Request]) -> None:
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(requests))
        inner = []
        for number, request in enumerate(requests, 1):
            entry: dict[str, Any] = {"id": str(number), "method": request.method, "url": request.path}
            entry["headers"] = {"Prefer": request.prefer}
            if request.body is not None:
                entry["headers"]["Content-Type"] = "application/json"
                entry["body"] = request.body
            inner.append(entry)
        try:
            reply = await self._post("POST", "/$batch", {"requests": inner}, PREFER_IMMUTABLE)
        except Exception as exc:
            failure = exc if isinstance(exc, ProviderError) else Unavailable(f"Graph $batch failed: {exc!r}")
            for request in requests:
                _fail(request, failure)
            if not isinstance(exc, ProviderError):
                log.exception("a Graph $batch call failed")
            return
        finally:
            self._sending -= 1
            self._release(requests)
        if reply.status == 429:
            # The whole call was throttled: nothing of it ran; everything waits the Retry-After [MS12].
            self.stats.outer_throttled += 1
            seconds = retry_after(reply.headers.get("retry-after"), datetime.now(UTC))
            self._paused_until = max(self._paused_until, self.clock() + (DEFAULT_RETRY if seconds is None else seconds))
            for request in reversed(requests):
                request.attempts += 1
                if request.attempts >= self.attempts:
                    _answer(request, reply)
                else:
                    self._queue.appendleft(request)
            self._kick()
            return
        if reply.status != 200:
            for request in requests:
                _answer(request, reply)
            return
        answers = batch_responses(reply.body)
        retried = False
        for number, request in reversed(list(enumerate(requests, 1))):
            answer = answers.get(number)
            if answer is None:
                _fail(request, Unavailable("Graph: the $batch answer has no response for this request"))
            elif answer.status == 429:
                self.stats.inner_throttled += 1
                if self._retry(request, answer):
                    retried = True
                else:
                    _answer(request, answer)
            else:
                _answer(request, answer)
        if retried:
            self._kick()

    async def _send_direct(self, request: _Request) -> None:
        self.stats.direct += 1
        try:
            reply = await self._post(request.method, request.path, request.body, request.prefer)
        except Exception as exc:
            _fail(request, exc if isinstance(exc, ProviderError) else Unavailable(f"Graph request failed: {exc!r}"))
            return
        finally:
            self._release([request])
        if reply.status == 429 and self._retry(request, reply):
            self._kick()
            return
        _answer(request, reply)


def _answer(request: _Request, reply: Reply) -> None:
    if not request.future.done():
        request.future.set_result(reply)


def _fail(request: _Request, error: ProviderError) -> None:
    if not request.future.done():
        request.future.set_exception(error)


def _throttled(seconds: float) -> Reply:
    """A 429 answer made here for a mailbox whose Retry-After is longer than the batcher waits."""
    body = {"error": {"code": "ApplicationThrottled", "message": "the mailbox is throttled; trying again later"}}
    return Reply(429, {"retry-after": str(max(1, round(seconds)))}, body)


class MailboxTransport:
    """A GraphProvider's transport for one mailbox of the tenant (calendars.providers.graph.GraphTransport):
    event reads and writes go into the tenant's `$batch` calls; delta pages and subscriptions are sent on their
    own (a page may be large; a subscription waits for Graph's validation request), under the same limits."""

    batches = True

    def __init__(self, batcher: TenantBatcher, mailbox: str) -> None:
        self.batcher = batcher
        self.mailbox = mailbox

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None, *, slots: int = 1, prefer: str = PREFER_IMMUTABLE
    ) -> Reply:
        alone = path.startswith("/subscriptions") or "/delta" in path.split("?", 1)[0] or "maxpagesize" in prefer
        send = self.batcher.direct if alone else self.batcher.submit
        return await send(self.mailbox, method, path, body, prefer)


# -- one batcher per tenant and worker --------------------------------------------------------------------------

_BATCHERS: weakref.WeakKeyDictionary[aiohttp.ClientSession, dict[tuple[str, ...], TenantBatcher]] = (
    weakref.WeakKeyDictionary()
)


def batcher_for(session: aiohttp.ClientSession, config: CalendarConfig, tenant: str) -> TenantBatcher:
    """The batcher of `tenant` for the worker that owns `session` (made on first use; it goes with the
    session): every tenant-mode provider of that worker shares it, so the per-mailbox limit holds across them."""
    key = (config.graph_url, config.microsoft_login_url, tenant, config.microsoft_client_id or "")
    per_session = _BATCHERS.setdefault(session, {})
    batcher = per_session.get(key)
    if batcher is None:
        batcher = TenantBatcher(session, config.graph_url, TenantTokens(session, config, tenant))
        per_session[key] = batcher
    return batcher


def tenant_credentials(box: SecretBox, mailbox: str) -> str:
    """The sealed credentials of a tenant-made connection: `{"mode": "tenant", "user": <Graph user id>}`."""
    return box.seal(json.dumps({"mode": "tenant", "user": mailbox}))


def tenant_mailbox_of(credentials: dict[str, Any]) -> str | None:
    """The Graph user id when opened credentials are a tenant-made connection's, else None."""
    user = credentials.get("user")
    return user if credentials.get("mode") == "tenant" and isinstance(user, str) and user else None


def open_tenant_provider(
    connection: Connection,
    mailbox: str,
    session: aiohttp.ClientSession,
    db: Database,
    config: CalendarConfig,
    *,
    batcher: TenantBatcher | None = None,
) -> GraphProvider:
    """The GraphProvider of a tenant-made connection: `/users/{mailbox}/...` through the tenant's batcher."""
    if batcher is None:
        state = calendar_tenant.tenant_state(db)
        tenant = state.tenant_id if state is not None else config.microsoft_tenant
        batcher = batcher_for(session, config, tenant)
    return GraphProvider(
        session,
        config.graph_url,
        batcher.tokens,
        connection.calendar or None,
        mailbox=mailbox,
        transport=MailboxTransport(batcher, mailbox),
    )


async def prove(config: CalendarConfig, session: aiohttp.ClientSession, tenant: str) -> None:
    """Check, before enabling, that the application gets a token for `tenant` and may read its users (GET
    /users?$top=1: User.Read.All with admin consent). Raises AuthorizationLost (token refused), Rejected
    (Graph 403: admin consent missing, with Graph's message), Throttled or Unavailable."""
    tokens = TenantTokens(session, config, tenant)
    token = await tokens.access_token()
    reply = await send_request(
        session, config.graph_url.rstrip("/"), "GET", "/users?$top=1&$select=id", None, token, PREFER_IMMUTABLE,
        TOKEN_TIMEOUT,
    )  # fmt: skip
    if reply.status == 200:
        return
    code, message = graph_error(reply.body)
    if reply.status in (401, 403):
        raise Rejected(
            f"Graph {reply.status} {code}: {message} -- grant the application permissions Calendars.ReadWrite and"
            " User.Read.All with admin consent"
        )
    if reply.status == 429:
        raise Throttled(f"Graph 429 {code}: {message}", retry_after=_seconds(reply.headers.get("retry-after")))
    raise Unavailable(f"Graph {reply.status} {code}: {message}")


# -- the roster ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    """A user of the tenant as `GET /users/{id | userPrincipalName}` answers: id, mail, userPrincipalName."""

    id: str
    mail: str | None
    upn: str | None

    @property
    def address(self) -> str | None:
        return self.mail or self.upn


@dataclass
class RosterResult:
    """One roster round: people looked up, connected, found without a mailbox; tenant-made connections
    confirmed and dropped; the error that ended the round early (None: it went through)."""

    looked_up: int = 0
    connected: int = 0
    missed: int = 0
    confirmed: int = 0
    dropped: int = 0
    error: str | None = None


async def lookup(batcher: TenantBatcher, key: str) -> Mailbox | None:
    """The tenant user named by `key` (an object id or a userPrincipalName), by `GET /users/{key}?$select=id,
    mail,userPrincipalName` in a `$batch`; None when there is none (404, or 400 for a key Graph cannot read).
    Raises Rejected (403: User.Read.All missing), Throttled, Unavailable, AuthorizationLost."""
    reply = await batcher.submit(None, "GET", f"/users/{quote(key, safe='@')}?$select=id,mail,userPrincipalName", None)
    if reply.status in (400, 404):
        return None
    if reply.status != 200:
        raise _directory_error(reply)
    return _mailbox(reply.body)


async def lookup_by_mail(batcher: TenantBatcher, email: str) -> Mailbox | None:
    """The one tenant user whose primary SMTP address (`mail`) is `email`, by `GET /users?$filter=mail eq
    '<email>'&$select=id,mail,userPrincipalName&$top=2` in a `$batch` (`mail` supports `eq` without advanced
    query headers; the quote is doubled, OData 4.01 §5.1.1.6.1 string literals). None when no user or more than
    one has it, when the one is a guest (`#EXT#` in the userPrincipalName), or on 400. Raises Rejected (403:
    User.Read.All missing), Throttled, Unavailable, AuthorizationLost."""
    literal = email.replace("'", "''")
    wanted = quote(f"mail eq '{literal}'", safe="")
    reply = await batcher.submit(None, "GET", f"/users?$filter={wanted}&$select=id,mail,userPrincipalName&$top=2", None)
    if reply.status == 400:
        return None  # an address Graph cannot filter on matches nobody (as `lookup` does): the roster goes on
    if reply.status != 200:
        raise _directory_error(reply)
    value = reply.body.get("value") if isinstance(reply.body, dict) else None
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        return None
    found = _mailbox(value[0])
    if found is not None and "#EXT#" in (found.upn or "").upper():
        return None  # a guest: their mail is an outside address and they have no mailbox in this tenant
    return found


def _mailbox(user: Mapping[str, Any]) -> Mailbox | None:
    """The Mailbox of a Graph user object (id, mail, userPrincipalName); None without an id."""
    user_id, mail, upn = (user.get(name) for name in ("id", "mail", "userPrincipalName"))
    if not isinstance(user_id, str) or not user_id:
        return None
    return Mailbox(user_id, mail if isinstance(mail, str) else None, upn if isinstance(upn, str) else None)


def _directory_error(reply: Reply) -> ProviderError:
    """The error of a failed directory look-up: Throttled (429, its Retry-After), Unavailable (5xx), else
    Rejected (403: User.Read.All missing), each with Graph's code and message."""
    code, message = graph_error(reply.body)
    if reply.status == 429:
        return Throttled(f"Graph 429 {code}: {message}", retry_after=_seconds(reply.headers.get("retry-after")))
    if reply.status >= 500:
        return Unavailable(f"Graph {reply.status} {code}: {message}")
    return Rejected(f"Graph {reply.status} {code}: {message}")


async def match(batcher: TenantBatcher, directory_object_id: str | None, email: str | None) -> Mailbox | None:
    """The person's mailbox: the tenant user whose id is their DirectoryObjectId; else the one whose
    userPrincipalName is their e-mail address and whose mail or userPrincipalName equals it; else the only one
    whose mail is their e-mail address (organizations whose sign-in names differ from their addresses).
    Addresses compare ignoring case."""
    if directory_object_id:
        found = await lookup(batcher, directory_object_id)
        if found is not None and found.id.lower() == directory_object_id.lower():
            return found
    if email:
        wanted = email.strip().lower()
        found = await lookup(batcher, email)
        if found is not None and wanted in {(found.mail or "").lower(), (found.upn or "").lower()}:
            return found
        found = await lookup_by_mail(batcher, email.strip())
        if found is not None and (found.mail or "").lower() == wanted:
            return found
    return None


async def roster_round(
    db: Database,
    box: SecretBox,
    config: CalendarConfig,
    session: aiohttp.ClientSession,
    now: datetime,
    *,
    batcher: TenantBatcher | None = None,
    limit: int = ROSTER_LIMIT,
) -> RosterResult:
    """One round of the roster, when the tenant is enabled (else nothing): look up to `limit` people without a
    calendar connection up in the tenant (`match`, 20 per `$batch`) and connect those found
    (storage.calendar_tenant.connect_mailbox: Status Connected, `CalendarConnected`, so the worker writes their
    sessions); remember those not found; check up to `limit` tenant-made connections again and drop those whose
    person no longer matches the mailbox or was deleted. Records the round and its error on the tenant row.
    Provider errors end the round early (in RosterResult.error); nothing is raised for them."""
    result = RosterResult()
    state = calendar_tenant.tenant_state(db)
    if state is None or not state.enabled:
        return result
    batcher = batcher or batcher_for(session, config, state.tenant_id)
    try:
        people = calendar_tenant.candidates(db, now, limit, RELOOK)
        found = await asyncio.gather(*(match(batcher, p.directory_object_id, p.email) for p in people))
        result.looked_up = len(people)
        misses = []
        for person, mailbox in zip(people, found, strict=True):
            if mailbox is None:
                misses.append(person.user_id)
                continue
            made = calendar_tenant.connect_mailbox(
                db, person.user_id, mailbox.id, mailbox.address, tenant_credentials(box, mailbox.id), now
            )
            result.connected += made is not None
        calendar_tenant.note_misses(db, misses, now)
        result.missed = len(misses)
        due = calendar_tenant.due_for_check(db, now, limit, RECHECK)
        again = await asyncio.gather(
            *(match(batcher, c.directory_object_id, c.email) for c in due if not c.user_deleted)
        )
        still = iter(again)
        confirmed = []
        for connection in due:
            mailbox = None if connection.user_deleted else next(still)
            if mailbox is not None and mailbox.id.lower() == connection.mailbox.lower():
                confirmed.append(connection.connection_id)
                continue
            reason = "UserDeleted" if connection.user_deleted else "MailboxNoLongerMatches"
            result.dropped += calendar_tenant.drop(db, connection.connection_id, reason, now)
        calendar_tenant.confirm(db, confirmed, now)
        result.confirmed = len(confirmed)
    except ProviderError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        log.warning("the Microsoft 365 tenant roster stopped: %s", result.error)
    calendar_tenant.roster_done(db, now, result.error)
    return result
