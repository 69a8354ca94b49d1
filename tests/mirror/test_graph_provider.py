"""The Microsoft Graph provider against the Graph fake: idempotent creates, updates, deletes, Windows zones,
$batch with inner 429s, token refresh, and the per-mailbox limit of 4 concurrent requests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from contract import ProviderContract
from fakes.graph import APP, GraphFake
from graph_support import run
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from calendars.model import (
    AuthorizationLost,
    CalendarItem,
    ProviderError,
    Rejected,
    RemoteEvent,
    Throttled,
    Unavailable,
    Written,
)
from calendars.providers.graph import GraphProvider, graph_times, transaction_id
from calendars.timezones import iana_zone

if TYPE_CHECKING:
    from graph_support import GraphEnv


T = TypeVar("T")


class TestGraphContract(ProviderContract):
    """The contract every provider honours, against the Graph fake."""

    env_fixture = "graph_env"


def item(
    day: str = "day1",
    *,
    subject: str = "Forklift safety",
    start: datetime = datetime(2030, 3, 5, 8, 0, tzinfo=UTC),
    end: datetime = datetime(2030, 3, 5, 16, 0, tzinfo=UTC),
    time_zone: str = "Europe/Berlin",
    windows: str | None = None,
    room: str | None = "Hall B",
) -> CalendarItem:
    return CalendarItem(
        user_id="user1",
        session_id="session1",
        day_id=day,
        subject=subject,
        start=start,
        end=end,
        time_zone=time_zone,
        windows_time_zone=windows,
        body_text=f"{subject}\nRoom: {room}",
        body_html=f"<p>{subject}</p><p>Room: {room}</p>",
        location=room,
    )


def put(env: GraphEnv, it: CalendarItem, written: Written | None = None) -> Written:
    return run(env, lambda p: p.put(it, written))


def get(env: GraphEnv, written: Written) -> RemoteEvent | None:
    return run(env, lambda p: p.get(written))


def failure(env: GraphEnv, step: Callable[[GraphProvider], Awaitable[Any]]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        run(env, step)
    return caught.value


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (polling) until `condition` holds; fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def only(env: GraphEnv) -> dict[str, Any]:
    events = env.events()
    assert len(events) == 1, events
    return events[0]


# -- what is written ---------------------------------------------------------------------------------------------


def test_create_writes_the_event_as_graph_takes_it(graph_env: GraphEnv) -> None:
    """One event with our key as an extended property, the transactionId of the item, local times under the
    Windows name, the HTML body and the room, and nothing that would send an invitation."""
    it = item()
    written = put(graph_env, it)
    event = only(graph_env)
    assert event["id"] == written.provider_id
    assert event["key"] == it.key == "user1.day1"
    fields = event["fields"]
    assert fields["transactionId"] == transaction_id(it.handle)
    assert fields["transactionId"].replace("-", "") == it.handle
    assert fields["start"] == {"dateTime": "2030-03-05T09:00:00", "timeZone": "W. Europe Standard Time"}
    assert fields["end"] == {"dateTime": "2030-03-05T17:00:00", "timeZone": "W. Europe Standard Time"}
    assert fields["body"] == {"contentType": "HTML", "content": it.body_html}
    assert fields["location"] == {"displayName": "Hall B"}
    assert fields["isReminderOn"] is True
    assert fields["responseRequested"] is False
    assert fields["allowNewTimeProposals"] is False
    assert "attendees" not in fields
    assert (event["start"], event["end"]) == (it.start, it.end)
    assert graph_env.requests() == [("POST", "/v1.0/me/events")]


def test_every_request_asks_for_immutable_ids(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """The stored id is the ImmutableId, so the event is still found after the person moves it to another
    calendar (a regular id would change)."""
    written = put(graph_env, item())
    stored = graph_fake.event(graph_env.user_id, written.provider_id)
    assert stored is not None and stored.immutable_id == written.provider_id
    other = graph_fake.add_calendar(graph_env.user_id, "Training")
    graph_fake.move_as_person(graph_env.user_id, written.provider_id, other)
    remote = get(graph_env, written)
    assert remote is not None and remote.key == "user1.day1"
    again = put(graph_env, item(subject="Forklift safety, part 2"), written)
    assert again.provider_id == written.provider_id


def test_a_lost_create_answer_retried_gives_one_event(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """The answer to the create is lost (the request was carried out); the retry's transactionId finds the
    same event instead of adding a second one."""
    it = item()
    graph_fake.fail_next("lose")
    assert isinstance(failure(graph_env, lambda p: p.put(it, None)), Unavailable)
    assert len(graph_env.events()) == 1
    written = put(graph_env, it)
    assert only(graph_env)["id"] == written.provider_id
    assert graph_fake.counters["deduplicated"] == 1
    assert graph_env.requests() == [("POST", "/v1.0/me/events")] * 2


def test_a_retry_with_a_changed_item_updates_the_event_it_finds(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """The session moved between the lost create and its retry: the event the transactionId returns is
    brought up to date, still one event."""
    graph_fake.fail_next("lose")
    failure(graph_env, lambda p: p.put(item(), None))
    moved = item(
        subject="Forklift safety (moved)",
        start=datetime(2030, 3, 6, 8, tzinfo=UTC),
        end=datetime(2030, 3, 6, 12, tzinfo=UTC),
    )
    written = put(graph_env, moved)
    event = only(graph_env)
    assert (event["id"], event["subject"], event["start"], event["end"]) == (
        written.provider_id,
        "Forklift safety (moved)",
        moved.start,
        moved.end,
    )
    assert graph_env.requests()[-1][0] == "PATCH"


def test_update_patches_the_same_event(graph_env: GraphEnv) -> None:
    """A session edit changes the event in place: same id, new subject, times and room."""
    first = put(graph_env, item())
    edited = item(subject="Forklift safety II", start=datetime(2030, 3, 5, 9, tzinfo=UTC), room="Hall C")
    second = put(graph_env, edited, first)
    assert second.provider_id == first.provider_id
    assert second.etag != first.etag
    event = only(graph_env)
    assert (event["subject"], event["start"], event["fields"]["location"]["displayName"]) == (
        "Forklift safety II",
        edited.start,
        "Hall C",
    )
    assert event["fields"]["transactionId"] == transaction_id(edited.handle)  # an update does not send it
    assert graph_env.requests()[-1] == ("PATCH", f"/v1.0/me/events/{first.provider_id}")


def test_delete_twice(graph_env: GraphEnv) -> None:
    """Deleting removes the event; deleting it again (a retry) is success."""
    written = put(graph_env, item())
    run(graph_env, lambda p: p.delete(written))
    run(graph_env, lambda p: p.delete(written))
    assert graph_env.events() == []
    assert [m for m, _ in graph_env.requests()] == ["POST", "DELETE", "DELETE"]


def test_after_the_person_deletes_it(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """get() says it is gone, and the next put creates it again, under a transactionId of its own that a retry
    repeats: the re-create's answer is lost, and its retry still leaves one event."""
    it = item()
    written = put(graph_env, it)
    graph_env.delete_as_person(written.provider_id)
    assert get(graph_env, written) is None
    graph_fake.fail_next("lose", method="POST")
    assert isinstance(failure(graph_env, lambda p: p.put(it, written)), Unavailable)
    again = put(graph_env, it, written)
    event = only(graph_env)
    assert event["id"] == again.provider_id != written.provider_id
    assert event["key"] == it.key
    assert event["fields"]["transactionId"] != transaction_id(it.handle)
    assert [m for m, _ in graph_env.requests()] == ["POST", "GET", "PATCH", "POST", "PATCH", "POST"]
    assert graph_fake.counters["deduplicated"] == 1


