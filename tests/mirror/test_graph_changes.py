"""The Microsoft Graph provider two-way, against the Graph fake and a receiver on 127.0.0.1: subscriptions with
their validation handshake, change and lifecycle notifications as Graph delivers them (duplicated, dropped,
out of order), calendarView/delta with paging and expired tokens, a deleted calendar, and a moved event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import pytest
from fakes.graph import GraphFake
from graph_receiver_support import GraphReceiver, graph_receiver
from graph_support import run

from calendars.model import (
    AuthorizationLost,
    CalendarGone,
    CalendarItem,
    Changes,
    CursorExpired,
    ProviderError,
    Rejected,
    Unavailable,
    Watch,
    Written,
)
from calendars.providers import graph
from calendars.providers.graph import GraphProvider

if TYPE_CHECKING:
    from graph_support import GraphEnv

T = TypeVar("T")
SECRET = "a-client-state-of-coursewire-0123456789"  # noqa: S105 (a test value)
# The provider's clock for delta tests: the window runs from 2029-05-31 to 2032-06-01.
NOW = datetime(2029, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[GraphReceiver]:
    with graph_receiver() as found:
        yield found


def failure(env: GraphEnv, step: Callable[[GraphProvider], Awaitable[Any]], **options: Any) -> ProviderError:
    async def catch(provider: GraphProvider) -> ProviderError:
        try:
            await step(provider)
        except ProviderError as exc:
            return exc
        raise AssertionError("no ProviderError")

    return run(env, catch, **options)


def item(day: str = "day1", *, start: datetime = datetime(2030, 3, 5, 8, 0, tzinfo=UTC)) -> CalendarItem:
    return CalendarItem(
        user_id="user1",
        session_id="session1",
        day_id=day,
        subject=f"Forklift safety {day}",
        start=start,
        end=start + timedelta(hours=8),
        time_zone="Europe/Berlin",
        body_text="Forklift safety",
        body_html="<p>Forklift safety</p>",
        location="Hall B",
    )


def put(env: GraphEnv, it: CalendarItem) -> Written:
    return run(env, lambda p: p.put(it, None))


def changes(env: GraphEnv, cursor: str | None) -> Changes:
    return run(env, lambda p: p.changes(cursor), clock=lambda: NOW)


def watch(env: GraphEnv, receiver: GraphReceiver, expires_at: datetime | None = None) -> Watch:
    until = expires_at or datetime.now(UTC) + timedelta(days=3)
    return run(env, lambda p: p.watch(receiver.url, SECRET, until))


def delta_gets(env: GraphEnv) -> int:
    return sum(1 for method, path in env.requests() if method == "GET" and path.endswith("/calendarView/delta"))


def secondary(env: GraphEnv, fake: GraphFake, name: str = "Training") -> str:
    """Connect the env's provider to a new calendar of the person instead of the default one."""
    calendar = fake.add_calendar(env.user_id, name)
    env.calendar = calendar
    return calendar


# -- subscriptions ----------------------------------------------------------------------------------------------


