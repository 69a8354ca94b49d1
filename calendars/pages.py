"""The calendar page under `/calendar/`: where a learner or instructor connects one calendar (Microsoft 365 or
Google through OAuth 2.0 with PKCE, or CalDAV with an app password), sees its status, turns sync off or on, and
disconnects.

It is server-rendered HTML (jinja2, autoescaped, calendars/templates/), with no script and no external asset,
readable on a phone, answered before the API's authentication: the person arrives with a single-use link
(`POST /odata/v2/Users({Id})/CalendarConnectionLink`, fallback e-mails), which starts a page session
(storage.calendar_links) held in an HttpOnly, SameSite=Lax cookie, Secure when the page is reached over HTTPS
(the public base URL, trusted-proxy aware, decides). Every form carries the session's CSRF token; every
authorization request a `state` bound to the session and a PKCE code_verifier (calendars.oauth).

Routes (everything else under /calendar is a 404 page):

| route | what it does |
|---|---|
| GET /calendar/link/{token} | checks the link without using it up; a page with one Continue button |
| POST /calendar/link/{token} | uses up the link, starts a page session (cookie), 303 to /calendar/ |
| GET /calendar/ | status: provider, account, state, sync, last error; connect forms for the enabled providers |
| POST /calendar/connect/{microsoft,google} | 303 to the provider's authorization page |
| GET /calendar/oauth/{microsoft,google} | the provider's redirect: state, code exchange, connect, 303 to /calendar/ |
| POST /calendar/connect/caldav | server URL, user name, app password: SSRF check, discovery, connect or choose |
| POST /calendar/disconnect | disconnect (remove the events coursewire added unless unchecked) |
| POST /calendar/sync | sync on or off |

Every answer is `Cache-Control: no-store`, `Referrer-Policy: no-referrer` (the callback URL holds a code),
`X-Frame-Options: DENY`, and a Content-Security-Policy that allows nothing but the inline style (by hash) and
form posts to this server (whose redirects may lead to the providers' sign-in origins). Form bodies are capped
at MAX_FORM bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import jinja2
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from calendars import oauth
from calendars.config import CalendarConfig
from calendars.model import AuthorizationLost, ProviderError, Rejected
from calendars.providers import caldav
from storage import calendar, calendar_links, outbound
from storage.db import Database
from storage.errors import Conflict, Invalid, NotFound
from storage.models import Actor
from storage.secrets import SecretBox

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
PREFIX = "/calendar"
USER_AGENT = "coursewire-calendars/1"
COOKIE = "coursewire_calendar"
# A page session lasts an hour from the link: long enough to find an app password, short on a shared computer.
SESSION_TTL = 3600.0
# The time a person has at the provider's sign-in (or to choose a CalDAV calendar) before the state expires.
STATE_TTL = 600.0
# The largest form body accepted: the CalDAV form (a URL of up to 2,048 characters, a user name and a password
# of up to 256, the CSRF token) percent-encoded fits with room to spare.
MAX_FORM = 8 * 1024
MAX_FIELDS = 10
SLUGS = {"microsoft": "Microsoft365", "google": "Google", "caldav": "CalDAV"}
NAMES = {"Microsoft365": "Microsoft 365", "Google": "Google", "CalDAV": "CalDAV"}
SIGN_IN = {"Microsoft365": "Microsoft", "Google": "Google"}
PERMISSIONS = {
    "Microsoft365": (
        "Read and write your calendars (Calendars.ReadWrite): to add, change and remove the events of your sessions",
        "Keep that access when you are not signed in (offline_access): to keep the events up to date",
        "Sign you in and read your profile (openid, email, User.Read): to show which account is connected",
    ),
    "Google": (
        "View and edit events on all your calendars (calendar.events): to add, change and remove the events of"
        " your sessions",
        "See your calendars' names and the list of calendars you use (calendar.calendars.readonly,"
        " calendar.calendarlist.readonly): to notice an event you moved to another calendar, or a deleted"
        " calendar, instead of taking it for leaving the session",
        "See your primary Google Account e-mail address (openid, email): to show which account is connected",
    ),
}
STATUS_TEXT = {
    "NotConnected": "No calendar connected",
    "Connected": "Connected: your sessions are kept in this calendar",
    "Paused": "Paused: events are not updated; you receive e-mails instead",
    "NeedsReauthorization": "Needs you to authorize again",
    "Error": "Error: the last update failed (see Last error)",
}
# Microsoft's answers when the tenant does not let its users consent (AADSTS65001: not consented, AADSTS90094:
# admin permission required) and the OAuth / OpenID Connect codes for it; Google's when a Workspace admin blocks
# the app.
ADMIN_CODES = re.compile(r"AADSTS(65001|90094|90095)\b")
ADMIN_ERRORS = frozenset({"consent_required", "admin_consent_required", "admin_policy_enforced"})
LINK_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")

ROUTES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"/calendar/?"), "GET", "status"),
    (re.compile(r"/calendar/link/([^/]*)"), "GET", "link_page"),
    (re.compile(r"/calendar/link/([^/]*)"), "POST", "link"),
    (re.compile(r"/calendar/connect/(microsoft|google)"), "POST", "connect_oauth"),
    (re.compile(r"/calendar/oauth/(microsoft|google)"), "GET", "callback"),
    (re.compile(r"/calendar/connect/caldav"), "POST", "connect_caldav"),
    (re.compile(r"/calendar/disconnect"), "POST", "disconnect"),
    (re.compile(r"/calendar/sync"), "POST", "sync"),
)


def link_url(base_url: str, token: str) -> str:
    """The address of a calendar page link: `<public base URL>/calendar/link/<token>`."""
    return f"{base_url.rstrip('/')}{PREFIX}/link/{token}"


class Mount:
    """ASGI middleware handing `/calendar` and everything under it to the pages app, except
    `/calendar/notifications[/...]`, which goes to `receiving` (calendars.receiving) when given; the rest goes on
    to `app` (connexion adds it ahead of the API's authentication, MiddlewarePosition.BEFORE_SWAGGER)."""

    def __init__(self, app: ASGIApp, pages: ASGIApp, receiving: ASGIApp | None = None) -> None:
        self.app = app
        self.pages = pages
        self.receiving = receiving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        notifications = PREFIX + "/notifications"
        if self.receiving is not None and (path == notifications or path.startswith(notifications + "/")):
            await self.receiving(scope, receive, send)
        elif path == PREFIX or path.startswith(PREFIX + "/"):
            await self.pages(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class PageError(Exception):
    """An answer other than the page asked for: a message page with `status`."""

    def __init__(self, status: int, title: str, happened: str, todo: str | None = None, **extra: Any) -> None:
        super().__init__(happened)
        self.status, self.title, self.happened, self.todo, self.extra = status, title, happened, todo, extra


@dataclass(frozen=True)
class Session:
    token: str
    user_id: str
    csrf: str

    @property
    def actor(self) -> Actor:
        return Actor(kind="user", user_id=self.user_id)


class CalendarPages:
    """The ASGI app of the calendar page (see the module docstring).

    db, box: the database and the key that seals credentials; config: providers' clients and endpoints;
    base_url(scope): the server's public base URL for a request (COURSEWIRE_PUBLIC_URL, else the request's, trusted
    proxies' X-Forwarded-* honoured), which the links, the redirect URIs, the cookie's Path and Secure follow;
    resolve: the DNS lookup of the SSRF check of a CalDAV server URL (storage.outbound.check_url with
    config.allowed_networks); discovery (calendars.providers.caldav.discover) then runs in a session whose
    resolver refuses the same addresses (storage.outbound.guarded_session), so a name that resolves elsewhere
    by the time of the request is refused too.
    """

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        config: CalendarConfig,
        *,
        base_url: Callable[[Scope], str],
        resolve: Callable[[str], list[str]] = outbound.resolve,
    ) -> None:
        self.db = db
        self.box = box
        self.config = config
        self.base_url = base_url
        self.resolve = resolve
        self.templates = jinja2.Environment(
            # The templates beside this file (package data in the wheel), found without importing by name.
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        loader = self.templates.loader
        assert loader is not None
        self.style = loader.get_source(self.templates, "_style.html")[0]
        style_hash = base64.b64encode(hashlib.sha256(self.style.encode()).digest()).decode()
        origins = " ".join(sorted({_origin(oauth.authorize_endpoint(config, p)) for p in oauth.OAUTH_PROVIDERS} - {""}))
        # form-action covers where a form's redirect leads too (CSP Level 3 §6.4.1 as browsers enforce it): the
        # Connect buttons post here and are sent on to the providers' sign-in pages.
        self.csp = (
            f"default-src 'none'; style-src 'sha256-{style_hash}'; img-src 'self'; form-action 'self' {origins};"
            " frame-ancestors 'none'; base-uri 'none'"
        )

    # -- ASGI ---------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            base = self._base(scope)
            response = await self._dispatch(request, base)
        except PageError as exc:
            response = self._message(exc)
        except Exception:
            log.exception("calendar page %s %s failed", scope.get("method"), _path_shape(scope.get("path", "")))
            response = self._message(
                PageError(
                    500,
                    "Something went wrong",
                    "coursewire could not finish this step because of a problem on its side.",
                    "Try again in a minute. If it keeps happening, tell your administrator.",
                )
            )
        self._secure_headers(response.headers)
        await response(scope, receive, send)

    def _base(self, scope: Scope) -> str:
        base = self.base_url(scope).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PageError(400, "Bad request", "The address this page was asked at is not valid.")
        return base

    async def _dispatch(self, request: Request, base: str) -> Response:
        path, method = request.scope["path"], request.scope["method"]
        allowed = set()
        for pattern, route_method, name in ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method != route_method:
                allowed.add(route_method)
                continue
            handler: Callable[..., Awaitable[Response]] = getattr(self, f"_{name}")
            return await handler(request, base, *match.groups())
        if allowed:
            raise PageError(
                405,
                "Not allowed",
                f"This address answers {', '.join(sorted(allowed))} only.",
                "Use the buttons on your calendar page.",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        raise PageError(
            404,
            "Page not found",
            "There is no calendar page at this address.",
            "Open the link you were sent again, or ask for a new one.",
        )

    # -- routes -------------------------------------------------------------------------------------------

    async def _link_page(self, request: Request, base: str, token: str) -> Response:
        """The link as a page with a Continue button: a GET never uses the link up, because mail scanners (Safe
        Links, gateways) fetch every link of an e-mail before the person clicks it."""
        if not LINK_TOKEN.fullmatch(token):
            raise _link_error(calendar_links.UnknownLink("malformed"))
        try:
            await asyncio.to_thread(calendar_links.check_link, self.db, token)
        except calendar_links.LinkRefused as exc:
            raise _link_error(exc) from None
        return self._render("link.html", title="Your calendar settings", action=f"{base}{PREFIX}/link/{token}")

    async def _link(self, request: Request, base: str, token: str) -> Response:
        if not LINK_TOKEN.fullmatch(token):
            raise _link_error(calendar_links.UnknownLink("malformed"))
        try:
            user_id = await asyncio.to_thread(calendar_links.redeem_link, self.db, token)
        except calendar_links.LinkRefused as exc:
            raise _link_error(exc) from None
        session_token, _ = await asyncio.to_thread(calendar_links.start_session, self.db, user_id, SESSION_TTL)
        response = _redirect(f"{base}{PREFIX}/")
        response.set_cookie(
            COOKIE,
            session_token,
            max_age=int(SESSION_TTL),
            path=_cookie_path(base),
            secure=base.startswith("https://"),
            httponly=True,
            samesite="lax",
        )
        return response

    async def _status(self, request: Request, base: str) -> Response:
        return await self._status_page(request, base)

    async def _status_page(
        self,
        request: Request,
        base: str,
        *,
        status_code: int = 200,
        caldav_problem: str | None = None,
        caldav_values: Mapping[str, str] | None = None,
    ) -> Response:
        """The status page; with the CalDAV form's problem and values when it is shown again."""
        session = await self._session(request)
        connection, settings = await asyncio.to_thread(self._state, session)
        status = connection["Status"]
        provider = connection.get("Provider")
        banner = None
        done = request.query_params.get("done")
        if done == "connected" and provider and status in ("Connected", "Paused"):
            account = f": {connection['Account']}" if connection.get("Account") else ""
            banner = f"Your {NAMES[provider]} calendar is authorized{account}."
        elif done == "disconnected" and status == "NotConnected":
            banner = "Your calendar is disconnected."
        elif done in ("sync-on", "sync-off") and provider:
            banner = "Sync is on." if connection.get("SyncEnabled") else "Sync is off."
        oauth_offered = [
            {
                "slug": slug,
                "name": NAMES[name],
                "signin": SIGN_IN[name],
                "permissions": PERMISSIONS[name],
            }
            for slug, name in SLUGS.items()
            if name in oauth.OAUTH_PROVIDERS and self._offered(name, settings)
        ]
        reauthorize = None
        if provider in oauth.OAUTH_PROVIDERS and status in ("NeedsReauthorization", "Error"):
            reauthorize = {"slug": _slug(provider), "name": NAMES[provider]}
        return self._render(
            "status.html",
            status=status_code,
            title="Your calendar",
            base=base,
            csrf=session.csrf,
            # The API leaves absent values out; the template asks for each by name.
            connection={
                key: connection.get(key)
                for key in ("Provider", "Account", "Calendar", "SyncEnabled", "LastSyncAt", "LastError")
            },
            connected=provider is not None,
            provider_name=NAMES.get(provider or "", ""),
            status_text=STATUS_TEXT.get(status, status),
            banner=banner,
            problem=None,
            oauth=oauth_offered,
            caldav=self._offered("CalDAV", settings),
            caldav_problem=caldav_problem,
            caldav_values=caldav_values or {"url": "", "username": ""},
            reauthorize=reauthorize,
            unregister_on_delete=bool(settings.get("UnregisterOnCalendarDelete", True)),
        )

    async def _connect_oauth(self, request: Request, base: str, slug: str) -> Response:
        session = await self._session(request)
        await self._checked_form(request, session)
        provider = SLUGS[slug]
        connection, settings = await asyncio.to_thread(self._state, session)
        if not self._offered(provider, settings):
            raise self._not_enabled(provider, base)
        self._may_connect(connection, provider, base)
        authorization = oauth.authorization_request(self.config, provider, _redirect_uri(base, slug))
        await asyncio.to_thread(
            calendar_links.save_state,
            self.db,
            authorization.state,
            session.token,
            session.user_id,
            provider,
            self.box.seal(authorization.code_verifier),
            STATE_TTL,
        )
        return _redirect(authorization.url)

    async def _callback(self, request: Request, base: str, slug: str) -> Response:
        provider = SLUGS[slug]
        back = f"{base}{PREFIX}/"
        session = await self._session(request)
        query = request.query_params
        try:
            pending = await asyncio.to_thread(calendar_links.take_state, self.db, query.get("state", ""), session.token)
        except calendar_links.StateRefused as exc:
            if exc.expired:
                raise PageError(
                    400,
                    "The sign-in took too long",
                    f"More than {int(STATE_TTL // 60)} minutes passed between leaving this page and coming back.",
                    "Go back to your calendar page and connect again.",
                    back=back,
                ) from None
            raise PageError(
                400,
                "This answer was not expected",
                f"The answer from {SIGN_IN[provider]} does not belong to a connection started in this browser, or"
                " it was already used. Nothing was connected.",
                "Go back to your calendar page and connect from there. If someone sent you this address, do not"
                " use it.",
                back=back,
            ) from None
        if pending.provider != provider or pending.user_id != session.user_id:
            raise PageError(
                400,
                "This answer was not expected",
                "The answer does not match the connection started in this browser. Nothing was connected.",
                "Go back to your calendar page and connect from there.",
                back=back,
            )
        error = query.get("error")
        if error:
            raise _consent_error(provider, error, query.get("error_description"), back)
        code = query.get("code", "")
        if not code:
            raise PageError(
                400,
                "No authorization came back",
                f"{SIGN_IN[provider]} sent you back without an authorization. Nothing was connected.",
                "Go back to your calendar page and connect again.",
                back=back,
            )
        verifier = self.box.open(pending.code_verifier)
        async with aiohttp.ClientSession(timeout=oauth.TIMEOUT) as http:
            try:
                grant = await oauth.exchange_code(
                    self.config, provider, code, verifier, _redirect_uri(base, slug), http, self.db.clock()
                )
            except oauth.OAuthError as exc:
                log.warning("calendar authorization of user %s at %s failed: %s", session.user_id, provider, exc)
                raise PageError(
                    502,
                    "The authorization could not be completed",
                    f"{SIGN_IN[provider]} did not accept coursewire's request for your calendar. Nothing was"
                    " connected.",
                    "Go back to your calendar page and connect again. If it fails again, tell your administrator"
                    " (the server log says why).",
                    back=back,
                ) from None
        await asyncio.to_thread(self._store_grant, session, provider, grant, base)
        return _redirect(f"{back}?done=connected")

    async def _connect_caldav(self, request: Request, base: str) -> Response:
        session = await self._session(request)
        form = await self._checked_form(request, session)
        connection, settings = await asyncio.to_thread(self._state, session)
        if not self._offered("CalDAV", settings):
            raise self._not_enabled("CalDAV", base)
        self._may_connect(connection, "CalDAV", base)
        if form.get("choice"):
            return await self._choose_caldav(session, form, base)
        url, username, password = form.get("url", "").strip(), form.get("username", "").strip(), form.get("password")
        values = {"url": url[:2048], "username": username[:256]}

        async def again(problem: str, status_code: int = 400) -> Response:
            response = await self._status_page(
                request, base, caldav_problem=problem, caldav_values=values, status_code=status_code
            )
            if status_code == 503:
                response.headers["Retry-After"] = str(caldav.DISCOVERY_RETRY_AFTER)
            return response

        if not url or not username or not password:
            return await again("Fill in the server URL, your user name and an app password.")
        if len(username) > 256 or len(password) > 256:
            return await again("The user name and the app password are each at most 256 characters.")
        try:
            caldav.check_credentials(username, password)
            url = await asyncio.to_thread(self._checked_url, url)
        except Invalid as exc:
            return await again(f"{_field_words(exc.message)}.")
        try:
            with caldav.discovery_slot(session.user_id):
                found = await self._discovered(url, username, password)
        except caldav.DiscoveryBusy as exc:
            if exc.yours:
                return await again(
                    "coursewire is still looking for your calendars on a server (from another form you sent). Wait"
                    " a moment, then try again.",
                    status_code=409,
                )
            return await again(
                "coursewire is busy looking for other people's calendars right now. Try again in a few seconds.",
                status_code=503,
            )
        except AuthorizationLost:
            return await again(
                "The server refused this user name and app password. Check them; iCloud and most providers need an"
                " app password, not your main password."
            )
        except Rejected as exc:
            return await again(f"This does not look like a CalDAV calendar server ({exc}).")
        except ProviderError as exc:
            return await again(f"The calendar server could not be reached or failed ({exc}). Try again later.")
        # Only what the choice needs, bounded: caldav.discover returns at most MAX_CALENDARS, with URLs of at most
        # MAX_CALENDAR_URL and names of at most MAX_NAME characters (the sealed state stays a few tens of KB).
        calendars = [{"url": c.url, "name": c.name[: caldav.MAX_NAME]} for c in found[: caldav.MAX_CALENDARS]]
        if not calendars:
            return await again("The server has no calendar that can hold events for this account.")
        if len(calendars) == 1:
            try:
                await asyncio.to_thread(self._store_caldav, session, username, password, calendars[0]["url"], base)
            except Invalid as exc:
                return await again(f"{_field_words(exc.message)}.")
            return _redirect(f"{base}{PREFIX}/?done=connected")
        choice = calendar_links.new_token()
        pending = {"url": url, "username": username, "password": password, "calendars": calendars}
        await asyncio.to_thread(
            calendar_links.save_state,
            self.db,
            choice,
            session.token,
            session.user_id,
            "CalDAV",
            self.box.seal(json.dumps(pending, ensure_ascii=False, separators=(",", ":"))),
            STATE_TTL,
        )
        return self._render(
            "choose.html",
            title="Choose a calendar",
            base=base,
            csrf=session.csrf,
            choice=choice,
            server=_origin(url),
            calendars=calendars,
        )

    async def _choose_caldav(self, session: Session, form: Mapping[str, str], base: str) -> Response:
        back = f"{base}{PREFIX}/"
        try:
            pending = await asyncio.to_thread(calendar_links.take_state, self.db, form["choice"], session.token)
        except calendar_links.StateRefused:
            raise PageError(
                400,
                "This choice has expired",
                "The list of calendars was shown too long ago, or the choice was already made.",
                "Go back to your calendar page and connect CalDAV again.",
                back=back,
            ) from None
        kept = json.loads(self.box.open(pending.code_verifier))
        chosen = form.get("calendar", "")
        if pending.provider != "CalDAV" or chosen not in {c["url"] for c in kept["calendars"]}:
            raise PageError(
                400,
                "No calendar chosen",
                "The calendar chosen is not one of those the server listed.",
                "Go back to your calendar page and connect CalDAV again.",
                back=back,
            )
        try:
            await asyncio.to_thread(self._store_caldav, session, kept["username"], kept["password"], chosen, base)
        except Invalid as exc:
            raise PageError(
                400,
                "This calendar cannot be used",
                f"{_field_words(exc.message)}.",
                "Go back to your calendar page and connect CalDAV again with the address of a calendar on your"
                " server.",
                back=back,
            ) from None
        return _redirect(f"{back}?done=connected")

    async def _disconnect(self, request: Request, base: str) -> Response:
        session = await self._session(request)
        form = await self._checked_form(request, session)
        keep_events = form.get("remove_events") != "on"
        with contextlib.suppress(NotFound):  # already disconnected (in another tab): the page shows that
            await asyncio.to_thread(
                calendar.disconnect, self.db, session.actor, session.user_id, keep_events=keep_events
            )
        return _redirect(f"{base}{PREFIX}/?done=disconnected")

    async def _sync(self, request: Request, base: str) -> Response:
        session = await self._session(request)
        form = await self._checked_form(request, session)
        enabled = form.get("enabled")
        if enabled not in ("on", "off"):
            raise PageError(400, "Bad request", "The form did not say whether to turn sync on or off.", back=base)
        with contextlib.suppress(NotFound):  # disconnected meanwhile: the page shows that
            await asyncio.to_thread(calendar.set_sync_enabled, self.db, session.actor, session.user_id, enabled == "on")
        return _redirect(f"{base}{PREFIX}/?done=sync-{enabled}")

    # -- pieces -------------------------------------------------------------------------------------------

    async def _session(self, request: Request) -> Session:
        token = request.cookies.get(COOKIE, "")
        found = await asyncio.to_thread(calendar_links.session_user, self.db, token) if token else None
        if found is None:
            raise PageError(
                403,
                "Open your calendar link",
                "This browser has no open calendar page: the link was not opened here, or more than an hour has"
                " passed since.",
                "Open the calendar link you were sent (in a recent e-mail, or from the app) in this browser. A link"
                " works once; if yours was already used, ask for a new one.",
            )
        return Session(token, found[0], found[1])

    async def _checked_form(self, request: Request, session: Session) -> dict[str, str]:
        """The form body (at most MAX_FORM bytes, URL-encoded), once its CSRF token proved it came from this
        session's page. Raises PageError 413/415/400/403."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        empty = request.headers.get("content-length") in (None, "0") and "transfer-encoding" not in request.headers
        if content_type != "application/x-www-form-urlencoded" and not (empty and not content_type):
            raise PageError(415, "Bad request", "This address takes the forms of the calendar page only.")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM):
            raise PageError(413, "Too much data", f"A form may send at most {MAX_FORM:,} bytes.")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise PageError(413, "Too much data", f"A form may send at most {MAX_FORM:,} bytes.")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise PageError(400, "Bad request", "The form could not be read.") from None
        form = dict(pairs)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise PageError(
                403,
                "This form has expired",
                "The form was not sent from your current calendar page, so nothing was changed.",
                "Go back to your calendar page, reload it, and try again.",
            )
        return form

    def _state(self, session: Session) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            calendar.get_connection(self.db, session.actor, session.user_id),
            calendar.get_settings(self.db),
        )

    def _offered(self, provider: str, settings: Mapping[str, Any]) -> bool:
        if not settings.get(f"{provider}Enabled"):
            return False
        return provider == "CalDAV" or self.config.missing(provider) is None

    def _not_enabled(self, provider: str, base: str) -> PageError:
        return PageError(
            403,
            f"{NAMES[provider]} is not available",
            f"Your organization has not turned on {NAMES[provider]} calendars.",
            "Choose another calendar on your calendar page, or ask your administrator.",
            back=f"{base}{PREFIX}/",
        )

    def _may_connect(self, connection: Mapping[str, Any], provider: str, base: str) -> None:
        """Refuse to start a connection while another calendar is connected (the API's 409, in its words); the
        calendar that needs authorizing again may be authorized again."""
        existing = connection.get("Provider")
        if existing is None:
            return
        if existing == provider and connection["Status"] in ("NeedsReauthorization", "Error"):
            return
        words = calendar.already_connected(_as_connection(connection))
        raise PageError(409, "A calendar is already connected", _sentence(words), back=f"{base}{PREFIX}/")

    def _store_grant(self, session: Session, provider: str, grant: oauth.Grant, base: str) -> None:
        """Connect the calendar, or renew the credentials of the same account's connection that needed it."""
        existing = calendar.active_connection(self.db, session.user_id)
        if (
            existing is not None
            and existing.provider == provider
            and (existing.account or "").lower() == grant.account.lower()
        ):
            calendar.update_credentials(self.db, existing.id, grant.sealed(self.box))
            if existing.status != "Connected":
                calendar.set_status(self.db, existing.id, "Connected", None)
            return
        self._connect(session, provider, grant.account, None, grant.sealed(self.box), base)

    def _store_caldav(self, session: Session, username: str, password: str, chosen: str, base: str) -> None:
        """Connect the calendar at `chosen`, once it passes the SSRF check (Invalid naming Calendar URL
        otherwise): the worker will send the person's credentials there."""
        chosen = outbound.check_url(chosen, self.config.allowed_networks, self.resolve, field="Calendar URL")
        sealed = self.box.seal(json.dumps({"username": username, "password": password}))
        self._connect(session, "CalDAV", username, chosen, sealed, base)

    def _connect(
        self, session: Session, provider: str, account: str | None, calendar_url: str | None, sealed: str, base: str
    ) -> None:
        back = f"{base}{PREFIX}/"
        try:
            calendar.connect(
                self.db,
                session.actor,
                session.user_id,
                provider,
                account=account,
                calendar=calendar_url,
                credentials=sealed,
            )
        except Conflict as exc:
            raise PageError(409, "A calendar is already connected", _sentence(exc.message), back=back) from None
        except Invalid as exc:
            raise PageError(403, f"{NAMES[provider]} is not available", _sentence(exc.message), back=back) from None

    def _checked_url(self, url: str) -> str:
        return outbound.check_url(url, self.config.allowed_networks, self.resolve, field="Server URL")

    async def _discovered(self, url: str, username: str, password: str) -> list[caldav.CalendarInfo]:
        async with outbound.guarded_session(self.config.allowed_networks, user_agent=USER_AGENT) as http:
            return await caldav.discover(
                http,
                url,
                username,
                password,
                networks=self.config.allowed_networks,
                resolve=self.resolve,
                deadline=caldav.DISCOVERY_DEADLINE,
            )

    # -- rendering ----------------------------------------------------------------------------------------

    def _render(self, template: str, *, status: int = 200, **context: Any) -> Response:
        body = self.templates.get_template(template).render(style=self.style, **context)
        return Response(body, status_code=status, media_type="text/html; charset=utf-8")

    def _message(self, error: PageError) -> Response:
        extra = dict(error.extra)
        headers = extra.pop("headers", {})
        response = self._render(
            "message.html",
            status=error.status,
            title=error.title,
            happened=error.happened,
            todo=error.todo,
            good=False,
            back=extra.pop("back", None),
            detail=extra.pop("detail", None),
        )
        response.headers.update(headers)
        return response

    def _secure_headers(self, headers: MutableHeaders) -> None:
        headers["Content-Security-Policy"] = self.csp
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cache-Control"] = "no-store"
        headers["X-Content-Type-Options"] = "nosniff"


def _consent_error(provider: str, error: str, description: str | None, back: str) -> PageError:
    """The page for an authorization answered with an error (RFC 6749 §4.1.2.1): admin approval needed,
    consent denied, or another refusal."""
    said = f"{error}{': ' + description if description else ''}"[:300]
    if error in ADMIN_ERRORS or ADMIN_CODES.search(description or ""):
        return PageError(
            200,
            "Your administrator has to approve coursewire",
            f"Your organization lets only its administrator allow apps such as coursewire to use your"
            f" {NAMES[provider]} calendar. Nothing was connected.",
            "Ask your administrator to approve coursewire (they grant consent for the organization once), then"
            " come back to your calendar page and connect again. Meanwhile you keep receiving e-mail invitations.",
            back=back,
            detail=said,
        )
    if error == "access_denied":
        return PageError(
            200,
            "You did not allow access",
            f"{SIGN_IN[provider]} says the permission was not given, so coursewire cannot write your sessions in"
            f" this calendar. Nothing was connected.",
            "If that was a mistake, go back to your calendar page and connect again, then choose Accept. Otherwise"
            " there is nothing to do: you keep receiving e-mail invitations.",
            back=back,
            detail=said,
        )
    return PageError(
        502,
        "The authorization failed",
        f"{SIGN_IN[provider]} could not authorize coursewire. Nothing was connected.",
        "Go back to your calendar page and try again. If it fails again, tell your administrator what the"
        " provider said (below).",
        back=back,
        detail=said,
    )


def _link_error(exc: calendar_links.LinkRefused) -> PageError:
    if isinstance(exc, calendar_links.ExpiredLink):
        return PageError(
            410,
            "This link has expired",
            "Calendar links work for a short time only, and this one is too old.",
            "Ask for a new link: open the calendar settings in the app again, or use the link in your most recent"
            " e-mail.",
        )
    if isinstance(exc, calendar_links.UsedLink):
        return PageError(
            410,
            "This link was already used",
            "Each calendar link opens the page once, and this one has been opened before.",
            "If you opened it a moment ago, go on in that browser window. Otherwise ask for a new link: open the"
            " calendar settings in the app again, or use the link in your most recent e-mail.",
        )
    return PageError(
        404,
        "This link is not valid",
        "coursewire does not know this calendar link. It may be incomplete (some mail programs cut long links).",
        "Copy the whole link into the address bar, or ask for a new one.",
    )


def _as_connection(shape: Mapping[str, Any]) -> calendar.Connection:
    return calendar.Connection(
        id="",
        user_id=str(shape.get("UserId", "")),
        provider=str(shape["Provider"]),
        account=shape.get("Account"),
        calendar=None,
        credentials="",
        state="active",
        status=str(shape["Status"]),
        sync_enabled=bool(shape.get("SyncEnabled")),
        connected_at=str(shape.get("ConnectedAt", "")),
        last_sync_at=None,
        last_error=None,
    )


def _field_words(message: str) -> str:
    """An API message as the form says it: the field names the form shows instead of the API's."""
    for api_name, label in (("Username", "User name"), ("Password", "App password")):
        if message.startswith(api_name + " "):
            return label + message[len(api_name) :]
    return message


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def _redirect(url: str) -> Response:
    return Response(status_code=303, headers={"Location": url})


def _redirect_uri(base: str, slug: str) -> str:
    """The redirect URI registered with the provider: `<public base URL>/calendar/oauth/<microsoft|google>`."""
    return f"{base}{PREFIX}/oauth/{slug}"


def _cookie_path(base: str) -> str:
    return (urlsplit(base).path.rstrip("/") or "") + PREFIX


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _slug(provider: str) -> str:
    return next(slug for slug, name in SLUGS.items() if name == provider)


def _path_shape(path: str) -> str:
    """A path as logs show it: a link's token is a credential."""
    return re.sub(r"(/calendar/link/)[^/]+", r"\1…", path)
