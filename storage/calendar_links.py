"""Who may open a person's calendar page: single-use links, the page sessions they start, and the OAuth `state`
values that tie a provider's redirect back to the browser session that asked for it.

Every token handed out here is 256 bits from `secrets` and only its SHA-256 is stored, as for API keys
(storage.apikeys): a copy of the database opens no page and finishes no authorization. Rows carry their expiry
and are purged as new ones are written (`purge`), so the tables stay as small as the traffic of the last day.

- A link (`create_link`) is what `POST /odata/v2/Users({Id})/CalendarConnectionLink` and the fallback e-mails
  hand out; opening it (`redeem_link`) uses it up and starts a page session (`start_session`), whose token is
  the page's cookie and which carries the CSRF token its forms must send back.
- An OAuth state (`save_state`) is saved when the page sends the person to Microsoft or Google and taken
  (`take_state`), once, when the provider redirects back: only by the same page session (RFC 6749 §10.12,
  RFC 9700 §4.7.1), so a callback URL forged by someone else, or replayed, finishes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.db import Database, iso, parse_iso
from storage.errors import StorageError

# An expired or used link is kept this long after it expired, so opening it says "expired" or "already used"
# (what to do differs: ask for a new link, or just go on in the browser that used it) instead of "unknown".
LINK_MEMORY = timedelta(days=7)
# An expired OAuth state is kept this long, so a callback that comes too late says so ("start again") instead
# of looking forged.
STATE_MEMORY = timedelta(hours=1)
# Links one person may have (used, expired or not), and page sessions one person may have open: creating one
# more drops the oldest, so however often links are asked for (the API, a script), a person's rows stay few.
LINKS_PER_USER = 10
SESSIONS_PER_USER = 10
# OAuth states one page session may have outstanding; older ones are dropped (a person clicking Connect again
# and again, or a script doing it, keeps at most this many rows alive).
STATES_PER_SESSION = 5


class LinkRefused(StorageError):
    """A calendar page link cannot be opened; `reason` is `unknown`, `used` or `expired` (the subclass)."""

    reason = "unknown"

    def __init__(self, message: str) -> None:
        super().__init__(message, target="token")


class UnknownLink(LinkRefused):
    """No such link: mistyped, cut short by a mail program, or forgotten long after it expired."""

    reason = "unknown"


class UsedLink(LinkRefused):
    """The link was opened before; links are single use."""

    reason = "used"


class ExpiredLink(LinkRefused):
    """The link is older than its lifetime (COURSEWIRE_CALENDAR_LINK_TTL)."""

    reason = "expired"


class StateRefused(StorageError):
    """An OAuth `state` that finishes nothing: unknown, already used, started by another browser session, or
    expired (`expired` tells the last apart, since "try again, a little faster" is then the advice)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message, target="state")
        self.expired = expired


@dataclass(frozen=True)
class PageSession:
    """A calendar page session: whose page it is and the CSRF token its forms carry."""

    user_id: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class PendingState:
    """What `save_state` kept for a redirect to a provider; `code_verifier` is as given (sealed by the caller)."""

    user_id: str
    provider: str
    code_verifier: str


