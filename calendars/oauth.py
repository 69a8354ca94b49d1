"""OAuth 2.0 for Microsoft 365 and Google calendars: the authorization request (authorization code with PKCE S256
and `state`), the code exchange with the account's address, and `OAuthTokens`, the worker's access tokens
(refreshed a minute before they expire, rotated refresh tokens kept, a refresh refused for good reported as
calendars.model.AuthorizationLost).

Protocols: RFC 6749 §4.1 (authorization code), RFC 7636 (PKCE), RFC 6749 §6 (refresh); Microsoft identity
platform v2.0 (`<login>/<tenant>/oauth2/v2.0/authorize|token`, `offline_access` for a refresh token, refresh
tokens rotated on every use while the old one stays valid; `invalid_grant` with AADSTS700082 after 90 days
unused, AADSTS50173 after a password change or revocation); Google OAuth 2.0 for web server apps
(`access_type=offline` for a refresh token, `prompt=consent` so one is issued again on a new consent,
`invalid_grant` "Token has been expired or revoked."). Notes: ../shared/reference/notes/calendar-sync.md §2.1-2.2.

authlib builds the requests (`prepare_grant_uri`, `prepare_token_request`, `create_s256_code_challenge`,
`generate_token`); the requests go through aiohttp, not authlib's httpx client, because: that client warns
(AuthlibDeprecationWarning, "please use httpx2") when it is imported with httpx rather than httpx2, which the
test suite turns into an error, and httpx2 is not a dependency; its expiry check reads the wall clock
(`time.time()`) where coursewire runs every "now" on the database's clock, which tests move by hand; and the
calendar worker already holds one aiohttp session (guarded against SSRF) that the token refreshes share.

Nothing here logs or returns a token in a message: errors carry the provider's `error` and
`error_description` only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from calendars.config import CalendarConfig
from calendars.model import AuthorizationLost, ProviderError, Rejected, Throttled, Unavailable
from storage import calendar
from storage.db import Database, iso, parse_iso
from storage.secrets import SecretBox, SecretKeyError

log = logging.getLogger(__name__)

OAUTH_PROVIDERS = ("Microsoft365", "Google")
SCOPES: Mapping[str, tuple[str, ...]] = {
    # Calendars.ReadWrite: write events in the person's calendar; offline_access: a refresh token; User.Read,
    # openid and email: who signed in (the id_token's claims, or Graph /me).
    "Microsoft365": ("offline_access", "Calendars.ReadWrite", "User.Read", "openid", "email"),
    # calendar.events: events of the person's calendars (not the calendars themselves); calendar.calendars.readonly
    # (calendars.get) and calendar.calendarlist.readonly (calendarList list/get): whether the connected calendar
    # still exists, and where an event the person moved to another of their calendars went -- calendar.events
    # allows neither (the API's discovery document lists each method's scopes); openid and email: the id_token
    # names the account.
    "Google": (
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.calendars.readonly",
        "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
        "openid",
        "email",
    ),
}
# Google's OpenID Connect userinfo endpoint, asked only when a token answer has no id_token with an e-mail
# address (Google documents `email` in the id_token whenever the `email` scope was granted).
GOOGLE_USERINFO_URL = "https://openidconnect.googleapis.com/v1/userinfo"
# An access token is refreshed when it expires within this (calendars.model.TokenSource).
REFRESH_MARGIN = timedelta(seconds=60)
# Lifetime assumed when a token answer has no expires_in (RFC 6749 §5.1 makes it RECOMMENDED only).
DEFAULT_LIFETIME = timedelta(hours=1)
TIMEOUT = aiohttp.ClientTimeout(total=30)
# Refusals that mean the grant is gone for good: the person has to authorize again.
LOST = frozenset({"invalid_grant", "interaction_required", "consent_required"})
CLIENT_VARIABLES = {
    "Microsoft365": ("COURSEWIRE_MICROSOFT_CLIENT_ID", "COURSEWIRE_MICROSOFT_CLIENT_SECRET"),
    "Google": ("COURSEWIRE_GOOGLE_CLIENT_ID", "COURSEWIRE_GOOGLE_CLIENT_SECRET"),
}


class OAuthError(Exception):
    """The authorization server refused or failed a request of the code exchange.

    `error` and `description` are the OAuth error code and `error_description` (RFC 6749 §5.2) when the server
    gave them; the message never holds a token.
    """

    def __init__(self, message: str, *, error: str | None = None, description: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.description = description


class NotConfigured(OAuthError):
    """The provider's OAuth client is not configured; the message names the variable to set."""


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the person (`url`) and what to keep until they come back: `state` (RFC 6749 §10.12) and the
    PKCE `code_verifier` (RFC 7636 §4.1: 43-128 unreserved characters; here 64 letters and digits)."""

    url: str
    state: str
    code_verifier: str


@dataclass(frozen=True)
class Grant:
    """The outcome of a code exchange: the account's address and the credentials to seal and store, a JSON
    object `{"refresh_token", "access_token", "expires_at"}` (expires_at: ISO 8601 UTC, storage.db.iso)."""

    account: str
    credentials: dict[str, str]

    def sealed(self, box: SecretBox) -> str:
        """The credentials as storage.calendar.connect takes them."""
        return box.seal(json.dumps(self.credentials))


def client(config: CalendarConfig, provider: str) -> tuple[str, str]:
    """`(client_id, client_secret)` of `provider` ("Microsoft365" or "Google"). Raises NotConfigured naming the
    first variable that is unset."""
    if provider not in OAUTH_PROVIDERS:
        raise ValueError(f"{provider!r} is not an OAuth provider; expected one of {', '.join(OAUTH_PROVIDERS)}")
    missing = config.missing(provider)
    if missing:
        raise NotConfigured(f"the {provider} OAuth client is not configured: set {missing}")
    if provider == "Microsoft365":
        return config.microsoft_client_id or "", config.microsoft_client_secret or ""
    return config.google_client_id or "", config.google_client_secret or ""


def authorize_endpoint(config: CalendarConfig, provider: str) -> str:
    """The authorization endpoint: `<login>/<tenant>/oauth2/v2.0/authorize` or Google's (both overridable)."""
    return config.microsoft_authorize_url if provider == "Microsoft365" else config.google_auth_url


