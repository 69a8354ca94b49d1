"""The `google_env` fixture: one person's Google calendar in the Google Calendar fake, and a GoogleProvider for it.

Shape shared by every provider's support module: /work/notes/provider-env.md (make_provider, events,
delete_as_person, fail_next, requests, account). Import the fixture into a test module with
`from google_support import google_env`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from fakes.google import GoogleCalendarFake

from calendars.model import TAG, AuthorizationLost, Provider
from calendars.providers.google import GoogleProvider

ACCOUNT = "ada.lovelace@example.com"


class FakeTokens:
    """A TokenSource over the fake's tokens, standing in for calendars/oauth.py: `refresh()` gets a new access
    token unless the grant was revoked (then AuthorizationLost, as `invalid_grant` would be)."""

    def __init__(self, fake: GoogleCalendarFake, account: str) -> None:
        self.fake, self.account = fake, account
        self.current = fake.issue_token(account)
        self.revoked = False
        self.refreshes = 0

    async def access_token(self) -> str:
        return self.current  # still valid by its expiry time: Google is the one to say it was revoked

    async def refresh(self) -> str:
        self.refreshes += 1
        if self.revoked:
            raise AuthorizationLost("invalid_grant: Token has been expired or revoked.")
        self.current = self.fake.issue_token(self.account)
        return self.current


class GoogleEnv:
    """One person's primary calendar at the fake, with their tokens."""

    def __init__(self, fake: GoogleCalendarFake, account: str = ACCOUNT) -> None:
        self.fake = fake
        self.account = account
        self.calendar = fake.add_calendar(account)
        self.tokens = FakeTokens(fake, account)

    def make_provider(self, session: aiohttp.ClientSession) -> Provider:
        return GoogleProvider(session, self.fake.base_url, self.tokens)

    def events(self) -> list[dict[str, Any]]:
        """The calendar's events, cancelled ones left out, read from the fake's state."""
        return [
            {
                "id": event["id"],
                "key": ((event.get("extendedProperties") or {}).get("private") or {}).get(TAG),
                "subject": event.get("summary", ""),
                "start": datetime.fromisoformat(event["start"]["dateTime"]),
                "end": datetime.fromisoformat(event["end"]["dateTime"]),
                "time_zone": event["start"].get("timeZone"),
            }
            for event in self.fake.stored(self.account)
        ]

    def delete_as_person(self, provider_id: str) -> None:
        self.fake.person_deletes(self.account, provider_id)

    def fail_next(self, kind: str, count: int = 1) -> None:
        """'throttle': 429 rateLimitExceeded with Retry-After: 7; 'unavailable': 503 backendError; 'auth':
        every token of the account stops working and refreshing fails (revoked consent)."""
        if kind == "throttle":
            self.fake.fail_next(429, "rateLimitExceeded", count, headers={"Retry-After": "7"})
        elif kind == "unavailable":
            self.fake.fail_next(503, "backendError", count)
        elif kind == "auth":
            self.tokens.revoked = True
            self.fake.revoke(account=self.account)
        else:
            raise ValueError(f"unknown failure kind {kind!r}")

    def requests(self) -> list[tuple[str, str]]:
        return [(entry.method, entry.path) for entry in self.fake.log]


@pytest.fixture
def google_env() -> Iterator[GoogleEnv]:
    with GoogleCalendarFake() as fake:
        yield GoogleEnv(fake)
