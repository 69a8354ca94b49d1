"""GoogleProvider as a two-way feed against the Google Calendar fake: watch channels that POST to a real receiver
on 127.0.0.1, the syncToken change feed with its deletions, pages and 410s, a deleted calendar, and an event the
person moved to another of their calendars ([GO1]-[GO4] in ../shared/reference/notes/calendar-sync.md §2.2)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import aiohttp
import pytest
from google_receiver_support import Receiver
from google_support import GoogleEnv

from calendars.model import (
    TAG,
    AuthorizationLost,
    CalendarGone,
    CalendarItem,
    Change,
    CursorExpired,
    Rejected,
    Throttled,
    Unavailable,
    Watch,
    Written,
)
from calendars.providers import google
from calendars.providers.google import GoogleProvider, format_cursor, parse_cursor, split_id

T = TypeVar("T")
NOW = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
SECRET = "channel-secret-0123456789"  # noqa: S105 (a test channel token)
TRAINING = "c_training@group.calendar.google.com"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(google_env: GoogleEnv) -> Clock:
    """One clock for the fake and the provider."""
    clock = Clock()
    google_env.fake.clock = clock
    return clock


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def drive(env: GoogleEnv, body: Callable[[GoogleProvider], Awaitable[T]], clock: Clock | None = None) -> T:
    """Run `body` with a provider of the person's primary calendar on a fresh aiohttp session."""

    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            provider = GoogleProvider(session, env.fake.base_url, env.tokens, clock=clock or Clock())
            try:
                return await body(provider)
            finally:
                await provider.close()

    return asyncio.run(main())


def item(day: str = "d1", subject: str = "Forklift safety") -> CalendarItem:
    start = datetime(2030, 3, 12, 13, 0, tzinfo=UTC)
    return CalendarItem(
        user_id="u42",
        session_id="s7",
        day_id=day,
        subject=subject,
        start=start,
        end=start + timedelta(hours=8),
        time_zone="America/New_York",
        body_text="Bring boots.",
        body_html="<p>Bring boots.</p>",
    )


def put(env: GoogleEnv, *days: str) -> list[Written]:
    return [drive(env, lambda p, d=d: p.put(item(d), None)) for d in days]  # type: ignore[misc]


def own_event(env: GoogleEnv, summary: str = "Dentist") -> str:
    """An event the person made themselves (no tag of ours), inserted straight into the fake."""
    status, body, _ = env.fake.handle(
        "POST",
        "/calendar/v3/calendars/primary/events",
        {"authorization": f"Bearer {env.tokens.current}"},
        (
            b'{"summary": "%s", "start": {"dateTime": "2030-03-12T08:00:00Z"},'
            b' "end": {"dateTime": "2030-03-12T09:00:00Z"}}' % summary.encode()
        ),
    )
    assert status == 200
    return str(body["id"])


def watch(env: GoogleEnv, receiver: Receiver, clock: Clock, days: int = 7) -> Watch:
    return drive(env, lambda p: p.watch(receiver.url, SECRET, clock.now + timedelta(days=days)), clock)


# --- watch channels --------------------------------------------------------------------------------------------


def test_watch_sends_sync_first_then_exists_on_each_change(
    google_env: GoogleEnv, receiver: Receiver, clock: Clock
) -> None:
    """A channel starts with `sync` (message 1) and then says `exists`, with our token, when our write or the
    person's deletion changes the calendar; the notification has no body, only headers [GO2]."""
    channel = watch(google_env, receiver, clock)
    assert channel.expires_at == NOW + timedelta(days=7)
    sent = google_env.fake.requests("POST", "/events/watch")[0].body
    assert sent["type"] == "web_hook" and sent["address"] == receiver.url and sent["token"] == SECRET
    assert sent["params"] == {"ttl": str(7 * 86400)} and sent["id"] == channel.id
    google_env.fake.settle()
    assert receiver.states() == [(channel.id, 1, "sync")]

    [written] = put(google_env, "d1")
    google_env.delete_as_person(written.provider_id)
    google_env.fake.settle()
    assert receiver.states()[1:] == [(channel.id, 2, "exists"), (channel.id, 3, "exists")]
    last = receiver.received[-1]
    assert last.body == b""
    assert last.headers["x-goog-channel-token"] == SECRET
    assert last.headers["x-goog-resource-id"] == channel.resource_id
    assert last.headers["x-goog-channel-expiration"] == "Fri, 08 Mar 2030 08:00:00 GMT"
    assert "/calendars/" in last.headers["x-goog-resource-uri"]


