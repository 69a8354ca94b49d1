"""GoogleProvider against the Google Calendar fake: one event per person and session day whatever gets lost or
deleted, Google's time zones, and Google's errors turned into what the sync engine acts on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from contract import ProviderContract
from fakes.google import GoogleCalendarFake
from google_support import GoogleEnv

from calendars.model import (
    TAG,
    AuthorizationLost,
    CalendarItem,
    ProviderError,
    Rejected,
    Throttled,
    Unavailable,
    Written,
)
from calendars.providers.google import GoogleProvider

T = TypeVar("T")
NEW_YORK = "America/New_York"


def item(
    day: str = "d1",
    local: datetime = datetime(2030, 3, 12, 9, 0),
    hours: float = 8,
    time_zone: str = NEW_YORK,
    subject: str = "Forklift safety",
    **more: Any,
) -> CalendarItem:
    """A session day from 09:00 local (naive `local` in `time_zone`), start/end in UTC as the engine gives them."""
    start = local.replace(tzinfo=ZoneInfo(time_zone)).astimezone(UTC)
    values: dict[str, Any] = {
        "user_id": "u42",
        "session_id": "s7",
        "day_id": day,
        "subject": subject,
        "start": start,
        "end": start + timedelta(hours=hours),
        "time_zone": time_zone,
        "body_text": "Bring boots.",
        "body_html": "<p>Bring <b>boots</b>.</p>",
        "location": "Hall B",
        "link": "https://lms.example/calendar/s7",
    }
    values.update(more)
    return CalendarItem(**values)


def drive(env: GoogleEnv, body: Callable[[GoogleProvider], Awaitable[T]]) -> T:
    """Run `body` with a provider on a fresh aiohttp session, closing both after."""

    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            provider = env.make_provider(session)
            assert isinstance(provider, GoogleProvider)
            try:
                return await body(provider)
            finally:
                await provider.close()

    return asyncio.run(main())


def statuses(env: GoogleEnv) -> list[tuple[str, int]]:
    return [(entry.method, entry.status) for entry in env.fake.log]


def test_insert_writes_the_event_google_shows(google_env: GoogleEnv) -> None:
    """The event carries our id, key, HTML description, room, back-link and zone, with no attendees and no mail."""
    day = item()
    written = drive(google_env, lambda p: p.put(day, None))
    assert written.provider_id == day.handle and written.etag
    [event] = google_env.fake.stored(google_env.account)
    assert event["id"] == day.handle and event["status"] == "confirmed"
    assert event["summary"] == "Forklift safety"
    assert event["description"] == "<p>Bring <b>boots</b>.</p>"
    assert event["location"] == "Hall B"
    assert event["source"] == {"title": "Session details", "url": "https://lms.example/calendar/s7"}
    assert event["extendedProperties"] == {"private": {TAG: "u42.d1"}}
    assert "attendees" not in event
    [request] = google_env.fake.log
    assert (request.method, request.path) == ("POST", "/calendar/v3/calendars/primary/events")
    assert request.query["sendUpdates"] == ["none"]


def test_insert_is_idempotent_across_a_lost_answer(google_env: GoogleEnv) -> None:
    """Google inserted the event but the answer never came: the retry finds it by id, and one event remains."""
    day = item()
    google_env.fake.lose_answers(1)

    async def body(provider: GoogleProvider) -> Written:
        with pytest.raises(Unavailable):
            await provider.put(day, None)
        return await provider.put(day, None)

    written = drive(google_env, body)
    assert [e["id"] for e in google_env.events()] == [written.provider_id] == [day.handle]
    assert statuses(google_env) == [("POST", 200), ("POST", 409), ("PUT", 200)]


@pytest.mark.parametrize("recorded", [True, False], ids=["update", "insert-after-crash"])
def test_an_event_the_person_deleted_comes_back_once(google_env: GoogleEnv, recorded: bool) -> None:
    """Google keeps a deleted event as cancelled under its id: writing it again confirms that same event."""
    day = item()
    first = drive(google_env, lambda p: p.put(day, None))
    google_env.delete_as_person(first.provider_id)
    assert google_env.events() == []
    written = drive(google_env, lambda p: p.put(day, first if recorded else None))
    assert written.provider_id == day.handle
    [event] = google_env.fake.stored(google_env.account, deleted=True)
    assert event["status"] == "confirmed"
    assert len(google_env.events()) == 1


def test_update_replaces_the_event_with_put(google_env: GoogleEnv) -> None:
    """A session edit rewrites the same event (PUT, not the 3-unit PATCH) and Google gives a new etag."""
    first = drive(google_env, lambda p: p.put(item(), None))
    moved = item(local=datetime(2030, 3, 13, 13, 30), hours=2, subject="Forklift safety (moved)", location=None)
    second = drive(google_env, lambda p: p.put(moved, first))
    assert second.provider_id == first.provider_id and second.etag != first.etag
    [event] = google_env.events()
    assert event["subject"] == "Forklift safety (moved)"
    assert event["start"] == moved.start and event["end"] == moved.end
    assert "location" not in google_env.fake.stored(google_env.account)[0]
    assert [(m, p.rsplit("/", 1)[-1]) for m, p in google_env.requests()][-1] == ("PUT", first.provider_id)
    assert "PATCH" not in {m for m, _ in google_env.requests()}


def test_update_of_an_event_google_no_longer_knows_inserts_it(google_env: GoogleEnv) -> None:
    """What we recorded points at nothing (404): the item is inserted again under its handle."""
    day = item()
    gone = Written(provider_id="0123456789abcdefghijklmnopqrstuv", etag='"1"')
    written = drive(google_env, lambda p: p.put(day, gone))
    assert written.provider_id == day.handle
    assert statuses(google_env) == [("PUT", 404), ("POST", 200)]
    assert [e["key"] for e in google_env.events()] == ["u42.d1"]


def test_delete_twice_is_success(google_env: GoogleEnv) -> None:
    """Google answers 410 deleted to the second delete; for the mirror the event is gone either way."""

    async def body(provider: GoogleProvider) -> None:
        written = await provider.put(item(), None)
        await provider.delete(written)
        await provider.delete(written)
        await provider.delete(Written("never0written0here"))

    drive(google_env, body)
    assert google_env.events() == []
    assert statuses(google_env)[1:] == [("DELETE", 204), ("DELETE", 410), ("DELETE", 404)]


def test_get_reads_back_and_is_none_after_the_person_deleted(google_env: GoogleEnv) -> None:
    """get returns our key and times while the event lives, None once the person deleted it (Google: cancelled)."""
    day = item()
    written = drive(google_env, lambda p: p.put(day, None))
    remote = drive(google_env, lambda p: p.get(written))
    assert remote is not None
    assert (remote.provider_id, remote.key, remote.subject) == (day.handle, "u42.d1", "Forklift safety")
    assert (remote.start, remote.end) == (day.start, day.end)
    assert remote.extra["timeZone"] == NEW_YORK and remote.etag == written.etag
    google_env.delete_as_person(written.provider_id)
    assert drive(google_env, lambda p: p.get(written)) is None
    assert drive(google_env, lambda p: p.get(Written("never0written0here"))) is None


def test_the_iana_zone_is_kept(google_env: GoogleEnv) -> None:
    """Google gets the session's IANA zone and the local wall time with its offset, and keeps both."""
    day = item(local=datetime(2030, 1, 15, 9, 0), time_zone="Europe/Berlin")
    drive(google_env, lambda p: p.put(day, None))
    sent = google_env.fake.log[0].body
    assert sent["start"] == {"dateTime": "2030-01-15T09:00:00+01:00", "timeZone": "Europe/Berlin"}
    [event] = google_env.events()
    assert event["time_zone"] == "Europe/Berlin" and event["start"] == day.start


