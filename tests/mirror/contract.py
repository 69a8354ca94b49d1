"""The one contract every calendar provider honours, run against each (Radicale for CalDAV, the Graph and Google fakes).

A provider's test file subclasses `ProviderContract` and names its env fixture:

    class TestCalDAVContract(ProviderContract):
        env_fixture = "caldav_env"

The env (see `ProviderEnv`, and /work/notes/provider-env.md) gives a provider connected to one fresh calendar of
one person, reads that calendar straight from the server's state, and deletes or breaks things the way a person
or the service would. Tests are sync and drive coroutines with asyncio.run (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from calendars.model import (
    AuthorizationLost,
    CalendarItem,
    Provider,
    ProviderError,
    Throttled,
    Unavailable,
    Written,
)

T = TypeVar("T")


class ProviderEnv(Protocol):
    """What each `<provider>_env` fixture yields."""

    account: str

    def make_provider(self, session: aiohttp.ClientSession) -> Provider: ...

    def events(self) -> list[dict[str, Any]]: ...

    def delete_as_person(self, provider_id: str) -> None: ...

    def fail_next(self, kind: str, count: int = 1) -> None: ...

    def requests(self) -> list[tuple[str, str]]: ...


def run(env: ProviderEnv, step: Callable[[Provider], Awaitable[T]]) -> T:
    """`step` with a provider of `env` on a fresh HTTP session, in a fresh event loop; both closed after."""

    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            provider = env.make_provider(session)
            try:
                return await step(provider)
            finally:
                await provider.close()

    return asyncio.run(main())


def item(
    day: str = "day1",
    *,
    subject: str = "Forklift safety",
    start: datetime = datetime(2030, 3, 5, 8, 0, tzinfo=UTC),
    end: datetime = datetime(2030, 3, 5, 16, 0, tzinfo=UTC),
    time_zone: str = "Europe/Berlin",
    user: str = "user1",
    room: str | None = "Hall B",
) -> CalendarItem:
    """One session day of one person, as the sync engine hands it to a provider."""
    return CalendarItem(
        user_id=user,
        session_id="session1",
        day_id=day,
        subject=subject,
        start=start,
        end=end,
        time_zone=time_zone,
        body_text=f"{subject}\nRoom: {room}",
        body_html=f"<p>{subject}</p><p>Room: {room}</p>",
        location=room,
        link="https://lms.example.com/sessions/session1",
    )


def put(env: ProviderEnv, it: CalendarItem, written: Written | None = None) -> Written:
    return run(env, lambda p: p.put(it, written))


def error_of(env: ProviderEnv, step: Callable[[Provider], Awaitable[Any]]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        run(env, step)
    return caught.value


class ProviderContract:
    """Every behaviour the sync engine relies on, for one provider; subclasses set `env_fixture`."""

    env_fixture: str = ""

    @pytest.fixture
    def env(self, request: pytest.FixtureRequest) -> ProviderEnv:
        env: ProviderEnv = request.getfixturevalue(self.env_fixture)
        return env

    def only(self, env: ProviderEnv) -> dict[str, Any]:
        events = env.events()
        assert len(events) == 1, events
        return events[0]

    def test_create_writes_one_event_tagged_with_our_key(self, env: ProviderEnv) -> None:
        """A new session day becomes exactly one event, with our key, its subject and its instants."""
        it = item()
        written = put(env, it)
        event = self.only(env)
        assert event["id"] == written.provider_id
        assert event["key"] == it.key
        assert event["subject"] == "Forklift safety"
        assert (event["start"], event["end"]) == (it.start, it.end)
        assert event["time_zone"]

    def test_a_retried_create_keeps_one_event(self, env: ProviderEnv) -> None:
        """A create whose answer was lost (the worker crashed before recording it) and is sent again finds the
        same event instead of adding a second one."""
        first = put(env, item())
        again = put(env, item(subject="Forklift safety (retried)"))
        event = self.only(env)
        assert again.provider_id == first.provider_id == event["id"]
        assert event["subject"] == "Forklift safety (retried)"

    def test_update_changes_the_event_in_place(self, env: ProviderEnv) -> None:
        """A session edit (title, time, room) changes the existing event; it keeps its id and no copy appears."""
        written = put(env, item())
        moved = item(
            subject="Forklift safety, part 2",
            start=datetime(2030, 3, 6, 12, 0, tzinfo=UTC),
            end=datetime(2030, 3, 6, 14, 30, tzinfo=UTC),
            room="Hall C",
        )
        updated = put(env, moved, written)
        event = self.only(env)
        assert updated.provider_id == written.provider_id == event["id"]
        assert (event["subject"], event["start"], event["end"]) == (moved.subject, moved.start, moved.end)

    def test_each_day_is_its_own_event(self, env: ProviderEnv) -> None:
        """Two days of a session are two events with two keys; writing one leaves the other alone."""
        one, two = (
            item("day1"),
            item("day2", start=datetime(2030, 3, 6, 8, 0, tzinfo=UTC), end=datetime(2030, 3, 6, 9, 0, tzinfo=UTC)),
        )
        first, second = put(env, one), put(env, two)
        assert first.provider_id != second.provider_id
        put(env, item("day1", subject="Renamed"), first)
        by_key = {e["key"]: e for e in env.events()}
        assert set(by_key) == {one.key, two.key}
        assert by_key[one.key]["subject"] == "Renamed"
        assert by_key[two.key]["subject"] == "Forklift safety"

    def test_get_reads_the_event_back(self, env: ProviderEnv) -> None:
        """What was written reads back with our key, subject and instants."""
        it = item()
        written = put(env, it)
        remote = run(env, lambda p: p.get(written))
        assert remote is not None
        assert (remote.provider_id, remote.key, remote.subject) == (written.provider_id, it.key, it.subject)
        assert (remote.start, remote.end) == (it.start, it.end)
        assert not remote.cancelled

    def test_delete_removes_the_event(self, env: ProviderEnv) -> None:
        """Unregistration removes the event from the calendar, and reading it back finds nothing."""
        written = put(env, item())
        run(env, lambda p: p.delete(written, item()))
        assert env.events() == []
        assert run(env, lambda p: p.get(written)) is None

    def test_delete_twice_is_fine(self, env: ProviderEnv) -> None:
        """Deleting an event already gone (a retried delete) succeeds."""
        written = put(env, item())
        run(env, lambda p: p.delete(written, item()))
        run(env, lambda p: p.delete(written, item()))
        assert env.events() == []

    def test_an_event_the_person_deleted_reads_as_none(self, env: ProviderEnv) -> None:
        """An event the person deleted in their calendar app reads back as None (the next issue reacts to it)."""
        written = put(env, item())
        env.delete_as_person(written.provider_id)
        assert run(env, lambda p: p.get(written)) is None

    def test_an_update_after_the_person_deleted_it_creates_it_again_once(self, env: ProviderEnv) -> None:
        """A session edit after the person deleted the event brings it back, once, with the new details."""
        written = put(env, item())
        env.delete_as_person(written.provider_id)
        again = put(env, item(subject="Forklift safety (moved)"), written)
        event = self.only(env)
        assert event["id"] == again.provider_id
        assert event["subject"] == "Forklift safety (moved)"
        put(env, item(subject="Forklift safety (moved)"), again)
        assert len(env.events()) == 1

    def test_days_across_a_daylight_saving_change_keep_their_local_time(self, env: ProviderEnv) -> None:
        """A session at 09:00-17:00 Berlin time on the Friday before and the Monday after the switch to summer
        time (2030-03-31) gives 08:00Z then 07:00Z: each event starts at 09:00 local."""
        berlin = ZoneInfo("Europe/Berlin")
        days = [
            item("fri", start=datetime(2030, 3, 29, 8, 0, tzinfo=UTC), end=datetime(2030, 3, 29, 16, 0, tzinfo=UTC)),
            item("mon", start=datetime(2030, 4, 1, 7, 0, tzinfo=UTC), end=datetime(2030, 4, 1, 15, 0, tzinfo=UTC)),
        ]
        for it in days:
            put(env, it)
        by_key = {e["key"]: e for e in env.events()}
        for it in days:
            event = by_key[it.key]
            assert (event["start"], event["end"]) == (it.start, it.end)
            local = event["start"].astimezone(berlin), event["end"].astimezone(berlin)
            assert (local[0].hour, local[1].hour) == (9, 17)

    def test_dead_credentials_raise_authorization_lost(self, env: ProviderEnv) -> None:
        """When the credentials stop working for good, every call says so (the connection needs the person)."""
        written = put(env, item())
        env.fail_next("auth")
        steps: Sequence[Callable[[Provider], Awaitable[Any]]] = (
            lambda p: p.put(item(subject="changed"), written),
            lambda p: p.get(written),
            lambda p: p.delete(written, item()),
        )
        for step in steps:
            assert isinstance(error_of(env, step), AuthorizationLost)
        assert self.only(env)["subject"] == "Forklift safety"

    def test_throttling_carries_retry_after(self, env: ProviderEnv) -> None:
        """A 429 with Retry-After: 7 is Throttled with retry_after 7 s, and the write succeeds when retried."""
        env.fail_next("throttle")
        error = error_of(env, lambda p: p.put(item(), None))
        assert isinstance(error, Throttled)
        assert error.retry_after == 7
        put(env, item())
        assert self.only(env)["key"] == item().key

    def test_an_unavailable_service_is_retried_later(self, env: ProviderEnv) -> None:
        """A 503 is Unavailable (try again later), not a refusal of the item; the retry writes one event."""
        written = put(env, item())
        env.fail_next("unavailable")
        error = error_of(env, lambda p: p.put(item(subject="later"), written))
        assert isinstance(error, Unavailable)
        put(env, item(subject="later"), written)
        assert self.only(env)["subject"] == "later"

    def test_put_many_answers_each_item_in_order(self, env: ProviderEnv) -> None:
        """Several days of one person written together each get their own result, in the order given."""
        days = [
            item(f"day{n}", start=datetime(2030, 3, n, 8, tzinfo=UTC), end=datetime(2030, 3, n, 9, tzinfo=UTC))
            for n in (2, 3, 4)
        ]
        results = run(env, lambda p: p.put_many([(it, None) for it in days]))
        assert all(isinstance(r, Written) for r in results)
        ids = {e["key"]: e["id"] for e in env.events()}
        assert [ids[it.key] for it in days] == [r.provider_id for r in results if isinstance(r, Written)]
