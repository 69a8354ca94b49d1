"""calendars.oauth against the fake Microsoft and Google authorization servers: the authorization URL each provider
needs, PKCE, the code exchange and the account it names, and the worker's tokens (refreshed a minute before they
expire on the injected clock, rotated refresh tokens kept, a refused refresh reported as AuthorizationLost)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fakes.identity import GOOGLE, MICROSOFT, FakeIdentity
from pages_support import consent, enable, identity, make_user, query_of
from support import Clock

from calendars import oauth
from calendars.config import CalendarConfig
from calendars.model import AuthorizationLost, Rejected
from storage import calendar
from storage.db import Database
from storage.models import CLI
from storage.secrets import SecretBox

__all__ = ["identity"]  # the fixture, imported for pytest

T = TypeVar("T")
REDIRECT = "https://lms.contoso.example/calendar/oauth/microsoft"
CLIENT_KEY = "client-key-for-tests"  # a client secret as the configuration holds one


def run(make: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    """Run a coroutine that needs an HTTP session, closing the session after."""

    async def go() -> T:
        async with aiohttp.ClientSession() as http:
            return await make(http)

    return asyncio.run(go())


def authorize(
    config: CalendarConfig, provider: str, redirect: str = REDIRECT
) -> tuple[oauth.AuthorizationRequest, str]:
    """An authorization request accepted at the fake's consent page: the request and the code sent back."""
    request = oauth.authorization_request(config, provider, redirect)
    back = query_of(consent(request.url))
    assert back["state"] == request.state
    return request, back["code"]


def grant(config: CalendarConfig, provider: str, db: Database) -> oauth.Grant:
    request, code = authorize(config, provider)
    return run(
        lambda http: oauth.exchange_code(config, provider, code, request.code_verifier, REDIRECT, http, db.clock())
    )


def connected(db: Database, box: SecretBox, config: CalendarConfig, provider: str) -> tuple[str, oauth.Grant]:
    """A person with a calendar of `provider` connected through the fake; returns the connection id and grant."""
    enable(db, Microsoft365=True, Google=True)
    user_id = make_user(db)
    given = grant(config, provider, db)
    calendar.connect(db, CLI, user_id, provider, account=given.account, calendar=None, credentials=given.sealed(box))
    connection = calendar.active_connection(db, user_id)
    assert connection is not None
    return connection.id, given


def stored(db: Database, box: SecretBox, connection_id: str) -> dict[str, Any]:
    connection = calendar.connection_by_id(db, connection_id)
    assert connection is not None
    return dict(json.loads(box.open(connection.credentials)))


@pytest.fixture
def box(db: Database) -> SecretBox:
    return SecretBox.for_database(db.path)


# -- authorization URLs -------------------------------------------------------------------------------------


def test_microsoft_authorization_url_asks_for_a_refresh_token_with_pkce_and_state() -> None:
    """Microsoft's v2.0 endpoint of the configured tenant, the calendar scopes with offline_access (a refresh
    token), S256 PKCE and the state; response_mode=query so the code comes back in the query."""
    config = CalendarConfig(
        microsoft_client_id="cid", microsoft_client_secret=CLIENT_KEY, microsoft_tenant="contoso.example"
    )
    request = oauth.authorization_request(config, "Microsoft365", REDIRECT)
    assert request.url.startswith("https://login.microsoftonline.com/contoso.example/oauth2/v2.0/authorize?")
    query = query_of(request.url)
    assert query["client_id"] == "cid"
    assert query["response_type"] == "code"
    assert query["redirect_uri"] == REDIRECT
    assert query["scope"].split() == ["offline_access", "Calendars.ReadWrite", "User.Read", "openid", "email"]
    assert query["state"] == request.state
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == create_s256_code_challenge(request.code_verifier)
    assert query["response_mode"] == "query"
    assert CLIENT_KEY not in request.url