def token_endpoint(config: CalendarConfig, provider: str) -> str:
    """The token endpoint: `<login>/<tenant>/oauth2/v2.0/token` or Google's (both overridable)."""
    return config.microsoft_token_url if provider == "Microsoft365" else config.google_token_url


def authorization_request(
    config: CalendarConfig,
    provider: str,
    redirect_uri: str,
    *,
    state: str | None = None,
    code_verifier: str | None = None,
) -> AuthorizationRequest:
    """The authorization request for `provider` (RFC 6749 §4.1.1 with RFC 7636 §4.3): response_type=code,
    client_id, redirect_uri, the provider's scopes (SCOPES), state, code_challenge (S256 of a new
    code_verifier), and for Microsoft `response_mode=query`, for Google `access_type=offline`,
    `prompt=consent` and `include_granted_scopes=true`. `state` and `code_verifier` are new random values
    unless given. Raises NotConfigured, ValueError for another provider."""
    client_id, _ = client(config, provider)
    state = state or generate_token(48)
    code_verifier = code_verifier or generate_token(64)
    extra: dict[str, str] = (
        {"response_mode": "query"}
        if provider == "Microsoft365"
        else {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}
    )
    url = prepare_grant_uri(
        authorize_endpoint(config, provider),
        client_id,
        "code",
        redirect_uri=redirect_uri,
        scope=list(SCOPES[provider]),
        state=state,
        code_challenge=create_s256_code_challenge(code_verifier),
        code_challenge_method="S256",
        **extra,
    )
    return AuthorizationRequest(str(url), state, code_verifier)


def id_token_claims(id_token: str | None) -> dict[str, Any]:
    """The claims of an id_token, read without checking its signature; {} when it is absent or not a JWT.

    Reading them unverified is what OpenID Connect Core 1.0 §3.1.3.7 allows for an id_token received directly
    from the token endpoint over TLS (the server is authenticated by TLS, not by the signature); coursewire
    uses the claims for the account's address shown on the page, never to decide who someone is.
    """
    if not id_token or id_token.count(".") != 2:
        return {}
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def account_from_claims(claims: Mapping[str, Any]) -> str | None:
    """The account's address: `email`, else Microsoft's `preferred_username` (the sign-in name, usually the
    address); None when neither is a non-empty string."""
    for name in ("email", "preferred_username"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _expiry(answer: Mapping[str, Any], now: datetime) -> datetime:
    try:
        seconds = float(answer.get("expires_in", DEFAULT_LIFETIME.total_seconds()))
    except (TypeError, ValueError):
        seconds = DEFAULT_LIFETIME.total_seconds()
    return now + timedelta(seconds=max(0.0, seconds))


def _decode_form(body: str) -> dict[str, str]:
    """authlib's form-encoded request body as the dict aiohttp sends form-encoded again."""
    return dict(parse_qsl(body, keep_blank_values=True))


async def _post_token(
    session: aiohttp.ClientSession, url: str, body: Mapping[str, str]
) -> tuple[int, dict[str, Any], str | None]:
    """POST to a token endpoint; `(status, JSON object or {}, Retry-After)`. Raises aiohttp.ClientError and
    TimeoutError as aiohttp does."""
    async with session.post(
        url, data=dict(body), headers={"Accept": "application/json"}, timeout=TIMEOUT, allow_redirects=False
    ) as response:
        text = await response.text()
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}, response.headers.get("Retry-After")