def test_google_may_shorten_a_channel_and_its_expiration_is_what_counts(
    google_env: GoogleEnv, receiver: Receiver, clock: Clock
) -> None:
    """Asked for 60 days the fake grants 30: the Watch carries Google's `expiration`, not what we asked."""
    channel = watch(google_env, receiver, clock, days=60)
    assert channel.expires_at == NOW + timedelta(days=30)


def test_renew_opens_a_new_channel_and_stops_the_old_one(
    google_env: GoogleEnv, receiver: Receiver, clock: Clock
) -> None:
    """Google cannot extend a channel: renew is a new channel, then channels/stop of the old; only the new one
    speaks after that."""
    old = watch(google_env, receiver, clock)
    clock.now += timedelta(days=6)
    new = drive(google_env, lambda p: p.renew(old, receiver.url, SECRET, clock.now + timedelta(days=7)), clock)
    assert new.id != old.id and new.expires_at == clock.now + timedelta(days=7)
    calls = [(e.method, e.path.rsplit("/", 2)[-2:], e.status) for e in google_env.fake.log]
    assert calls == [
        ("POST", ["events", "watch"], 200),
        ("POST", ["events", "watch"], 200),
        ("POST", ["channels", "stop"], 204),
    ]
    assert google_env.fake.log[-1].body == {"id": old.id, "resourceId": old.resource_id}
    put(google_env, "d1")
    google_env.fake.settle()
    assert receiver.states() == [(old.id, 1, "sync"), (new.id, 1, "sync"), (new.id, 2, "exists")]


def test_renewing_a_channel_google_no_longer_knows_still_gives_a_channel(
    google_env: GoogleEnv, receiver: Receiver, clock: Clock
) -> None:
    """The old channel is already gone (404 on stop): the new one stands and nothing is raised."""
    gone = Watch(id="lost-channel", expires_at=NOW, resource_id="r1")
    new = drive(google_env, lambda p: p.renew(gone, receiver.url, SECRET, NOW + timedelta(days=1)), clock)
    assert new.id != gone.id
    assert [e.status for e in google_env.fake.log] == [200, 404]


def test_unwatch_stops_the_notifications_and_a_second_unwatch_is_fine(
    google_env: GoogleEnv, receiver: Receiver, clock: Clock
) -> None:
    """After unwatch a change posts nothing; unwatching again (Google: 404) is success."""
    channel = watch(google_env, receiver, clock)

    async def twice(provider: GoogleProvider) -> None:
        await provider.unwatch(channel)
        await provider.unwatch(channel)

    drive(google_env, twice, clock)
    assert [e.status for e in google_env.fake.requests("POST", "/channels/stop")] == [204, 404]
    put(google_env, "d1")
    google_env.fake.settle()
    assert receiver.states() == [(channel.id, 1, "sync")]


def test_an_expired_channel_sends_nothing(google_env: GoogleEnv, receiver: Receiver, clock: Clock) -> None:
    """Past its expiration a channel is silent: the reason to renew it before then."""
    channel = watch(google_env, receiver, clock, days=1)
    clock.now += timedelta(days=1, seconds=1)
    put(google_env, "d1")
    google_env.fake.settle()
    assert receiver.states() == [(channel.id, 1, "sync")]


