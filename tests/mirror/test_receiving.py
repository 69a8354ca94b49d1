"""The public notification endpoints of the two-way mirror (calendars/receiving.py) through the whole app
(connexion, the /calendar mount ahead of authentication) on a real SQLite database: Graph's validation handshake
and notification batches [MS5]-[MS7], Google's watch pushes [GO2], and everything they refuse or ignore."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from pages_support import enable, make_user
from starlette.testclient import TestClient
from support import Clock

from calendars import receiving
from storage import calendar, calendar_watch
from storage.db import Database, iso, parse_iso
from storage.models import CLI

GRAPH = "/calendar/notifications/microsoft365"
GOOGLE = "/calendar/notifications/google"
SECRET = "client-state-of-alice-0123456789"  # noqa: S105 (a test value)
TOKEN = "channel-token-of-bob-0123456789"  # noqa: S105 (a test value)
LATER = timedelta(minutes=15)


@dataclass
class Watched:
    """A connection with a push channel whose next check is LATER (as after a finished check)."""

    connection_id: str
    channel_id: str
    resource_id: str | None


def _watched(db: Database, login: str, provider: str, channel_id: str, resource_id: str | None, secret: str) -> Watched:
    user_id = make_user(db, login)
    calendar.connect(db, CLI, user_id, provider, account=login, calendar="primary", credentials="-")
    connection = calendar.active_connection(db, user_id)
    assert connection is not None
    now = db.clock()
    calendar_watch.ensure(db, now)
    calendar_watch.set_channel(
        db,
        connection.id,
        channel_id=channel_id,
        resource_id=resource_id,
        hashed_secret=calendar_watch.secret_hash(secret),
        expires_at=now + timedelta(days=6),
        renew_at=now + timedelta(days=5),
    )
    # The first check ran: the cursor is kept and the next check is a sweep interval away.
    claimed = calendar_watch.claim_checks(db, "worker", 10, timedelta(minutes=5), now)
    assert connection.id in {w.connection_id for w in claimed}
    with db.write() as conn:
        calendar_watch.checked(
            conn, "worker", connection.id, cursor="cursor-1", next_due=now + LATER, now=now, started=now
        )
    return Watched(connection.id, channel_id, resource_id)


@pytest.fixture
def alice(db: Database) -> Watched:
    """Alice's Microsoft 365 calendar, with its Graph subscription."""
    enable(db, Microsoft365=True, Google=True)
    return _watched(db, "alice@contoso.example", "Microsoft365", "sub-alice", None, SECRET)


@pytest.fixture
def bob(db: Database) -> Watched:
    """Bob's Google calendar, with its events.watch channel."""
    enable(db, Microsoft365=True, Google=True)
    return _watched(db, "bob@contoso.example", "Google", "channel-bob", "resource-bob", TOKEN)


@pytest.fixture
def moved(clock: Clock) -> Iterator[datetime]:
    """A minute passes before the notification arrives; yields the time it arrives."""
    clock.advance(minutes=1)
    yield clock.now


def row(db: Database, watched: Watched) -> dict[str, Any]:
    found = db.conn.execute("SELECT * FROM calendar_watches WHERE connection_id = ?", (watched.connection_id,))
    return dict(found.fetchone())


def untouched(db: Database, watched: Watched, start: datetime) -> None:
    state = row(db, watched)
    assert parse_iso(state["check_due_at"]) == start + LATER
    assert state["notifications"] == 0
    assert state["full_check"] == 0


def change(subscription: str = "sub-alice", state: str | None = SECRET, **extra: Any) -> dict[str, Any]:
    """A Graph change notification without resource data [MS5]."""
    entry = {
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2030-03-07T08:00:00Z",
        "changeType": "deleted",
        "resource": "Users/alice/Events/AAMk",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "AAMk"},
        "tenantId": "tenant",
        **extra,
    }
    if state is not None:
        entry["clientState"] = state
    return entry


def lifecycle(event: str, subscription: str = "sub-alice", state: str = SECRET) -> dict[str, Any]:
    """A Graph lifecycle notification [MS7]."""
    return {
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2030-03-07T08:00:00Z",
        "clientState": state,
        "lifecycleEvent": event,
        "tenantId": "tenant",
    }