def test_get_reads_back_key_and_instants(graph_env: GraphEnv) -> None:
    it = item()
    written = put(graph_env, it)
    remote = get(graph_env, written)
    assert remote is not None
    assert (remote.provider_id, remote.key, remote.subject, remote.start, remote.end) == (
        written.provider_id,
        it.key,
        it.subject,
        it.start,
        it.end,
    )
    assert remote.etag == written.etag
    assert remote.extra["originalStartTimeZone"] == "W. Europe Standard Time"


# -- time zones ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "windows", "wall"),
    [
        ("Europe/Berlin", "W. Europe Standard Time", "2030-03-05T09:00:00"),
        ("America/New_York", "Eastern Standard Time", "2030-03-05T03:00:00"),
        ("Asia/Kolkata", "India Standard Time", "2030-03-05T13:30:00"),
        ("Asia/Calcutta", "India Standard Time", "2030-03-05T13:30:00"),
    ],
)
def test_windows_zone_names(graph_env: GraphEnv, zone: str, windows: str, wall: str) -> None:
    """Graph gets the session's wall-clock time under the Windows name of its zone."""
    put(graph_env, item(time_zone=zone))
    event = only(graph_env)
    assert (event["time_zone"], event["fields"]["start"]["dateTime"]) == (windows, wall)