def test_google_authorization_url_asks_for_offline_access_and_consent() -> None:
    """Google: access_type=offline and prompt=consent (a refresh token on every new consent),
    include_granted_scopes=true, the calendar.events scope and the two read-only ones the two-way mirror needs
    (calendars.get, calendarList), PKCE S256."""
    config = CalendarConfig(google_client_id="gid", google_client_secret=CLIENT_KEY)
    request = oauth.authorization_request(config, "Google", "https://lms.contoso.example/calendar/oauth/google")
    assert request.url.startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    query = query_of(request.url)
    assert query["access_type"] == "offline"
    assert query["prompt"] == "consent"
    assert query["include_granted_scopes"] == "true"
    assert query["scope"].split() == [
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.calendars.readonly",
        "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
        "openid",
        "email",
    ]
    assert query["code_challenge"] == create_s256_code_challenge(request.code_verifier)
    assert query["code_challenge_method"] == "S256"


def test_each_request_has_its_own_state_and_a_valid_code_verifier() -> None:
    """State and code_verifier are new random values every time; the verifier is 43-128 unreserved characters
    (RFC 7636 §4.1)."""
    config = CalendarConfig(google_client_id="gid", google_client_secret=CLIENT_KEY)
    requests = [oauth.authorization_request(config, "Google", REDIRECT) for _ in range(20)]
    assert len({r.state for r in requests}) == 20
    assert len({r.code_verifier for r in requests}) == 20
    for r in requests:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", r.code_verifier)
        assert len(r.state) >= 32


def test_an_unconfigured_provider_names_the_missing_variable() -> None:
    """Without a client the request is refused, naming the variable the operator has to set."""
    with pytest.raises(oauth.NotConfigured, match="COURSEWIRE_GOOGLE_CLIENT_SECRET"):
        oauth.authorization_request(CalendarConfig(google_client_id="gid"), "Google", REDIRECT)
    with pytest.raises(oauth.NotConfigured, match="COURSEWIRE_MICROSOFT_CLIENT_ID"):
        oauth.authorization_request(CalendarConfig(), "Microsoft365", REDIRECT)


def test_overridden_endpoints_are_used() -> None:
    """The base URLs come from the configuration (tests and sovereign clouds point them elsewhere)."""
    config = CalendarConfig(
        microsoft_client_id="cid",
        microsoft_client_secret=CLIENT_KEY,
        microsoft_login_url="https://login.microsoftonline.us",
    )
    assert oauth.authorization_request(config, "Microsoft365", REDIRECT).url.startswith(
        "https://login.microsoftonline.us/common/oauth2/v2.0/authorize?"
    )
    assert oauth.token_endpoint(config, "Microsoft365") == "https://login.microsoftonline.us/common/oauth2/v2.0/token"


# -- code exchange ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", [MICROSOFT, GOOGLE])
def test_code_exchange_names_the_account_and_keeps_a_refresh_token(
    identity: FakeIdentity, db: Database, clock: Clock, provider: str
) -> None:
    """The code and its verifier give tokens; the account's address is read from the id_token's claims (no
    further request), and the credentials to store hold the refresh token and the access token's expiry."""
    given = grant(identity.config(), provider, db)
    assert given.account == identity.accounts[provider]
    assert set(given.credentials) == {"refresh_token", "access_token", "expires_at"}
    assert given.credentials["expires_at"] == "2030-03-01T09:00:00.000Z"  # the clock's 08:00 + expires_in 3600
    assert identity.token_owner(given.credentials["access_token"]) == identity.accounts[provider]


def test_the_code_is_bound_to_its_code_verifier(identity: FakeIdentity, db: Database) -> None:
    """PKCE: a code exchanged with another verifier is refused (a stolen code is useless), and a code works
    once."""
    config = identity.config()
    request, code = authorize(config, MICROSOFT)
    other = oauth.authorization_request(config, MICROSOFT, REDIRECT).code_verifier
    with pytest.raises(oauth.OAuthError, match="AADSTS501481") as refused:
        run(lambda http: oauth.exchange_code(config, MICROSOFT, code, other, REDIRECT, http, db.clock()))
    assert refused.value.error == "invalid_grant"
    with pytest.raises(oauth.OAuthError, match="already redeemed"):
        run(
            lambda http: oauth.exchange_code(config, MICROSOFT, code, request.code_verifier, REDIRECT, http, db.clock())
        )


