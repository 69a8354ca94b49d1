"""Fake Microsoft identity platform (v2.0) and Google OAuth 2.0 authorization servers on 127.0.0.1, in a thread.

What they do is what the providers document, as far as coursewire depends on it:

- Authorize (GET): checks the client id, `response_type=code`, a redirect URI, PKCE (`code_challenge` with
  `code_challenge_method=S256`, RFC 7636 §4.3) and the scopes that yield a refresh token (`offline_access` for
  Microsoft, `access_type=offline` for Google), then shows a consent page signed in as `accounts[provider]` with
  Accept and Cancel buttons. Accept redirects to the redirect URI with `code` and `state` (RFC 6749 §4.1.2);
  Cancel with `error=access_denied` (Microsoft adds AADSTS65004 in `error_description`). With
  `admin_approval_required` set the page says "Need admin approval" instead, and its one button redirects with
  `error=access_denied` and AADSTS90094 "The grant requires admin permission" (Microsoft), or
  `error=admin_policy_enforced` (Google shows that on its own page; the fake sends it back so the switch works
  the same for both).
- Token (POST, form-encoded): authenticates the client (client_secret_post or HTTP Basic, RFC 6749 §2.3.1;
  `invalid_client` 401 otherwise). `authorization_code`: the code must be unused and under 10 minutes old,
  `redirect_uri` identical to the authorization request's (RFC 6749 §4.1.3), and the code_verifier's S256 equal
  to the code_challenge (RFC 7636 §4.6); `invalid_grant` 400 otherwise. Answers access_token, refresh_token,
  expires_in, scope, token_type and an id_token. `refresh_token`: Microsoft rotates (a new refresh token in
  every answer; the old one keeps working, as Microsoft documents), Google does not (no refresh_token in the
  answer). A revoked or expired refresh token gets `invalid_grant` with AADSTS50173 / AADSTS700082 (Microsoft)
  or "Token has been expired or revoked." (Google).
- id_tokens are NOT signed (`alg: none`, empty signature): coursewire reads their claims without verifying
  them, as OpenID Connect Core §3.1.3.7 allows for a token received directly from the token endpoint over TLS.
  Claims: iss, aud, sub, iat, exp, and `email` (Google also `email_verified`), `preferred_username` and
  `name` (Microsoft), unless `email_claims` is False (then no address at all, for the Graph /me fallback).
- Client credentials (POST token, `grant_type=client_credentials`, Microsoft only; RFC 6749 §4.4 and the
  Microsoft identity platform's client credentials flow): the client authenticates as above, `scope` must be
  `https://graph.microsoft.com/.default` (else 400 `invalid_scope`, AADSTS1002012); the answer has
  access_token, expires_in and token_type, no refresh token and no id_token. `expire_client_secret()` makes
  the next requests fail with 401 `invalid_client` AADSTS7000222 (the secret expired). Such tokens are
  application tokens: `app_token(token)` tells the Graph fake (its `APP` principal).
- `GET /v1.0/me` (a stand-in for Graph's, used only for that fallback): `mail`, `userPrincipalName` for a valid
  access token.
- `token_owner(access_token)` tells the Graph and Google fakes whose a token is (None: unknown or expired).

Time is `clock()` (seconds since the epoch; tests pass their own). Each token request is recorded in
`token_requests` (grant type, provider; no secrets) for assertions.
"""

from __future__ import annotations

import base64
import hashlib
import html
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from calendars.config import CalendarConfig

MICROSOFT = "Microsoft365"
GOOGLE = "Google"
CODE_LIFETIME = 600
MICROSOFT_REQUIRED_SCOPES = {"offline_access", "Calendars.ReadWrite"}
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
APP_ACCOUNT = "*application*"
GOOGLE_REQUIRED_SCOPES = {"https://www.googleapis.com/auth/calendar.events"}
REVOKED_GOOGLE = "Token has been expired or revoked."
REVOKED_MICROSOFT = (
    "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed. The user"
    " might have changed or reset their password."
)
EXPIRED_MICROSOFT = (
    "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2030-01-01T00:00:00Z"
    " and was inactive for 90.00:00:00."
)


@dataclass
class _Pending:
    provider: str
    client_id: str
    redirect_uri: str
    state: str | None
    challenge: str
    scope: str


@dataclass
class _Code:
    provider: str
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    account: str
    issued: float
    used: bool = False


@dataclass
class _Refresh:
    provider: str
    client_id: str
    account: str
    scope: str
    revoked: str | None = None  # None, "revoked" or "expired"