def test_every_windows_zone_round_trips(graph_env: GraphEnv) -> None:
    """A session in any zone of CLDR's table is written under its Windows name and reads back at the same
    instants (written in $batch requests of 20)."""
    start = datetime(2030, 7, 1, 10, 0, tzinfo=UTC)
    items = [
        item(f"d{i}", time_zone=iana_zone(w) or "", start=start, end=start + timedelta(hours=3))
        for i, w in enumerate(sorted(WINDOWS_TO_OLSON))
    ]
    results = run(graph_env, lambda p: p.put_many([(it, None) for it in items]))
    assert all(isinstance(r, Written) for r in results), [r for r in results if not isinstance(r, Written)]
    by_key = {e["key"]: e for e in graph_env.events()}
    for it, windows in zip(items, sorted(WINDOWS_TO_OLSON), strict=True):
        event = by_key[it.key]
        assert (event["time_zone"], event["start"], event["end"]) == (windows, it.start, it.end), windows

    async def read_all(p: GraphProvider) -> list[RemoteEvent | None]:
        return list(await asyncio.gather(*(p.get(r) for r in results if isinstance(r, Written))))

    remote = run(graph_env, read_all)
    assert [(r.start, r.end) for r in remote if r] == [(it.start, it.end) for it in items]


def test_a_zone_without_windows_name_is_written_in_utc(graph_env: GraphEnv) -> None:
    """Europe/Vienna has no territory-001 Windows name: UTC times, the same instants."""
    it = item(time_zone="Europe/Vienna")
    put(graph_env, it)
    event = only(graph_env)
    assert event["fields"]["start"] == {"dateTime": "2030-03-05T08:00:00", "timeZone": "UTC"}
    assert (event["start"], event["end"]) == (it.start, it.end)


def test_the_sessions_own_windows_name_is_kept(graph_env: GraphEnv) -> None:
    """The API's TimeZone (a Windows id) goes to Graph as given when it names the item's zone."""
    put(graph_env, item(time_zone="America/Indiana/Indianapolis", windows="US Eastern Standard Time"))
    assert only(graph_env)["time_zone"] == "US Eastern Standard Time"
    # a stale Windows id that names another zone loses against the IANA zone
    assert graph_times(item(time_zone="Europe/Berlin", windows="Eastern Standard Time"))[2] == "W. Europe Standard Time"