@pytest.mark.parametrize(
    ("zone", "before", "after", "offsets", "hours_apart"),
    [
        (NEW_YORK, datetime(2030, 3, 9, 9), datetime(2030, 3, 11, 9), ("-05:00", "-04:00"), 47),
        ("Australia/Sydney", datetime(2030, 4, 6, 9), datetime(2030, 4, 8, 9), ("+11:00", "+10:00"), 49),
    ],
)
def test_days_across_a_dst_change_stay_at_their_local_time(
    google_env: GoogleEnv, zone: str, before: datetime, after: datetime, offsets: tuple[str, str], hours_apart: int
) -> None:
    """A two-day session spanning the clock change starts at 09:00 local on both days, not an hour apart."""
    days = [item(day="d1", local=before, time_zone=zone), item(day="d2", local=after, time_zone=zone)]
    results = drive(google_env, lambda p: p.put_many([(d, None) for d in days]))
    assert all(isinstance(r, Written) for r in results)
    sent = [entry.body["start"]["dateTime"] for entry in google_env.fake.log]
    assert sent == [before.isoformat() + offsets[0], after.isoformat() + offsets[1]]
    local = [e["start"].astimezone(ZoneInfo(zone)) for e in google_env.events()]
    assert [(t.hour, t.minute) for t in local] == [(9, 0), (9, 0)]
    assert local[1].astimezone(UTC) - local[0].astimezone(UTC) == timedelta(hours=hours_apart)