def test_duplicate_dropped_and_late_notifications(google_env: GoogleEnv, receiver: Receiver, clock: Clock) -> None:
    """What the receiver must survive: the same message twice, a gap where one was dropped, and one held back
    that arrives after a later one. The change feed still names every change (the sweep's backstop)."""
    channel = watch(google_env, receiver, clock)
    start = drive(google_env, lambda p: p.changes(None))
    google_env.fake.duplicate_next()
    put(google_env, "d1")  # message 2, twice
    google_env.fake.drop_next()
    put(google_env, "d2")  # message 3, never arrives
    google_env.fake.hold_next()
    put(google_env, "d3")  # message 4, held
    put(google_env, "d4")  # message 5
    google_env.fake.release()
    google_env.fake.settle()
    assert [number for _, number, _ in receiver.states()] == [1, 2, 2, 5, 4]
    assert {state for _, _, state in receiver.states()[1:]} == {"exists"}
    assert {c for c, _, _ in receiver.states()} == {channel.id}
    feed = drive(google_env, lambda p: p.changes(start.cursor))
    assert sorted(c.key or "" for c in feed.changes) == ["u42.d1", "u42.d2", "u42.d3", "u42.d4"]


def test_the_person_moving_and_deleting_calendar_notify(
    google_env: GoogleEnv, receiver: Receiver, clock: Clock
) -> None:
    """A move (events.move) notifies both calendars' channels; the person's edit and the calendar's deletion
    notify the connected one."""
    google_env.fake.add_calendar(google_env.account, calendar_id=TRAINING, summary="Training")
    d1, d2 = put(google_env, "d1", "d2")
    primary = watch(google_env, receiver, clock)

    async def watch_training(_: GoogleProvider) -> Watch:
        async with aiohttp.ClientSession() as session:
            other = GoogleProvider(session, google_env.fake.base_url, google_env.tokens, TRAINING, clock=clock)
            return await other.watch(receiver.url, SECRET, clock.now + timedelta(days=7))

    training = drive(google_env, watch_training)
    google_env.fake.person_moves(google_env.account, d1.provider_id, TRAINING)
    google_env.fake.person_edits(google_env.account, d2.provider_id, summary="Mine now")
    google_env.fake.delete_calendar(google_env.account)
    google_env.fake.settle()
    assert receiver.states() == [
        (primary.id, 1, "sync"),
        (training.id, 1, "sync"),
        (primary.id, 2, "exists"),
        (training.id, 2, "exists"),
        (primary.id, 3, "exists"),
        (primary.id, 4, "exists"),
    ]


# --- the change feed -------------------------------------------------------------------------------------------


def test_a_full_listing_names_our_events_and_ends_at_a_sync_token(google_env: GoogleEnv) -> None:
    """changes(None) lists the calendar with nothing Google forbids next to a syncToken, names only our
    events, and returns the syncToken as the cursor; the next call sends the same parameters plus it."""
    d1, d2 = put(google_env, "d1", "d2")
    own_event(google_env)
    feed = drive(google_env, lambda p: p.changes(None))
    assert feed.full and not feed.more
    assert feed.changes == [Change(d1.provider_id, "u42.d1"), Change(d2.provider_id, "u42.d2")]
    sync_token, page_token = parse_cursor(feed.cursor)
    assert sync_token and page_token is None
    first = google_env.fake.requests("GET", "/events")[-1].query
    assert first == {"maxResults": ["250"]}

    again = drive(google_env, lambda p: p.changes(feed.cursor))
    assert again.changes == [] and not again.full
    assert google_env.fake.requests("GET", "/events")[-1].query == {"maxResults": ["250"], "syncToken": [sync_token]}


