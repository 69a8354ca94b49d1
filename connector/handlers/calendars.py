"""Handlers for the calendar mirror: the account owner's settings, each person's connected calendar, and links to
their calendar page."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp

from calendars import tenant
from calendars.config import CalendarConfig
from calendars.model import AuthorizationLost, ProviderError, Rejected
from calendars.providers import caldav
from connector import context, shaping
from connector.errors import HttpError
from connector.handlers import key, options
from storage import access, calendar, calendar_tenant, calendar_watch, outbound
from storage.db import Database, iso
from storage.errors import Conflict, Invalid, clip
from storage.models import Actor
from storage.outbound import GuardedResolver, IPNetwork, Resolve, check_url

# Each switch of CalendarSettings -> what CalendarConfig.missing() calls it (CalDAV needs no variable).
REQUIREMENTS = {
    "Microsoft365Enabled": "Microsoft365",
    "GoogleEnabled": "Google",
    "CalDAVEnabled": "CalDAV",
    "EmailFallbackEnabled": "Email",
}
# How long CalDAV discovery may take in all before the server counts as unreachable, in seconds.
DISCOVERY_TIMEOUT = caldav.DISCOVERY_DEADLINE


def refuse_unconfigured(config: CalendarConfig, changes: Mapping[str, bool]) -> None:
    """Raise Invalid (target: the switch) when `changes` turns on a provider, or the e-mail fallback, whose
    OAuth client or mail server the environment does not configure; the message names the missing variable.
    Turning anything off is always allowed."""
    for name, enabled in changes.items():
        variable = config.missing(REQUIREMENTS.get(name, "")) if enabled else None
        if variable:
            raise Invalid(
                f"{name} cannot be turned on: {variable} is not set; set it in coursewire's environment and"
                " restart it first",
                target=name,
            )


# --- settings ----------------------------------------------------------------------------------------------


def get_calendar_settings() -> dict[str, Any]:
    access.require_reads_all(context.actor(), "read the calendar settings")
    return calendar.get_settings(context.services().db)


def update_calendar_settings(body: dict[str, Any]) -> dict[str, Any]:
    services = context.services()
    access.require_admin(context.actor(), "change the calendar settings")
    current = calendar.get_settings(services.db)
    # Only a switch going from off to on needs its variables: a body read by GET and sent back as it was passes.
    refuse_unconfigured(services.settings.calendar, {k: v for k, v in body.items() if v and not current.get(k)})
    return calendar.update_settings(services.db, context.actor(), body)


# --- a person's calendar -----------------------------------------------------------------------------------


def _connection(user_id: str, connection: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.context": shaping.metadata("CalendarConnections", entity=True), **connection}


def _acting_for(actor: Actor, user_id: str, doing: str) -> dict[str, Any]:
    """The person's connection, after checking the actor may `doing` it: that person, or an administrator
    (NotFound for a person the actor may not see, Forbidden for one they may only read)."""
    found = calendar.get_connection(context.services().db, actor, user_id)
    if not (actor.kind == "user" and actor.user_id == user_id):
        access.require_admin(actor, doing)
    return found


def create_calendar_connection_link(Id: str) -> dict[str, Any]:
    from storage import calendar_links  # the link store lands separately

    services = context.services()
    user_id = key(Id)
    _acting_for(context.actor(), user_id, "create a calendar link for another user")
    token, expires_at = calendar_links.create_link(services.db, user_id, services.settings.calendar.link_ttl)
    return {
        "Url": f"{context.base_url()}/calendar/link/{token}",
        "ExpiresAt": iso(expires_at) if isinstance(expires_at, datetime) else expires_at,
    }


def get_calendar_connection(Id: str) -> dict[str, Any]:
    user_id = key(Id)
    return _connection(user_id, calendar.get_connection(context.services().db, context.actor(), user_id))


def connect_calendar(Id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Connect a CalDAV calendar: check who acts, that CalDAV is on and nothing is connected yet (before any
    network), the credentials (caldav.check_credentials: 400 naming Username or Password) and the URL
    (storage.outbound's SSRF guard), then discover the calendar on the server and store the credentials sealed.
    The password goes nowhere else: not into a response, an event or a log.

    Discovery runs on this API thread, bounded: DISCOVERY_TIMEOUT seconds in all, at most
    caldav.DISCOVERIES_PER_PROCESS at once in this process (503 with Retry-After past that) and one per person
    (409 while theirs runs). The calendar URL stored passes check_url too (400 naming Url): it is where the
    worker will send the person's credentials."""
    services = context.services()
    actor = context.actor()
    user_id = key(Id)
    provider = body["Provider"]
    if provider != "CalDAV":
        name = calendar.PROVIDER_NAMES.get(provider, provider)
        raise Invalid(
            f"a {name} calendar needs the person's consent on their calendar page: create a link with"
            " CreateCalendarConnectionLink and open it (only CalDAV connects through this operation)",
            target="Provider",
        )
    current = _acting_for(actor, user_id, "connect a calendar for another user")
    if current["Status"] != "NotConnected":
        existing = calendar.active_connection(services.db, user_id)
        if existing is not None:
            raise Conflict(calendar.already_connected(existing), target="Provider")
    if not calendar.get_settings(services.db)["CalDAVEnabled"]:
        raise Invalid(
            "CalDAV calendars are not enabled; an administrator turns them on in CalendarSettings (CalDAVEnabled)",
            target="Provider",
        )
    config = services.settings.calendar
    username, password = caldav.check_credentials(body["Username"], body["Password"])
    url = check_url(body["Url"], config.allowed_networks, services.resolve, field="Url")
    try:
        with caldav.discovery_slot(user_id):
            found = asyncio.run(_discover(url, username, password, config.allowed_networks, services.resolve))
    except caldav.DiscoveryBusy as exc:
        if exc.yours:
            raise Conflict(
                f"{exc.message}; wait for it to finish (at most {DISCOVERY_TIMEOUT:g} s), then try again",
                target="Url",
            ) from None
        raise HttpError(
            503, f"{exc.message}; try again in a few seconds", headers={"Retry-After": str(exc.retry_after)}
        ) from None
    found = check_url(found, config.allowed_networks, services.resolve, field="Url")
    sealed = services.box.seal(json.dumps({"username": username, "password": password}))
    connected = calendar.connect(
        services.db, actor, user_id, "CalDAV", account=username, calendar=found, credentials=sealed
    )
    return _connection(user_id, connected)


