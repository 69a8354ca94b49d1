"""The calendar mirror through the API: settings, a person's connected calendar, the administrators' list and the
trigger CalendarConnectionNeedsReauthorization, as administrator, as the person, as someone else and with a Read
Only key (issue 10, "Settings" and "Connecting a calendar")."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support import Api, error, fake_resolve, relative

from calendars.config import CalendarConfig
from calendars.providers import caldav
from connector.app import create_app
from connector.handlers import calendars as calendar_handlers
from connector.settings import Settings
from storage import apikeys, calendar, calendar_watch, events
from storage.db import Database
from storage.models import CLI
from storage.outbound import parse_networks
from storage.secrets import SecretBox
from webhooks import payloads

sys.path.insert(0, str(Path(__file__).parents[1] / "mirror"))  # the calendar tests' real servers
import radicale_support
from dav_hostile import account, dav_server
from radicale_support import RadicaleServer, free_port, mkcalendar_body

radicale = radicale_support.radicale

PASSWORD = "app-password-5f1c9e"  # noqa: S105 (a test value, looked for in every answer and log)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Google's OAuth client is configured; Microsoft's and the mail server are not; no network is allowed
    besides public addresses."""
    config = CalendarConfig(google_client_id="google-client", google_client_secret="google-secret")  # noqa: S106
    return replace(settings, calendar=config)


@pytest.fixture
def people(api: Api) -> dict[str, str]:
    """name -> user Id: an Administrator and two learners."""
    out = {}
    for name, role in (("admin", "Administrator"), ("ann", "Learner"), ("bob", "Learner")):
        user = api.ok(
            "POST",
            "/odata/v2/Users",
            json={"LoginName": f"{name}@x.example", "Email": f"{name}@x.example", "Role": role},
        )
        out[name] = user["Id"]
    return out


def _connect(db: Database, user_id: str, provider: str = "CalDAV", account: str = "ann@dav.example") -> None:
    """A connected calendar as the CalDAV page or the OAuth callback leaves it (the provider turned on first)."""
    calendar.update_settings(db, CLI, {f"{provider}Enabled": True})
    sealed = SecretBox.for_database(db.path).seal(json.dumps({"username": account, "password": PASSWORD}))
    calendar.connect(
        db, CLI, user_id, provider, account=account, calendar="https://dav.example/cal/", credentials=sealed
    )


CONNECTION = "/odata/v2/Users({})/CalendarConnection"


# --- settings ----------------------------------------------------------------------------------------------


def test_settings_start_with_providers_off_and_email_on(api: Api, people: dict[str, str]) -> None:
    """Before any change every provider is off, the e-mail fallback on and a deleted calendar event unregisters
    (issue 11: on by default), with no ModifiedAt (never null)."""
    for user in (None, people["admin"]):
        assert api.ok("GET", "/odata/v2/CalendarSettings", user=user) == {
            "Microsoft365Enabled": False,
            "GoogleEnabled": False,
            "CalDAVEnabled": False,
            "EmailFallbackEnabled": True,
            "UnregisterOnCalendarDelete": True,
        }


def test_an_administrator_turns_providers_on_and_off(api: Api, people: dict[str, str], clock: Any) -> None:
    """PATCH changes the switches it names, keeps the others, stamps ModifiedAt with the clock and records
    CalendarSettingsChanged."""
    changed = api.ok("PATCH", "/odata/v2/CalendarSettings", json={"GoogleEnabled": True, "CalDAVEnabled": True})
    assert changed == {
        "Microsoft365Enabled": False,
        "GoogleEnabled": True,
        "CalDAVEnabled": True,
        "EmailFallbackEnabled": True,
        "UnregisterOnCalendarDelete": True,
        "ModifiedAt": "2030-03-01T08:00:00.000Z",
    }
    off = api.ok("PATCH", "/odata/v2/CalendarSettings", user=people["admin"], json={"EmailFallbackEnabled": False})
    assert (off["GoogleEnabled"], off["EmailFallbackEnabled"]) == (True, False)
    assert api.ok("GET", "/odata/v2/CalendarSettings") == off
    # What GET answered can be sent back as it is: the read-only ModifiedAt is ignored (OData 4.0 Part 1 §11.4.3).
    clock.advance(minutes=5)
    again = api.ok("PATCH", "/odata/v2/CalendarSettings", json={**off, "CalDAVEnabled": False})
    assert (again["CalDAVEnabled"], again["ModifiedAt"]) == (False, "2030-03-01T08:05:00.000Z")
    assert [e.type for e in events.read_after(api.db, 0, types=["CalendarSettingsChanged"])] == [
        "CalendarSettingsChanged"
    ] * 3