def notify(client: TestClient, *entries: dict[str, Any]) -> Any:
    return client.post(GRAPH, json={"value": list(entries)})


def push(
    client: TestClient,
    state: str,
    *,
    channel: str = "channel-bob",
    token: str | None = TOKEN,
    resource: str = "resource-bob",
    number: str = "2",
) -> Any:
    """A Google push as events.watch sends it: headers only, no body [GO2]."""
    headers = {
        "X-Goog-Channel-ID": channel,
        "X-Goog-Resource-ID": resource,
        "X-Goog-Resource-State": state,
        "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
        "X-Goog-Message-Number": number,
        "X-Goog-Channel-Expiration": "Thu, 07 Mar 2030 08:00:00 GMT",
    }
    if token is not None:
        headers["X-Goog-Channel-Token"] = token
    return client.post(GOOGLE, headers=headers)


def odata_error(answer: Any, status: int, target: str | None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert set(error) <= {"code", "message", "target"} and error["code"] and error["message"]
    assert error.get("target") == target
    return dict(error)


# -- Graph: the validation handshake ------------------------------------------------------------------------------


def test_the_validation_token_is_echoed_decoded_as_plain_text(client: TestClient) -> None:
    """Graph creates a subscription only if the URL answers 200 text/plain with the URL-decoded token [MS6]."""
    answer = client.post(GRAPH + "?validationToken=Validation%3A%20Testing%20client%20application%2B%2F%3C%3E")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.text == "Validation: Testing client application+/<>"


def test_the_validation_token_is_bounded(client: TestClient) -> None:
    """A token longer than 1,024 characters is not Graph's: 400 naming the parameter, nothing echoed."""
    at_limit = client.post(GRAPH, params={"validationToken": "a" * receiving.MAX_VALIDATION_TOKEN})
    assert at_limit.status_code == 200 and len(at_limit.text) == receiving.MAX_VALIDATION_TOKEN
    odata_error(client.post(GRAPH, params={"validationToken": "a" * 1025}), 400, "validationToken")


# -- Graph: notifications -----------------------------------------------------------------------------------------


def test_a_change_with_the_right_client_state_makes_the_check_due_now(
    client: TestClient, db: Database, alice: Watched, moved: datetime
) -> None:
    """A change notification is acknowledged with an empty 202 and the connection's check is due at once [MS5]."""
    answer = notify(client, change(), change(changeType="updated"))
    assert answer.status_code == 202 and answer.content == b""
    state = row(db, alice)
    assert state["check_due_at"] == iso(moved)
    assert state["last_notification_at"] == iso(moved)
    assert state["notifications"] == 1  # once per connection per request
    assert state["full_check"] == 0
    assert state["cursor"] == "cursor-1"


def test_a_wrong_client_state_or_an_unknown_subscription_changes_nothing(
    client: TestClient, db: Database, alice: Watched, moved: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    """Entries that are not ours are ignored but acknowledged (202), and logged without the secret they carried."""
    caplog.set_level(logging.WARNING, logger="calendars.receiving")
    answer = notify(
        client,
        change(state="guessed-secret-value"),
        change(state=None),
        change(subscription="sub-nobody", state=SECRET),
        lifecycle("subscriptionRemoved", state="guessed-secret-value"),
    )
    assert answer.status_code == 202 and answer.content == b""
    untouched(db, alice, moved - timedelta(minutes=1))
    assert "Microsoft365 unknown channel: 1, Microsoft365 wrong secret: 3" in caplog.text
    assert "guessed-secret-value" not in caplog.text and SECRET not in caplog.text


def test_a_google_channel_id_is_not_a_graph_subscription(
    client: TestClient, db: Database, bob: Watched, moved: datetime
) -> None:
    """A Graph notification naming a Google channel, even with its token, is ignored."""
    assert notify(client, change(subscription="channel-bob", state=TOKEN)).status_code == 202
    untouched(db, bob, moved - timedelta(minutes=1))


@pytest.mark.parametrize(
    ("event", "full", "rewatch"),
    [("reauthorizationRequired", 0, 1), ("subscriptionRemoved", 1, 1), ("missed", 1, 0)],
)
def test_lifecycle_events_ask_for_a_full_listing_or_a_new_subscription(
    client: TestClient, db: Database, alice: Watched, moved: datetime, event: str, full: int, rewatch: int
) -> None:
    """reauthorizationRequired renews, subscriptionRemoved recreates and resynchronizes, missed resynchronizes
    [MS7]: the check is due now, with the flags each asks for."""
    assert notify(client, lifecycle(event)).status_code == 202
    state = row(db, alice)
    assert state["check_due_at"] == iso(moved)
    assert state["full_check"] == full
    renew_at = moved - timedelta(minutes=1) + timedelta(days=5)
    assert state["watch_due_at"] == iso(moved if rewatch else renew_at)


def test_flags_of_several_entries_for_one_connection_are_combined(
    client: TestClient, db: Database, alice: Watched, moved: datetime
) -> None:
    """A batch with a change, reauthorizationRequired and missed makes one write asking for both."""
    assert notify(client, change(), lifecycle("reauthorizationRequired"), lifecycle("missed")).status_code == 202
    state = row(db, alice)
    assert (state["notifications"], state["full_check"], state["watch_due_at"]) == (1, 1, iso(moved))


@pytest.mark.parametrize(
    ("body", "target"),
    [
        (b'{"value": [', "body"),
        (b"[]", "value"),
        (b'{"value": {}}', "value"),
        (b'{"value": ["x"]}', "value[0]"),
        (json.dumps({"value": [{"clientState": SECRET, "changeType": "created"}]}).encode(), "value[0].subscriptionId"),
        (
            json.dumps({"value": [{"subscriptionId": "s", "clientState": 7, "changeType": "x"}]}).encode(),
            "value[0].clientState",
        ),
        (
            json.dumps({"value": [change(), {"subscriptionId": "s", "clientState": "c"}]}).encode(),
            "value[1].changeType",
        ),
        (json.dumps({"value": [change(state="x" * 300)]}).encode(), "value[0].clientState"),
        (json.dumps({"value": [change()] * 1001}).encode(), "value"),
    ],
)
def test_malformed_notifications_are_refused_naming_the_field(
    client: TestClient, db: Database, alice: Watched, moved: datetime, body: bytes, target: str
) -> None:
    """What is not a Graph notification batch is a 400 in the OData error shape naming what is wrong, and marks
    nothing (not even the valid entries beside it)."""
    answer = client.post(GRAPH, content=body, headers={"Content-Type": "application/json"})
    odata_error(answer, 400, target)
    untouched(db, alice, moved - timedelta(minutes=1))


def test_a_notification_must_be_json(client: TestClient, alice: Watched) -> None:
    """Another media type is a 415 naming Content-Type."""
    body = json.dumps({"value": [change()]})
    odata_error(client.post(GRAPH, content=body, headers={"Content-Type": "text/plain"}), 415, "Content-Type")
    odata_error(client.post(GRAPH, content=body), 415, "Content-Type")


def test_a_body_over_a_mebibyte_is_refused(client: TestClient, db: Database, alice: Watched) -> None:
    """1 MiB at most, whether declared or streamed without a length: 413."""
    big = json.dumps({"value": [change()], "pad": "x" * receiving.MAX_GRAPH_BODY}).encode()
    odata_error(client.post(GRAPH, content=big, headers={"Content-Type": "application/json"}), 413, None)
    chunks = iter([big[:1000], big[1000:]])
    streamed = client.post(GRAPH, content=chunks, headers={"Content-Type": "application/json"})
    odata_error(streamed, 413, None)
    assert row(db, alice)["notifications"] == 0


# -- Google -------------------------------------------------------------------------------------------------------


def test_the_sync_message_of_a_new_channel_changes_nothing(
    client: TestClient, db: Database, bob: Watched, moved: datetime
) -> None:
    """`sync` is the first message after events.watch, not a change [GO2]: 200, empty."""
    answer = push(client, "sync", number="1")
    assert answer.status_code == 200 and answer.content == b""
    untouched(db, bob, moved - timedelta(minutes=1))


@pytest.mark.parametrize("state", ["exists", "not_exists"])
def test_a_google_change_makes_the_check_due_now(
    client: TestClient, db: Database, bob: Watched, moved: datetime, state: str
) -> None:
    """`exists` and `not_exists` mark the check due now; what changed is read with the sync token after [GO2]."""
    answer = push(client, state)
    assert answer.status_code == 200 and answer.content == b""
    found = row(db, bob)
    assert found["check_due_at"] == iso(moved)
    assert found["notifications"] == 1 and found["full_check"] == 0


@pytest.mark.parametrize(
    "wrong",
    [{"token": "guessed-token"}, {"token": None}, {"resource": "resource-other"}, {"channel": "channel-nobody"}],
)
def test_a_google_push_that_is_not_ours_is_ignored(
    client: TestClient,
    db: Database,
    bob: Watched,
    moved: datetime,
    wrong: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong token, another resource id or an unknown channel change nothing, are acknowledged, and are logged
    without the token."""
    caplog.set_level(logging.WARNING, logger="calendars.receiving")
    assert push(client, "exists", **wrong).status_code == 200
    untouched(db, bob, moved - timedelta(minutes=1))
    assert "calendar notifications ignored: Google" in caplog.text and "guessed-token" not in caplog.text


def test_a_graph_subscription_is_not_a_google_channel(
    client: TestClient, db: Database, alice: Watched, moved: datetime
) -> None:
    """A Google push naming a Graph subscription, even with its secret, is ignored."""
    assert push(client, "exists", channel="sub-alice", token=SECRET, resource="").status_code == 200
    untouched(db, alice, moved - timedelta(minutes=1))


@pytest.mark.parametrize("header", ["X-Goog-Channel-ID", "X-Goog-Resource-State"])
def test_a_google_push_without_its_headers_is_refused(client: TestClient, header: str) -> None:
    """The channel id and the resource state are always sent [GO2]: without one, 400 naming it."""
    headers = {"X-Goog-Channel-ID": "channel-bob", "X-Goog-Resource-State": "exists"}
    del headers[header]
    odata_error(client.post(GOOGLE, headers=headers), 400, header)


def test_a_google_push_with_a_body_over_64_kib_is_refused(client: TestClient, db: Database, bob: Watched) -> None:
    """Google sends no body; a little is dropped, more than 64 KiB is a 413."""
    headers = {"X-Goog-Channel-ID": "channel-bob", "X-Goog-Resource-State": "exists"}
    assert client.post(GOOGLE, headers=headers, content=b"x" * 100).status_code == 200
    big = b"x" * (receiving.MAX_GOOGLE_BODY + 1)
    odata_error(client.post(GOOGLE, headers=headers, content=big), 413, None)


# -- methods and paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GRAPH, GOOGLE])
def test_only_post_is_answered(client: TestClient, path: str) -> None:
    """GET (a browser, a scanner) is a 405 with Allow: POST, not the calendar page."""
    answer = client.get(path)
    odata_error(answer, 405, None)
    assert answer.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/calendar/notifications", "/calendar/notifications/", "/calendar/notifications/x"])
def test_other_notification_paths_are_not_found(client: TestClient, path: str) -> None:
    """Anything else under /calendar/notifications is a 404 in the OData error shape (not a page)."""
    odata_error(client.post(path), 404, None)


def test_the_calendar_page_is_still_the_pages(client: TestClient) -> None:
    """The mount sends only /calendar/notifications here: the rest of /calendar is still the calendar page."""
    answer = client.get("/calendar/nowhere")
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")


def test_a_flood_of_forged_notifications_is_one_log_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Forged notifications are counted, and said in one WARNING line at most every minute (the first at once),
    so a flood of them cannot flood the log."""
    caplog.set_level(logging.WARNING, logger="calendars.receiving")
    now = [1000.0]
    counter = receiving.IgnoredLog(every=60.0, clock=lambda: now[0])
    for _ in range(500):
        counter.note("Google", {"unknown channel": 1})
    now[0] += 61
    counter.note("Microsoft365", {"wrong secret": 2})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "calendar notifications ignored: Google unknown channel: 1",
        "calendar notifications ignored in the last 61 s: Google unknown channel: 499, Microsoft365 wrong secret: 2",
    ]