async def _discover(url: str, username: str, password: str, networks: Sequence[IPNetwork], resolve: Resolve) -> str:
    """The URL of the calendar to write to: the first calendar discovery finds that holds events (VEVENT), or
    `url` itself when it is one. Raises Invalid naming Password when the server refuses the credentials
    (401), Url when it cannot be reached, takes longer than DISCOVERY_TIMEOUT, lists calendars only where
    coursewire does not write, or holds no calendar for events."""
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(networks))
    timeout = aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            calendars = await caldav.discover(
                session, url, username, password, networks=networks, resolve=resolve, deadline=DISCOVERY_TIMEOUT
            )
    except AuthorizationLost:
        raise Invalid(
            f"the CalDAV server at {origin} refused the user name or password; check them (many servers, such as"
            " iCloud, want an app password rather than the account's own)",
            target="Password",
        ) from None
    except Rejected as exc:
        raise Invalid(
            f"the CalDAV server at {origin} cannot be connected: {clip(str(exc), 300)}",
            target="Url",
        ) from None
    except (ProviderError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Invalid(
            f"the CalDAV server at {origin} could not be reached or is not a CalDAV server"
            f" ({type(exc).__name__}); check the address",
            target="Url",
        ) from None
    chosen = _pick(calendars, url)
    if chosen is None:
        raise Invalid(f"the CalDAV server at {origin} has no calendar for events under this address", target="Url")
    return chosen


def _pick(calendars: Sequence[Any], url: str) -> str | None:
    """The URL itself when discovery lists it as a calendar for events, else the first such calendar."""

    def events_allowed(found: Any) -> bool:
        components = getattr(found, "components", None)
        return not components or "VEVENT" in components

    usable = [str(getattr(c, "url", c)) for c in calendars if events_allowed(c)]
    wanted = url.rstrip("/")
    return next((c for c in usable if c.rstrip("/") == wanted), usable[0] if usable else None)


def update_calendar_connection(Id: str, body: dict[str, Any]) -> dict[str, Any]:
    user_id = key(Id)
    changed = calendar.set_sync_enabled(context.services().db, context.actor(), user_id, body["SyncEnabled"])
    return _connection(user_id, changed)


def delete_calendar_connection(Id: str, KeepEvents: bool = False) -> tuple[None, int]:
    calendar.disconnect(context.services().db, context.actor(), key(Id), keep_events=KeepEvents)
    return None, 204


def get_calendar_connections(**kwargs: Any) -> dict[str, Any]:
    """Every person's connected calendar: administrators only (a Read Only key is refused, whatever it reads:
    the list names every person's calendar account)."""
    access.require_admin(context.actor(), "list calendar connections")
    return shaping.many("CalendarConnections", options(kwargs))


# Every count CalendarSyncHealth declares is present (0 when none), so a flow can read each without a condition.
HEALTH_STATUSES = ("Connected", "NeedsReauthorization", "Error")


def get_calendar_sync_health() -> dict[str, Any]:
    """storage.calendar_watch.health for administrators only (a Read Only key is refused too: the figures are
    the mirror's operations, like the list of connections); counts for every known status and provider, times
    left out while there are none (never null)."""
    access.require_admin(context.actor(), "read the calendar sync health")
    health = calendar_watch.health(context.services().db)
    by_status = cast("dict[str, int]", health["ByStatus"])
    by_provider = cast("dict[str, int]", health["ByProvider"])
    return {
        **{k: v for k, v in health.items() if v is not None},
        "ByStatus": {name: int(by_status.get(name, 0)) for name in HEALTH_STATUSES},
        "ByProvider": {name: int(by_provider.get(name, 0)) for name in calendar.PROVIDERS},
    }


# --- tenant-wide Microsoft 365 -----------------------------------------------------------------------------

# How long the check before enabling may take in all (a token, then one Graph read), in seconds.
PROVE_TIMEOUT = 45.0
# Retry-After when Microsoft said nothing about when to come back.
PROVE_RETRY = 30
# AADSTS codes that point at a variable other than the client secret.
_AADSTS_TARGETS = {
    "AADSTS90002": "COURSEWIRE_MICROSOFT_TENANT",  # no such tenant
    "AADSTS90023": "COURSEWIRE_MICROSOFT_TENANT",  # the tenant id is not valid
    "AADSTS700016": "COURSEWIRE_MICROSOFT_CLIENT_ID",  # the application is unknown in the tenant
    "AADSTS700038": "COURSEWIRE_MICROSOFT_CLIENT_ID",  # the client id is not valid
}
_AADSTS = re.compile(r"AADSTS\d+")


def connect_tenant(db: Database, actor: Actor, config: CalendarConfig) -> calendar_tenant.TenantState:
    """Enable tenant-wide Microsoft 365 for the tenant COURSEWIRE_MICROSOFT_TENANT names, as ConnectCalendarTenant
    and `coursewire calendar tenant --connect` do: administrators only; then, before any network,
    calendars.tenant.tenant_ready (Invalid naming the variable) and Microsoft365Enabled (Invalid, target
    Microsoft365Enabled); then calendars.tenant.prove through a guarded session (config.allowed_networks),
    PROVE_TIMEOUT seconds in all; then storage.calendar_tenant.enable_tenant.

    Raises Forbidden; Invalid when Microsoft refuses the application (the AADSTS message, target the variable
    to fix: usually COURSEWIRE_MICROSOFT_CLIENT_SECRET, see _AADSTS_TARGETS) or Graph refuses to list users
    (admin consent for Calendars.ReadWrite and User.Read.All missing: Graph's message, no target);
    HttpError 503 with Retry-After (seconds) when Microsoft throttles or cannot be reached. The client secret
    appears in no message."""
    access.require_admin(actor, "connect the Microsoft 365 tenant")
    variable = tenant.tenant_ready(config)
    if variable:
        raise Invalid(unready(variable, "set it in coursewire's environment and restart it first"), target=variable)
    if not calendar.get_settings(db)["Microsoft365Enabled"]:
        raise Invalid(
            "Microsoft 365 calendars are not enabled: turn Microsoft365Enabled on first (UpdateCalendarSettings or"
            " coursewire calendar settings --enable microsoft365)",
            target="Microsoft365Enabled",
        )
    tenant_id = config.microsoft_tenant.strip()
    try:
        asyncio.run(_prove(config, tenant_id))
    except AuthorizationLost as exc:
        said = _redact(str(exc), config).split("; an administrator has to", 1)[0]
        code = _AADSTS.search(said)
        target = _AADSTS_TARGETS.get(code[0] if code else "", "COURSEWIRE_MICROSOFT_CLIENT_SECRET")
        raise Invalid(f"{clip(said, 600) or ''}; check {target}", target=target) from None
    except Rejected as exc:
        raise Invalid(
            f"Microsoft Graph refused to list the users of tenant {tenant_id}: admin consent is missing."
            f" {clip(_redact(str(exc), config), 600) or ''}"
        ) from None
    except (ProviderError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        wait = getattr(exc, "retry_after", None)
        seconds = max(1, math.ceil(wait)) if isinstance(wait, int | float) else PROVE_RETRY
        said = (clip(_redact(str(exc), config), 300) or "") if isinstance(exc, ProviderError) else type(exc).__name__
        raise HttpError(
            503,
            f"Microsoft could not be asked whether the tenant may be connected ({said}); try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        ) from None
    return calendar_tenant.enable_tenant(db, actor, tenant_id)


def unready(variable: str, then: str) -> str:
    """What a 400 says when tenant_ready names `variable`; `then` says where to set it."""
    if variable == "COURSEWIRE_MICROSOFT_TENANT":
        problem = (
            f"{variable} must name one tenant: its id (a GUID) or a verified domain such as contoso.onmicrosoft.com,"
            " not common, organizations or consumers"
        )
    else:
        problem = f"{variable} is not set"
    return f"tenant-wide Microsoft 365 cannot be connected: {problem}; {then}"


async def _prove(config: CalendarConfig, tenant_id: str) -> None:
    async with outbound.guarded_session(
        config.allowed_networks, user_agent="coursewire-tenant/1", timeout=PROVE_TIMEOUT
    ) as session:
        await asyncio.wait_for(tenant.prove(config, session, tenant_id), PROVE_TIMEOUT)


def _redact(text: str, config: CalendarConfig) -> str:
    """`text` without the client secret, should a remote answer ever echo it."""
    secret = config.microsoft_client_secret
    return text.replace(secret, "***") if secret else text


def get_calendar_tenant() -> dict[str, Any]:
    """The connected tenant (TenantState.as_api), or {"Enabled": false} when none ever was; administrators only
    (a Read Only key too is refused, as for the list of connections)."""
    access.require_admin(context.actor(), "read the Microsoft 365 tenant")
    state = calendar_tenant.tenant_state(context.services().db)
    return state.as_api() if state is not None else {"Enabled": False}


def connect_calendar_tenant(body: dict[str, Any] | None = None) -> dict[str, Any]:
    """connect_tenant with the server's settings; the body, if any, is `{}`."""
    services = context.services()
    return connect_tenant(services.db, context.actor(), services.settings.calendar).as_api()


def disconnect_calendar_tenant(KeepEvents: bool = False) -> tuple[None, int]:
    """storage.calendar_tenant.disable_tenant; 204 whether or not a tenant was connected."""
    calendar_tenant.disable_tenant(context.services().db, context.actor(), keep_events=KeepEvents)
    return None, 204