def test_changes_since_a_cursor_are_edits_and_cancellations(google_env: GoogleEnv) -> None:
    """After the cursor: our new event, the person's edit, and a deletion that comes as `cancelled` with only its
    id; the person's own new event is left out."""
    d1, d2 = put(google_env, "d1", "d2")
    start = drive(google_env, lambda p: p.changes(None))
    [d3] = put(google_env, "d3")
    google_env.fake.person_edits(google_env.account, d1.provider_id, summary="Renamed by the person")
    google_env.delete_as_person(d2.provider_id)
    own_event(google_env)
    feed = drive(google_env, lambda p: p.changes(start.cursor))
    assert not feed.full
    assert feed.changes == [
        Change(d3.provider_id, "u42.d3"),
        Change(d1.provider_id, "u42.d1"),
        Change(d2.provider_id, None, removed=True),
    ]
    assert drive(google_env, lambda p: p.get(d2)) is None
    assert drive(google_env, lambda p: p.changes(feed.cursor)).changes == []


def test_a_listing_longer_than_the_page_cap_continues_where_it_stopped(
    google_env: GoogleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the page cap changes says more=True with a pageToken cursor; the continuation is still the full
    listing and ends at a syncToken. An incremental listing cut the same way keeps its syncToken."""
    monkeypatch.setattr(google, "PAGE_SIZE", 2)
    monkeypatch.setattr(google, "MAX_PAGES", 2)
    written = put(google_env, *(f"d{n}" for n in range(5)))
    first = drive(google_env, lambda p: p.changes(None))
    assert first.full and first.more and len(first.changes) == 4
    assert parse_cursor(first.cursor)[0] is None
    rest = drive(google_env, lambda p: p.changes(first.cursor))
    assert rest.full and not rest.more
    assert [c.provider_id for c in first.changes + rest.changes] == [w.provider_id for w in written]
    assert len(google_env.fake.requests("GET", "/events")) == 3

    for w in written:
        google_env.delete_as_person(w.provider_id)
    cut = drive(google_env, lambda p: p.changes(rest.cursor))
    assert cut.more and not cut.full and all(c.removed for c in cut.changes)
    sync_token, page_token = parse_cursor(cut.cursor)
    assert sync_token == parse_cursor(rest.cursor)[0] and page_token
    end = drive(google_env, lambda p: p.changes(cut.cursor))
    assert not end.more and len(cut.changes + end.changes) == 5
    assert google_env.fake.requests("GET", "/events")[-1].query["syncToken"] == [sync_token]


def test_an_expired_sync_token_is_cursor_expired_and_a_full_listing_recovers(google_env: GoogleEnv) -> None:
    """Google's 410 fullSyncRequired means list everything again; so does a cursor we cannot read."""
    put(google_env, "d1")
    feed = drive(google_env, lambda p: p.changes(None))
    google_env.fake.invalidate_sync_tokens()
    with pytest.raises(CursorExpired, match="410 fullSyncRequired"):
        drive(google_env, lambda p: p.changes(feed.cursor))
    with pytest.raises(CursorExpired):
        drive(google_env, lambda p: p.changes("a-raw-token-from-elsewhere"))
    assert drive(google_env, lambda p: p.changes(None)).changes == feed.changes


def test_the_fake_refuses_a_sync_token_with_a_filter(google_env: GoogleEnv) -> None:
    """Google answers 400 when syncToken comes with timeMin or privateExtendedProperty [GO3]: the provider's
    requests passing the fake proves it sends neither."""
    feed = drive(google_env, lambda p: p.changes(None))
    sync_token = parse_cursor(feed.cursor)[0]
    headers = {"authorization": f"Bearer {google_env.tokens.current}"}
    for extra in ("timeMin=2030-01-01T00:00:00Z", f"privateExtendedProperty={TAG}%3Dx"):
        target = f"/calendar/v3/calendars/primary/events?syncToken={sync_token}&{extra}"
        status, body, _ = google_env.fake.handle("GET", target, headers, b"")
        assert (status, body["error"]["errors"][0]["reason"]) == (400, "invalid")


def test_cursor_encoding_round_trips() -> None:
    """The cursor says which Google token it carries; nothing else is taken for one."""
    assert parse_cursor(format_cursor("s=1&x", None)) == ("s=1&x", None)
    assert parse_cursor(format_cursor(None, "p/2")) == (None, "p/2")
    assert parse_cursor(format_cursor("s", "p")) == ("s", "p")
    for bad in ("", "syncToken=a&syncToken=b", "foo=1", "plain"):
        with pytest.raises(CursorExpired):
            parse_cursor(bad)


# --- a deleted calendar, lost authorization --------------------------------------------------------------------


def test_a_deleted_calendar_is_calendar_gone_not_deleted_events(google_env: GoogleEnv) -> None:
    """The calendar as a whole is gone: changes, check_calendar and get raise CalendarGone, so nobody is taken
    for having deleted their event."""
    [written] = put(google_env, "d1")
    feed = drive(google_env, lambda p: p.changes(None))
    drive(google_env, lambda p: p.check_calendar())
    google_env.fake.delete_calendar(google_env.account)
    with pytest.raises(CalendarGone, match="404"):
        drive(google_env, lambda p: p.changes(feed.cursor))
    with pytest.raises(CalendarGone):
        drive(google_env, lambda p: p.changes(None))
    with pytest.raises(CalendarGone):
        drive(google_env, lambda p: p.check_calendar())
    with pytest.raises(CalendarGone):
        drive(google_env, lambda p: p.get(written))


def test_a_calendar_answering_410_deleted_is_calendar_gone(google_env: GoogleEnv) -> None:
    """410 `deleted` on the listing is about the calendar, not the cursor."""
    feed = drive(google_env, lambda p: p.changes(None))
    google_env.fake.fail_next(410, "deleted")
    with pytest.raises(CalendarGone, match="410 deleted"):
        drive(google_env, lambda p: p.changes(feed.cursor))


def test_check_calendar_with_revoked_consent_is_authorization_lost(google_env: GoogleEnv) -> None:
    """A 401 that a refresh cannot fix is the person's authorization, not the calendar."""
    google_env.fail_next("auth")
    with pytest.raises(AuthorizationLost):
        drive(google_env, lambda p: p.check_calendar())


# --- an event moved to another calendar ------------------------------------------------------------------------


def test_a_moved_event_is_found_in_the_other_calendar_then_updated_and_deleted_there(google_env: GoogleEnv) -> None:
    """events.move looks like a deletion in the connected calendar's feed; get finds the event under its id in
    the person's other calendar, and put/delete/get act on it there from then on."""
    fake, account = google_env.fake, google_env.account
    fake.add_calendar(account, calendar_id="c_readonly@group.calendar.google.com", role="reader")
    fake.add_calendar(account, calendar_id=TRAINING, summary="Training")
    [written] = put(google_env, "d1")
    start = drive(google_env, lambda p: p.changes(None))
    fake.person_moves(account, written.provider_id, TRAINING)

    feed = drive(google_env, lambda p: p.changes(start.cursor))
    assert feed.changes == [Change(written.provider_id, None, removed=True)]
    before = len(fake.log)
    remote = drive(google_env, lambda p: p.get(written))
    assert remote is not None and remote.key == "u42.d1"
    assert remote.provider_id == f"{TRAINING}/{written.provider_id}"
    assert split_id(remote.provider_id) == (TRAINING, written.provider_id)
    looked = [(e.method, e.path, e.status) for e in fake.log[before:]]
    assert looked == [
        ("GET", f"/calendar/v3/calendars/primary/events/{written.provider_id}", 404),
        ("GET", "/calendar/v3/users/me/calendarList", 200),
        ("GET", f"/calendar/v3/calendars/{TRAINING}/events/{written.provider_id}", 200),
    ]
    assert fake.log[before + 1].query["minAccessRole"] == ["writer"]

    there = Written(remote.provider_id, remote.etag)
    renamed = drive(google_env, lambda p: p.put(item("d1", subject="Forklift safety, part 2"), there))
    assert renamed.provider_id == there.provider_id
    assert [e["summary"] for e in fake.stored(TRAINING)] == ["Forklift safety, part 2"]
    assert fake.stored(account) == []
    again = drive(google_env, lambda p: p.get(renamed))
    assert again is not None and again.provider_id == there.provider_id

    drive(google_env, lambda p: p.delete(renamed))
    assert fake.stored(TRAINING) == []
    assert drive(google_env, lambda p: p.get(renamed)) is None


def test_an_event_deleted_and_nowhere_else_reads_as_none(google_env: GoogleEnv) -> None:
    """Deleted by the person and in none of their other calendars: get is None after one look at each and a
    check that the calendar itself still exists."""
    google_env.fake.add_calendar(google_env.account, calendar_id=TRAINING)
    [written] = put(google_env, "d1")
    google_env.delete_as_person(written.provider_id)
    before = len(google_env.fake.log)
    assert drive(google_env, lambda p: p.get(written)) is None
    looked = [e.path.rsplit("/", 1)[-1] for e in google_env.fake.log[before:]]
    assert looked == [written.provider_id, "calendarList", written.provider_id, "primary"]


def test_the_other_calendars_searched_are_bounded(google_env: GoogleEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person with many calendars costs at most MAX_OTHER_CALENDARS reads, not one per calendar."""
    monkeypatch.setattr(google, "MAX_OTHER_CALENDARS", 3)
    for n in range(6):
        google_env.fake.add_calendar(google_env.account, calendar_id=f"c{n}@group.calendar.google.com")
    [written] = put(google_env, "d1")
    google_env.delete_as_person(written.provider_id)
    before = len(google_env.fake.log)
    assert drive(google_env, lambda p: p.get(written)) is None
    reads = [e for e in google_env.fake.log[before:] if e.path.endswith(written.provider_id)]
    assert len(reads) == 1 + 3


@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded"])
def test_a_rate_limit_while_looking_for_a_moved_event_is_throttled_not_a_deletion(
    google_env: GoogleEnv, reason: str
) -> None:
    """Google answers rate limits with 403 as well: met while looking for a moved event in another calendar, it
    must not pass for "not there" (get would return None: a deletion that unregisters the learner)."""
    fake, account = google_env.fake, google_env.account
    fake.add_calendar(account, calendar_id=TRAINING, summary="Training")
    [written] = put(google_env, "d1")
    fake.person_moves(account, written.provider_id, TRAINING)
    fake.fail_at(f"/calendar/v3/calendars/{TRAINING}/events/{written.provider_id}", 403, reason)
    with pytest.raises(Throttled):
        drive(google_env, lambda p: p.get(written))
    remote = drive(google_env, lambda p: p.get(written))  # the next check finds it
    assert remote is not None and remote.provider_id == f"{TRAINING}/{written.provider_id}"


# --- whether the calendar a moved event went to can still be read (ChangeFeed.reaches) -----------------------


def test_reaches_reads_the_persons_calendar_list_entry_and_wants_more_than_free_busy(google_env: GoogleEnv) -> None:
    """calendars.get answers 200 to a person left with free/busy access only, whose events.get then answers 404:
    reaches asks the person's calendar list entry and counts only reader, writer and owner as reaching it. A
    calendar not in the list, or deleted, is out of reach; the connected calendar costs no request."""
    fake, account = google_env.fake, google_env.account
    fake.add_calendar("colleague@example.com", calendar_id="c_unlisted@group.calendar.google.com")
    fake.add_calendar(account, calendar_id="c_deleted@group.calendar.google.com")
    fake.delete_calendar("c_deleted@group.calendar.google.com")
    expected = {"freeBusyReader": False, "reader": True, "writer": True, "owner": True}
    for role in expected:
        fake.add_calendar(account, calendar_id=f"c_{role.lower()}@group.calendar.google.com", role=role)
    expected |= {"unlisted": False, "deleted": False}

    async def look(provider: GoogleProvider) -> dict[str, bool]:
        return {
            name: await provider.reaches(Written(f"c_{name.lower()}@group.calendar.google.com/abcdefgh", None))
            for name in expected
        }

    before = len(fake.log)
    assert drive(google_env, look) == expected
    looked = [(e.method, e.path.rsplit("/", 1)[0], e.status) for e in fake.log[before:]]
    entries = "/calendar/v3/users/me/calendarList"
    assert looked == [("GET", entries, 200)] * 4 + [("GET", entries, 404)] * 2
    before = len(fake.log)
    assert drive(google_env, lambda p: p.reaches(Written("abcdefgh", None))) is True
    assert fake.log[before:] == []


def test_reaches_with_free_busy_only_matches_what_events_get_answers(google_env: GoogleEnv) -> None:
    """The fake as Google: a person reduced to free/busy on the calendar an event was moved to is told 200 by
    calendars.get but 404 by events.get, so get finds the event nowhere and reaches says it is out of reach."""
    fake, account = google_env.fake, google_env.account
    fake.add_calendar("colleague@example.com", calendar_id=TRAINING, summary="Training")
    fake.add_calendar(account, calendar_id=TRAINING, role="writer")
    [written] = put(google_env, "d1")
    fake.person_moves(account, written.provider_id, TRAINING)
    moved = drive(google_env, lambda p: p.get(written))
    assert moved is not None and moved.provider_id == f"{TRAINING}/{written.provider_id}"
    there = Written(moved.provider_id, moved.etag)
    assert drive(google_env, lambda p: p.reaches(there)) is True
    fake.calendars[TRAINING].roles[account] = "freeBusyReader"
    drive(google_env, lambda p: p.check_calendar())
    headers = {"authorization": f"Bearer {google_env.tokens.current}"}
    status, _, _ = fake.handle("GET", f"/calendar/v3/calendars/{TRAINING}", headers, b"")
    assert status == 200
    assert drive(google_env, lambda p: p.get(there)) is None
    assert drive(google_env, lambda p: p.reaches(there)) is False


@pytest.mark.parametrize(
    ("status", "reason", "raised"),
    [
        (403, "rateLimitExceeded", Throttled),
        (403, "userRateLimitExceeded", Throttled),
        (429, "rateLimitExceeded", Throttled),
        (403, "insufficientPermissions", AuthorizationLost),
        (503, "backendError", Unavailable),
        (400, "invalid", Rejected),
    ],
)
def test_reaches_raises_what_the_answer_means_instead_of_guessing(
    google_env: GoogleEnv, status: int, reason: str, raised: type[Exception]
) -> None:
    """Only 404/410 and the entry's role decide; a rate limit, a lost grant or an outage met on the calendar
    list entry raises as every other request does, so nothing is decided on it."""
    fake, account = google_env.fake, google_env.account
    fake.add_calendar(account, calendar_id=TRAINING, role="freeBusyReader")
    fake.fail_at(f"/calendar/v3/users/me/calendarList/{TRAINING}", status, reason)
    with pytest.raises(raised):
        drive(google_env, lambda p: p.reaches(Written(f"{TRAINING}/abcdefgh", None)))


def test_the_scopes_coursewire_asks_for_are_enough_for_the_two_way_reads_and_calendar_events_alone_is_not(
    google_env: GoogleEnv,
) -> None:
    """calendars.get and calendarList need a scope calendar.events does not give (the API's discovery document):
    with only calendar.events, looking for a moved event would be refused (insufficientPermissions, which the
    provider takes for a lost grant and the person would have to connect again); with what coursewire asks for
    (calendars.oauth.SCOPES) the event is found where it was moved."""
    fake, account = google_env.fake, google_env.account
    fake.add_calendar(account, calendar_id=TRAINING, summary="Training")
    [written] = put(google_env, "d1")
    fake.person_moves(account, written.provider_id, TRAINING)
    remote = drive(google_env, lambda p: p.get(written))
    assert remote is not None and remote.provider_id == f"{TRAINING}/{written.provider_id}"
    drive(google_env, lambda p: p.check_calendar())

    google_env.tokens.current = fake.issue_token(account, scopes=["https://www.googleapis.com/auth/calendar.events"])
    with pytest.raises(AuthorizationLost, match="insufficientPermissions"):
        drive(google_env, lambda p: p.get(written))