def test_unregistering_on_a_deleted_event_is_turned_off_and_on(
    api: Api, read_api: Api, people: dict[str, str], clock: Any
) -> None:
    """UnregisterOnCalendarDelete needs no variable: an administrator turns it off and on again (the other
    switches kept), each change recorded as CalendarSettingsChanged with before and after; a Read Only key reads
    it but may not change it."""
    off = api.ok(
        "PATCH", "/odata/v2/CalendarSettings", user=people["admin"], json={"UnregisterOnCalendarDelete": False}
    )
    assert (off["UnregisterOnCalendarDelete"], off["EmailFallbackEnabled"]) == (False, True)
    assert read_api.ok("GET", "/odata/v2/CalendarSettings")["UnregisterOnCalendarDelete"] is False
    assert read_api.patch("/odata/v2/CalendarSettings", json={"UnregisterOnCalendarDelete": True}).status_code == 403
    clock.advance(minutes=1)
    on = api.ok("PATCH", "/odata/v2/CalendarSettings", json={"UnregisterOnCalendarDelete": True})
    assert (on["UnregisterOnCalendarDelete"], on["ModifiedAt"]) == (True, "2030-03-01T08:01:00.000Z")
    assert calendar.get_settings(api.db)["UnregisterOnCalendarDelete"] is True
    changes = [e.data["changes"] for e in events.read_after(api.db, 0, types=["CalendarSettingsChanged"])]
    assert changes == [
        {"UnregisterOnCalendarDelete": {"before": True, "after": False}},
        {"UnregisterOnCalendarDelete": {"before": False, "after": True}},
    ]


@pytest.mark.parametrize(
    ("switch", "variable"),
    [("Microsoft365Enabled", "COURSEWIRE_MICROSOFT_CLIENT_ID"), ("EmailFallbackEnabled", "COURSEWIRE_SMTP_URL")],
)
def test_turning_on_what_is_not_configured_names_the_variable(api: Api, switch: str, variable: str) -> None:
    """A provider without its OAuth client, or e-mail without a mail server, cannot be turned on: 400 naming
    the switch and the variable to set; nothing changes. Turning it off is always allowed."""
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={"EmailFallbackEnabled": False})
    before = api.ok("GET", "/odata/v2/CalendarSettings")
    refused = api.patch("/odata/v2/CalendarSettings", json={"CalDAVEnabled": True, switch: True})
    assert refused.status_code == 400
    assert error(refused)["target"] == switch and variable in error(refused)["message"]
    assert api.ok("GET", "/odata/v2/CalendarSettings") == before
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={switch: False})


def test_only_administrators_change_settings(api: Api, read_api: Api, people: dict[str, str]) -> None:
    """A learner may neither read nor change the settings (403); a Read Only key reads them but may not change
    them, even naming an Administrator."""
    for method, body in (("GET", None), ("PATCH", {"CalDAVEnabled": True})):
        refused = api.request(method, "/odata/v2/CalendarSettings", user=people["ann"], json=body)
        assert (refused.status_code, error(refused)["code"]) == (403, "Forbidden")
    assert read_api.ok("GET", "/odata/v2/CalendarSettings")["CalDAVEnabled"] is False
    for user in (None, people["admin"]):
        refused = read_api.patch("/odata/v2/CalendarSettings", user=user, json={"CalDAVEnabled": True})
        assert refused.status_code == 403
    assert api.ok("GET", "/odata/v2/CalendarSettings")["CalDAVEnabled"] is False


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ({"GoogleEnabled": "yes"}, "GoogleEnabled"),
        ({"Teams": True}, "Teams"),
        ({"GoogleEnabled": None}, "GoogleEnabled"),
        ({"UnregisterOnCalendarDelete": "off"}, "UnregisterOnCalendarDelete"),
    ],
)
def test_settings_bodies_say_what_is_wrong(api: Api, body: dict[str, Any], target: str) -> None:
    """A wrong type, a null or an unknown property is a 400 whose target names it."""
    refused = api.patch("/odata/v2/CalendarSettings", json=body)
    assert (refused.status_code, error(refused)["code"], error(refused)["target"]) == (400, "BadRequest", target)


# --- one person's calendar ---------------------------------------------------------------------------------


def test_a_person_without_a_calendar_reads_not_connected(api: Api, read_api: Api, people: dict[str, str]) -> None:
    """The person themself, an administrator and a Read Only key read NotConnected; another learner gets the
    NotFound any other person's data gets."""
    expected = {
        "@odata.context": "http://testserver/odata/v2/$metadata#CalendarConnections/$entity",
        "UserId": people["ann"],
        "SyncEnabled": False,
        "Status": "NotConnected",
    }
    path = CONNECTION.format(people["ann"])
    assert api.ok("GET", path, user=people["ann"]) == expected
    assert api.ok("GET", path, user=people["admin"]) == expected
    assert api.ok("GET", f"/odata/v2/Users('{people['ann']}')/CalendarConnection") == expected
    assert read_api.ok("GET", path) == expected
    other = api.get(path, user=people["bob"])
    assert (other.status_code, error(other)["code"]) == (404, "NotFound")
    missing = api.get(CONNECTION.format("0b5e9f0e-0000-4000-8000-000000000000"))
    assert missing.status_code == 404


