"""Tenant-wide Microsoft 365 through the API (issue 11, "Tenant-wide Microsoft 365"): GetCalendarTenant,
ConnectCalendarTenant against the Entra and Graph fakes on 127.0.0.1 (the application's client-credentials token,
then one `GET /users` that needs User.Read.All with admin consent), and DisconnectCalendarTenant."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from support import Api, error, fake_resolve

from calendars.config import CalendarConfig
from calendars.tenant import tenant_credentials
from connector.app import create_app
from connector.settings import Settings
from storage import calendar, calendar_tenant
from storage.db import Database
from storage.models import CLI
from storage.secrets import SecretBox

sys.path.insert(0, str(Path(__file__).parents[1] / "mirror"))  # the Graph and Entra fakes
from fakes.graph import APP, GraphFake
from fakes.identity import FakeIdentity

TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
TENANT_PATH = "/odata/v2/CalendarTenant"


@dataclass
class Fakes:
    identity: FakeIdentity
    graph: GraphFake
    config: CalendarConfig

    def calls(self) -> int:
        """Requests that reached Microsoft: token grants and Graph requests."""
        return len(self.identity.token_requests) + len(self.graph.requests)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    """Entra (the tenant's token endpoint) and Graph, whose application tokens are the fake Entra's; the
    application has Calendars.ReadWrite and User.Read.All with admin consent until a test takes one away."""
    with FakeIdentity(tenant=TENANT) as identity, GraphFake() as graph:
        graph.token_check = lambda token: APP if identity.app_token(token) else None
        graph.add_user("00000000-0000-4000-8000-000000000001", "ann@contoso.example")
        yield Fakes(identity, graph, identity.config(graph_url=f"{graph.url}/v1.0", microsoft_tenant=TENANT))


@pytest.fixture
def settings(settings: Settings, fakes: Fakes) -> Settings:
    """COURSEWIRE_MICROSOFT_* name the fakes' client and tenant; 127.0.0.0/8 is an allowed network."""
    return replace(settings, calendar=fakes.config)


@pytest.fixture
def people(api: Api) -> dict[str, str]:
    """name -> user Id: an Administrator and two learners; Microsoft 365 calendars enabled."""
    out = {}
    for name, role in (("admin", "Administrator"), ("ann", "Learner"), ("bob", "Learner")):
        body = {"LoginName": f"{name}@contoso.example", "Email": f"{name}@contoso.example", "Role": role}
        out[name] = api.ok("POST", "/odata/v2/Users", json=body)["Id"]
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={"Microsoft365Enabled": True})
    return out


def _with_config(api: Api, db: Database, settings: Settings, **changes: Any) -> Api:
    """The same API served with other calendar variables (as after a restart with another environment)."""

    changed = replace(settings, calendar=replace(settings.calendar, **changes))
    app = create_app(changed, db=db, validate_responses=True, resolve=fake_resolve)
    return Api(app.test_client(), api.secret, db, changed)


def test_a_tenant_never_connected_reads_disabled(api: Api, people: dict[str, str]) -> None:
    """Before any connect, an administrator reads {"Enabled": false}, nothing else."""
    assert api.ok("GET", TENANT_PATH, user=people["admin"]) == {"Enabled": False}


def test_an_administrator_connects_the_tenant(api: Api, people: dict[str, str], fakes: Fakes, clock: Any) -> None:
    """PUT (without a body, or with {}) asks Microsoft for the application's token and reads one user, then
    enables the tenant: the answer and GET show it, the secret is in neither, the event log records it once."""
    connected = api.ok("PUT", TENANT_PATH, user=people["admin"])
    assert connected == {
        "TenantId": TENANT,
        "Enabled": True,
        "EnabledAt": "2030-03-01T08:00:00.000Z",
        "Connections": 0,
    }
    assert fakes.identity.grant_count("client_credentials") == 1
    assert ("GET", "/v1.0/users") in fakes.graph.requests
    assert api.ok("GET", TENANT_PATH) == connected
    again = api.ok("PUT", TENANT_PATH, json={})
    assert again["Enabled"] is True and again["TenantId"] == TENANT
    secret = fakes.config.microsoft_client_secret
    assert secret and secret not in json.dumps([connected, again])
    with api.db.read() as conn:
        recorded = conn.execute("SELECT count(*) FROM events WHERE type = 'CalendarTenantEnabled'").fetchone()[0]
    assert recorded == 1