def test_a_time_zone_google_does_not_know_is_rejected_without_a_request(google_env: GoogleEnv) -> None:
    """A Windows zone name reaching this provider is a bug upstream: refuse it rather than write a wrong time."""
    with pytest.raises(Rejected, match="W. Europe Standard Time"):
        drive(google_env, lambda p: p.put(replace(item(), time_zone="W. Europe Standard Time"), None))
    assert google_env.requests() == []


class Minutes:
    def __init__(self) -> None:
        self.now = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_per_user_rate_limit_throttles_until_the_minute_has_passed(google_env: GoogleEnv) -> None:
    """Google's 403 rateLimitExceeded (no Retry-After) is Throttled with a backoff hint; a minute later it works."""
    clock = Minutes()
    google_env.fake.clock = clock
    google_env.fake.rate_limit = 2
    days = [item(day=f"d{n}") for n in range(3)]
    drive(google_env, lambda p: p.put(days[0], None))
    drive(google_env, lambda p: p.put(days[1], None))
    with pytest.raises(Throttled, match="403 rateLimitExceeded") as caught:
        drive(google_env, lambda p: p.put(days[2], None))
    assert caught.value.retry_after == 30
    clock.now += timedelta(seconds=60)
    drive(google_env, lambda p: p.put(days[2], None))
    assert len(google_env.events()) == 3


@pytest.mark.parametrize(
    ("status", "reason", "headers", "raised", "retry_after"),
    [
        (429, "rateLimitExceeded", {"Retry-After": "7"}, Throttled, 7),
        (429, "rateLimitExceeded", {}, Throttled, 30),
        (403, "userRateLimitExceeded", {}, Throttled, 30),
        (403, "quotaExceeded", {}, Throttled, 3600),
        (500, "backendError", {}, Unavailable, None),
        (503, "backendError", {"Retry-After": "12"}, Unavailable, 12),
        (403, "insufficientPermissions", {}, AuthorizationLost, None),
        (403, "forbiddenForNonOrganizer", {}, Rejected, None),
        (400, "invalid", {}, Rejected, None),
    ],
)
def test_google_errors_become_what_the_engine_acts_on(
    google_env: GoogleEnv,
    status: int,
    reason: str,
    headers: dict[str, str],
    raised: type[ProviderError],
    retry_after: float | None,
) -> None:
    """Each documented error maps to retry-later (with when), reconnect, or give up on this item with Google's words."""
    google_env.fake.fail_next(status, reason, headers=headers)
    with pytest.raises(raised) as caught:
        drive(google_env, lambda p: p.put(item(), None))
    assert type(caught.value) is raised
    assert caught.value.retry_after == retry_after
    assert f"{status} {reason}" in str(caught.value)