@dataclass
class FakeIdentity:
    """Both fake authorization servers on one port: Microsoft under `/microsoft/<tenant>/oauth2/v2.0/`,
    Google under `/google/`. Use as a context manager (starts and stops the thread)."""

    accounts: dict[str, str] = field(
        default_factory=lambda: {MICROSOFT: "alice@contoso.example", GOOGLE: "alice@gmail.example"}
    )
    clients: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            MICROSOFT: ("ms-client-0001", "ms-secret-0001"),
            GOOGLE: ("g-client-0001.apps.example", "g-secret-0001"),
        }
    )
    tenant: str = "common"
    access_lifetime: int = 3600
    admin_approval_required: bool = False
    email_claims: bool = True
    clock: Callable[[], float] = time.time
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.secret_expired = False
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, tuple[str, str, float]] = {}  # token -> (provider, account, expires)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> FakeIdentity:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-identity", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeIdentity:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def config(self, **changes: Any) -> CalendarConfig:
        """A CalendarConfig whose clients and endpoints are this fake's (127.0.0.0/8 allowed outbound)."""
        values: dict[str, Any] = {
            "microsoft_client_id": self.clients[MICROSOFT][0],
            "microsoft_client_secret": self.clients[MICROSOFT][1],
            "microsoft_tenant": self.tenant,
            "microsoft_login_url": f"{self.base_url}/microsoft",
            "google_client_id": self.clients[GOOGLE][0],
            "google_client_secret": self.clients[GOOGLE][1],
            "google_auth_url": f"{self.base_url}/google/auth",
            "google_token_url": f"{self.base_url}/google/token",
            "allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),),
        }
        values.update(changes)
        return CalendarConfig(**values)

    # -- what tests ask -----------------------------------------------------------------------------------

    def token_owner(self, access_token: str) -> str | None:
        """The account an access token was issued to; None when unknown or expired."""
        with self._lock:
            found = self._access.get(access_token)
        if found is None or found[2] <= self.clock():
            return None
        return found[1]

    def token_provider(self, access_token: str) -> str | None:
        """Which provider ("Microsoft365" or "Google") issued a live access token; None otherwise."""
        with self._lock:
            found = self._access.get(access_token)
        return found[0] if found and found[2] > self.clock() else None

    def revoke(self, provider: str, account: str | None = None, *, how: str = "revoked") -> int:
        """Make the refresh tokens of `provider` (of `account`, or all) fail with invalid_grant: `how` is
        "revoked" (AADSTS50173, a changed password) or "expired" (AADSTS700082, 90 days unused). Returns how
        many tokens were affected."""
        count = 0
        with self._lock:
            for grant in self._refresh.values():
                if grant.provider == provider and account in (None, grant.account):
                    grant.revoked = how
                    count += 1
        return count

    def revoke_token(self, refresh_token: str, how: str = "revoked") -> None:
        """Make one refresh token fail with invalid_grant (see `revoke`)."""
        with self._lock:
            self._refresh[refresh_token].revoked = how

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working (a provider answering 401 before expires_in)."""
        with self._lock:
            self._access = {k: (p, a, 0.0) for k, (p, a, _) in self._access.items()}

    def app_token(self, access_token: str) -> bool:
        """Whether a live access token came from the client credentials grant (an application token)."""
        return self.token_owner(access_token) == APP_ACCOUNT

    def expire_client_secret(self) -> None:
        """The application's client secret expired: every token request fails with AADSTS7000222."""
        self.secret_expired = True

    def grant_count(self, grant_type: str, provider: str | None = None) -> int:
        return sum(
            1
            for r in self.token_requests
            if r["grant_type"] == grant_type and provider in (None, r["provider"]) and r["outcome"] == "ok"
        )

    # -- protocol -----------------------------------------------------------------------------------------

    def _authorize(self, provider: str, query: dict[str, str]) -> tuple[int, str]:
        """The consent page for an authorization request, or an error page (never a redirect: RFC 6749 §4.1.2.1
        forbids redirecting to an unverified redirect URI)."""
        client_id = self.clients[provider][0]
        problems = []
        if query.get("client_id") != client_id:
            problems.append("unknown client_id")
        if query.get("response_type") != "code":
            problems.append("response_type must be code")
        redirect = query.get("redirect_uri", "")
        if urlsplit(redirect).scheme not in ("http", "https"):
            problems.append("redirect_uri missing")
        if query.get("code_challenge_method") != "S256" or len(query.get("code_challenge", "")) != 43:
            problems.append("PKCE code_challenge with method S256 required")
        scopes = set(query.get("scope", "").split())
        if provider == MICROSOFT and not scopes >= MICROSOFT_REQUIRED_SCOPES:
            problems.append("scope must include offline_access and Calendars.ReadWrite")
        if provider == GOOGLE and (not scopes >= GOOGLE_REQUIRED_SCOPES or query.get("access_type") != "offline"):
            problems.append("scope must include calendar.events, with access_type=offline")
        if problems:
            return 400, _page("Sign-in error", f"<p id='error'>{html.escape('; '.join(problems))}</p>")
        request_id = secrets.token_urlsafe(16)
        with self._lock:
            self._pending[request_id] = _Pending(
                provider, client_id, redirect, query.get("state"), query["code_challenge"], query.get("scope", "")
            )
        who = html.escape(self.accounts[provider])
        name = "Microsoft" if provider == MICROSOFT else "Google"
        if self.admin_approval_required:
            body = (
                f"<h1>Need admin approval</h1><p>Signed in as <span id='account'>{who}</span>.</p>"
                "<p>coursewire needs permission to access resources in your organization that only an admin can"
                " grant. Please ask an admin to grant permission to this app before you can use it.</p>"
                f"<form method='post' action='/consent'><input type='hidden' name='request' value='{request_id}'>"
                "<button name='decision' value='admin'>Return to the application without granting consent</button>"
                "</form>"
            )
            return 200, _page(f"{name}: need admin approval", body)
        listed = "".join(f"<li>{html.escape(s)}</li>" for s in sorted(scopes))
        body = (
            f"<h1>Permissions requested</h1><p>Signed in as <span id='account'>{who}</span>.</p>"
            f"<p>coursewire would like to:</p><ul>{listed}</ul>"
            f"<form method='post' action='/consent'><input type='hidden' name='request' value='{request_id}'>"
            "<button name='decision' value='accept'>Accept</button> "
            "<button name='decision' value='cancel'>Cancel</button></form>"
        )
        return 200, _page(f"{name}: permissions requested", body)

    def _consent(self, form: dict[str, str]) -> tuple[int, str, str | None]:
        """The person's answer on the consent page: a redirect back to the client (status, body, Location)."""
        with self._lock:
            pending = self._pending.pop(form.get("request", ""), None)
        if pending is None:
            return (
                400,
                _page("Sign-in error", "<p id='error'>this sign-in request is unknown or was answered</p>"),
                None,
            )
        params: dict[str, str] = {}
        decision = form.get("decision")
        if decision == "accept" and not self.admin_approval_required:
            code = secrets.token_urlsafe(32)
            with self._lock:
                self._codes[code] = _Code(
                    pending.provider,
                    pending.client_id,
                    pending.redirect_uri,
                    pending.challenge,
                    pending.scope,
                    self.accounts[pending.provider],
                    self.clock(),
                )
            params["code"] = code
        elif decision == "admin" or self.admin_approval_required:
            if pending.provider == MICROSOFT:
                params.update(
                    error="access_denied",
                    error_description="AADSTS90094: The grant requires admin permission.",
                )
            else:
                params["error"] = "admin_policy_enforced"
        else:
            params["error"] = "access_denied"
            if pending.provider == MICROSOFT:
                params["error_description"] = "AADSTS65004: User declined to consent to access the app."
        if pending.state is not None:
            params["state"] = pending.state
        separator = "&" if urlsplit(pending.redirect_uri).query else "?"
        return 302, "", pending.redirect_uri + separator + urlencode(params)

    def _token(self, provider: str, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        grant_type = form.get("grant_type", "")
        outcome: tuple[int, dict[str, Any]]
        client_id, secret = self.clients[provider]
        given_id, given_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            given_id, _, given_secret = decoded.partition(":")
        if given_id != client_id or given_secret != secret:
            outcome = 401, _error(provider, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        elif self.secret_expired and provider == MICROSOFT:
            outcome = (
                401,
                _error(
                    provider,
                    "invalid_client",
                    f"AADSTS7000222: The provided client secret keys for app '{client_id}' are expired.",
                ),
            )
        elif grant_type == "client_credentials" and provider == MICROSOFT:
            outcome = self._client_grant(form)
        elif grant_type == "authorization_code":
            outcome = self._code_grant(provider, form)
        elif grant_type == "refresh_token":
            outcome = self._refresh_grant(provider, form)
        else:
            outcome = 400, _error(provider, "unsupported_grant_type", f"grant_type {grant_type!r}")
        self.token_requests.append(
            {
                "provider": provider,
                "grant_type": grant_type,
                "outcome": "ok" if outcome[0] == 200 else str(outcome[1].get("error")),
            }
        )
        return outcome

    def _code_grant(self, provider: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            code = self._codes.get(form.get("code", ""))
            if code is None or code.provider != provider or code.used:
                return 400, _error(
                    provider,
                    "invalid_grant",
                    "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code"
                    " or use an existing refresh token.",
                )
            code.used = True
        if self.clock() - code.issued > CODE_LIFETIME:
            return 400, _error(provider, "invalid_grant", "AADSTS70008: The provided authorization code has expired.")
        if form.get("redirect_uri") != code.redirect_uri:
            return 400, _error(
                provider, "invalid_grant", "AADSTS50148: redirect_uri does not match the authorization request."
            )
        verifier = form.get("code_verifier", "")
        if not verifier or _s256(verifier) != code.challenge:
            return 400, _error(
                provider,
                "invalid_grant",
                "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization"
                " request.",
            )
        refresh = secrets.token_urlsafe(32)
        with self._lock:
            self._refresh[refresh] = _Refresh(provider, code.client_id, code.account, code.scope)
        answer = self._access_answer(provider, code.account, code.scope)
        answer["refresh_token"] = refresh
        answer["id_token"] = self._id_token(provider, code.account)
        return 200, answer

    def _client_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("scope") != GRAPH_DEFAULT_SCOPE:
            return 400, _error(
                MICROSOFT,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a"
                " scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._access[token] = (MICROSOFT, APP_ACCOUNT, self.clock() + self.access_lifetime)
        return 200, {"token_type": "Bearer", "expires_in": self.access_lifetime, "access_token": token}

    def _refresh_grant(self, provider: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None or grant.provider != provider or grant.revoked:
            if provider == GOOGLE:
                return 400, {"error": "invalid_grant", "error_description": REVOKED_GOOGLE}
            said = EXPIRED_MICROSOFT if grant is not None and grant.revoked == "expired" else REVOKED_MICROSOFT
            return 400, _error(provider, "invalid_grant", said)
        answer = self._access_answer(provider, grant.account, grant.scope)
        if provider == MICROSOFT:  # rotation: a new refresh token every time; the old one stays valid
            rotated = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh[rotated] = _Refresh(provider, grant.client_id, grant.account, grant.scope)
            answer["refresh_token"] = rotated
        return 200, answer

    def _access_answer(self, provider: str, account: str, scope: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._access[token] = (provider, account, self.clock() + self.access_lifetime)
        return {"token_type": "Bearer", "access_token": token, "expires_in": self.access_lifetime, "scope": scope}

    def _id_token(self, provider: str, account: str) -> str:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com"
            if provider == GOOGLE
            else f"https://login.microsoftonline.com/{self.tenant}/v2.0",
            "aud": self.clients[provider][0],
            "sub": hashlib.sha256(account.encode()).hexdigest()[:20],
            "iat": now,
            "exp": now + 3600,
        }
        if self.email_claims:
            claims["email"] = account
            if provider == GOOGLE:
                claims["email_verified"] = True
            else:
                claims.update(preferred_username=account, name=account.split("@")[0].title())
        header = {"alg": "none", "typ": "JWT"}
        return f"{_b64(header)}.{_b64(claims)}."

    def _me(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        token = (authorization or "")[7:] if (authorization or "").startswith("Bearer ") else ""
        account = self.token_owner(token)
        if account is None:
            return 401, {"error": {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}}
        return 200, {"mail": account, "userPrincipalName": account, "displayName": account.split("@")[0].title()}


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _error(provider: str, error: str, description: str) -> dict[str, Any]:
    if provider == GOOGLE:  # Google's descriptions carry no AADSTS codes
        description = description.split(": ", 1)[-1] if description.startswith("AADSTS") else description
    return {"error": error, "error_description": description}


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )


class _Handler(BaseHTTPRequestHandler):
    fake: FakeIdentity
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests' output is theirs

    def _route(self) -> tuple[str | None, str]:
        path = urlsplit(self.path).path
        prefix = f"/microsoft/{self.fake.tenant}/oauth2/v2.0/"
        if path.startswith(prefix):
            return MICROSOFT, path[len(prefix) :]
        if path.startswith("/google/"):
            return GOOGLE, path[len("/google/") :]
        return None, path

    def do_GET(self) -> None:
        provider, rest = self._route()
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
        if provider is not None and rest in ("authorize", "auth"):
            status, body = self.fake._authorize(provider, query)
            self._send(status, body.encode(), "text/html; charset=utf-8")
        elif provider is None and rest == "/v1.0/me":
            status, answer = self.fake._me(self.headers.get("Authorization"))
            self._send(status, json.dumps(answer).encode(), "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        provider, rest = self._route()
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        if provider is None and rest == "/consent":
            status, body, location = self.fake._consent(form)
            self._send(status, body.encode(), "text/html; charset=utf-8", location)
        elif provider is not None and rest == "token":
            status, answer = self.fake._token(provider, form, self.headers.get("Authorization"))
            self._send(status, json.dumps(answer).encode(), "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str, location: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)
