"""`coursewire calendar tenant` through click's runner against the Entra and Graph fakes on 127.0.0.1: shown,
connected with the checks ConnectCalendarTenant makes (and its messages), disconnected with and without
--keep-events (issue 11, "Tenant-wide Microsoft 365")."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from calendars.tenant import tenant_credentials
from connector.cli import main
from storage import calendar_tenant, users
from storage.db import Database
from storage.models import CLI
from storage.secrets import SecretBox

sys.path.insert(0, str(Path(__file__).parent / "mirror"))  # the Graph and Entra fakes
from fakes.graph import APP, GraphFake
from fakes.identity import MICROSOFT, FakeIdentity

TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
OTHERS = (
    "COURSEWIRE_GOOGLE_CLIENT_ID",
    "COURSEWIRE_GOOGLE_CLIENT_SECRET",
    "COURSEWIRE_SMTP_URL",
    "COURSEWIRE_MAIL_FROM",
)


@dataclass
class World:
    tmp_path: Path
    identity: FakeIdentity
    graph: GraphFake
    env: dict[str, str | None]

    def run(self, *args: str, ok: bool = True, env: dict[str, str | None] | None = None) -> Result:
        result = CliRunner().invoke(
            main, ["--data-dir", str(self.tmp_path / "data"), *args], env={**self.env, **(env or {})}
        )
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def db(self) -> Database:
        return Database(str(self.tmp_path / "data" / "coursewire.db"))

    def calls(self) -> int:
        return len(self.identity.token_requests) + len(self.graph.requests)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The server's environment, pointed at the fakes; Microsoft 365 calendars enabled."""
    with FakeIdentity(tenant=TENANT) as identity, GraphFake() as graph:
        graph.token_check = lambda token: APP if identity.app_token(token) else None
        client_id, secret = identity.clients[MICROSOFT]
        env: dict[str, str | None] = {
            **dict.fromkeys(OTHERS),
            "COURSEWIRE_MICROSOFT_CLIENT_ID": client_id,
            "COURSEWIRE_MICROSOFT_CLIENT_SECRET": secret,
            "COURSEWIRE_MICROSOFT_TENANT": TENANT,
            "COURSEWIRE_MICROSOFT_LOGIN_URL": f"{identity.base_url}/microsoft",
            "COURSEWIRE_GRAPH_URL": f"{graph.url}/v1.0",
            "COURSEWIRE_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        world = World(tmp_path, identity, graph, env)
        world.run("calendar", "settings", "--enable", "microsoft365")
        yield world


def test_never_connected_says_so(world: World) -> None:
    """Before --connect: not connected, in text and as GetCalendarTenant's JSON; Microsoft is not asked."""
    assert "Microsoft 365 tenant: not connected" in world.run("calendar", "tenant").output
    assert json.loads(world.run("calendar", "tenant", "--json").output) == {"Enabled": False}
    assert world.calls() == 0


def test_connect_checks_with_microsoft_then_shows_the_tenant(world: World) -> None:
    """--connect gets the application's token and reads one user, then the tenant is on; the secret is never
    printed."""
    out = world.run("calendar", "tenant", "--connect").output
    assert f"Microsoft 365 tenant: {TENANT} (on)" in out and "Calendars it connected: 0" in out
    assert world.identity.grant_count("client_credentials") == 1 and ("GET", "/v1.0/users") in world.graph.requests
    assert world.identity.clients[MICROSOFT][1] not in out
    shown = json.loads(world.run("calendar", "tenant", "--json").output)
    assert (shown["TenantId"], shown["Enabled"]) == (TENANT, True)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"COURSEWIRE_MICROSOFT_CLIENT_SECRET": None}, "COURSEWIRE_MICROSOFT_CLIENT_SECRET"),
        ({"COURSEWIRE_MICROSOFT_TENANT": "common"}, "COURSEWIRE_MICROSOFT_TENANT"),
    ],
)
def test_connect_names_the_variable_to_set(world: World, env: dict[str, str | None], variable: str) -> None:
    """A missing client secret or a shared authority ends in one line naming the variable; the plain view says
    what --connect still needs; Microsoft is not asked."""
    refused = world.run("calendar", "tenant", "--connect", ok=False, env=env)
    assert refused.exit_code == 1 and variable in refused.output and "Traceback" not in refused.output
    assert f"Before --connect: set {variable}" in world.run("calendar", "tenant", env=env).output
    assert world.calls() == 0


