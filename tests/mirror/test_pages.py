"""The calendar page over HTTP, through the whole app (connexion, the mount ahead of authentication) with the fake
authorization servers: links, the session cookie, CSRF, the OAuth round trip and every page that says what went
wrong, headers, 404s and the body cap."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import pytest
from dav_hostile import account, dav_server
from fakes.identity import GOOGLE, MICROSOFT, FakeIdentity
from pages_support import Forms, consent, enable, identity, make_user, new_link, query_of
from radicale_support import CalDAVEnv
from starlette.testclient import TestClient
from support import Clock, fake_resolve

from calendars.providers import caldav
from connector.app import create_app
from connector.settings import Settings
from storage import calendar, calendar_links
from storage.db import Database
from storage.models import CLI
from storage.secrets import SecretBox

__all__ = ["identity"]  # the fixture, imported for pytest


@dataclass
class Person:
    """One browser: the test client (its cookie jar) and the user it opened the page for."""

    client: TestClient
    user_id: str
    db: Database

    def open(self, path: str | None = None, **kw: Any) -> Any:
        """Open a calendar link (a new one unless `path` is given) and press Continue, as a person does; returns
        the answer to the link (an error page) or to Continue, not followed."""
        path = path or new_link(self.db, self.user_id)
        shown = self.client.get(path, follow_redirects=False, **kw)
        if shown.status_code != 200:
            return shown
        return self.client.post(Forms(shown.text).action(path)["action"], follow_redirects=False, **kw)

    def page(self, path: str = "/calendar/") -> Any:
        return self.client.get(path, follow_redirects=False)

    def submit(self, ending: str, page: str | None = None, **changes: str | None) -> Any:
        """Post the form of the status page whose action ends with `ending`, as the browser would (hidden fields
        and checked boxes), with `changes` (None removes a field)."""
        html = page if page is not None else self.page().text
        form = Forms(html).action(ending)
        fields = {**form["fields"], **changes}
        data = {k: v for k, v in fields.items() if v is not None}
        return self.client.post(form["action"].replace("http://testserver", ""), data=data, follow_redirects=False)

    def connect(self, slug: str, decision: str = "accept") -> Any:
        """Connect at the fake provider: the page's Connect button, the consent page's answer, and the callback.
        Returns the callback's answer."""
        started = self.submit(f"/connect/{slug}")
        assert started.status_code == 303, started.text
        back = consent(started.headers["location"], decision)
        return self.client.get(back.replace("http://testserver", ""), follow_redirects=False)

    def connection(self) -> calendar.Connection | None:
        return calendar.active_connection(self.db, self.user_id)


@pytest.fixture
def app(settings: Settings, db: Database, identity: FakeIdentity) -> Any:
    """The whole app, with the fake providers' clients and endpoints; Microsoft 365, Google, CalDAV enabled."""
    enable(db, Microsoft365=True, Google=True, CalDAV=True)
    return create_app(replace(settings, calendar=identity.config()), db=db, resolve=fake_resolve)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with app.test_client() as c:
        yield c


@pytest.fixture
def person(client: TestClient, db: Database) -> Person:
    """Alice, with her calendar page open in her browser."""
    alice = Person(client, make_user(db), db)
    assert alice.open().status_code == 303
    return alice