def test_a_multi_day_session_across_the_daylight_saving_change(graph_env: GraphEnv) -> None:
    """09:00-17:00 in Berlin on each of four days around 2030-03-31 (clocks go forward): the wall-clock time
    stays 09:00 while the UTC instant moves an hour."""
    berlin = ZoneInfo("Europe/Berlin")
    days = [datetime(2030, 3, d, 9, tzinfo=berlin) for d in (29, 30, 31)] + [datetime(2030, 4, 1, 9, tzinfo=berlin)]
    items = [
        item(f"day{n}", start=d.astimezone(UTC), end=(d + timedelta(hours=8)).astimezone(UTC))
        for n, d in enumerate(days)
    ]
    results = run(graph_env, lambda p: p.put_many([(it, None) for it in items]))
    assert all(isinstance(r, Written) for r in results)
    events = sorted(graph_env.events(), key=lambda e: e["start"])
    assert [e["fields"]["start"]["dateTime"] for e in events] == [
        "2030-03-29T09:00:00",
        "2030-03-30T09:00:00",
        "2030-03-31T09:00:00",
        "2030-04-01T09:00:00",
    ]
    assert [e["start"].hour for e in events] == [8, 8, 7, 7]  # UTC
    assert [(e["start"], e["end"]) for e in events] == [(it.start, it.end) for it in items]


def test_a_time_in_the_repeated_hour_is_written_in_utc(graph_env: GraphEnv) -> None:
    """01:30 on 2030-11-03 happens twice in New York; a Windows name cannot say which, so UTC times go."""
    second = datetime(2030, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1).astimezone(UTC)
    it = item(time_zone="America/New_York", start=second, end=second + timedelta(hours=2))
    put(graph_env, it)
    event = only(graph_env)
    assert event["time_zone"] == "UTC"
    assert (event["start"], event["end"]) == (it.start, it.end)


# -- $batch ---------------------------------------------------------------------------------------------------------


def test_put_many_batches_creates_updates_and_recreates(graph_env: GraphEnv) -> None:
    """25 items go in two $batch requests (20 + 5); an update of an event the person deleted is created again
    in a follow-up batch; results come back in order."""
    first = [put(graph_env, item(f"d{i}")) for i in range(2)]
    graph_env.delete_as_person(first[1].provider_id)
    batch: list[tuple[CalendarItem, Written | None]] = [
        (item("d0", subject="Renamed"), first[0]),
        (item("d1", subject="Renamed"), first[1]),
    ] + [(item(f"d{i}"), None) for i in range(2, 27)]
    start = len(graph_env.requests())
    results = run(graph_env, lambda p: p.put_many(batch))
    written = [r for r in results if isinstance(r, Written)]
    assert len(written) == len(results) == 27
    assert written[0].provider_id == first[0].provider_id
    events = {e["key"]: e for e in graph_env.events()}
    assert len(events) == 27 and len(graph_env.events()) == 27
    assert [events[it.key]["id"] for it, _ in batch] == [r.provider_id for r in written]
    assert events["user1.d1"]["subject"] == "Renamed"
    assert graph_env.requests()[start:] == [("POST", "/v1.0/$batch")] * 3  # 20 + 7, then the re-create


def test_inner_429s_throttle_only_their_items(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """With a third of inner requests throttled, each throttled item is a Throttled carrying the inner
    Retry-After, the others are written; retrying what failed ends with one event per item, no duplicates."""
    graph_fake.batch_throttle_rate = 0.35
    env = graph_env
    items = [item(f"d{i}") for i in range(30)]
    state: dict[str, Written | None] = {it.key: None for it in items}
    throttled = 0
    for _ in range(20):
        todo = [(it, state[it.key]) for it in items if state[it.key] is None]
        if not todo:
            break
        results = run(env, lambda p, todo=todo: p.put_many(todo))  # type: ignore[misc]
        for (it, _), result in zip(todo, results, strict=True):
            if isinstance(result, Written):
                state[it.key] = result
            else:
                assert isinstance(result, Throttled), result
                assert result.retry_after == 7
                throttled += 1
    assert throttled > 0
    assert all(state.values())
    assert sorted(e["key"] for e in env.events()) == sorted(it.key for it in items)
    assert {m for m, _ in env.requests()} == {"POST"}
    assert all(p == "/v1.0/$batch" for _, p in env.requests())


def test_the_fake_refuses_batches_over_20(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """Graph takes at most 20 requests in a $batch; the fake answers 400 to 21, so the provider's chunks show."""

    async def send() -> int:
        requests = [{"id": str(i), "method": "GET", "url": "/me/events"} for i in range(21)]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{graph_fake.url}/v1.0/$batch",
                json={"requests": requests},
                headers={"Authorization": f"Bearer {graph_env.tokens.token}"},
            ) as response,
        ):
            return response.status

    assert asyncio.run(send()) == 400