def test_a_connected_calendar_is_shown_without_its_credentials(
    api: Api, people: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Provider, account, which calendar (a server may list several: the person and the administrator see which
    one holds the events) and times are shown; the password appears in no answer and no log line."""
    caplog.set_level(logging.DEBUG)
    _connect(api.db, people["ann"])
    shown = api.ok("GET", CONNECTION.format(people["ann"]), user=people["ann"])
    assert shown == {
        "@odata.context": "http://testserver/odata/v2/$metadata#CalendarConnections/$entity",
        "UserId": people["ann"],
        "Provider": "CalDAV",
        "Account": "ann@dav.example",
        "Calendar": "https://dav.example/cal/",
        "SyncEnabled": True,
        "Status": "Connected",
        "ConnectedAt": "2030-03-01T08:00:00.000Z",
    }
    listed = api.get("/odata/v2/CalendarConnections")
    assert PASSWORD not in listed.text and PASSWORD not in caplog.text
    with api.db.read() as conn:  # at rest, sealed
        stored = conn.execute("SELECT credentials FROM calendar_connections").fetchone()[0]
    assert PASSWORD not in stored


def test_sync_is_switched_off_and_on_by_the_person(api: Api, read_api: Api, people: dict[str, str]) -> None:
    """PATCH SyncEnabled false pauses the connection (Paused), true resumes it; another learner gets 404, a Read
    Only key 403, and a body without a boolean SyncEnabled a 400 naming it."""
    _connect(api.db, people["ann"])
    path = CONNECTION.format(people["ann"])
    paused = api.ok("PATCH", path, user=people["ann"], json={"SyncEnabled": False})
    assert (paused["SyncEnabled"], paused["Status"]) == (False, "Paused")
    assert api.ok("PATCH", path, json={"SyncEnabled": True})["Status"] == "Connected"
    assert api.patch(path, user=people["bob"], json={"SyncEnabled": False}).status_code == 404
    assert read_api.patch(path, json={"SyncEnabled": False}).status_code == 403
    for body, target in (({"SyncEnabled": "no"}, "SyncEnabled"), ({}, "SyncEnabled"), ({"Sync": False}, "Sync")):
        refused = api.patch(path, json=body)
        assert (refused.status_code, error(refused)["target"]) == (400, target), body
    # A connection read with GET can be sent back with SyncEnabled changed: what it cannot change is ignored.
    sent_back = {**api.ok("GET", path), "SyncEnabled": False, "Provider": "Google"}
    assert api.ok("PATCH", path, json=sent_back)["Provider"] == "CalDAV"
    assert api.patch(CONNECTION.format(people["bob"]), json={"SyncEnabled": False}).status_code == 404


def test_a_disabled_provider_pauses_its_connections(api: Api, people: dict[str, str]) -> None:
    """Turning CalDAV off shows its connections Paused, in the person's view and the administrators' list."""
    _connect(api.db, people["ann"])
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": False})
    assert api.ok("GET", CONNECTION.format(people["ann"]))["Status"] == "Paused"
    assert [c["Status"] for c in api.ok("GET", "/odata/v2/CalendarConnections")["value"]] == ["Paused"]


def test_disconnecting(api: Api, read_api: Api, people: dict[str, str]) -> None:
    """DELETE (by the person, or an administrator with KeepEvents) disconnects: 204, then NotConnected, and a
    second DELETE is 404; another learner gets 404 and a Read Only key 403 while it is connected."""
    _connect(api.db, people["ann"])
    path = CONNECTION.format(people["ann"])
    assert api.delete(path, user=people["bob"]).status_code == 404
    assert read_api.delete(path).status_code == 403
    api.ok("DELETE", path, 204, user=people["ann"])
    assert api.ok("GET", path)["Status"] == "NotConnected"
    assert api.delete(path).status_code == 404
    _connect(api.db, people["bob"], account="bob@dav.example")
    api.ok("DELETE", CONNECTION.format(people["bob"]) + "?KeepEvents=true", 204, user=people["admin"])
    assert [
        e.data["connection"]["KeepEvents"] for e in events.read_after(api.db, 0, types=["CalendarDisconnected"])
    ] == [
        False,
        True,
    ]
    refused = api.delete(CONNECTION.format(people["bob"]) + "?KeepEvents=maybe")
    assert (refused.status_code, error(refused)["target"]) == (400, "KeepEvents")


# --- connecting through the API (CalDAV) -------------------------------------------------------------------


def _caldav(url: str = "https://dav.example/calendars/ann/") -> dict[str, str]:
    return {"Provider": "CalDAV", "Url": url, "Username": "ann", "Password": PASSWORD}


@pytest.mark.parametrize("provider", ["Microsoft365", "Google"])
def test_oauth_providers_are_connected_on_the_page(api: Api, people: dict[str, str], provider: str) -> None:
    """Microsoft 365 and Google need the person's consent: PUT names Provider and CreateCalendarConnectionLink."""
    refused = api.request("PUT", CONNECTION.format(people["ann"]), json={**_caldav(), "Provider": provider})
    assert (refused.status_code, error(refused)["target"]) == (400, "Provider")
    assert "CreateCalendarConnectionLink" in error(refused)["message"]


def test_caldav_must_be_enabled(api: Api, people: dict[str, str]) -> None:
    """While CalDAV is off a PUT is a 400 naming Provider, before any server is contacted."""
    refused = api.request("PUT", CONNECTION.format(people["ann"]), json=_caldav())
    assert (refused.status_code, error(refused)["target"]) == (400, "Provider")
    assert "CalDAVEnabled" in error(refused)["message"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/dav/",
        "https://[::1]:8443/dav/",
        "https://internal.example/dav/",
        "https://metadata.example/latest/",
        "http://dav.example/calendars/ann/",
        "ftp://dav.example/",
        "https://user:pw@dav.example/",
    ],
)
def test_a_caldav_url_passes_the_outbound_guard(
    api: Api, people: dict[str, str], url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server URL is user input: loopback, private and metadata addresses, plain http, other schemes and
    credentials in the URL are a 400 naming Url (COURSEWIRE_ALLOWED_NETWORKS is empty here); the password is
    in neither the answer nor the log."""
    caplog.set_level(logging.DEBUG)
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    refused = api.request("PUT", CONNECTION.format(people["ann"]), user=people["ann"], json=_caldav(url))
    assert (refused.status_code, error(refused)["target"]) == (400, "Url"), refused.text
    assert PASSWORD not in refused.text and PASSWORD not in caplog.text
    assert calendar.active_connection(api.db, people["ann"]) is None


def test_a_second_calendar_is_refused(api: Api, people: dict[str, str]) -> None:
    """One calendar per person: a PUT while one is connected is 409 naming Provider and the connected one."""
    _connect(api.db, people["ann"])
    refused = api.request("PUT", CONNECTION.format(people["ann"]), user=people["ann"], json=_caldav())
    assert (refused.status_code, error(refused)["code"], error(refused)["target"]) == (409, "Conflict", "Provider")
    assert "ann@dav.example" in error(refused)["message"] and "disconnect" in error(refused)["message"]


def test_connecting_for_someone_else(api: Api, read_api: Api, people: dict[str, str]) -> None:
    """Another learner's PUT is 404 (they may not see the person), a Read Only key's 403."""
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    assert api.request("PUT", CONNECTION.format(people["ann"]), user=people["bob"], json=_caldav()).status_code == 404
    assert read_api.request("PUT", CONNECTION.format(people["ann"]), json=_caldav()).status_code == 403


@pytest.mark.parametrize(
    ("change", "target"),
    [
        ({"Password": None}, "Password"),
        ({"Username": 7}, "Username"),
        ({"Calendar": "x"}, "Calendar"),
        ({"Provider": "Exchange"}, "Provider"),
        ({"Url": "x" * 2049}, "Url"),
    ],
)
def test_connect_bodies_say_what_is_wrong(
    api: Api, people: dict[str, str], change: dict[str, Any], target: str
) -> None:
    """A missing or mistyped member, an unknown one, an unknown provider or an overlong Url: 400 naming it."""
    body = {**_caldav(), **change}
    body = {k: v for k, v in body.items() if v is not None}
    refused = api.request("PUT", CONNECTION.format(people["ann"]), json=body)
    assert (refused.status_code, error(refused)["target"]) == (400, target), refused.text
    assert PASSWORD not in refused.text


# --- the administrators' list ------------------------------------------------------------------------------


def test_administrators_list_connections_with_odata_options(api: Api, people: dict[str, str], clock: Any) -> None:
    """GetCalendarConnections filters on Status and Provider, sorts, counts and pages with $skiptoken; a
    disconnected calendar whose events are still being removed is not listed."""
    _connect(api.db, people["ann"])
    clock.advance(minutes=1)
    _connect(api.db, people["bob"], provider="Google", account="bob@gmail.example")
    clock.advance(minutes=1)
    _connect(api.db, people["admin"], account="admin@dav.example")
    connection = calendar.active_connection(api.db, people["bob"])
    assert connection is not None
    calendar.set_status(api.db, connection.id, "NeedsReauthorization", "invalid_grant")

    needs = api.ok("GET", "/odata/v2/CalendarConnections?$filter=Status eq 'NeedsReauthorization'")
    assert [(c["UserId"], c["LastError"]) for c in needs["value"]] == [(people["bob"], "invalid_grant")]
    caldav = api.ok(
        "GET", "/odata/v2/CalendarConnections?$filter=Provider eq 'CalDAV'&$orderby=Account desc&$count=true"
    )
    assert [c["Account"] for c in caldav["value"]] == ["ann@dav.example", "admin@dav.example"]
    assert caldav["@odata.count"] == 2

    newest = api.ok("GET", "/odata/v2/CalendarConnections?$orderby=ConnectedAt desc&$top=2&$select=UserId")
    assert newest["value"] == [{"UserId": people["admin"]}, {"UserId": people["bob"]}]
    assert "@odata.nextLink" not in newest  # $top is a total
    skipped = api.ok("GET", "/odata/v2/CalendarConnections?$orderby=ConnectedAt&$skip=2")
    assert [c["UserId"] for c in skipped["value"]] == [people["admin"]]

    api.ok("DELETE", CONNECTION.format(people["ann"]), 204)  # its events are still to be removed
    remaining = api.ok("GET", "/odata/v2/CalendarConnections?$count=true")
    assert remaining["@odata.count"] == 2 and people["ann"] not in {c["UserId"] for c in remaining["value"]}
    assert api.ok("GET", f"/odata/v2/CalendarConnections?$filter=UserId eq {people['ann']}")["value"] == []


def test_the_list_pages_with_skiptoken(api: Api, people: dict[str, str], clock: Any) -> None:
    """Past the page size (5 in tests) the list carries @odata.nextLink; following it lists each person once."""
    ids = []
    for n in range(7):
        user = api.ok("POST", "/odata/v2/Users", json={"LoginName": f"p{n}@x.example"})
        _connect(api.db, user["Id"], account=f"p{n}@dav.example")
        clock.advance(seconds=1)
        ids.append(user["Id"])
    seen, url = [], "/odata/v2/CalendarConnections"
    while url:
        page = api.ok("GET", url)
        seen += [c["UserId"] for c in page["value"]]
        url = relative(page["@odata.nextLink"]) if "@odata.nextLink" in page else ""
    assert seen == ids


def test_only_administrators_list_connections(api: Api, read_api: Api, people: dict[str, str]) -> None:
    """A learner gets 403, and so does a Read Only key (the list names every person's calendar account: issue 10
    has administrators list connections), with the usual wording; the settings stay readable by the key; an
    unknown property in $filter is a 400 naming it."""
    _connect(api.db, people["ann"])
    refused = api.get("/odata/v2/CalendarConnections", user=people["ann"])
    assert (refused.status_code, error(refused)["code"]) == (403, "Forbidden")
    read_only = read_api.get("/odata/v2/CalendarConnections")
    assert (read_only.status_code, error(read_only)["code"]) == (403, "Forbidden")
    assert "Read Only" in error(read_only)["message"] and "ann@dav.example" not in read_only.text
    assert read_api.ok("GET", "/odata/v2/CalendarSettings")["CalDAVEnabled"] is True
    bad = api.get("/odata/v2/CalendarConnections?$filter=Password eq 'x'")
    assert (bad.status_code, error(bad)["target"]) == (400, "$filter")


def _watched(db: Database, user_id: str, clock: Any, *, error: str | None = None) -> str:
    """The person's connection as the worker leaves it after watching it (storage.calendar_watch): a push
    channel expiring in 3 days, a notification, then a check (failed with `error`, if given) a minute later.
    Returns the connection id."""
    connection = calendar.active_connection(db, user_id)
    assert connection is not None
    now = db.clock()
    calendar_watch.ensure(db, now)
    calendar_watch.set_channel(
        db,
        connection.id,
        channel_id=f"channel-{user_id}",
        resource_id=None,
        hashed_secret=calendar_watch.secret_hash("s3cret"),
        expires_at=now + timedelta(days=3),
        renew_at=now + timedelta(days=2),
    )
    calendar_watch.notified(db, connection.id, now)
    clock.advance(minutes=1)
    later = db.clock()
    claimed = calendar_watch.claim_checks(db, "test-owner", 10, timedelta(minutes=5), later)
    assert connection.id in {c.connection_id for c in claimed}
    for other in claimed:  # others' checks stay due, for their own turn
        if other.connection_id != connection.id:
            calendar_watch.release(db, "test-owner", other.connection_id, later, None)
    with db.write() as conn:
        calendar_watch.checked(
            conn,
            "test-owner",
            connection.id,
            cursor="c1",
            next_due=later + timedelta(minutes=5),
            now=later,
            started=later,
            error=error,
        )
    return connection.id


def test_connections_show_how_their_changes_are_read(api: Api, people: dict[str, str], clock: Any) -> None:
    """Once the worker watches a connection, the person's view and the administrators' list show its last
    check, last notification, channel expiry and last check error (left out while there is none); $filter
    and $select take them, and $filter on Status works as before."""
    _connect(api.db, people["ann"])
    _connect(api.db, people["bob"], account="bob@dav.example")
    assert not {"LastCheckAt", "LastNotificationAt", "SubscriptionExpiresAt", "LastCheckError"} & set(
        api.ok("GET", CONNECTION.format(people["ann"]))
    )
    _watched(api.db, people["ann"], clock, error="HTTP 503 from the CalDAV server")
    calendar.set_status(api.db, _watched(api.db, people["bob"], clock), "NeedsReauthorization", "invalid_grant")

    ann = api.ok("GET", CONNECTION.format(people["ann"]), user=people["ann"])
    assert {k: ann[k] for k in ("LastNotificationAt", "LastCheckAt", "SubscriptionExpiresAt", "LastCheckError")} == {
        "LastNotificationAt": "2030-03-01T08:00:00.000Z",
        "LastCheckAt": "2030-03-01T08:01:00.000Z",
        "SubscriptionExpiresAt": "2030-03-04T08:00:00.000Z",
        "LastCheckError": "HTTP 503 from the CalDAV server",
    }
    listed = {c["UserId"]: c for c in api.ok("GET", "/odata/v2/CalendarConnections")["value"]}
    assert {k: v for k, v in listed[people["ann"]].items() if not k.startswith("@")} == {
        k: v for k, v in ann.items() if not k.startswith("@")
    }
    assert "LastCheckError" not in listed[people["bob"]]
    assert listed[people["bob"]]["LastCheckAt"] == "2030-03-01T08:02:00.000Z"

    failing = api.ok(
        "GET", "/odata/v2/CalendarConnections?$filter=LastCheckError ne null&$select=UserId,LastCheckError"
    )
    assert failing["value"] == [{"UserId": people["ann"], "LastCheckError": "HTTP 503 from the CalDAV server"}]
    needs = api.ok("GET", "/odata/v2/CalendarConnections?$filter=Status eq 'NeedsReauthorization'")
    assert [c["UserId"] for c in needs["value"]] == [people["bob"]]
    oldest = api.ok("GET", "/odata/v2/CalendarConnections?$orderby=LastCheckAt&$top=1&$select=UserId")
    assert oldest["value"] == [{"UserId": people["ann"]}]


def test_sync_health_sums_up_the_connections(api: Api, people: dict[str, str], clock: Any) -> None:
    """GetCalendarSyncHealth: every status and provider counted (0 when none), the watched connections, their
    channel and check errors, the oldest check and the soonest channel expiry (left out while there are none)."""
    empty = api.ok("GET", "/odata/v2/CalendarSyncHealth")
    assert empty == {
        "ByStatus": {"Connected": 0, "NeedsReauthorization": 0, "Error": 0},
        "ByProvider": {"Microsoft365": 0, "Google": 0, "CalDAV": 0},
        "Watched": 0,
        "ChannelErrors": 0,
        "CheckErrors": 0,
    }
    _connect(api.db, people["ann"])
    _connect(api.db, people["bob"], provider="Google", account="bob@gmail.example")
    _connect(api.db, people["admin"], account="admin@dav.example")
    bob = calendar.active_connection(api.db, people["bob"])
    assert bob is not None
    calendar.set_status(api.db, bob.id, "NeedsReauthorization", "invalid_grant")  # not watched
    ann = _watched(api.db, people["ann"], clock, error="HTTP 503 from the CalDAV server")
    calendar_watch.watch_failed(api.db, ann, "subscription refused", api.db.clock() + timedelta(minutes=5))
    _watched(api.db, people["admin"], clock)

    health = api.ok("GET", "/odata/v2/CalendarSyncHealth", user=people["admin"])
    assert health == {
        "ByStatus": {"Connected": 2, "NeedsReauthorization": 1, "Error": 0},
        "ByProvider": {"Microsoft365": 0, "Google": 1, "CalDAV": 2},
        "Watched": 2,
        "ChannelErrors": 1,
        "CheckErrors": 1,
        "OldestCheckAt": "2030-03-01T08:01:00.000Z",
        "SoonestChannelExpiry": "2030-03-04T08:00:00.000Z",
    }


def test_only_administrators_read_sync_health(api: Api, read_api: Api, people: dict[str, str]) -> None:
    """A learner gets 403, and a Read Only key too (as for the list of connections), with the usual wording."""
    refused = api.get("/odata/v2/CalendarSyncHealth", user=people["ann"])
    assert (refused.status_code, error(refused)["code"]) == (403, "Forbidden")
    read_only = read_api.get("/odata/v2/CalendarSyncHealth")
    assert (read_only.status_code, error(read_only)["code"]) == (403, "Forbidden")
    assert "Read Only" in error(read_only)["message"]


def test_metadata_declares_calendar_connections(api: Api) -> None:
    """$metadata declares the set with its key, so every @odata.context it answers resolves."""
    xml = api.get("/odata/v2/$metadata").text
    assert '<EntitySet Name="CalendarConnections" EntityType="Coursewire.CalendarConnection"' in xml
    assert '<PropertyRef Name="UserId" />' in xml


# --- the link to the calendar page -------------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("storage.calendar_links") is None, reason="storage.calendar_links has not landed yet"
)
def test_a_link_to_the_calendar_page(api: Api, read_api: Api, people: dict[str, str], clock: Any) -> None:
    """The person or an administrator gets a link under the base URL expiring after COURSEWIRE_CALENDAR_LINK_TTL
    (900 s); another learner gets 404 and a Read Only key 403."""
    path = f"/odata/v2/Users({people['ann']})/CalendarConnectionLink"
    for user in (people["ann"], people["admin"]):
        link = api.ok("POST", path, user=user)
        assert link["Url"].startswith("http://testserver/calendar/link/") and len(link["Url"]) > 40
        assert link["ExpiresAt"] == "2030-03-01T08:15:00.000Z"
    assert api.post(path, user=people["bob"]).status_code == 404
    assert read_api.post(path).status_code == 403


# --- the trigger -------------------------------------------------------------------------------------------


def test_the_reauthorization_trigger(api: Api, people: dict[str, str]) -> None:
    """A flow subscribes to CalendarConnectionNeedsReauthorization; a connection that loses its authorization
    yields one notification, valid against the document's schema, naming the person, provider and account,
    with no null; a second NeedsReauthorization without a change in between yields none."""
    hook = {"WebHookUri": "https://flow.example/workflows/calendar/run?sig=s"}
    created = api.post("/webhooks/subscribe/CalendarConnectionNeedsReauthorization", json=hook)
    assert created.status_code == 201 and created.json()["Event"] == "CalendarConnectionNeedsReauthorization"
    _connect(api.db, people["ann"])
    connection = calendar.active_connection(api.db, people["ann"])
    assert connection is not None
    calendar.set_status(api.db, connection.id, "NeedsReauthorization", "invalid_grant: consent revoked")
    calendar.set_status(api.db, connection.id, "NeedsReauthorization", "invalid_grant again")
    fired = events.read_after(api.db, 0, types=["CalendarConnectionNeedsReauthorization"])
    assert len(fired) == 1
    built = payloads.notification(fired[0])
    assert built is not None
    trigger, item = built
    assert trigger == "CalendarConnectionNeedsReauthorization"
    assert payloads.validate(trigger, item) == []
    assert item["User"] == {"Id": people["ann"], "LoginName": "ann@x.example", "Email": "ann@x.example"}
    assert (item["Provider"], item["Account"], item["Status"], item["LastError"]) == (
        "CalDAV",
        "ann@dav.example",
        "NeedsReauthorization",
        "invalid_grant: consent revoked",
    )
    assert "null" not in json.dumps(item) and PASSWORD not in json.dumps(item)
    assert payloads.entity_key(fired[0]) == f"user:{people['ann']}"


# --- a real CalDAV server (Radicale on 127.0.0.1, allowed by COURSEWIRE_ALLOWED_NETWORKS) --------------------


@pytest.fixture
def local_settings(settings: Settings) -> Settings:
    return replace(settings, calendar=replace(settings.calendar, allowed_networks=parse_networks("127.0.0.0/8")))


@pytest.fixture
def local_api(local_settings: Settings, db: Database) -> Iterator[Api]:
    app = create_app(local_settings, db=db, validate_responses=True, resolve=fake_resolve)
    with app.test_client() as client:
        yield Api(client, apikeys.create(db, "local", "full").secret, db, local_settings)


def test_caldav_connects_through_the_api(
    local_api: Api, people: dict[str, str], radicale: RadicaleServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A PUT with the server's address finds the account's event calendar (not its task list) by discovery and
    connects it; a wrong password is a 400 naming Password, a closed port one naming Url; the password is in no
    answer and no log, and is stored sealed."""
    caplog.set_level(logging.DEBUG)
    name, password = radicale.new_user()
    for folder, components in (("tasks", ("VTODO",)), ("training", ("VEVENT",))):
        made = radicale.request("MKCALENDAR", f"/{name}/{folder}/", name, password, mkcalendar_body(folder, components))
        assert made.status == 201
    local_api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    path = CONNECTION.format(people["ann"])
    body = {"Provider": "CalDAV", "Url": f"{radicale.url}/", "Username": name, "Password": password}

    wrong = local_api.request("PUT", path, user=people["ann"], json={**body, "Password": "not-" + password})
    assert (wrong.status_code, error(wrong)["target"]) == (400, "Password"), wrong.text
    closed = local_api.request(
        "PUT", path, user=people["ann"], json={**body, "Url": f"http://127.0.0.1:{free_port()}/"}
    )
    assert (closed.status_code, error(closed)["target"]) == (400, "Url"), closed.text

    connected = local_api.ok("PUT", path, user=people["ann"], json=body)
    assert (connected["Provider"], connected["Account"], connected["Status"]) == ("CalDAV", name, "Connected")
    active = calendar.active_connection(local_api.db, people["ann"])
    assert active is not None and active.calendar == f"{radicale.url}/{name}/training/"
    for text in (wrong.text, closed.text, json.dumps(connected), caplog.text, active.credentials):
        assert password not in text
    assert json.loads(SecretBox.for_database(local_api.db.path).open(active.credentials)) == {
        "username": name,
        "password": password,
    }


# --- a hostile CalDAV server (tests/mirror/dav_hostile.py on 127.0.0.1, an allowed network) --------------------


def _put_caldav(api: Api, user: str, url: str, **changes: str) -> Any:
    body = {"Provider": "CalDAV", "Url": url, "Username": "ann", "Password": PASSWORD, **changes}
    return api.request("PUT", CONNECTION.format(user), user=user, json=body)


def test_a_calendar_listed_at_another_address_is_not_stored(local_api: Api, people: dict[str, str]) -> None:
    """A server on an allowed network that lists a calendar at http://192.0.2.2:35837/steal/ (or any address the
    outbound check refuses) would have the worker PUT events there with the person's credentials: that calendar
    is dropped; with nothing else listed the PUT is a 400 naming Url, with one on the server that one is used."""
    local_api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    steal = ("http://192.0.2.2:35837/steal/", "Team")
    with dav_server(account({"/cal/": [steal]})) as server:
        refused = _put_caldav(local_api, people["ann"], server.url)
        assert (refused.status_code, error(refused)["target"]) == (400, "Url"), refused.text
        assert "192.0.2.2" in error(refused)["message"] and PASSWORD not in refused.text
    assert calendar.active_connection(local_api.db, people["ann"]) is None
    with dav_server(account({"/cal/": [steal, ("/cal/mine/", "Mine")]})) as server:
        connected = local_api.ok("PUT", CONNECTION.format(people["ann"]), user=people["ann"], json=_caldav(server.url))
        assert connected["Status"] == "Connected"
    active = calendar.active_connection(local_api.db, people["ann"])
    assert active is not None and active.calendar == server.url + "cal/mine/"


def test_discovery_gives_up_after_its_deadline(
    local_api: Api, people: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that never answers holds the API thread for the whole discovery's deadline (20 s, here 0.5 s),
    not each request's 30 s: the PUT is then a 400 naming Url."""
    monkeypatch.setattr(calendar_handlers, "DISCOVERY_TIMEOUT", 0.5)
    local_api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    with dav_server(account({"/cal/": [("/cal/a/", "A")]}), stall=["/p/"]) as server:
        started = time.monotonic()
        refused = _put_caldav(local_api, people["ann"], server.url)
        assert time.monotonic() - started < 5
    assert (refused.status_code, error(refused)["target"]) == (400, "Url"), refused.text


def test_discoveries_in_flight_are_limited(local_api: Api, people: dict[str, str]) -> None:
    """While the process runs caldav.DISCOVERIES_PER_PROCESS discoveries another PUT is refused at once with 503
    and Retry-After, in the OData error shape; while the person's own is running, 409. Nothing reaches the
    server; once the others end, the PUT connects."""
    local_api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    with dav_server(account({"/cal/": [("/cal/mine/", "Mine")]})) as server:
        with ExitStack() as running:
            for n in range(caldav.DISCOVERIES_PER_PROCESS):
                running.enter_context(caldav.discovery_slot(f"someone-{n}"))
            busy = _put_caldav(local_api, people["ann"], server.url)
            assert (busy.status_code, error(busy)["code"]) == (503, "ServiceUnavailable"), busy.text
            assert busy.headers["Retry-After"] == str(caldav.DISCOVERY_RETRY_AFTER)
            assert "try again" in error(busy)["message"]
        with caldav.discovery_slot(people["ann"]):
            own = _put_caldav(local_api, people["ann"], server.url)
            assert (own.status_code, error(own)["code"], error(own)["target"]) == (409, "Conflict", "Url"), own.text
            assert "in progress" in error(own)["message"]
        assert server.requests() == []
        assert local_api.ok("PUT", CONNECTION.format(people["ann"]), user=people["ann"], json=_caldav(server.url))


@pytest.mark.parametrize(
    ("change", "target", "said"),
    [
        ({"Username": "ann:admin"}, "Username", "must not contain ':'"),
        ({"Username": ""}, "Username", "must not be empty"),
        ({"Username": "ann\u0000"}, "Username", "U+0000"),
        ({"Username": "ann\r\nX-Evil: 1"}, "Username", "U+000D"),
        ({"Username": "ann\u202egnp.exe"}, "Username", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ({"Password": ""}, "Password", "must not be empty"),
        ({"Password": "app\npassword"}, "Password", "control character"),
    ],
)
def test_credentials_that_cannot_be_sent_or_shown_are_refused(
    local_api: Api, people: dict[str, str], change: dict[str, str], target: str, said: str
) -> None:
    """A ':' in the user name (HTTP Basic cannot carry it, RFC 7617 §2; it was a 500), an empty value, and
    control or format characters (stored and shown as the Account) are a 400 naming the field, before any
    request to the server."""
    local_api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    with dav_server(account({"/cal/": [("/cal/mine/", "Mine")]})) as server:
        refused = _put_caldav(local_api, people["ann"], server.url, **change)
        assert server.requests() == []
    assert (refused.status_code, error(refused)["target"]) == (400, target), refused.text
    assert said in error(refused)["message"] and PASSWORD not in refused.text
    assert calendar.active_connection(local_api.db, people["ann"]) is None