def test_an_expired_access_token_is_refreshed_once_and_the_write_goes_through(google_env: GoogleEnv) -> None:
    """401 authError: one refresh, the same request again, and nothing doubled."""
    google_env.fake.revoke(google_env.tokens.current)
    written = drive(google_env, lambda p: p.put(item(), None))
    assert google_env.tokens.refreshes == 1
    assert statuses(google_env) == [("POST", 401), ("POST", 200)]
    assert [e["id"] for e in google_env.events()] == [written.provider_id]


def test_a_revoked_grant_is_authorization_lost(google_env: GoogleEnv) -> None:
    """Consent revoked: the refresh fails (invalid_grant) and the connection needs the person again."""
    google_env.fail_next("auth")
    with pytest.raises(AuthorizationLost, match="invalid_grant"):
        drive(google_env, lambda p: p.put(item(), None))
    assert statuses(google_env) == [("POST", 401)]


def test_a_401_after_refreshing_is_authorization_lost(google_env: GoogleEnv) -> None:
    """Google refuses even the fresh token: give up after one refresh instead of looping."""
    google_env.fake.authorize = lambda token: None
    with pytest.raises(AuthorizationLost, match="401 authError"):
        drive(google_env, lambda p: p.put(item(), None))
    assert google_env.tokens.refreshes == 1
    assert statuses(google_env) == [("POST", 401), ("POST", 401)]


def test_an_unreachable_server_is_unavailable() -> None:
    """Connection refused is a retry-later, not a rejected item."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = GoogleCalendarFake()  # not started: only its tokens are used
    env = GoogleEnv(fake)

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            provider = GoogleProvider(session, f"http://127.0.0.1:{port}/calendar/v3", env.tokens)
            await provider.put(item(), None)

    with pytest.raises(Unavailable, match="could not be reached"):
        asyncio.run(main())


def test_put_many_stops_calling_once_google_throttles(google_env: GoogleEnv) -> None:
    """After a throttled answer the remaining items of the batch get that answer without spending quota."""
    google_env.fake.clock = Minutes()
    google_env.fake.rate_limit = 1
    days = [item(day=f"d{n}") for n in range(4)]
    results = drive(google_env, lambda p: p.put_many([(d, None) for d in days]))
    assert [type(r) for r in results] == [Written, Throttled, Throttled, Throttled]
    assert statuses(google_env) == [("POST", 200), ("POST", 403)]


def test_put_many_goes_on_after_a_rejected_item(google_env: GoogleEnv) -> None:
    """One bad item (Google refuses it for good) does not hold back the person's other events."""
    days = [item(day="d1"), replace(item(day="d2"), time_zone="Nowhere/Atlantis"), item(day="d3")]
    results = drive(google_env, lambda p: p.put_many([(d, None) for d in days]))
    assert [type(r) for r in results] == [Written, Rejected, Written]
    assert sorted(e["key"] for e in google_env.events()) == ["u42.d1", "u42.d3"]


def test_random_throttling_and_lost_answers_never_duplicate_an_event(google_env: GoogleEnv) -> None:
    """Retrying whatever was throttled or lost until it sticks leaves exactly one event per day."""
    google_env.fake.random_throttle(0.3, seed=10)
    days = [item(day=f"d{n}", local=datetime(2030, 3, 1 + n, 9)) for n in range(12)]

    async def body(provider: GoogleProvider) -> int:
        retries = 0
        for n, day in enumerate(days):
            if n % 4 == 0:
                google_env.fake.lose_answers(1)
            while True:
                try:
                    await provider.put(day, None)
                    break
                except (Throttled, Unavailable):
                    retries += 1
        return retries

    retries = drive(google_env, body)
    assert retries >= 3  # 3 lost answers at least, and the dice threw some 403/429s
    assert sorted(e["key"] for e in google_env.events()) == sorted(d.key for d in days)
    assert len(google_env.fake.stored(google_env.account, deleted=True)) == 12
    assert {entry.status for entry in google_env.fake.log} >= {200, 409, 403, 429}