# -- errors and tokens --------------------------------------------------------------------------------------------


def test_401_refreshes_the_token_once_and_succeeds(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """An access token Graph no longer takes is refreshed and the request sent again."""
    graph_fake.fail_next("auth")
    put(graph_env, item())
    assert graph_env.tokens.refreshes == 1
    assert len(graph_env.events()) == 1


def test_401_after_the_refresh_is_authorization_lost(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """Graph refusing the refreshed token too means the person must authorize again."""
    graph_fake.token_check = lambda token: None
    error = failure(graph_env, lambda p: p.put(item(), None))
    assert isinstance(error, AuthorizationLost)
    assert graph_env.tokens.refreshes == 1
    assert len(graph_env.requests()) == 2
    results = run(graph_env, lambda p: p.put_many([(item(), None)]))
    assert isinstance(results[0], AuthorizationLost)


def test_revoked_consent_is_authorization_lost(graph_env: GraphEnv) -> None:
    graph_env.fail_next("auth")
    assert isinstance(failure(graph_env, lambda p: p.get(Written("x"))), AuthorizationLost)


def test_throttled_and_unavailable(graph_env: GraphEnv) -> None:
    """429 with Retry-After is Throttled with its seconds; 503 without one is Unavailable; nothing is written."""
    graph_env.fail_next("throttle")
    error = failure(graph_env, lambda p: p.put(item(), None))
    assert isinstance(error, Throttled) and error.retry_after == 7
    graph_env.fail_next("unavailable")
    assert isinstance(failure(graph_env, lambda p: p.delete(Written("x"))), Unavailable)
    assert graph_env.events() == []


def test_a_refused_write_is_rejected_with_graphs_code(graph_env: GraphEnv) -> None:
    """A write Graph refuses for good (an end before the start) is Rejected, naming Graph's error code."""
    bad = item(start=datetime(2030, 3, 5, 16, tzinfo=UTC), end=datetime(2030, 3, 5, 8, tzinfo=UTC))
    error = failure(graph_env, lambda p: p.put(bad, None))
    assert isinstance(error, Rejected)
    assert "ErrorInvalidRequest" in str(error)


def test_an_unreachable_graph_is_unavailable() -> None:
    """A refused connection is Unavailable (try again later)."""

    class Tokens:
        async def access_token(self) -> str:
            return "t"

        async def refresh(self) -> str:
            return "t"

    async def main() -> ProviderError:
        async with aiohttp.ClientSession() as session:
            provider = GraphProvider(session, "http://127.0.0.1:9/v1.0", Tokens())
            with pytest.raises(ProviderError) as caught:
                await provider.put(item(), None)
            return caught.value

    assert isinstance(asyncio.run(main()), Unavailable)


def test_random_429s_outside_batches(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """The fake's random throttling (as the bench uses it) reaches the caller as Throttled with Retry-After."""
    graph_fake.throttle_rate = 1.0
    error = failure(graph_env, lambda p: p.put(item(), None))
    assert isinstance(error, Throttled) and error.retry_after == 7
    assert graph_env.events() == []


def test_retry_after_as_an_http_date(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """Retry-After given as an HTTP date is counted from the provider's clock."""
    graph_fake.fail_next("throttle", retry_after="Fri, 01 Mar 2030 12:00:30 GMT")
    now = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(Throttled) as caught:
        run(graph_env, lambda p: p.delete(Written("x")), clock=lambda: now)
    assert caught.value.retry_after == 30.0


# -- the per-mailbox limit ----------------------------------------------------------------------------------------


def test_never_more_than_4_concurrent_requests_to_a_mailbox(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """12 puts, a 10-item put_many and 4 gets at once on one provider: 4 requests reach the mailbox and the rest
    wait their turn (the fake would answer a 5th 429 MailboxConcurrency); everything is written."""
    graph_fake.pause()

    async def burst(p: GraphProvider) -> list[Any]:
        # The $batch first: Graph runs 4 of its requests at once against the mailbox, so it holds all 4 turns
        # and the single requests wait for them, instead of being refused by the mailbox.
        many = asyncio.ensure_future(p.put_many([(item(f"m{i}"), None) for i in range(10)]))
        await until(lambda: graph_fake.active(graph_env.user_id) == 4)
        singles = [asyncio.ensure_future(p.put(item(f"s{i}"), None)) for i in range(12)]
        reads = [asyncio.ensure_future(p.get(Written("missing"))) for _ in range(4)]
        await asyncio.sleep(0.2)  # time for a 5th request to arrive, if the provider sent one
        assert graph_fake.active(graph_env.user_id) == 4
        assert graph_fake.counters["concurrency"] == 0
        graph_fake.resume()
        return [await many, *[await s for s in singles], *[await r for r in reads]]

    graph_fake.latency = 0.01  # keep requests overlapping after the pause too
    results = run(graph_env, burst)
    assert all(isinstance(r, Written) for r in results[0])
    assert all(isinstance(r, Written) for r in results[1:13])
    assert results[13:] == [None] * 4
    assert graph_fake.counters["concurrency"] == 0
    assert graph_fake.peak(graph_env.user_id) == 4
    assert len(graph_env.events()) == 22


def test_the_fake_enforces_the_mailbox_limit(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """Without the provider's limit, a 5th concurrent request to one mailbox gets 429 with Retry-After."""
    graph_fake.pause()
    headers = {"Authorization": f"Bearer {graph_env.tokens.token}"}

    async def main() -> tuple[list[int], int, str | None]:
        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                async with session.get(f"{graph_fake.url}/v1.0/me/events", headers=headers) as r:
                    return r.status

            held = asyncio.gather(*(one() for _ in range(4)))
            await until(lambda: graph_fake.active(graph_env.user_id) == 4)
            async with session.get(f"{graph_fake.url}/v1.0/me/events", headers=headers) as fifth:
                status, wait = fifth.status, fifth.headers.get("Retry-After")
            graph_fake.resume()
            return list(await held), status, wait

    assert asyncio.run(main()) == ([200] * 4, 429, "1")


# -- other mailboxes and calendars --------------------------------------------------------------------------------


def test_a_chosen_calendar_and_a_users_mailbox(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """calendar= writes into that calendar; mailbox= reaches /users/{id} (an application token)."""
    env = graph_env
    training = graph_fake.add_calendar(env.user_id, "Training")
    env.calendar = training
    written = put(env, item())
    assert [e["id"] for e in env.events()] == [written.provider_id]
    assert graph_fake.stored(env.user_id) == []  # not in the default calendar
    env.tokens.token = graph_fake.issue_token(APP)
    remote = run(env, lambda p: p.get(written), mailbox=env.user_id)
    assert remote is not None and remote.key == "user1.day1"
    assert env.requests()[0] == ("POST", f"/v1.0/me/calendars/{training}/events")
    assert env.requests()[-2:] == [
        ("GET", f"/v1.0/users/{env.user_id}/events/{written.provider_id}"),
        ("GET", f"/v1.0/users/{env.user_id}/events/{written.provider_id}/calendar"),  # not in Deleted Items
    ]
