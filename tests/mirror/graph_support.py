"""The Graph fake as a provider test environment: the `graph_fake` and `graph_env` fixtures
(/work/notes/provider-env.md, tests/mirror/contract.py `ProviderEnv`).

`graph_env` is one person's default calendar in the fake, reached through `/me` with delegated tokens that the
fake issues; `fail_next('auth')` revokes the person's consent, so the refresh fails too (`invalid_grant`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
from fakes.graph import GraphFake, instant

from calendars.model import AuthorizationLost
from calendars.providers.graph import PROPERTY_ID, GraphProvider

USER_ID = "8b1f0c7e-5d2a-4a55-9a7e-3f6f1f2c9d10"
ACCOUNT = "ada.lovelace@contoso.example"

T = TypeVar("T")


class FakeTokens:
    """A TokenSource for one user of the fake: `refresh()` gets a new token as a token endpoint would, or
    AuthorizationLost once the user's consent is revoked. `refreshes` counts them."""

    def __init__(self, fake: GraphFake, user_id: str) -> None:
        self.fake, self.user_id = fake, user_id
        self.token = fake.issue_token(user_id)
        self.refreshes = 0

    async def access_token(self) -> str:
        return self.token

    async def refresh(self) -> str:
        self.refreshes += 1
        if self.user_id in self.fake.revoked:
            raise AuthorizationLost("invalid_grant: AADSTS50173: the provided grant has expired due to a revocation")
        self.token = self.fake.issue_token(self.user_id)
        return self.token


class GraphEnv:
    """One person's calendar in the Graph fake (the ProviderEnv of the contract tests)."""

    def __init__(self, fake: GraphFake, user_id: str = USER_ID, account: str = ACCOUNT) -> None:
        self.fake, self.user_id, self.account = fake, user_id, account
        fake.add_user(user_id, account)
        self.tokens = FakeTokens(fake, user_id)
        self.calendar: str | None = None  # the default calendar

    def make_provider(self, session: aiohttp.ClientSession, **options: Any) -> GraphProvider:
        return GraphProvider(session, f"{self.fake.url}/v1.0", self.tokens, self.calendar, **options)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for event in self.fake.stored(self.user_id, self.calendar):
            start, end = event.fields["start"], event.fields["end"]
            out.append(
                {
                    "id": event.immutable_id,
                    "key": event.properties.get(PROPERTY_ID),
                    "subject": event.fields.get("subject", ""),
                    "start": instant(start),
                    "end": instant(end),
                    "time_zone": start["timeZone"],
                    "fields": event.fields,
                }
            )
        return out

    def delete_as_person(self, provider_id: str) -> None:
        self.fake.delete_as_person(self.user_id, provider_id)

    def fail_next(self, kind: str, count: int = 1) -> None:
        if kind == "auth":
            self.fake.revoke(self.user_id)  # for good: tokens refused, refresh answered invalid_grant
        elif kind in ("throttle", "unavailable"):
            self.fake.fail_next(kind, count, retry_after=7)
        else:
            pytest.skip(f"the Graph fake has no failure {kind!r}")

    def requests(self) -> list[tuple[str, str]]:
        return list(self.fake.requests)


@pytest.fixture
def graph_fake() -> Iterator[GraphFake]:
    with GraphFake() as fake:
        yield fake


@pytest.fixture
def graph_env(graph_fake: GraphFake) -> GraphEnv:
    return GraphEnv(graph_fake)


def run(env: GraphEnv, step: Callable[[GraphProvider], Awaitable[T]], **options: Any) -> T:
    """Run `step` with a provider of `env` on a fresh aiohttp session, closing both after."""

    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            provider = env.make_provider(session, **options)
            try:
                return await step(provider)
            finally:
                await provider.close()

    return asyncio.run(main())