def call(
    fake: GoogleCalendarFake, token: str, method: str, path: str, body: Any = None, **options: Any
) -> tuple[int, Any]:
    """One raw request to the fake, as any Google client would send it: (status, JSON body or None)."""

    async def main() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                f"{fake.base_url}/calendars/primary/events{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}", **options.pop("headers", {})},
                **options,
            ) as response,
        ):
            return response.status, (await response.json() if response.content_length else None)

    return asyncio.run(main())


def test_the_fake_keeps_googles_id_and_deletion_rules(google_env: GoogleEnv) -> None:
    """The rules the provider relies on, as Google documents them, so the other tests prove something."""
    fake, token = google_env.fake, google_env.tokens.current
    when = {
        "start": {"dateTime": "2030-03-12T09:00:00", "timeZone": NEW_YORK},
        "end": {"dateTime": "2030-03-12T17:00:00-04:00"},
    }
    status, error = call(fake, token, "POST", "", {"id": "ABC-12", **when})
    assert status == 400
    assert error["error"]["errors"][0] == {
        "domain": "global",
        "reason": "invalid",
        "message": "Invalid resource id value.",
    }
    assert error["error"]["code"] == 400 and error["error"]["status"] == "INVALID_ARGUMENT"
    assert call(fake, token, "POST", "", {"id": "abcd", **when})[0] == 400  # 5 characters at least
    assert call(fake, token, "POST", "", {"id": "vvvvv0", **when})[0] == 200
    status, error = call(fake, token, "POST", "", {"id": "vvvvv0", **when})
    assert (status, error["error"]["errors"][0]["reason"]) == (409, "duplicate")
    assert call(fake, token, "DELETE", "/vvvvv0")[0] == 204
    status, error = call(fake, token, "DELETE", "/vvvvv0")
    assert (status, error["error"]["errors"][0]["reason"]) == (410, "deleted")
    assert call(fake, token, "POST", "", {"id": "vvvvv0", **when})[0] == 409  # the id stays taken
    status, event = call(fake, token, "GET", "/vvvvv0")
    assert (status, event["status"]) == (200, "cancelled")
    status, error = call(fake, token, "POST", "", {"start": {"dateTime": "2030-03-12T09:00:00"}, "end": when["end"]})
    assert (status, error["error"]["message"]) == (400, "Missing time zone definition for start time.")
    status, error = call(fake, "not-a-token", "GET", "/vvvvv0")
    assert (status, error["error"]["errors"][0]["reason"]) == (401, "authError")


def test_the_fake_lists_by_private_property_and_honours_if_match(google_env: GoogleEnv) -> None:
    """list filters on our tag and leaves cancelled events out; patch merges; a stale If-Match is 412."""
    written = drive(google_env, lambda p: p.put_many([(item(day="d1"), None), (item(day="d2"), None)]))
    fake, token = google_env.fake, google_env.tokens.current
    first = written[0]
    assert isinstance(first, Written)
    params = {"privateExtendedProperty": f"{TAG}=u42.d1"}
    status, page = call(fake, token, "GET", "", params=params)
    assert (status, [e["id"] for e in page["items"]]) == (200, [first.provider_id])
    status, event = call(fake, token, "PATCH", f"/{first.provider_id}", {"summary": "Renamed"})
    assert (status, event["summary"], event["location"]) == (200, "Renamed", "Hall B")
    stale = {"headers": {"If-Match": str(first.etag)}}
    status, error = call(fake, token, "PUT", f"/{first.provider_id}", event, **stale)
    assert (status, error["error"]["errors"][0]["reason"]) == (412, "conditionNotMet")
    google_env.delete_as_person(first.provider_id)
    assert call(fake, token, "GET", "", params=params)[1]["items"] == []
    status, page = call(fake, token, "GET", "", params={**params, "showDeleted": "true"})
    assert [e["status"] for e in page["items"]] == ["cancelled"]


class TestGoogleContract(ProviderContract):
    """The contract every provider honours (tests/mirror/contract.py), against the Google Calendar fake."""

    env_fixture = "google_env"