def text(answer: Any) -> str:
    """A page's words, without tags, on one line."""
    body = re.sub(r"<style>.*?</style>", "", answer.text, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()


def states(db: Database) -> int:
    return int(db.conn.execute("SELECT count(*) FROM calendar_oauth_states").fetchone()[0])


# -- links and the session cookie ---------------------------------------------------------------------------


def test_a_link_starts_a_session_with_a_safe_cookie(client: TestClient, db: Database) -> None:
    """The link answers 303 to the page with a session cookie: HttpOnly, SameSite=Lax, Path=/calendar, and not
    Secure over plain http."""
    answer = Person(client, make_user(db), db).open()
    assert answer.status_code == 303
    assert answer.headers["location"] == "http://testserver/calendar/"
    cookie = answer.headers["set-cookie"]
    assert re.match(r"coursewire_calendar=[A-Za-z0-9_-]{43};", cookie)
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/calendar"} <= attributes
    assert "secure" not in attributes


def test_the_cookie_is_secure_behind_https(settings: Settings, db: Database, identity: FakeIdentity) -> None:
    """Reached over HTTPS (COURSEWIRE_PUBLIC_URL, or a trusted proxy's X-Forwarded-Proto) the cookie is Secure,
    its Path follows the public base path, and the redirects are https; an untrusted peer's header changes
    nothing."""
    user_id = make_user(db)
    public = Settings(data_dir=settings.data_dir, rate_limit=None, public_url="https://lms.contoso.example/lms")
    with create_app(replace(public, calendar=identity.config()), db=db, resolve=fake_resolve).test_client() as c:
        answer = c.post(new_link(db, user_id), follow_redirects=False)
    assert answer.headers["location"] == "https://lms.contoso.example/lms/calendar/"
    assert {"secure", "path=/lms/calendar"} <= {p.strip().lower() for p in answer.headers["set-cookie"].split(";")}

    app = create_app(replace(settings, calendar=identity.config()), db=db, resolve=fake_resolve)
    for peer, secure in (("127.0.0.1", True), ("203.0.113.9", False)):
        with app.test_client(client=(peer, 40000)) as c:
            answer = c.post(new_link(db, user_id), headers={"X-Forwarded-Proto": "https"}, follow_redirects=False)
        attributes = {p.strip().lower() for p in answer.headers["set-cookie"].split(";")}
        assert ("secure" in attributes) is secure, peer
        assert answer.headers["location"].startswith("https://" if secure else "http://")


def test_a_link_opens_the_page_once(person: Person) -> None:
    """A used link says so (410) and what to do; the first browser keeps its page."""
    link = new_link(person.db, person.user_id)
    assert person.open(link).status_code == 303
    again = person.open(link)
    assert again.status_code == 410
    assert "already used" in text(again)
    assert "ask for a new link" in text(again)
    assert person.page().status_code == 200


def test_opening_a_link_does_not_use_it_up(client: TestClient, db: Database) -> None:
    """Mail scanners (Safe Links) fetch every link of an e-mail before the person clicks: a GET shows a Continue
    button and starts no session; the link still works for the person afterwards."""
    alice = Person(client, make_user(db), db)
    link = new_link(db, alice.user_id)
    for _ in range(3):
        scanned = client.get(link, follow_redirects=False)
        assert scanned.status_code == 200 and "Continue" in text(scanned)
        assert "set-cookie" not in scanned.headers
    answer = alice.open(link)
    assert answer.status_code == 303 and "set-cookie" in answer.headers
    assert alice.page().status_code == 200
    assert client.get(link, follow_redirects=False).status_code == 410  # used now


def test_an_expired_link_says_so(client: TestClient, db: Database, clock: Clock) -> None:
    """Past its lifetime a link is refused with a page saying it expired and how to get a new one; it does not
    start a session."""
    alice = Person(client, make_user(db), db)
    link = new_link(db, alice.user_id, ttl=900)
    clock.advance(seconds=901)
    answer = alice.open(link)
    assert answer.status_code == 410
    assert "has expired" in text(answer) and "Ask for a new link" in text(answer)
    assert "set-cookie" not in answer.headers
    assert alice.page().status_code == 403


@pytest.mark.parametrize("token", ["x" * 43, "short", "a" * 101, "%2e%2e"])
def test_an_unknown_link_says_so(client: TestClient, db: Database, token: str) -> None:
    """A link coursewire never issued (or cut short) is a 404 page saying to copy the whole link."""
    answer = Person(client, make_user(db), db).open(f"/calendar/link/{token}")
    assert answer.status_code == 404
    assert "not valid" in text(answer) and "whole link" in text(answer)


def test_the_page_needs_a_session(client: TestClient) -> None:
    """Without the cookie the page says to open the link (403), and shows nobody's calendar."""
    answer = client.get("/calendar/")
    assert answer.status_code == 403
    assert "Open the calendar link you were sent" in text(answer)
    client.cookies.set("coursewire_calendar", "forged-session-token-forged-session-token-x")
    assert client.get("/calendar/").status_code == 403


def test_a_session_ends_after_an_hour(person: Person, clock: Clock) -> None:
    """The page session lasts an hour; then the link must be opened again."""
    clock.advance(minutes=59)
    assert person.page().status_code == 200
    clock.advance(minutes=2)
    assert person.page().status_code == 403


# -- the status page ----------------------------------------------------------------------------------------


def test_the_page_offers_the_enabled_providers_and_lists_the_permissions(person: Person) -> None:
    """Not connected: the page offers each enabled provider, lists the permissions each asks, and says an
    administrator may have to approve the app."""
    page = person.page()
    assert page.status_code == 200
    words = text(page)
    for button in ("Connect Microsoft 365", "Connect Google", "Connect CalDAV"):
        assert button in words
    assert "Calendars.ReadWrite" in words and "offline_access" in words and "calendar.events" in words
    assert "administrator may have to approve" in words
    assert "No calendar connected" in words
    assert '<html lang="en">' in page.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.text


def test_only_enabled_and_configured_providers_are_offered(
    settings: Settings, db: Database, identity: FakeIdentity
) -> None:
    """A provider switched off by the account owner, or whose OAuth client is not configured, is not offered,
    and its Connect address refuses."""
    enable(db, Microsoft365=True, Google=True, CalDAV=False)
    config = identity.config(google_client_secret=None)
    with create_app(replace(settings, calendar=config), db=db, resolve=fake_resolve).test_client() as c:
        alice = Person(c, make_user(db), db)
        alice.open()
        words = text(alice.page())
        assert "Connect Microsoft 365" in words
        assert "Connect Google" not in words and "Connect CalDAV" not in words
        csrf = Forms(alice.page().text).action("/connect/microsoft")["fields"]["csrf"]
        refused = c.post("/calendar/connect/google", data={"csrf": csrf}, follow_redirects=False)
    assert refused.status_code == 403
    assert "not turned on Google" in text(refused)


def test_nothing_enabled_says_so(settings: Settings, db: Database, identity: FakeIdentity) -> None:
    """With every provider off the page says the person keeps receiving e-mail invitations."""
    with create_app(replace(settings, calendar=identity.config()), db=db, resolve=fake_resolve).test_client() as c:
        alice = Person(c, make_user(db), db)
        alice.open()
        words = text(alice.page())
    assert "has not turned on calendar connections" in words
    assert "Connect" not in words.replace("Connect a calendar", "")


# -- the OAuth round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("slug", "provider"), [("microsoft", MICROSOFT), ("google", GOOGLE)])
def test_connecting_shows_the_calendar_authorized_with_the_account(
    person: Person, identity: FakeIdentity, slug: str, provider: str
) -> None:
    """Connect, consent at the provider, come back: the calendar is connected with the account's address and the
    page says it is authorized."""
    started = person.submit(f"/connect/{slug}")
    assert started.status_code == 303
    location = started.headers["location"]
    assert location.startswith(identity.base_url)
    assert query_of(location)["redirect_uri"] == f"http://testserver/calendar/oauth/{slug}"
    back = person.client.get(consent(location).replace("http://testserver", ""), follow_redirects=False)
    assert back.status_code == 303
    assert back.headers["location"] == "http://testserver/calendar/?done=connected"
    connection = person.connection()
    assert connection is not None
    assert (connection.provider, connection.account) == (provider, identity.accounts[provider])
    words = text(person.page(back.headers["location"].replace("http://testserver", "")))
    assert f"calendar is authorized: {identity.accounts[provider]}" in words
    assert "Disconnect" in words and "Turn sync off" in words
    assert "Deleting a session's event from your calendar cancels your registration" in words  # the two-way rule


def test_connect_needs_the_csrf_token(person: Person, db: Database) -> None:
    """A form without the page's CSRF token (another site's form, an old tab) changes nothing: 403, no state
    saved, no redirect to the provider."""
    for changes in ({"csrf": None}, {"csrf": "x" * 43}, {"csrf": ""}):
        answer = person.submit("/connect/microsoft", **changes)
        assert answer.status_code == 403
        assert "not sent from your current calendar page" in text(answer)
    assert states(db) == 0


def test_disconnect_and_sync_need_the_csrf_token(person: Person) -> None:
    """The other forms refuse without the token too, and leave the connection as it was."""
    person.connect("microsoft")
    assert person.submit("/disconnect", csrf=None).status_code == 403
    assert person.submit("/sync", csrf="wrong").status_code == 403
    connection = person.connection()
    assert connection is not None and connection.sync_enabled


def test_a_forged_state_connects_nothing(person: Person, identity: FakeIdentity) -> None:
    """A callback whose state this browser did not start (forged, or already used) is refused with a page
    saying so; nothing is connected, and the real state still works afterwards."""
    started = person.submit("/connect/microsoft")
    state = query_of(started.headers["location"])["state"]
    for query in ("?code=abc&state=forged", "?code=abc", f"?code=abc&state={state[:-1]}"):
        answer = person.page(f"/calendar/oauth/microsoft{query}")
        assert answer.status_code == 400
        assert "does not belong to a connection started in this browser" in text(answer)
    back = consent(started.headers["location"])
    assert person.page(back.replace("http://testserver", "")).status_code == 303
    replay = person.page(back.replace("http://testserver", ""))
    assert replay.status_code == 400
    assert person.connection() is not None


def test_a_state_from_another_browser_connects_nothing(
    person: Person, app: Any, db: Database, identity: FakeIdentity
) -> None:
    """The callback URL of Alice's authorization, opened in Mallory's browser (her own session), connects
    nothing for anyone: the state is bound to the session that started it."""
    started = person.submit("/connect/microsoft")
    back = consent(started.headers["location"]).replace("http://testserver", "")
    with app.test_client() as other:
        mallory = Person(other, make_user(db, "mallory@contoso.example"), db)
        mallory.open()
        answer = mallory.page(back)
    assert answer.status_code == 400
    assert mallory.connection() is None and person.connection() is None


def test_a_state_is_bound_to_the_browser_session_not_only_to_the_person(person: Person, app: Any, db: Database) -> None:
    """Even Alice's own second browser (another page session) cannot finish what the first started; the first
    still can afterwards."""
    started = person.submit("/connect/google")
    back = consent(started.headers["location"]).replace("http://testserver", "")
    with app.test_client() as second:
        elsewhere = Person(second, person.user_id, db)
        elsewhere.open()
        assert elsewhere.page(back).status_code == 400
    assert person.connection() is None
    assert person.page(back).status_code == 303
    assert person.connection() is not None


def test_a_late_answer_says_to_start_again(person: Person, clock: Clock) -> None:
    """More than ten minutes at the provider: the state has expired, and the page says to connect again."""
    started = person.submit("/connect/google")
    back = consent(started.headers["location"]).replace("http://testserver", "")
    clock.advance(minutes=11)
    answer = person.page(back)
    assert answer.status_code == 400
    assert "took too long" in text(answer)
    assert person.connection() is None


def test_denied_consent_says_what_happened(person: Person) -> None:
    """Cancel at the provider: a page saying access was not allowed and how to try again; nothing connected."""
    answer = person.connect("microsoft", decision="cancel")
    assert answer.status_code == 200
    words = text(answer)
    assert "You did not allow access" in words and "connect again, then choose Accept" in words
    assert "AADSTS65004" in words
    assert person.connection() is None


@pytest.mark.parametrize(
    ("error", "description"),
    [
        ("access_denied", "AADSTS90094: The grant requires admin permission."),
        ("consent_required", "AADSTS65001: The user or administrator has not consented to use the application."),
        ("admin_consent_required", None),
        ("access_denied", "AADSTS65001: The user or administrator has not consented"),
    ],
)
def test_admin_approval_required_says_to_ask_the_administrator(
    person: Person, error: str, description: str | None
) -> None:
    """Microsoft's admin-approval answers (AADSTS65001/90094, consent_required, admin_consent_required) get the
    page that says to ask the administrator, even when `error` is access_denied."""
    started = person.submit("/connect/microsoft")
    state = query_of(started.headers["location"])["state"]
    query = {"error": error, "state": state, **({"error_description": description} if description else {})}
    answer = person.client.get("/calendar/oauth/microsoft", params=query, follow_redirects=False)
    assert answer.status_code == 200
    assert "Your administrator has to approve coursewire" in text(answer)
    assert "Ask your administrator to approve coursewire" in text(answer)


def test_admin_approval_at_the_fake_provider(person: Person, identity: FakeIdentity) -> None:
    """The fake's "Need admin approval" page, answered as a person would, ends on the administrator page."""
    identity.admin_approval_required = True
    for slug in ("microsoft", "google"):
        answer = person.connect(slug, decision="admin")
        assert "Your administrator has to approve coursewire" in text(answer), slug
    assert person.connection() is None


def test_another_calendar_while_one_is_connected_gets_the_apis_words(person: Person, db: Database) -> None:
    """One calendar at a time: with Microsoft 365 connected, connecting Google is refused (409) before leaving
    the page, in the same words as the API's 409; so is an authorization that comes back after a calendar was
    connected meanwhile."""
    pending = person.submit("/connect/google")
    assert person.connect("microsoft").status_code == 303
    existing = person.connection()
    assert existing is not None
    words = calendar.already_connected(existing)
    csrf = Forms(person.page().text).forms[0]["fields"]["csrf"]
    refused = person.client.post("/calendar/connect/google", data={"csrf": csrf}, follow_redirects=False)
    assert refused.status_code == 409
    assert words[1:].rstrip(".") in text(refused)  # the API's words, as a sentence
    late = person.page(consent(pending.headers["location"]).replace("http://testserver", ""))
    assert late.status_code == 409
    assert "disconnect it before connecting another" in text(late)
    still = person.connection()
    assert still is not None and still.provider == MICROSOFT


def test_a_calendar_that_needs_authorizing_again_is_renewed_in_place(
    person: Person, db: Database, identity: FakeIdentity
) -> None:
    """When the refresh token stopped working the page offers to authorize again; doing so renews the same
    connection's credentials and its status, without a second connection."""
    person.connect("microsoft")
    before = person.connection()
    assert before is not None
    calendar.set_status(db, before.id, "NeedsReauthorization", "invalid_grant: AADSTS50173")
    words = text(person.page())
    assert "Needs you to authorize again" in words and "AADSTS50173" in words
    started = person.submit("/connect/microsoft")
    assert started.status_code == 303
    back = person.page(consent(started.headers["location"]).replace("http://testserver", ""))
    assert back.status_code == 303
    after = person.connection()
    assert after is not None
    assert after.id == before.id and after.status == "Connected" and after.credentials != before.credentials


def test_disconnect_removes_the_events_unless_unchecked(person: Person, db: Database) -> None:
    """The disconnect form's "also remove the events coursewire added" is checked by default: the connection
    waits for the worker to remove them; unchecked, the events stay and the connection goes at once."""
    person.connect("microsoft")
    page = person.page().text
    assert re.search(r'<input type="checkbox" id="remove-events" name="remove_events" value="on" checked>', page)
    assert '<label for="remove-events">Also remove the events coursewire added' in page
    first = person.connection()
    assert first is not None
    answer = person.submit("/disconnect")
    assert answer.status_code == 303 and answer.headers["location"].endswith("/calendar/?done=disconnected")
    row = db.conn.execute("SELECT state FROM calendar_connections WHERE id = ?", (first.id,)).fetchone()
    assert row["state"] == "removing"
    assert "Your calendar is disconnected." in text(person.page("/calendar/?done=disconnected"))

    person.connect("google")
    second = person.connection()
    assert second is not None
    person.submit("/disconnect", remove_events=None)
    assert db.conn.execute("SELECT 1 FROM calendar_connections WHERE id = ?", (second.id,)).fetchone() is None


def test_sync_can_be_turned_off_and_on(person: Person) -> None:
    """The sync switch: off pauses the calendar (e-mails instead), on resumes it."""
    person.connect("google")
    assert person.submit("/sync").status_code == 303
    connection = person.connection()
    assert connection is not None and not connection.sync_enabled
    words = text(person.page("/calendar/?done=sync-off"))
    assert "Sync is off." in words and "Paused" in words and "Turn sync on" in words
    person.submit("/sync")
    connection = person.connection()
    assert connection is not None and connection.sync_enabled


def test_the_last_error_is_shown(person: Person, db: Database) -> None:
    """A connection in Error shows the last error and offers to authorize again."""
    person.connect("microsoft")
    connection = person.connection()
    assert connection is not None
    calendar.set_status(db, connection.id, "Error", "Graph refused the event: ErrorInvalidTimeZone")
    words = text(person.page())
    assert "Last error Graph refused the event: ErrorInvalidTimeZone" in words
    assert "Authorize Microsoft 365 again" in words


def test_the_account_and_error_are_escaped(person: Person, db: Database) -> None:
    """Text from providers is escaped, never markup."""
    person.connect("microsoft")
    connection = person.connection()
    assert connection is not None
    calendar.set_status(db, connection.id, "Error", "<script>alert(1)</script>")
    page = person.page().text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_tokens_stay_out_of_the_page_and_the_log(person: Person, caplog: pytest.LogCaptureFixture) -> None:
    """The authorization code and tokens appear in no page and no log line, and credentials are stored sealed."""
    started = person.submit("/connect/microsoft")
    back = consent(started.headers["location"])
    code = query_of(back)["code"]
    person.page(back.replace("http://testserver", ""))
    connection = person.connection()
    assert connection is not None
    assert connection.credentials.startswith("gAAAA")  # a Fernet token: SecretBox.seal
    sealed = SecretBox.for_database(person.db.path).open(connection.credentials)
    page = person.page("/calendar/?done=connected").text
    for secret in (code, *re.findall(r'"[a-z_]+_token": "([^"]+)"', sealed)):
        assert secret not in page
        assert all(secret not in r.getMessage() for r in caplog.records)


# -- headers, routes, bodies --------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(person: Person, identity: FakeIdentity) -> None:
    """Pages, error pages and redirects alike: a CSP allowing only the inline style (its hash) and forms posted
    here or sent on to the providers' sign-in, no framing, no referrer, no caching."""
    page = person.page()
    style = re.search(r"<style>(.*?)</style>", page.text, re.S)
    assert style
    digest = base64.b64encode(hashlib.sha256(style[1].encode()).digest()).decode()
    answers = [page, person.page("/calendar/nowhere"), person.open(), person.submit("/connect/microsoft")]
    answers.append(person.client.post("/calendar/sync", content=b"x", headers={"Content-Type": "text/plain"}))
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert f"style-src 'sha256-{digest}'" in csp
        assert f"form-action 'self' {identity.base_url};" in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
    assert "<script" not in page.text and "http" not in page.text.split("<main", 1)[0].replace(
        'content="width=device-width, initial-scale=1"', ""
    )


@pytest.mark.parametrize(
    "path",
    [
        "/calendar/nowhere",
        "/calendar/link/",
        "/calendar/oauth/yahoo",
        "/calendar/connect/outlook",
        "/calendar/link/a/b",
    ],
)
def test_everything_else_under_calendar_is_not_found(person: Person, path: str) -> None:
    """Only the page's routes answer; anything else under /calendar is a 404 page (before any authentication)."""
    answer = person.page(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "text/html; charset=utf-8"


def test_a_wrong_method_is_405(person: Person) -> None:
    """GET on a form's address, POST on a page: 405 with Allow."""
    answer = person.page("/calendar/disconnect")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    answer = person.client.post("/calendar/", data={}, follow_redirects=False)
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"


def test_the_api_still_needs_its_key(client: TestClient) -> None:
    """Mounting the page changes nothing for the API: /calendarX and /odata still ask for credentials."""
    assert client.get("/odata/v2/Users").status_code == 401
    assert client.get("/calendars").status_code == 401


def test_form_bodies_are_capped(person: Person) -> None:
    """A form body over 8 KiB is refused (413) whether declared or streamed; a body that is not a form is 415."""
    csrf = Forms(person.page().text).action("/connect/microsoft")["fields"]["csrf"]
    big = f"csrf={csrf}&url=" + "a" * 9000
    declared = person.client.post(
        "/calendar/connect/caldav",
        content=big.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000].encode()

    streamed = person.client.post(
        "/calendar/connect/caldav",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert streamed.status_code == 413
    json_body = person.client.post("/calendar/sync", json={"csrf": csrf}, follow_redirects=False)
    assert json_body.status_code == 415


def test_a_link_is_stored_only_as_its_hash(db: Database) -> None:
    """The database holds the SHA-256 of a link, never the token itself."""
    user_id = make_user(db)
    token, expires_at = calendar_links.create_link(db, user_id, 900)
    stored = [tuple(r) for r in db.conn.execute("SELECT * FROM calendar_links").fetchall()]
    assert token not in repr(stored)
    assert hashlib.sha256(token.encode()).hexdigest() in repr(stored)
    assert expires_at == db.clock() + __import__("datetime").timedelta(seconds=900)


def test_expired_rows_are_purged(db: Database, clock: Clock) -> None:
    """Sessions and states go once expired (states after an hour more), links a week after they expired, as new
    ones are written: the tables do not grow with time."""
    user_id = make_user(db)
    for _ in range(3):
        calendar_links.create_link(db, user_id, 60)
        session, _ = calendar_links.start_session(db, user_id, 60)
        calendar_links.save_state(db, f"state-{_}-{session}", session, user_id, "Google", "sealed", 60)
    clock.advance(days=8)
    calendar_links.create_link(db, user_id, 60)
    counts = {
        table: db.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        for table in ("calendar_links", "calendar_page_sessions", "calendar_oauth_states")
    }
    assert counts == {"calendar_links": 1, "calendar_page_sessions": 0, "calendar_oauth_states": 0}


def test_a_session_keeps_only_its_latest_states(db: Database) -> None:
    """Clicking Connect again and again keeps at most five outstanding states per session."""
    user_id = make_user(db)
    session, _ = calendar_links.start_session(db, user_id, 600)
    for n in range(12):
        calendar_links.save_state(db, f"state-{n}", session, user_id, "Google", "sealed", 600)
    assert states(db) == calendar_links.STATES_PER_SESSION
    assert calendar_links.take_state(db, "state-11", session).provider == "Google"
    with pytest.raises(calendar_links.StateRefused):
        calendar_links.take_state(db, "state-0", session)


def test_the_user_acts_only_on_their_own_calendar(person: Person, db: Database) -> None:
    """The page acts as the person whose link it was: another person's calendar is never shown or changed."""
    bob = make_user(db, "bob@contoso.example")
    enable(db, Google=True)
    calendar.connect(db, CLI, bob, "Google", account="bob@gmail.example", calendar=None, credentials="sealed")
    words = text(person.page())
    assert "bob@gmail.example" not in words and "No calendar connected" in words
    person.submit("/connect/microsoft")  # her own flow works
    assert calendar.active_connection(db, bob) is not None


# -- CalDAV (a real Radicale) -------------------------------------------------------------------------------


def caldav_form(person: Person, url: str, username: str, password: str) -> Any:
    return person.submit("/connect/caldav", url=url, username=username, password=password)


def test_caldav_connects_the_one_calendar_found(person: Person, caldav_env: CalDAVEnv, db: Database) -> None:
    """Server URL, user name and app password: discovery finds the account's one calendar and connects it; the
    password is stored sealed, never shown."""
    answer = caldav_form(person, caldav_env.server_url, caldav_env.username, caldav_env.password)
    assert answer.status_code == 303, text(answer)
    connection = person.connection()
    assert connection is not None
    assert (connection.provider, connection.account, connection.calendar) == (
        "CalDAV",
        caldav_env.username,
        caldav_env.calendar_url,
    )
    sealed = SecretBox.for_database(db.path).open(connection.credentials)
    assert json.loads(sealed) == {"username": caldav_env.username, "password": caldav_env.password}
    page = person.page("/calendar/?done=connected").text
    assert "Your CalDAV calendar is authorized" in page and caldav_env.password not in page


def test_caldav_with_several_calendars_asks_which(person: Person, caldav_env: CalDAVEnv) -> None:
    """Several calendars: the page lists them by name (radio buttons with labels) and connects the one chosen;
    the choice works once and only in this session."""
    caldav_env.make_calendar("evenings", "Evening classes")
    choose = caldav_form(person, caldav_env.server_url, caldav_env.username, caldav_env.password)
    assert choose.status_code == 200
    words = text(choose)
    assert "Training" in words and "Evening classes" in words
    assert caldav_env.password not in choose.text
    assert re.search(r'<input type="radio" id="calendar-2" name="calendar" value="[^"]+/evenings/">', choose.text)
    assert '<label for="calendar-2">Evening classes</label>' in choose.text
    evenings = caldav_env.proxy.url + f"/{caldav_env.username}/evenings/"
    chosen = person.submit("/connect/caldav", page=choose.text, calendar=evenings)
    assert chosen.status_code == 303, text(chosen)
    connection = person.connection()
    assert connection is not None and connection.calendar == evenings
    assert f'<dt>Calendar address</dt><dd id="calendar">{evenings}</dd>' in person.page().text  # which one
    again = person.submit("/connect/caldav", page=choose.text, calendar=evenings)
    assert again.status_code == 409  # one calendar at a time, before the spent choice is even looked at


def test_caldav_refuses_a_calendar_not_listed(person: Person, caldav_env: CalDAVEnv) -> None:
    """The chosen URL must be one the server listed (a form cannot point the connection elsewhere)."""
    caldav_env.make_calendar("evenings", "Evening classes")
    choose = caldav_form(person, caldav_env.server_url, caldav_env.username, caldav_env.password)
    answer = person.submit("/connect/caldav", page=choose.text, calendar="http://127.0.0.1:9/elsewhere/")
    assert answer.status_code == 400
    assert person.connection() is None


def test_caldav_wrong_password_says_so_and_keeps_the_form(person: Person, caldav_env: CalDAVEnv) -> None:
    """A refused app password shows the form again with the reason, the URL and user name kept, the password not."""
    answer = caldav_form(person, caldav_env.server_url, caldav_env.username, "not-the-password")
    assert answer.status_code == 400
    assert "refused this user name and app password" in text(answer)
    assert f'value="{caldav_env.server_url}"' in answer.text and f'value="{caldav_env.username}"' in answer.text
    assert "not-the-password" not in answer.text
    assert person.connection() is None


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://169.254.169.254/latest/", "not a public address"),
        ("https://internal.example/dav/", "10.1.2.3, which is not a public address"),
        ("http://caldav.example.com/", "must use https"),
        ("https://user:pw@caldav.example.com/", "must not carry a user name or password"),
        ("ftp://caldav.example.com/", "must be an absolute https URL"),
    ],
)
def test_caldav_server_urls_pass_the_ssrf_guard(person: Person, caldav_env: CalDAVEnv, url: str, said: str) -> None:
    """The server URL is user input: private, link-local and metadata addresses, plain http to public hosts and
    credentials in the URL are refused before any request (as webhook callbacks are)."""
    before = len(caldav_env.requests())
    answer = caldav_form(person, url, "alice", "app-password")
    assert answer.status_code == 400
    assert said in text(answer) and "Server URL" in text(answer)
    assert len(caldav_env.requests()) == before
    assert person.connection() is None


def test_caldav_form_needs_every_field(person: Person) -> None:
    """A missing field shows the form again saying what to fill in."""
    answer = caldav_form(person, "https://caldav.example.com/", "alice", "")
    assert answer.status_code == 400
    assert "Fill in the server URL, your user name and an app password" in text(answer)


# -- CalDAV against a hostile server (tests/mirror/dav_hostile.py) ------------------------------------------------


def test_caldav_drops_calendars_listed_at_other_addresses(person: Person) -> None:
    """A server that lists calendars on a documentation address or a host resolving to a private network (where
    the worker would send events with the person's app password) has those dropped: the one calendar left on the
    server itself is connected without asking."""
    listed = [
        ("http://192.0.2.2:35837/steal/", "Team"),
        ("https://internal.example/dav/cal/", "Internal"),
        ("/cal/mine/", "Mine"),
    ]
    with dav_server(account({"/cal/": listed})) as server:
        answer = caldav_form(person, server.url, "alice", "app-password")
        assert answer.status_code == 303, text(answer)
    connection = person.connection()
    assert connection is not None and connection.calendar == server.url + "cal/mine/"


def test_caldav_refuses_a_server_whose_calendars_are_all_elsewhere(person: Person) -> None:
    """Nothing usable listed: the form is shown again saying why, and nothing is connected."""
    with dav_server(account({"/cal/": [("http://192.0.2.2:35837/steal/", "Team")]})) as server:
        answer = caldav_form(person, server.url, "alice", "app-password")
    assert answer.status_code == 400
    assert "does not write to" in text(answer) and "192.0.2.2" in text(answer)
    assert person.connection() is None


def test_the_choice_of_calendars_is_bounded(person: Person, db: Database) -> None:
    """A server listing hundreds of calendars with long names: the page offers MAX_CALENDARS, names cut to
    MAX_NAME characters, and the sealed state kept while the person chooses stays a few tens of KB (it was
    1.16 MB for 11,605 calendars); the choice still connects."""
    listed = [(f"/cal/{n:04}/", f"Calendar {n} " + "ł" * 2000) for n in range(400)]
    with dav_server(account({"/cal/": listed})) as server:
        choose = caldav_form(person, server.url, "alice", "app-password")
        assert choose.status_code == 200, text(choose)
        assert choose.text.count('type="radio"') == caldav.MAX_CALENDARS
        assert f'<label for="calendar-1">Calendar 0 {"ł" * (caldav.MAX_NAME - 11)}</label>' in choose.text
        (size,) = db.conn.execute("SELECT max(length(code_verifier)) FROM calendar_oauth_states").fetchone()
        assert size < 64 * 1024
        chosen = person.submit("/connect/caldav", page=choose.text, calendar=server.url + "cal/0099/")
        assert chosen.status_code == 303, text(chosen)
    connection = person.connection()
    assert connection is not None and connection.calendar == server.url + "cal/0099/"


def test_a_busy_server_asks_to_try_again(person: Person) -> None:
    """While the process runs its DISCOVERIES_PER_PROCESS discoveries the form comes back at once (503,
    Retry-After) asking to try again in a few seconds; while the person's own runs, 409; nothing reaches the
    server."""
    with dav_server(account({"/cal/": [("/cal/mine/", "Mine")]})) as server:
        with ExitStack() as running:
            for n in range(caldav.DISCOVERIES_PER_PROCESS):
                running.enter_context(caldav.discovery_slot(f"someone-{n}"))
            busy = caldav_form(person, server.url, "alice", "app-password")
            assert (busy.status_code, busy.headers["Retry-After"]) == (503, str(caldav.DISCOVERY_RETRY_AFTER))
            assert "Try again in a few seconds" in text(busy)
            assert f'value="{server.url}"' in busy.text
        with caldav.discovery_slot(person.user_id):
            own = caldav_form(person, server.url, "alice", "app-password")
            assert own.status_code == 409 and "still looking for your calendars" in text(own)
        assert server.requests() == []
        assert caldav_form(person, server.url, "alice", "app-password").status_code == 303


@pytest.mark.parametrize(
    ("username", "password", "said"),
    [
        ("alice:admin", "app-password", "User name must not contain ':'"),
        ("alice\u202egnp.exe", "app-password", "User name contains U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("alice\x00", "app-password", "User name contains U+0000"),
        ("alice", "app\x00password", "App password contains a control character"),
    ],
)
def test_caldav_credentials_that_cannot_be_used_show_the_form_again(
    person: Person, username: str, password: str, said: str
) -> None:
    """A ':' in the user name (a 500 before: HTTP Basic cannot carry it), or control and format characters that
    would be stored and shown as the account: the form again with the reason, before any request."""
    with dav_server(account({"/cal/": [("/cal/mine/", "Mine")]})) as server:
        answer = caldav_form(person, server.url, username, password)
        assert server.requests() == []
    assert answer.status_code == 400, text(answer)
    assert said in html.unescape(text(answer)) and "app-password" not in answer.text
    assert person.connection() is None


def test_a_person_keeps_only_their_latest_links_and_sessions(db: Database) -> None:
    """Asking for link after link (the API, a script) keeps LINKS_PER_USER links and SESSIONS_PER_USER page
    sessions per person: the oldest are forgotten, with the OAuth states of a forgotten session."""
    user_id = make_user(db)
    tokens = [calendar_links.create_link(db, user_id, 900)[0] for _ in range(calendar_links.LINKS_PER_USER + 3)]
    assert db.conn.execute("SELECT count(*) FROM calendar_links").fetchone()[0] == calendar_links.LINKS_PER_USER
    with pytest.raises(calendar_links.UnknownLink):
        calendar_links.redeem_link(db, tokens[0])
    assert calendar_links.redeem_link(db, tokens[-1]) == user_id
    sessions = [calendar_links.start_session(db, user_id, 600)[0] for _ in range(calendar_links.SESSIONS_PER_USER)]
    calendar_links.save_state(db, "state-newest", sessions[-1], user_id, "Google", "sealed", 600)
    calendar_links.save_state(db, "state-oldest", sessions[0], user_id, "Google", "sealed", 600)
    calendar_links.start_session(db, user_id, 600)  # one more: the oldest session ends, with its state
    assert calendar_links.session_user(db, sessions[0]) is None
    assert calendar_links.session_user(db, sessions[1]) is not None
    count = db.conn.execute("SELECT count(*) FROM calendar_page_sessions").fetchone()[0]
    assert count == calendar_links.SESSIONS_PER_USER
    assert states(db) == 1
    assert calendar_links.take_state(db, "state-newest", sessions[-1]).provider == "Google"