def digest(token: str) -> str:
    """The stored form of a token: SHA-256, hex. Tokens are 256-bit random strings, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token, 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def _later(now: datetime, seconds: float) -> datetime:
    if seconds <= 0:
        raise ValueError(f"a lifetime must be positive, not {seconds!r} seconds")
    return now + timedelta(seconds=seconds)


# --- links -------------------------------------------------------------------------------------------------


def create_link(db: Database, user_id: str, ttl_seconds: float) -> tuple[str, datetime]:
    """A new single-use link token to `user_id`'s calendar page, valid `ttl_seconds` from the db clock.

    Returns `(token, expires_at)`; the token is shown once (only its SHA-256 is stored). The person keeps at
    most LINKS_PER_USER links: the oldest beyond that are forgotten (opening one then says it is not valid).
    The caller checks who may ask for it and builds the URL (calendars.pages.link_url). Raises ValueError for a
    lifetime <= 0 and sqlite3.IntegrityError for a user id that does not exist.
    """
    now = db.clock()
    expires_at = _later(now, ttl_seconds)
    token = new_token()
    with db.write() as conn:
        purge_in(conn, now)
        conn.execute(
            "INSERT INTO calendar_links (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (digest(token), user_id, iso(now), iso(expires_at)),
        )
        conn.execute(
            "DELETE FROM calendar_links WHERE user_id = ? AND token_hash NOT IN (SELECT token_hash FROM"
            " calendar_links WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?)",
            (user_id, user_id, LINKS_PER_USER),
        )
    return token, expires_at


def _usable(conn: sqlite3.Connection, hashed: str, now: datetime) -> str:
    row = conn.execute(
        "SELECT l.token_hash, l.user_id, l.expires_at, l.used_at, u.is_deleted FROM calendar_links l"
        " JOIN users u ON u.id = l.user_id WHERE l.token_hash = ?",
        (hashed,),
    ).fetchone()
    if row is None or not hmac.compare_digest(row["token_hash"], hashed) or row["is_deleted"]:
        raise UnknownLink("this calendar link is not known")
    if row["used_at"] is not None:
        raise UsedLink("this calendar link was already opened; each link opens the page once")
    if (parse_iso(row["expires_at"]) or now) <= now:
        raise ExpiredLink("this calendar link has expired")
    return str(row["user_id"])


def check_link(db: Database, token: str) -> str:
    """The user id the link `token` would open the page of, without using it up (what a GET of the link does:
    mail scanners such as Safe Links fetch links before the person clicks). Raises as redeem_link."""
    with db.read() as conn:
        return _usable(conn, digest(token), db.clock())


def redeem_link(db: Database, token: str) -> str:
    """Use up the link `token`; return the user id it opens the page of.

    Raises UnknownLink (no such link, or its user was deleted), UsedLink (opened before) or ExpiredLink (past
    its lifetime); a link is used up only by a successful call.
    """
    now = db.clock()
    hashed = digest(token)
    with db.write() as conn:
        user_id = _usable(conn, hashed, now)
        conn.execute("UPDATE calendar_links SET used_at = ? WHERE token_hash = ?", (iso(now), hashed))
        return user_id


# --- page sessions -----------------------------------------------------------------------------------------


def start_session(db: Database, user_id: str, ttl_seconds: float) -> tuple[str, str]:
    """A new page session for `user_id`, valid `ttl_seconds` from the db clock.

    Returns `(session_token, csrf_token)`: the first goes in the page's cookie (only its SHA-256 is stored), the
    second in its forms. The person keeps at most SESSIONS_PER_USER sessions: the oldest beyond that end, with
    their OAuth states. Raises ValueError for a lifetime <= 0.
    """
    now = db.clock()
    expires_at = _later(now, ttl_seconds)
    session_token, csrf_token = new_token(), new_token()
    with db.write() as conn:
        purge_in(conn, now)
        conn.execute(
            "INSERT INTO calendar_page_sessions (session_hash, user_id, csrf_token, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (digest(session_token), user_id, csrf_token, iso(now), iso(expires_at)),
        )
        extra = [
            row[0]
            for row in conn.execute(
                "SELECT session_hash FROM calendar_page_sessions WHERE user_id = ?"
                " ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?",
                (user_id, SESSIONS_PER_USER),
            )
        ]
        for hashed in extra:
            conn.execute("DELETE FROM calendar_oauth_states WHERE session_hash = ?", (hashed,))
            conn.execute("DELETE FROM calendar_page_sessions WHERE session_hash = ?", (hashed,))
    return session_token, csrf_token


def session_user(db: Database, session_token: str) -> tuple[str, str] | None:
    """`(user_id, csrf_token)` of a live page session; None when the token is unknown, expired, or its user was
    deleted."""
    session = page_session(db, session_token)
    return (session.user_id, session.csrf_token) if session else None


def page_session(db: Database, session_token: str) -> PageSession | None:
    """The live page session of `session_token` (see `session_user`), with its expiry."""
    if not session_token:
        return None
    now = db.clock()
    with db.read() as conn:
        row = conn.execute(
            "SELECT s.user_id, s.csrf_token, s.expires_at FROM calendar_page_sessions s"
            " JOIN users u ON u.id = s.user_id AND u.is_deleted = 0 WHERE s.session_hash = ?",
            (digest(session_token),),
        ).fetchone()
    expires_at = parse_iso(row["expires_at"]) if row else None
    if row is None or expires_at is None or expires_at <= now:
        return None
    return PageSession(row["user_id"], row["csrf_token"], expires_at)


def end_session(db: Database, session_token: str) -> None:
    """Forget a page session and its outstanding OAuth states (nothing happens for an unknown token)."""
    hashed = digest(session_token)
    with db.write() as conn:
        conn.execute("DELETE FROM calendar_oauth_states WHERE session_hash = ?", (hashed,))
        conn.execute("DELETE FROM calendar_page_sessions WHERE session_hash = ?", (hashed,))


# --- OAuth states ------------------------------------------------------------------------------------------


def save_state(
    db: Database,
    state: str,
    session_token: str,
    user_id: str,
    provider: str,
    code_verifier_sealed: str,
    ttl_seconds: float,
) -> None:
    """Remember an authorization request: its `state`, the page session that made it, whose calendar and which
    provider, and the PKCE code_verifier (sealed by the caller: storage.secrets.SecretBox), for `ttl_seconds`.

    Only the state's SHA-256 is stored. A session keeps at most STATES_PER_SESSION outstanding states (the
    oldest go). Raises ValueError for a lifetime <= 0 or an empty state.
    """
    if not state:
        raise ValueError("an OAuth state must not be empty")
    now = db.clock()
    expires_at = _later(now, ttl_seconds)
    session_hash = digest(session_token)
    with db.write() as conn:
        purge_in(conn, now)
        conn.execute(
            "INSERT INTO calendar_oauth_states (state_hash, session_hash, user_id, provider, code_verifier,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (digest(state), session_hash, user_id, provider, code_verifier_sealed, iso(now), iso(expires_at)),
        )
        conn.execute(
            "DELETE FROM calendar_oauth_states WHERE session_hash = ? AND state_hash NOT IN (SELECT state_hash"
            " FROM calendar_oauth_states WHERE session_hash = ? ORDER BY created_at DESC, rowid DESC LIMIT ?)",
            (session_hash, session_hash, STATES_PER_SESSION),
        )


def take_state(db: Database, state: str, session_token: str) -> PendingState:
    """Use up the OAuth `state` a provider sent back; return what `save_state` kept.

    Raises StateRefused when the state is unknown, already taken, or belongs to another page session (that
    session's state is left alone), and StateRefused(expired=True) when it is past its lifetime (it is taken
    all the same).
    """
    if not state or not session_token:
        raise StateRefused("the authorization answer carries no state that this browser started")
    now = db.clock()
    hashed = digest(state)
    with db.write() as conn:
        row = conn.execute("SELECT * FROM calendar_oauth_states WHERE state_hash = ?", (hashed,)).fetchone()
        if row is None or not hmac.compare_digest(row["session_hash"], digest(session_token)):
            raise StateRefused("the authorization answer's state was not started from this browser, or was used")
        conn.execute("DELETE FROM calendar_oauth_states WHERE state_hash = ?", (hashed,))
        if (parse_iso(row["expires_at"]) or now) <= now:
            raise StateRefused("the authorization took too long", expired=True)
        return PendingState(row["user_id"], row["provider"], row["code_verifier"])


# --- bounded growth ----------------------------------------------------------------------------------------


def purge(db: Database) -> int:
    """Delete expired sessions, states expired more than STATE_MEMORY ago and links expired more than LINK_MEMORY
    ago; return how many rows went. Every write above does this already; a worker may call it too."""
    with db.write() as conn:
        return purge_in(conn, db.clock())


def purge_in(conn: sqlite3.Connection, now: datetime) -> int:
    """`purge` inside the caller's write transaction (the expiry indexes make it a range delete)."""
    gone = conn.execute("DELETE FROM calendar_oauth_states WHERE expires_at <= ?", (iso(now - STATE_MEMORY),)).rowcount
    gone += conn.execute("DELETE FROM calendar_page_sessions WHERE expires_at <= ?", (iso(now),)).rowcount
    gone += conn.execute("DELETE FROM calendar_links WHERE expires_at <= ?", (iso(now - LINK_MEMORY),)).rowcount
    return gone
