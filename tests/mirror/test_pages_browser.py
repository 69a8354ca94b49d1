"""The calendar page in a real browser: Playwright driving Debian's chromium (never a downloaded browser) against
the app served by uvicorn on 127.0.0.1, with the fake Microsoft and Google authorization servers.

The whole OAuth round trip as a person makes it (link, page, Connect, consent, back, "authorized", disconnect), a
denied consent, admin approval, and the page used with the keyboard alone on a phone-sized screen. A real browser
is what enforces the page's Content-Security-Policy (the inline style's hash, form-action across the redirect to
the provider) and SameSite on the cookie that has to come back with the provider's redirect.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fakes.identity import FakeIdentity

from connector.app import create_app
from connector.settings import Settings
from storage import calendar, calendar_links
from storage.db import Database
from storage.models import CLI

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium (Debian's package; no download)"
)


@dataclass
class Served:
    """The app on 127.0.0.1 and what the tests reach behind it."""

    base: str
    db: Database
    identity: FakeIdentity

    def person(self, login: str) -> str:
        from storage import users

        return str(users.create(self.db, CLI, {"LoginName": login, "Email": login})["Id"])

    def link(self, user_id: str) -> str:
        token, _ = calendar_links.create_link(self.db, user_id, 900)
        return f"{self.base}/calendar/link/{token}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """uvicorn serving the whole app in a thread, on a free port; Microsoft 365, Google and CalDAV enabled."""
    data: Path = tmp_path_factory.mktemp("browser") / "data"
    settings = Settings(data_dir=data, rate_limit=None)
    db = Database(settings.database_path)
    db.migrate()
    calendar.update_settings(db, CLI, {"Microsoft365Enabled": True, "GoogleEnabled": True, "CalDAVEnabled": True})
    with FakeIdentity() as identity:
        app = create_app(replace(settings, calendar=identity.config()), db=db)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield Served(f"http://127.0.0.1:{port}", db, identity)
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
            db.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; CSP violations reported by the browser are collected in
    `page.csp_errors`."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    tab.csp_errors = errors
    served.identity.admin_approval_required = False
    yield tab
    context.close()


def open_link(page: Any, served: Served, link: str) -> None:
    """Open a calendar link as a person does: the link shows a Continue button (a GET never uses it up, since
    mail scanners fetch links first), and Continue opens the calendar page."""
    page.goto(link)
    assert page.get_by_role("heading", level=1).inner_text() == "Your calendar settings"
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{served.base}/calendar/")


def test_connect_microsoft_then_disconnect(page: Any, served: Served) -> None:
    """Link -> page -> Connect Microsoft 365 -> Accept at Microsoft -> back, "authorized" with the account ->
    Disconnect (removing coursewire's events, checked by default) -> not connected."""
    alice = served.person("alice@contoso.example")
    open_link(page, served, served.link(alice))
    assert page.url == f"{served.base}/calendar/"
    assert page.get_by_role("heading", level=1).inner_text() == "Your calendar"
    assert page.locator("#state").inner_text() == "No calendar connected"
    page.get_by_role("button", name="Connect Microsoft 365").click()
    page.wait_for_url(f"{served.identity.base_url}/**")
    assert page.locator("#account").inner_text() == "alice@contoso.example"
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url(f"{served.base}/calendar/?done=connected")
    assert page.locator("#banner").inner_text() == "Your Microsoft 365 calendar is authorized: alice@contoso.example."
    assert page.locator("#provider").inner_text() == "Microsoft 365"
    assert page.locator("#account").inner_text() == "alice@contoso.example"
    connection = calendar.active_connection(served.db, alice)
    assert connection is not None and connection.provider == "Microsoft365"

    remove = page.get_by_label("Also remove the events coursewire added to this calendar")
    assert remove.is_checked()
    page.get_by_role("button", name="Disconnect Microsoft 365").click()
    page.wait_for_url(f"{served.base}/calendar/?done=disconnected")
    assert page.locator("#banner").inner_text() == "Your calendar is disconnected."
    assert page.locator("#state").inner_text() == "No calendar connected"
    state = served.db.conn.execute("SELECT state FROM calendar_connections WHERE id = ?", (connection.id,)).fetchone()
    assert state["state"] == "removing"  # the worker removes the events, then the connection
    assert page.csp_errors == []
    # The inline style applied: the CSP hash matched (a refused style leaves the browser's white background).
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(243, 245, 248)"


def test_denied_consent_explains_and_leads_back(page: Any, served: Served) -> None:
    """Cancel at Google: the page says access was not allowed and what to do; its link leads back to the page,
    still not connected."""
    bob = served.person("bob@contoso.example")
    open_link(page, served, served.link(bob))
    page.get_by_role("button", name="Connect Google").click()
    page.wait_for_url(f"{served.identity.base_url}/**")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_url(f"{served.base}/calendar/oauth/google?**")
    assert page.get_by_role("heading", level=1).inner_text() == "You did not allow access"
    assert "connect again, then choose Accept" in page.locator("#what-to-do").inner_text()
    page.get_by_role("link", name="Back to your calendar page").click()
    page.wait_for_url(f"{served.base}/calendar/")
    assert page.locator("#state").inner_text() == "No calendar connected"
    assert calendar.active_connection(served.db, bob) is None
    assert page.csp_errors == []


def test_admin_approval_says_to_ask_the_administrator(page: Any, served: Served) -> None:
    """A tenant that needs admin approval: Microsoft's "Need admin approval" page, then ours saying to ask the
    administrator."""
    served.identity.admin_approval_required = True
    carol = served.person("carol@contoso.example")
    open_link(page, served, served.link(carol))
    page.get_by_role("button", name="Connect Microsoft 365").click()
    page.get_by_role("button", name="Return to the application without granting consent").click()
    page.wait_for_url(f"{served.base}/calendar/oauth/microsoft?**")
    assert page.get_by_role("heading", level=1).inner_text() == "Your administrator has to approve coursewire"
    assert "AADSTS90094" in page.locator("#detail").inner_text()


def test_an_opened_link_cannot_be_opened_again(page: Any, served: Served) -> None:
    """The second visit of a link (another browser, a forwarded e-mail) gets the "already used" page."""
    dave = served.person("dave@contoso.example")
    link = served.link(dave)
    open_link(page, served, link)
    again = page.context.browser.new_context()
    try:
        other = again.new_page()
        answer = other.goto(link)
        assert answer.status == 410
        assert other.get_by_role("heading", level=1).inner_text() == "This link was already used"
    finally:
        again.close()


def test_keyboard_only_on_a_phone(browser: Any, served: Served) -> None:
    """On a phone-sized screen with the keyboard alone: no sideways scrolling, every field has a label, Tab
    reaches the controls in reading order with a visible focus ring, and Enter connects a calendar."""
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        erin = served.person("erin@contoso.example")
        open_link(page, served, served.link(erin))
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert page.evaluate("document.documentElement.lang") == "en"
        unlabelled = page.evaluate(
            "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
            ".filter(e => e.labels.length === 0).map(e => e.name)"
        )
        assert unlabelled == []
        for label in ("Server URL", "User name", "App password"):
            assert page.get_by_label(label).count() == 1
        headings = page.evaluate("[...document.querySelectorAll('h1, h2')].map(h => h.tagName)")
        assert headings[0] == "H1" and headings.count("H1") == 1

        order = []
        for _ in range(6):
            page.keyboard.press("Tab")
            order.append(
                page.evaluate(
                    "(() => { const e = document.activeElement;"
                    " return e.labels && e.labels.length ? e.labels[0].innerText : e.innerText; })()"
                )
            )
        assert order == [
            "Connect Microsoft 365",
            "Connect Google",
            "Server URL",
            "User name",
            "App password",
            "Connect CalDAV",
        ]
        ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert ring == "solid"

        page.keyboard.press("Shift+Tab")
        for _ in range(4):
            page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.innerText") == "Connect Microsoft 365"
        page.keyboard.press("Enter")
        page.wait_for_url(f"{served.identity.base_url}/**")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.innerText") == "Accept"
        page.keyboard.press("Enter")
        page.wait_for_url(f"{served.base}/calendar/?done=connected")
        assert "authorized" in page.locator("#banner").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
    finally:
        context.close()