def test_only_administrators_read_connect_and_disconnect(
    api: Api, read_api: Api, people: dict[str, str], fakes: Fakes
) -> None:
    """A learner gets 403 for each operation, and so does a Read Only key; nothing reaches Microsoft and nothing
    changes."""
    for method in ("GET", "PUT", "DELETE"):
        refused = api.request(method, TENANT_PATH, user=people["ann"])
        assert (refused.status_code, error(refused)["code"]) == (403, "Forbidden"), method
        read_only = read_api.request(method, TENANT_PATH)
        assert (read_only.status_code, error(read_only)["code"]) == (403, "Forbidden"), method
        assert "Read Only" in error(read_only)["message"]
    assert fakes.calls() == 0
    assert calendar_tenant.tenant_state(api.db) is None


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"microsoft_client_id": None}, "COURSEWIRE_MICROSOFT_CLIENT_ID"),
        ({"microsoft_client_secret": None}, "COURSEWIRE_MICROSOFT_CLIENT_SECRET"),
        ({"microsoft_tenant": "common"}, "COURSEWIRE_MICROSOFT_TENANT"),
        ({"microsoft_tenant": "organizations"}, "COURSEWIRE_MICROSOFT_TENANT"),
    ],
)
def test_a_missing_or_shared_variable_is_a_400_naming_it(
    api: Api, db: Database, settings: Settings, people: dict[str, str], fakes: Fakes, changes: Any, variable: str
) -> None:
    """Without the client, or with a multi-tenant authority such as common, the 400's target is the variable to
    set; Microsoft is not asked."""
    other = _with_config(api, db, settings, **changes)
    refused = other.request("PUT", TENANT_PATH, user=people["admin"])
    assert (refused.status_code, error(refused)["target"]) == (400, variable), refused.text
    assert variable in error(refused)["message"]
    assert fakes.calls() == 0
    assert calendar_tenant.tenant_state(db) is None


def test_microsoft_365_must_be_enabled_first(api: Api, people: dict[str, str], fakes: Fakes) -> None:
    """With Microsoft365Enabled off, connecting is a 400 saying to turn it on; Microsoft is not asked."""
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={"Microsoft365Enabled": False})
    refused = api.request("PUT", TENANT_PATH)
    assert (refused.status_code, error(refused)["target"]) == (400, "Microsoft365Enabled")
    assert "turn Microsoft365Enabled on first" in error(refused)["message"]
    assert fakes.calls() == 0


def test_a_refused_secret_is_a_400_quoting_microsoft(api: Api, people: dict[str, str], fakes: Fakes) -> None:
    """An expired client secret: a 400 naming COURSEWIRE_MICROSOFT_CLIENT_SECRET with Microsoft's AADSTS code
    (never the secret); the tenant stays unconnected."""
    fakes.identity.expire_client_secret()
    refused = api.request("PUT", TENANT_PATH)
    assert (refused.status_code, error(refused)["target"]) == (400, "COURSEWIRE_MICROSOFT_CLIENT_SECRET")
    assert "AADSTS7000222" in error(refused)["message"] and TENANT in error(refused)["message"]
    secret = fakes.config.microsoft_client_secret
    assert secret and secret not in refused.text
    assert calendar_tenant.tenant_state(api.db) is None


def test_a_wrong_secret_is_a_400_too(api: Api, db: Database, settings: Settings, people: dict[str, str]) -> None:
    """A secret Microsoft does not know (AADSTS7000215) names the same variable, and is not echoed."""
    other = _with_config(api, db, settings, microsoft_client_secret="not-the-secret-4a1f")  # noqa: S106
    refused = other.request("PUT", TENANT_PATH)
    assert (refused.status_code, error(refused)["target"]) == (400, "COURSEWIRE_MICROSOFT_CLIENT_SECRET")
    assert "AADSTS7000215" in error(refused)["message"] and "not-the-secret-4a1f" not in refused.text