def _refusal(answer: Mapping[str, Any]) -> tuple[str | None, str | None]:
    error, description = answer.get("error"), answer.get("error_description")
    return (
        error if isinstance(error, str) else None,
        description.strip()[:500] if isinstance(description, str) else None,
    )


async def exchange_code(
    config: CalendarConfig,
    provider: str,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    session: aiohttp.ClientSession,
    now: datetime,
    *,
    google_userinfo_url: str = GOOGLE_USERINFO_URL,
) -> Grant:
    """Exchange an authorization code (RFC 6749 §4.1.3, with the PKCE code_verifier of RFC 7636 §4.5) for tokens;
    return the Grant with the account's address.

    The address comes from the id_token's `email` or `preferred_username` claim (`id_token_claims`), else from
    Graph `GET /me` (`mail`, else `userPrincipalName`) or Google's userinfo (`email`). `now` is when the answer
    counts from (expires_at). Raises OAuthError: the server refused the code (its error and description),
    answered without a refresh token, could not be reached, or did not say which account signed in;
    NotConfigured without a client.
    """
    client_id, client_secret = client(config, provider)
    body = _decode_form(
        str(
            prepare_token_request(
                "authorization_code",
                redirect_uri=redirect_uri,
                code=code,
                code_verifier=code_verifier,
                client_id=client_id,
                client_secret=client_secret,
            )
        )
    )
    try:
        status, answer, _ = await _post_token(session, token_endpoint(config, provider), body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OAuthError(f"the {provider} token endpoint could not be reached ({type(exc).__name__})") from None
    if status != 200 or not isinstance(answer.get("access_token"), str):
        error, description = _refusal(answer)
        raise OAuthError(
            f"the {provider} token endpoint refused the authorization code (HTTP {status}"
            f"{', ' + error if error else ''}{': ' + description if description else ''})",
            error=error,
            description=description,
        )
    refresh_token = answer.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise OAuthError(
            f"{provider} gave no refresh token, so the calendar could only be written for an hour;"
            " the authorization asks for offline access, which the consent must include"
        )
    access_token = str(answer["access_token"])
    account = account_from_claims(id_token_claims(answer.get("id_token")))
    if account is None:
        account = await _ask_account(config, provider, access_token, session, google_userinfo_url)
    if account is None:
        raise OAuthError(f"{provider} did not say which account signed in (no e-mail address or user name)")
    return Grant(
        account=account,
        credentials={
            "refresh_token": refresh_token,
            "access_token": access_token,
            "expires_at": iso(_expiry(answer, now)) or "",
        },
    )


async def _ask_account(
    config: CalendarConfig, provider: str, access_token: str, session: aiohttp.ClientSession, google_userinfo_url: str
) -> str | None:
    """The account's address from Graph /me or Google's userinfo endpoint; None when it says nothing usable."""
    url = f"{config.graph_url}/me" if provider == "Microsoft365" else google_userinfo_url
    try:
        async with session.get(
            url, headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT, allow_redirects=False
        ) as response:
            if response.status != 200:
                return None
            me = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(me, dict):
        return None
    for name in ("mail", "userPrincipalName", "email"):
        value = me.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class OAuthTokens:
    """Access tokens for one OAuth calendar connection (calendars.model.TokenSource), for the worker.

    Credentials are read from the connection row (sealed JSON, storage.calendar.connection_by_id: a connection
    being removed still needs them to delete its events) and kept in memory; before a token expires within
    REFRESH_MARGIN the row is read again (another worker may have refreshed it) and, if still due, refreshed
    at the token endpoint (RFC 6749 §6). A new refresh token in the answer (Microsoft rotates them on every
    use) is stored at once with the new access token (storage.calendar.update_credentials); without one, the
    old refresh token is kept. `clock` defaults to the database's.

    Raises from `access_token` and `refresh`: AuthorizationLost when the refresh is refused for good
    (`invalid_grant`, e.g. AADSTS700082 expired after 90 days unused, AADSTS50173 password changed or grant
    revoked, Google "Token has been expired or revoked."; `interaction_required`), when the connection is gone
    or its credentials no longer decrypt; Rejected when the server refuses coursewire's client itself
    (`invalid_client`, `unauthorized_client`: the operator's client id or secret, named in the message);
    Throttled (429, Retry-After) or Unavailable (unreachable, 5xx, an answer without a token) otherwise.
    """

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        config: CalendarConfig,
        connection_id: str,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.box = box
        self.config = config
        self.connection_id = connection_id
        self.session = session
        self.clock = clock or db.clock
        self._credentials: dict[str, str] | None = None
        self._provider: str | None = None
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        """A valid access token, refreshed first when it expires within REFRESH_MARGIN."""
        async with self._lock:
            credentials = self._credentials
            if credentials is None or self._due(credentials):
                credentials = await asyncio.to_thread(self._load)
            if self._due(credentials):
                credentials = await self._refresh(credentials)
            return credentials["access_token"]

    async def refresh(self) -> str:
        """A new access token, whatever the expiry of the current one (after the provider answered 401)."""
        async with self._lock:
            credentials = await asyncio.to_thread(self._load)
            return (await self._refresh(credentials))["access_token"]

    def _due(self, credentials: Mapping[str, str]) -> bool:
        expires_at = parse_iso(credentials.get("expires_at") or None)
        return not credentials.get("access_token") or expires_at is None or expires_at - REFRESH_MARGIN <= self.clock()

    def _load(self) -> dict[str, str]:
        connection = calendar.connection_by_id(self.db, self.connection_id)
        if connection is None:
            raise AuthorizationLost("the calendar connection no longer exists")
        if connection.provider not in OAUTH_PROVIDERS:
            raise Rejected(f"a {connection.provider} connection has no OAuth tokens")
        try:
            stored = json.loads(self.box.open(connection.credentials))
        except SecretKeyError:
            raise AuthorizationLost(
                "the stored authorization no longer decrypts (COURSEWIRE_SECRET_KEY changed); authorize again"
            ) from None
        except ValueError:
            raise AuthorizationLost("the stored authorization is unreadable; authorize again") from None
        if not isinstance(stored, dict) or not isinstance(stored.get("refresh_token"), str):
            raise AuthorizationLost("the stored authorization has no refresh token; authorize again")
        self._provider = connection.provider
        self._credentials = {k: str(v) for k, v in stored.items() if isinstance(v, str | int | float)}
        return self._credentials

    async def _refresh(self, credentials: dict[str, str]) -> dict[str, str]:
        provider = self._provider or "Microsoft365"
        try:
            client_id, client_secret = client(self.config, provider)
        except NotConfigured as exc:
            raise Rejected(str(exc)) from None
        params = {"refresh_token": credentials["refresh_token"]}
        if provider == "Microsoft365":
            # The v2.0 endpoint wants the scopes again on a refresh (the same or fewer than granted).
            params["scope"] = " ".join(SCOPES[provider])
        body = _decode_form(
            str(prepare_token_request("refresh_token", client_id=client_id, client_secret=client_secret, **params))
        )
        now = self.clock()
        try:
            status, answer, retry_after = await _post_token(self.session, token_endpoint(self.config, provider), body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the {provider} token endpoint could not be reached ({type(exc).__name__})") from None
        if status == 200 and isinstance(answer.get("access_token"), str) and answer["access_token"]:
            fresh = {
                "refresh_token": str(answer.get("refresh_token") or credentials["refresh_token"]),
                "access_token": str(answer["access_token"]),
                "expires_at": iso(_expiry(answer, now)) or "",
            }
            sealed = self.box.seal(json.dumps(fresh))
            await asyncio.to_thread(calendar.update_credentials, self.db, self.connection_id, sealed)
            self._credentials = fresh
            return fresh
        raise _refresh_error(provider, status, answer, retry_after)


def _refresh_error(provider: str, status: int, answer: Mapping[str, Any], retry_after: str | None) -> ProviderError:
    error, description = _refusal(answer)
    said = f"{error}{': ' + description if description else ''}" if error else f"HTTP {status}"
    if error in LOST:
        return AuthorizationLost(f"{provider} refused to refresh the authorization ({said}); authorize again")
    if error in ("invalid_client", "unauthorized_client"):
        variables = " and ".join(CLIENT_VARIABLES[provider])
        return Rejected(f"{provider} refused coursewire's OAuth client ({said}); check {variables}")
    seconds = _seconds(retry_after)
    if status == 429:
        return Throttled(f"{provider} token endpoint: too many requests ({said})", retry_after=seconds)
    return Unavailable(f"{provider} token endpoint answered HTTP {status} ({said})", retry_after=seconds)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
