"""Support for the calendar page and OAuth tests: people, provider switches, links, and the fake identity servers
as fixtures (import the fixtures into a test module: `from pages_support import identity, ...`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fakes.identity import FakeIdentity
from support import Clock

from storage import calendar, calendar_links, users
from storage.db import Database
from storage.models import CLI


def make_user(db: Database, login: str = "alice@contoso.example") -> str:
    """A learner; returns their Id."""
    return str(users.create(db, CLI, {"LoginName": login, "Email": login})["Id"])


def enable(db: Database, **switches: bool) -> None:
    """Turn providers on or off as the account owner would (Microsoft365Enabled=True, ...)."""
    calendar.update_settings(db, CLI, {f"{name}Enabled": on for name, on in switches.items()})


def new_link(db: Database, user_id: str, ttl: float = 900) -> str:
    """The path of a fresh calendar link for the user."""
    token, _ = calendar_links.create_link(db, user_id, ttl)
    return f"/calendar/link/{token}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


class Forms(HTMLParser):
    """The forms of a page: action, hidden inputs and submit buttons, in document order."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and (a.get("type") == "hidden" or "checked" in a):
            self.forms[-1]["fields"][a.get("name", "")] = a.get("value", "")
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(a.get("value", ""))

    def action(self, ending: str) -> dict[str, Any]:
        """The form whose action ends with `ending`."""
        for form in self.forms:
            if form["action"].endswith(ending):
                return form
        raise AssertionError(f"no form posting to …{ending}: {[f['action'] for f in self.forms]}")


def consent(authorize_url: str, decision: str = "accept") -> str:
    """Answer the fake's consent page as a person would (Accept or Cancel); returns the redirect back to the app."""
    with requests.Session() as http:
        page = http.get(authorize_url, timeout=10)
        assert page.status_code == 200, page.text
        request_id = re.search(r"name='request' value='([^']+)'", page.text)
        assert request_id, page.text
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
        answer = http.post(
            f"{origin}/consent",
            data={"request": request_id[1], "decision": decision},
            allow_redirects=False,
            timeout=10,
        )
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


@pytest.fixture
def identity(clock: Clock) -> Iterator[FakeIdentity]:
    """The fake Microsoft and Google authorization servers, on the tests' clock."""
    with FakeIdentity(clock=lambda: clock().timestamp()) as fake:
        yield fake