def test_missing_admin_consent_is_a_400_with_graphs_message(api: Api, people: dict[str, str], fakes: Fakes) -> None:
    """Without User.Read.All consented, Graph's 403 becomes a 400 saying admin consent is missing, with Graph's
    code; the tenant stays unconnected, and connects once consent is granted."""
    fakes.graph.app_permissions = {"Calendars.ReadWrite"}
    refused = api.request("PUT", TENANT_PATH)
    assert (refused.status_code, error(refused)["code"]) == (400, "BadRequest")
    message = error(refused)["message"]
    assert "admin consent is missing" in message and "Authorization_RequestDenied" in message
    assert "User.Read.All" in message
    assert calendar_tenant.tenant_state(api.db) is None
    fakes.graph.app_permissions = {"Calendars.ReadWrite", "User.Read.All"}
    assert api.ok("PUT", TENANT_PATH)["Enabled"] is True


def test_a_throttled_check_is_a_503_with_retry_after(api: Api, people: dict[str, str], fakes: Fakes) -> None:
    """Graph's 429 becomes a 503 whose Retry-After is Graph's; nothing is enabled."""
    fakes.graph.fail_next("throttle", retry_after=12, method="GET")
    busy = api.request("PUT", TENANT_PATH)
    assert (busy.status_code, error(busy)["code"], busy.headers["Retry-After"]) == (503, "ServiceUnavailable", "12")
    assert calendar_tenant.tenant_state(api.db) is None


def _tenant_connection(db: Database, user_id: str, mailbox: str) -> str:
    box = SecretBox.for_database(db.path)
    made = calendar_tenant.connect_mailbox(
        db, user_id, mailbox, f"{mailbox}@contoso.example", tenant_credentials(box, mailbox), db.clock()
    )
    assert made is not None
    return made


def _states(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return dict(conn.execute("SELECT user_id, state FROM calendar_connections").fetchall())


def test_the_state_shows_the_roster_and_disconnecting_removes_its_connections(
    api: Api, people: dict[str, str], fakes: Fakes, clock: Any
) -> None:
    """GET counts the tenant's connections and shows the roster's last round and error; DELETE stops tenant-wide
    mode and has the worker remove the events of every tenant-made connection (a person's own stays)."""
    api.ok("PUT", TENANT_PATH)
    _tenant_connection(api.db, people["ann"], "mailbox-ann")
    _tenant_connection(api.db, people["bob"], "mailbox-bob")
    calendar.set_sync_enabled(api.db, CLI, people["bob"], False)  # opted out: the row stays
    clock.advance(minutes=5)
    calendar_tenant.roster_done(api.db, api.db.clock(), "Graph 503: try later")
    state = api.ok("GET", TENANT_PATH)
    assert state["Connections"] == 2 and state["LastError"] == "Graph 503: try later"
    assert state["LastRosterAt"] == "2030-03-01T08:05:00.000Z"

    assert api.request("DELETE", TENANT_PATH).status_code == 204
    assert api.ok("GET", TENANT_PATH)["Enabled"] is False
    assert _states(api.db) == {people["ann"]: "removing", people["bob"]: "removing"}
    assert api.request("DELETE", TENANT_PATH).status_code == 204  # again: nothing more to do


def test_disconnecting_with_keep_events(api: Api, people: dict[str, str], fakes: Fakes) -> None:
    """KeepEvents=true forgets the tenant's connections at once and leaves their events in the mailboxes."""
    api.ok("PUT", TENANT_PATH)
    _tenant_connection(api.db, people["ann"], "mailbox-ann")
    assert api.request("DELETE", f"{TENANT_PATH}?KeepEvents=true").status_code == 204
    assert _states(api.db) == {}
    state = api.ok("GET", TENANT_PATH)
    assert (state["TenantId"], state["Enabled"], state["Connections"]) == (TENANT, False, 0)
