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
from storage.calendar import Connection
from storage.db import Database
from storage.secrets import SecretBox


def open_provider(
    connection: Connection, session: aiohttp.ClientSession, db: Database, box: SecretBox, config: CalendarConfig
) -> Provider:
    """The Provider writing to `connection`'s calendar through `session`.

    Microsoft 365 and Google use OAuth access tokens (calendars.oauth.OAuthTokens refreshes them and keeps
    rotated refresh tokens); CalDAV uses the stored user name and app password. Raises SecretKeyError when the
    credentials do not decrypt (another COURSEWIRE_SECRET_KEY), ValueError for an unknown provider.
    """
    if connection.provider == "CalDAV":
        secret = json.loads(box.open(connection.credentials))
        assert connection.calendar, "a CalDAV connection always names its calendar"
        return CalDAVProvider(session, connection.calendar, secret["username"], secret["password"])
    tokens = OAuthTokens(db, box, config, connection.id, session)
    if connection.provider == "Microsoft365":
        return GraphProvider(session, config.graph_url, tokens, connection.calendar or None)
    if connection.provider == "Google":
        return GoogleProvider(session, config.google_calendar_url, tokens, connection.calendar or "primary")
    raise ValueError(f"unknown calendar provider {connection.provider!r}")