def test_connect_needs_microsoft_365_enabled(world: World) -> None:
    """With Microsoft 365 calendars off, --connect says to turn Microsoft365Enabled on first."""
    world.run("calendar", "settings", "--disable", "microsoft365")
    refused = world.run("calendar", "tenant", "--connect", ok=False)
    assert refused.exit_code == 1 and "turn Microsoft365Enabled on first" in refused.output
    assert "--enable microsoft365" in world.run("calendar", "tenant").output
    assert world.calls() == 0


def test_connect_reports_what_microsoft_refused(world: World) -> None:
    """An expired secret names AADSTS7000222 and the variable; missing admin consent says so with Graph's code;
    Graph's 429 says when to try again; the tenant stays off through all three."""
    world.identity.expire_client_secret()
    expired = world.run("calendar", "tenant", "--connect", ok=False)
    assert "AADSTS7000222" in expired.output and "COURSEWIRE_MICROSOFT_CLIENT_SECRET" in expired.output
    world.identity.secret_expired = False
    world.graph.app_permissions = {"Calendars.ReadWrite"}
    consent = world.run("calendar", "tenant", "--connect", ok=False)
    assert "admin consent is missing" in consent.output and "Authorization_RequestDenied" in consent.output
    world.graph.app_permissions = {"Calendars.ReadWrite", "User.Read.All"}
    world.graph.fail_next("throttle", retry_after=9, method="GET")
    busy = world.run("calendar", "tenant", "--connect", ok=False)
    assert busy.exit_code == 1 and "try again in 9 s" in busy.output
    assert "not connected" in world.run("calendar", "tenant").output


def _connected(world: World) -> Callable[[], dict[str, str]]:
    """Connect the tenant and one person through it (as the roster does); returns a reader of the connections'
    states by person."""
    world.run("calendar", "tenant", "--connect")
    db = world.db()
    ann = users.create(db, CLI, {"LoginName": "ann@contoso.example", "Email": "ann@contoso.example"})
    user_id = ann["Id"]
    box = SecretBox.for_database(db.path)
    made = calendar_tenant.connect_mailbox(
        db, user_id, "mailbox-ann", "ann@contoso.example", tenant_credentials(box, "mailbox-ann"), db.clock()
    )
    assert made is not None

    def states() -> dict[str, str]:
        with db.read() as conn:
            return dict(conn.execute("SELECT user_id, state FROM calendar_connections").fetchall())

    assert states() == {user_id: "active"}
    return states


def test_disconnect_has_the_worker_remove_the_events(world: World) -> None:
    """--disconnect turns tenant-wide mode off and marks the tenant's connections for removal of their events."""
    states = _connected(world)
    out = world.run("calendar", "tenant", "--disconnect").output
    assert f"Microsoft 365 tenant: {TENANT} (off)" in out
    assert set(states().values()) == {"removing"}


def test_disconnect_keeping_the_events(world: World) -> None:
    """--disconnect --keep-events forgets the tenant's connections at once; --keep-events alone, or --connect
    with --disconnect, is a usage error."""
    states = _connected(world)
    assert world.run("calendar", "tenant", "--keep-events", ok=False).exit_code == 2
    assert world.run("calendar", "tenant", "--connect", "--disconnect", ok=False).exit_code == 2
    world.run("calendar", "tenant", "--disconnect", "--keep-events")
    assert states() == {}