def test_the_code_is_bound_to_its_redirect_uri(identity: FakeIdentity, db: Database) -> None:
    """The redirect_uri of the exchange must be the authorization request's (RFC 6749 §4.1.3)."""
    config = identity.config()
    request, code = authorize(config, GOOGLE)
    with pytest.raises(oauth.OAuthError) as refused:
        run(
            lambda http: oauth.exchange_code(
                config, GOOGLE, code, request.code_verifier, "https://evil.example/cb", http, db.clock()
            )
        )
    assert refused.value.error == "invalid_grant"


def test_account_from_graph_me_when_the_id_token_names_none(identity: FakeIdentity, db: Database) -> None:
    """An id_token without `email` or `preferred_username`: the address comes from Graph /me."""
    identity.email_claims = False
    config = identity.config(graph_url=f"{identity.base_url}/v1.0")
    assert grant(config, MICROSOFT, db).account == identity.accounts[MICROSOFT]


def test_id_token_claims_are_read_without_a_signature() -> None:
    """Claims of a JWT, or {} for anything that is not one (never an exception)."""
    assert oauth.id_token_claims("e30.eyJlbWFpbCI6ImFAYi5leGFtcGxlIn0.") == {"email": "a@b.example"}
    for junk in (None, "", "abc", "a.b.c", "a.!!!.c", "e30.WzFd.x"):
        assert oauth.id_token_claims(junk) == {}


# -- the worker's tokens ------------------------------------------------------------------------------------


def test_access_token_is_reused_until_a_minute_before_it_expires(
    identity: FakeIdentity, db: Database, clock: Clock, box: SecretBox
) -> None:
    """No refresh while the token has more than a minute left; one refresh once it has less, on the db clock."""
    connection_id, given = connected(db, box, identity.config(), MICROSOFT)

    async def token_at(http: aiohttp.ClientSession) -> list[str]:
        tokens = oauth.OAuthTokens(db, box, identity.config(), connection_id, http)
        seen = [await tokens.access_token()]
        clock.advance(minutes=58, seconds=59)  # 61 s left
        seen.append(await tokens.access_token())
        clock.advance(seconds=2)  # 59 s left
        seen.append(await tokens.access_token())
        seen.append(await tokens.access_token())
        return seen

    seen = run(token_at)
    assert seen[0] == seen[1] == given.credentials["access_token"]
    assert seen[2] != seen[1] and seen[3] == seen[2]
    assert identity.grant_count("refresh_token") == 1
    assert identity.token_owner(seen[2]) == identity.accounts[MICROSOFT]
    assert stored(db, box, connection_id)["expires_at"] == "2030-03-01T09:59:01.000Z"


def test_rotated_refresh_token_is_stored_and_used_next(
    identity: FakeIdentity, db: Database, clock: Clock, box: SecretBox
) -> None:
    """Microsoft answers every refresh with a new refresh token: it is stored with the new access token, and the
    next refresh (another worker, after a restart) uses it."""
    connection_id, given = connected(db, box, identity.config(), MICROSOFT)
    first = given.credentials["refresh_token"]

    async def refresh_twice(http: aiohttp.ClientSession) -> None:
        await oauth.OAuthTokens(db, box, identity.config(), connection_id, http).refresh()
        identity.revoke_token(first)  # from now on only the rotated token works
        await oauth.OAuthTokens(db, box, identity.config(), connection_id, http).refresh()

    run(refresh_twice)
    after = stored(db, box, connection_id)
    assert after["refresh_token"] not in (first, "")
    assert identity.grant_count("refresh_token", MICROSOFT) == 2
    assert identity.token_owner(after["access_token"]) == identity.accounts[MICROSOFT]


