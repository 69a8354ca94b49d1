"""Calendar mirror settings from the environment (read once, like webhooks.config).

OAuth clients and endpoints (overridable so tests point them at local fakes):

| variable | default |
|---|---|
| COURSEWIRE_MICROSOFT_CLIENT_ID, COURSEWIRE_MICROSOFT_CLIENT_SECRET | unset: Microsoft 365 cannot be enabled |
| COURSEWIRE_MICROSOFT_TENANT | `common` |
| COURSEWIRE_MICROSOFT_LOGIN_URL | `https://login.microsoftonline.com` |
| COURSEWIRE_GRAPH_URL | `https://graph.microsoft.com/v1.0` |
| COURSEWIRE_GOOGLE_CLIENT_ID, COURSEWIRE_GOOGLE_CLIENT_SECRET | unset: Google cannot be enabled |
| COURSEWIRE_GOOGLE_AUTH_URL | `https://accounts.google.com/o/oauth2/v2/auth` |
| COURSEWIRE_GOOGLE_TOKEN_URL | `https://oauth2.googleapis.com/token` |
| COURSEWIRE_GOOGLE_CALENDAR_URL | `https://www.googleapis.com/calendar/v3` |
| COURSEWIRE_SMTP_URL | unset: no e-mail fallback (`smtp://user:pass@host:587`, `smtps://host:465`) |
| COURSEWIRE_MAIL_FROM | unset: no e-mail fallback |
| COURSEWIRE_CALENDAR_LINK_TTL | 900 seconds: how long a CalendarConnectionLink can be opened |
| COURSEWIRE_ALLOWED_NETWORKS | networks outbound requests may reach although not public (CIDR, commas) |
| COURSEWIRE_CALDAV_POLL_SECONDS | 300: how often a CalDAV calendar is read for changes (sync-collection) |
| COURSEWIRE_CALENDAR_SWEEP_SECONDS | 900: how often a Microsoft 365 or Google calendar is read without a notification |
| COURSEWIRE_CALENDAR_ROSTER_SECONDS | 300: how often tenant-wide Microsoft 365 mode looks for people to connect |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from storage.outbound import IPNetwork, parse_networks


class CalendarConfigError(ValueError):
    """A calendar variable has a value coursewire cannot use; the message names it."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    tls: bool  # smtps:// (implicit TLS); smtp:// uses STARTTLS when the server offers it
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CalendarConfig:
    microsoft_client_id: str | None = None
    microsoft_client_secret: str | None = field(default=None, repr=False)
    microsoft_tenant: str = "common"
    microsoft_login_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (an address)
    google_calendar_url: str = "https://www.googleapis.com/calendar/v3"
    smtp: SmtpSettings | None = None
    mail_from: str | None = None
    link_ttl: float = 900.0
    allowed_networks: tuple[IPNetwork, ...] = ()
    caldav_poll_seconds: float = 300.0
    sweep_seconds: float = 900.0
    roster_seconds: float = 300.0

    @property
    def microsoft_authorize_url(self) -> str:
        return f"{self.microsoft_login_url.rstrip('/')}/{self.microsoft_tenant}/oauth2/v2.0/authorize"

    @property
    def microsoft_token_url(self) -> str:
        return f"{self.microsoft_login_url.rstrip('/')}/{self.microsoft_tenant}/oauth2/v2.0/token"

    @property
    def mail_configured(self) -> bool:
        return self.smtp is not None and bool(self.mail_from)

    def missing(self, provider: str) -> str | None:
        """The first variable a provider needs that is unset (None when it can be enabled)."""
        needs = {
            "Microsoft365": (
                ("COURSEWIRE_MICROSOFT_CLIENT_ID", self.microsoft_client_id),
                ("COURSEWIRE_MICROSOFT_CLIENT_SECRET", self.microsoft_client_secret),
            ),
            "Google": (
                ("COURSEWIRE_GOOGLE_CLIENT_ID", self.google_client_id),
                ("COURSEWIRE_GOOGLE_CLIENT_SECRET", self.google_client_secret),
            ),
            "Email": (("COURSEWIRE_SMTP_URL", self.smtp), ("COURSEWIRE_MAIL_FROM", self.mail_from)),
        }.get(provider, ())
        return next((name for name, value in needs if not value), None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CalendarConfig:
        """Read the variables above. Raises CalendarConfigError naming a variable with an unusable value."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        for name, attr in (
            ("COURSEWIRE_MICROSOFT_CLIENT_ID", "microsoft_client_id"),
            ("COURSEWIRE_MICROSOFT_CLIENT_SECRET", "microsoft_client_secret"),
            ("COURSEWIRE_MICROSOFT_TENANT", "microsoft_tenant"),
            ("COURSEWIRE_MICROSOFT_LOGIN_URL", "microsoft_login_url"),
            ("COURSEWIRE_GRAPH_URL", "graph_url"),
            ("COURSEWIRE_GOOGLE_CLIENT_ID", "google_client_id"),
            ("COURSEWIRE_GOOGLE_CLIENT_SECRET", "google_client_secret"),
            ("COURSEWIRE_GOOGLE_AUTH_URL", "google_auth_url"),
            ("COURSEWIRE_GOOGLE_TOKEN_URL", "google_token_url"),
            ("COURSEWIRE_GOOGLE_CALENDAR_URL", "google_calendar_url"),
            ("COURSEWIRE_MAIL_FROM", "mail_from"),
        ):
            value = env.get(name, "").strip()
            if value:
                if attr.endswith("_url") and urlsplit(value).scheme not in ("http", "https"):
                    raise CalendarConfigError(f"{name}={value!r}: expected an http(s) URL")
                kwargs[attr] = value.rstrip("/") if attr.endswith("_url") else value
        if env.get("COURSEWIRE_SMTP_URL", "").strip():
            kwargs["smtp"] = parse_smtp_url(env["COURSEWIRE_SMTP_URL"].strip())
        if env.get("COURSEWIRE_CALENDAR_LINK_TTL", "").strip():
            text = env["COURSEWIRE_CALENDAR_LINK_TTL"].strip()
            try:
                ttl = float(text)
            except ValueError:
                ttl = -1.0
            if not 10 <= ttl <= 7 * 86400:
                raise CalendarConfigError(
                    f"COURSEWIRE_CALENDAR_LINK_TTL={text!r}: expected seconds from 10 to 604800 (7 days)"
                )
            kwargs["link_ttl"] = ttl
        for name, attr, low, high in (
            ("COURSEWIRE_CALDAV_POLL_SECONDS", "caldav_poll_seconds", 5, 86400),
            ("COURSEWIRE_CALENDAR_SWEEP_SECONDS", "sweep_seconds", 60, 7 * 86400),
            ("COURSEWIRE_CALENDAR_ROSTER_SECONDS", "roster_seconds", 30, 86400),
        ):
            text = env.get(name, "").strip()
            if text:
                try:
                    seconds = float(text)
                except ValueError:
                    seconds = -1.0
                if not low <= seconds <= high:
                    raise CalendarConfigError(f"{name}={text!r}: expected seconds from {low} to {high}")
                kwargs[attr] = seconds
        networks: list[IPNetwork] = []
        for name in ("COURSEWIRE_ALLOWED_NETWORKS", "COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS"):
            try:
                networks.extend(parse_networks(env.get(name, ""), name))
            except ValueError as exc:
                raise CalendarConfigError(str(exc)) from None
        kwargs["allowed_networks"] = tuple(dict.fromkeys(networks))
        return cls(**kwargs)  # type: ignore[arg-type]


def parse_smtp_url(text: str) -> SmtpSettings:
    """`smtp://user:pass@host:587` or `smtps://host:465` -> SmtpSettings; raises CalendarConfigError."""
    parts = urlsplit(text)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise CalendarConfigError(
            "COURSEWIRE_SMTP_URL: expected smtp://[user:password@]host[:port] or smtps://... (the value is not shown)"
        )
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 587)
    except ValueError:
        raise CalendarConfigError("COURSEWIRE_SMTP_URL: the port is not a number from 1 to 65535") from None
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
