"""A connection's Provider: the stored connection (storage.calendar.Connection) with its sealed credentials
opened, for the worker (calendars/worker.py)."""

from __future__ import annotations

import json

import aiohttp

from calendars.config import CalendarConfig
from calendars.model import Provider
from calendars.oauth import OAuthTokens
from calendars.providers.caldav import CalDAVProvider
from calendars.providers.google import GoogleProvider
from calendars.providers.graph import GraphProvider
from calendars.tenant import open_tenant_provider, tenant_mailbox_of
from storage.calendar import Connection
from storage.db import Database
from storage.secrets import SecretBox, SecretKeyError


def open_provider(
    connection: Connection, session: aiohttp.ClientSession, db: Database, box: SecretBox, config: CalendarConfig
) -> Provider:
    """The Provider writing to `connection`'s calendar through `session`.

    Microsoft 365 and Google use OAuth access tokens (calendars.oauth.OAuthTokens refreshes them and keeps
    rotated refresh tokens); a Microsoft 365 connection the tenant roster made (credentials `{"mode": "tenant"}`,
    calendars.tenant) writes `/users/{id}/...` with the application's token through the tenant's shared `$batch`
    sender; CalDAV uses the stored user name and app password. Raises SecretKeyError when the credentials do not
    decrypt (another COURSEWIRE_SECRET_KEY), ValueError for an unknown provider.
    """
    if connection.provider == "CalDAV":
        secret = json.loads(box.open(connection.credentials))
        assert connection.calendar, "a CalDAV connection always names its calendar"
        return CalDAVProvider(session, connection.calendar, secret["username"], secret["password"])
    if connection.provider == "Microsoft365":
        mailbox = _tenant_mailbox(connection, box)
        if mailbox is not None:
            return open_tenant_provider(connection, mailbox, session, db, config)
    tokens = OAuthTokens(db, box, config, connection.id, session)
    if connection.provider == "Microsoft365":
        return GraphProvider(session, config.graph_url, tokens, connection.calendar or None)
    if connection.provider == "Google":
        return GoogleProvider(session, config.google_calendar_url, tokens, connection.calendar or "primary")
    raise ValueError(f"unknown calendar provider {connection.provider!r}")


def _tenant_mailbox(connection: Connection, box: SecretBox) -> str | None:
    """The Graph user id of a tenant-made connection (its sealed credentials say so), else None. Credentials
    that do not open are left to OAuthTokens, which reports them as AuthorizationLost when it needs them."""
    try:
        opened = json.loads(box.open(connection.credentials))
    except (SecretKeyError, ValueError):
        return None
    return tenant_mailbox_of(opened) if isinstance(opened, dict) else None