def test_google_refresh_keeps_the_refresh_token(identity: FakeIdentity, db: Database, box: SecretBox) -> None:
    """Google does not rotate: the answer has no refresh_token, and the one stored stays."""
    connection_id, given = connected(db, box, identity.config(), GOOGLE)
    token = run(lambda http: oauth.OAuthTokens(db, box, identity.config(), connection_id, http).refresh())
    after = stored(db, box, connection_id)
    assert after["refresh_token"] == given.credentials["refresh_token"]
    assert after["access_token"] == token != given.credentials["access_token"]


@pytest.mark.parametrize(
    ("provider", "how", "said"),
    [
        (MICROSOFT, "revoked", "AADSTS50173"),
        (MICROSOFT, "expired", "AADSTS700082"),
        (GOOGLE, "revoked", "Token has been expired or revoked."),
    ],
)
def test_a_refused_refresh_means_authorization_lost(
    identity: FakeIdentity, db: Database, clock: Clock, box: SecretBox, provider: str, how: str, said: str
) -> None:
    """invalid_grant (revoked consent, a changed password, 90 days unused) raises AuthorizationLost with the
    provider's reason, and no token in the message; the stored credentials are left as they were."""
    connection_id, given = connected(db, box, identity.config(), provider)
    identity.revoke(provider, how=how)
    clock.advance(hours=1)
    with pytest.raises(AuthorizationLost, match=re.escape(said)) as lost:
        run(lambda http: oauth.OAuthTokens(db, box, identity.config(), connection_id, http).access_token())
    assert "invalid_grant" in str(lost.value)
    for secret in given.credentials.values():
        assert secret not in str(lost.value)
    assert stored(db, box, connection_id) == given.credentials


def test_a_refused_client_is_not_the_persons_fault(identity: FakeIdentity, db: Database, box: SecretBox) -> None:
    """A wrong client secret (the operator's) is Rejected naming the variables, not AuthorizationLost."""
    connection_id, _ = connected(db, box, identity.config(), MICROSOFT)
    wrong = identity.config(microsoft_client_secret=CLIENT_KEY)
    with pytest.raises(Rejected, match="COURSEWIRE_MICROSOFT_CLIENT_SECRET"):
        run(lambda http: oauth.OAuthTokens(db, box, wrong, connection_id, http).refresh())
    assert not isinstance(Rejected("x"), AuthorizationLost)


def test_a_connection_being_removed_still_has_tokens_and_a_forgotten_one_has_none(
    identity: FakeIdentity, db: Database, box: SecretBox
) -> None:
    """Disconnecting with event removal keeps the connection until the worker has deleted its events, so its
    tokens still work; once it is gone, asking for a token is AuthorizationLost."""
    connection_id, given = connected(db, box, identity.config(), MICROSOFT)
    connection = calendar.connection_by_id(db, connection_id)
    assert connection is not None
    calendar.disconnect(db, CLI, connection.user_id, keep_events=False)
    token = run(lambda http: oauth.OAuthTokens(db, box, identity.config(), connection_id, http).access_token())
    assert token == given.credentials["access_token"]
    calendar.forget_connection(db, connection_id)
    with pytest.raises(AuthorizationLost, match="no longer exists"):
        run(lambda http: oauth.OAuthTokens(db, box, identity.config(), connection_id, http).access_token())


def test_tokens_are_never_logged(
    identity: FakeIdentity, db: Database, clock: Clock, box: SecretBox, caplog: pytest.LogCaptureFixture
) -> None:
    """Exchange, refresh and a refused refresh log nothing that holds a token or the client secret."""
    caplog.set_level(logging.DEBUG)
    config = identity.config()
    connection_id, given = connected(db, box, config, MICROSOFT)
    clock.advance(hours=2)
    fresh = run(lambda http: oauth.OAuthTokens(db, box, config, connection_id, http).access_token())
    identity.revoke(MICROSOFT)
    with pytest.raises(AuthorizationLost):
        run(lambda http: oauth.OAuthTokens(db, box, config, connection_id, http).refresh())
    secrets = [*given.credentials.values(), fresh, stored(db, box, connection_id)["refresh_token"], "ms-secret-0001"]
    for record in caplog.records:
        for secret in secrets:
            assert secret not in record.getMessage()