def test_watch_answers_the_handshake_and_subscribes_the_calendar(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """A subscription exists only after the receiver echoed Graph's validation token (decoded) for both the
    notification and the lifecycle URL; it watches the calendar's events with our clientState."""
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    found = watch(graph_env, receiver, until)
    assert len(receiver.tokens) == 2 and all(" " in t and ":" in t for t in receiver.tokens)
    assert [passed for _, passed in graph_fake.validations] == [True, True]
    (sub,) = graph_fake.subscriptions_of(graph_env.user_id)
    assert sub.id == found.id and found.expires_at == until
    assert (sub.resource, sub.client_state, sub.notification_url, sub.lifecycle_url) == (
        "me/events",
        SECRET,
        receiver.url,
        receiver.url,
    )
    assert sub.change_types == ("created", "updated", "deleted")


@pytest.mark.parametrize("answer", ["wrong", "json", "refuse"])
def test_a_failed_handshake_is_rejected_with_graphs_message(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver, answer: str
) -> None:
    """A receiver that does not echo the token as text/plain leaves no subscription, and says why."""
    receiver.validation = answer
    error = failure(graph_env, lambda p: p.watch(receiver.url, SECRET, datetime.now(UTC) + timedelta(days=1)))
    assert isinstance(error, Rejected) and "validation request failed" in str(error)
    assert graph_fake.subscriptions_of(graph_env.user_id) == []


def test_watch_asks_for_no_more_than_graph_allows(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """Asked for 30 days, the provider asks Graph for under 10,080 minutes (Graph refuses more); asked for 10
    minutes, Graph makes it 45 and the Watch says so [MS4][MS15]."""
    now = datetime.now(UTC)
    long = watch(graph_env, receiver, now + timedelta(days=30))
    assert now + timedelta(minutes=10_060) < long.expires_at <= now + timedelta(minutes=10_080)
    short = watch(graph_env, receiver, now + timedelta(minutes=10))
    assert now + timedelta(minutes=44) < short.expires_at <= datetime.now(UTC) + timedelta(minutes=45)


def test_a_client_state_over_128_characters_is_refused_before_asking(
    graph_env: GraphEnv, receiver: GraphReceiver
) -> None:
    """Graph takes at most 128 characters of clientState [MS5]; a longer secret is a programming error."""

    async def step(provider: GraphProvider) -> None:
        await provider.watch(receiver.url, "x" * 129, datetime.now(UTC) + timedelta(days=1))

    with pytest.raises(ValueError, match="128"):
        run(graph_env, step)
    assert graph_env.requests() == []


def test_renew_extends_and_a_forgotten_subscription_is_made_again(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """Renewal PATCHes the expiry; after Graph removed the subscription (a lifecycle notification says so), a
    renewal creates a new one."""
    first = watch(graph_env, receiver, datetime.now(UTC) + timedelta(days=1))
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=4)
    renewed = run(graph_env, lambda p: p.renew(first, receiver.url, SECRET, later))
    assert renewed == Watch(first.id, later)
    assert graph_env.requests()[-1] == ("PATCH", f"/v1.0/subscriptions/{first.id}")
    graph_fake.lifecycle(first.id, "subscriptionRemoved")
    assert [n["lifecycleEvent"] for n in receiver.lifecycle] == ["subscriptionRemoved"]
    assert receiver.lifecycle[0]["subscriptionId"] == first.id and receiver.lifecycle[0]["clientState"] == SECRET
    again = run(graph_env, lambda p: p.renew(first, receiver.url, SECRET, later))
    assert again.id != first.id
    assert [s.id for s in graph_fake.subscriptions_of(graph_env.user_id)] == [again.id]


def test_unwatch_deletes_and_a_gone_subscription_is_success(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """Unwatching stops notifications; doing it again (404) is not an error."""
    found = watch(graph_env, receiver)
    run(graph_env, lambda p: p.unwatch(found))
    run(graph_env, lambda p: p.unwatch(found))
    assert graph_fake.subscriptions_of(graph_env.user_id) == []
    put(graph_env, item())
    graph_fake.flush()
    assert receiver.changes == []


# -- notifications ----------------------------------------------------------------------------------------------


def test_notifications_name_the_event_by_its_stored_id_with_the_client_state(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """Our own write, the person's edit and the person's deletion each arrive with our clientState and the
    ImmutableId the provider stored, so the receiver can check the one and look up the other [MS5][MS16]."""
    found = watch(graph_env, receiver)
    written = put(graph_env, item())
    graph_fake.edit_as_person(graph_env.user_id, written.provider_id, subject="Mine now")
    graph_fake.delete_as_person(graph_env.user_id, written.provider_id)
    graph_fake.flush()
    assert [n["changeType"] for n in receiver.changes] == ["created", "updated", "deleted"]
    for note in receiver.changes:
        assert note["clientState"] == SECRET and note["subscriptionId"] == found.id
        assert note["resourceData"]["id"] == written.provider_id
        assert note["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
    assert all(d.status == 202 for d in graph_fake.deliveries)


def test_a_moved_event_is_a_deletion_notice_but_get_still_finds_it(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """Moving the event to another calendar notifies `deleted` for the watched calendar, yet a direct read by
    the stored id finds it, unchanged id: the engine's confirmation read tells a move from a deletion [MS16]."""
    calendar = secondary(graph_env, graph_fake)
    watch(graph_env, receiver)
    written = put(graph_env, item())
    other = graph_fake.add_calendar(graph_env.user_id, "Personal")
    graph_fake.move_as_person(graph_env.user_id, written.provider_id, other)
    graph_fake.flush()
    assert [n["changeType"] for n in receiver.changes] == ["created", "deleted"]
    assert receiver.changes[-1]["resourceData"]["id"] == written.provider_id
    remote = run(graph_env, lambda p: p.get(written))
    assert remote is not None and remote.provider_id == written.provider_id and remote.key == "user1.day1"
    assert graph_fake.stored(graph_env.user_id, calendar) == []


def test_duplicates_arrive_twice_and_dropped_ones_are_found_by_the_sweep(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """Graph may send a notification twice or not at all [MS5]: the duplicate is identical, and the dropped
    deletion still shows in the next delta as a removal."""
    first, second = put(graph_env, item("day1")), put(graph_env, item("day2"))
    cursor = changes(graph_env, None).cursor
    watch(graph_env, receiver)
    graph_fake.duplicate_next()
    graph_fake.delete_as_person(graph_env.user_id, first.provider_id)
    graph_fake.drop_next()
    graph_fake.delete_as_person(graph_env.user_id, second.provider_id)
    graph_fake.flush()
    assert len(receiver.changes) == 2 and receiver.changes[0] == receiver.changes[1]
    assert receiver.changes[0]["resourceData"]["id"] == first.provider_id
    swept = changes(graph_env, cursor)
    assert {(c.provider_id, c.removed) for c in swept.changes} == {
        (first.provider_id, True),
        (second.provider_id, True),
    }


def test_held_notifications_can_arrive_out_of_order(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """Notifications carry no order guarantee: a deletion may arrive before the creation of the same event."""
    watch(graph_env, receiver)
    graph_fake.hold()
    written = put(graph_env, item())
    graph_fake.delete_as_person(graph_env.user_id, written.provider_id)
    graph_fake.flush()
    assert receiver.changes == []
    graph_fake.release(reverse=True)
    graph_fake.flush()
    assert [n["changeType"] for n in receiver.changes] == ["deleted", "created"]


def test_lifecycle_notifications_reach_the_lifecycle_url(
    graph_env: GraphEnv, graph_fake: GraphFake, receiver: GraphReceiver
) -> None:
    """reauthorizationRequired and missed arrive with the subscription id and our clientState [MS7]."""
    found = watch(graph_env, receiver)
    graph_fake.lifecycle(found.id, "reauthorizationRequired")
    graph_fake.lifecycle(found.id, "missed")
    assert [(n["lifecycleEvent"], n["subscriptionId"], n["clientState"]) for n in receiver.lifecycle] == [
        ("reauthorizationRequired", found.id, SECRET),
        ("missed", found.id, SECRET),
    ]
    assert [s.id for s in graph_fake.subscriptions_of(graph_env.user_id)] == [found.id]


# -- delta ------------------------------------------------------------------------------------------------------


def test_a_first_listing_is_full_and_the_next_names_only_what_changed(
    graph_env: GraphEnv, graph_fake: GraphFake
) -> None:
    """changes(None) lists the window's events (full); the deltaLink then gives edits, new events and
    deletions (`@removed`) since, and nothing once nothing changed [MS10]."""
    kept, edited, deleted = (put(graph_env, item(d)) for d in ("day1", "day2", "day3"))
    put(graph_env, item("far", start=datetime(2033, 1, 10, 8, 0, tzinfo=UTC)))  # after the window
    first = changes(graph_env, None)
    assert first.full and not first.more
    assert {c.provider_id for c in first.changes} == {kept.provider_id, edited.provider_id, deleted.provider_id}
    assert not any(c.removed for c in first.changes)
    graph_fake.edit_as_person(graph_env.user_id, edited.provider_id, subject="Renamed")
    graph_fake.delete_as_person(graph_env.user_id, deleted.provider_id)
    added = put(graph_env, item("day4"))
    second = changes(graph_env, first.cursor)
    assert not second.full and not second.more
    assert {(c.provider_id, c.removed) for c in second.changes} == {
        (edited.provider_id, False),
        (deleted.provider_id, True),
        (added.provider_id, False),
    }
    assert changes(graph_env, second.cursor).changes == []
    assert [p for m, p in graph_env.requests() if m == "GET"] == ["/v1.0/me/calendarView/delta"] * 3


def test_delta_pages_are_followed_and_capped_per_call(
    graph_env: GraphEnv, graph_fake: GraphFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """250 events come in pages of 100; with the page cap at 2, a call stops with `more` and its nextLink,
    and the next call finishes the listing with the deltaLink."""
    written = run(graph_env, lambda p: p.put_many([(item(f"d{n}"), None) for n in range(250)]))
    ids = {w.provider_id for w in written if isinstance(w, Written)}
    assert len(ids) == 250
    before = delta_gets(graph_env)
    whole = changes(graph_env, None)
    assert {c.provider_id for c in whole.changes} == ids and not whole.more
    assert delta_gets(graph_env) - before == 3
    monkeypatch.setattr(graph, "DELTA_PAGE_CAP", 2)
    cut = changes(graph_env, None)
    assert cut.more and cut.full and len(cut.changes) == 200 and "$skiptoken" in cut.cursor
    rest = changes(graph_env, cut.cursor)
    assert not rest.more and len(rest.changes) == 50 and "$deltatoken" in rest.cursor
    assert {c.provider_id for c in cut.changes + rest.changes} == ids


@pytest.mark.parametrize(
    ("status", "code"), [(410, "resyncRequired"), (400, "syncStateNotFound"), (410, "somethingElse")]
)
def test_an_expired_delta_token_is_cursor_expired(
    graph_env: GraphEnv, graph_fake: GraphFake, status: int, code: str
) -> None:
    """A 410 Gone (whatever its code) or a syncStateNotFound on a delta link means: list everything again
    [MS10-b]; a new listing works."""
    put(graph_env, item())
    cursor = changes(graph_env, None).cursor
    graph_fake.expire_delta(graph_env.user_id, status, code)
    error = failure(graph_env, lambda p: p.changes(cursor), clock=lambda: NOW)
    assert isinstance(error, CursorExpired)
    assert len(changes(graph_env, None).changes) == 1


def test_a_cursor_for_another_host_is_not_followed(graph_env: GraphEnv) -> None:
    """A stored link that does not point at the configured Graph is not requested (the token would go with
    it): it is an expired cursor."""
    error = failure(graph_env, lambda p: p.changes("https://graph.example.net/v1.0/me/calendarView/delta?x=1"))
    assert isinstance(error, CursorExpired)
    assert graph_env.requests() == []


def test_a_deleted_calendar_is_calendar_gone_not_deletions(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """After the person deletes the connected calendar, its delta and the calendar itself answer 404:
    CalendarGone, not a list of removals."""
    calendar = secondary(graph_env, graph_fake)
    put(graph_env, item())
    run(graph_env, lambda p: p.check_calendar())
    cursor = changes(graph_env, None).cursor
    assert f"/calendars/{quote(calendar, safe='')}/calendarView/delta" in cursor
    graph_fake.delete_calendar(graph_env.user_id, calendar)
    assert isinstance(failure(graph_env, lambda p: p.changes(cursor)), CalendarGone)
    assert isinstance(failure(graph_env, lambda p: p.changes(None)), CalendarGone)
    assert isinstance(failure(graph_env, lambda p: p.check_calendar()), CalendarGone)


def test_check_calendar_with_revoked_consent_is_authorization_lost(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """A 401 that a refresh cannot cure is AuthorizationLost, not CalendarGone."""
    graph_fake.revoke(graph_env.user_id)
    assert isinstance(failure(graph_env, lambda p: p.check_calendar()), AuthorizationLost)


def test_a_moved_event_leaves_the_delta_but_is_found_by_its_id(graph_env: GraphEnv, graph_fake: GraphFake) -> None:
    """An event moved to another calendar is `@removed` from the connected calendar's delta, and `get` by the
    stored ImmutableId finds it in the other calendar; writes to it keep working [MS16]."""
    secondary(graph_env, graph_fake)
    written = put(graph_env, item())
    cursor = changes(graph_env, None).cursor
    other = graph_fake.add_calendar(graph_env.user_id, "Personal")
    graph_fake.move_as_person(graph_env.user_id, written.provider_id, other)
    moved = changes(graph_env, cursor)
    assert [(c.provider_id, c.removed) for c in moved.changes] == [(written.provider_id, True)]
    remote = run(graph_env, lambda p: p.get(written))
    assert remote is not None and remote.provider_id == written.provider_id
    again = run(graph_env, lambda p: p.put(item(), written))
    assert again.provider_id == written.provider_id
    stored = graph_fake.event(graph_env.user_id, written.provider_id)
    assert stored is not None and stored.calendar == other


def test_an_answer_over_the_size_bound_is_refused(
    graph_env: GraphEnv, graph_fake: GraphFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider reads no more of an answer than MAX_ANSWER_BYTES: a larger delta page is Unavailable."""
    for day in ("day1", "day2", "day3"):
        put(graph_env, item(day))
    monkeypatch.setattr(graph, "MAX_ANSWER_BYTES", 2_000)
    assert isinstance(failure(graph_env, lambda p: p.changes(None), clock=lambda: NOW), Unavailable)


def test_an_event_deleted_in_outlook_sits_in_deleted_items_and_reads_as_gone(
    graph_env: GraphEnv, graph_fake: GraphFake
) -> None:
    """Outlook moves a deleted event to Deleted Items, where its ImmutableId still finds it: `get` asks for the
    event's calendar too and, finding none, answers None, so the engine sees the deletion the person made."""
    secondary(graph_env, graph_fake)
    written = put(graph_env, item())
    cursor = changes(graph_env, None).cursor
    graph_fake.trash_as_person(graph_env.user_id, written.provider_id)
    removed = changes(graph_env, cursor).changes
    assert [(c.provider_id, c.removed) for c in removed] == [(written.provider_id, True)]
    assert run(graph_env, lambda p: p.get(written)) is None
