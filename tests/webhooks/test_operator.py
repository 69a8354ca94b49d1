"""What an operator does with deliveries: the `coursewire deliveries` commands, and upgrading a database
whose subscriptions were stored before callbacks were encrypted (migration 0004)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hooks import deliver
from receiver import Receiver, Reply
from standardwebhooks.webhooks import Webhook
from support import Api

from connector.cli import main
from storage import apikeys, events, users
from storage.db import Database
from storage.migrations import migrations
from storage.models import CLI
from storage.secrets import SecretBox
from webhooks.worker import Worker

MISMATCH = b'{"error":{"code":"TriggerInputSchemaMismatch","message":"Users is required"}}'


def cli(api: Api, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["--data-dir", str(api.settings.data_dir), *args])
    assert result.exit_code == code, result.output
    return result


def test_deliveries_cli_lists_filters_shows_and_redelivers(api: Api, receiver: Receiver) -> None:
    """An operator finds the dead letter, reads why it died, and sends it again under the same id."""
    api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": receiver.url})
    receiver.script = [Reply(400, body=MISMATCH)]
    worker = Worker(api.db, SecretBox.for_database(api.db.path), api.settings.delivery)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "first@x.example"})
    deliver(worker)  # one at a time: the scripted 400 is for the first user's POST
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "second@x.example"})
    deliver(worker)

    listed = cli(api, "deliveries").output.splitlines()
    assert len(listed) == 2
    dead_line = next(line for line in listed if " dead " in line)
    assert "UserCreated" in dead_line and "attempts=1" in dead_line and "TriggerInputSchemaMismatch" in dead_line
    assert any(" delivered " in line for line in listed)

    (dead,) = [json.loads(line) for line in cli(api, "deliveries", "--status", "dead", "--json").output.splitlines()]
    assert dead["Status"] == "dead" and dead["Notifications"] == 1
    assert cli(api, "deliveries", "--event", "CourseCreated").output.startswith("No deliveries.")

    shown = json.loads(cli(api, "deliveries", "show", dead["Id"]).output)
    assert [a["StatusCode"] for a in shown["AttemptLog"]] == [400]
    assert "Users is required" in shown["AttemptLog"][0]["Response"]
    assert shown["Payload"][0]["LoginName"] == "first@x.example"

    assert cli(api, "deliveries", "redeliver", "--all-dead").output.strip() == f"{dead['Id']}: pending again"
    deliver(worker)
    again = [r.body for r in receiver.received if r.body["Id"] == dead["Id"]]
    assert [b["Attempt"] for b in again] == [1, 2]
    assert json.loads(cli(api, "deliveries", "show", dead["Id"]).output)["Status"] == "delivered"
    # Ids as the API reads them: upper case and in braces, as SQL Server and SharePoint write GUIDs.
    braced = "{" + dead["Id"].upper() + "}"
    assert json.loads(cli(api, "deliveries", "show", braced).output)["Id"] == dead["Id"]
    by_subscription = cli(api, "deliveries", "--subscription", shown["SubscriptionId"].upper(), "--json")
    assert len(by_subscription.output.splitlines()) == 2

    # Only dead letters go again, and the refusal is one line naming the state.
    refused = cli(api, "deliveries", "redeliver", dead["Id"], code=1)
    assert refused.output.splitlines() == [
        f"Error: delivery {dead['Id']} is delivered; only dead letters are redelivered",
        "Error: 1 of 1 not redelivered (see above)",
    ]
    assert "name delivery ids, or pass --all-dead" in cli(api, "deliveries", "redeliver", code=2).output
    assert "'bogus' is not one of" in cli(api, "deliveries", "--status", "bogus", code=2).output


def test_subscriptions_stored_in_clear_are_sealed_and_still_delivered(tmp_path: Path, receiver: Receiver) -> None:
    """A database from before 0004 keeps its live subscriptions: the first `coursewire worker` encrypts
    their URLs, scrubs the clear text from the file, creates signing secrets, and delivers."""
    db = Database(tmp_path / "coursewire.db")
    migrations.apply(db.utils(), stop_before="0004_webhook_delivery")
    key = apikeys.create(db, "flows").key
    with db.write() as conn:  # rows as the code before 0004 wrote them: the flow's signed URL in clear
        for sub_id, deleted in (("live", None), ("gone", "2030-02-01T00:00:00.000Z")):
            conn.execute(
                "INSERT INTO webhook_subscriptions (id, event, callback_url, api_key_id, created_at, deleted_at)"
                " VALUES (?, 'UserCreated', ?, ?, '2030-01-01T00:00:00.000Z', ?)",
                (sub_id, f"{receiver.url}?sig=secret-of-{sub_id}", key.id, deleted),
            )
    db.migrate()  # the upgraded server's first start migrates; then an event happens
    users.create(db, CLI, {"LoginName": "after-upgrade@x.example"})
    db.close()

    def worker_once() -> str:
        result = CliRunner().invoke(
            main,
            ["--data-dir", str(tmp_path), "worker", "--once"],
            env={"COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "COURSEWIRE_SECRET_KEY": ""},
        )
        assert result.exit_code == 0, result.output
        return result.output

    assert "Encrypted 2 webhook callback(s) stored in clear" in worker_once()
    assert "Encrypted" not in worker_once()  # once only: serve and worker both check at start
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("coursewire.db*"))
    assert b"secret-of-" not in on_disk  # not in a free page or the WAL either

    box = SecretBox.for_database(str(tmp_path / "coursewire.db"))
    with db.read() as conn:
        rows = {r["id"]: r for r in conn.execute("SELECT * FROM webhook_subscriptions")}
    assert {r["callback_url"] for r in rows.values()} == {""}
    assert box.open(rows["live"]["callback_sealed"]) == f"{receiver.url}?sig=secret-of-live"
    assert (rows["live"]["status"], rows["gone"]["status"]) == ("active", "removed")
    secret = box.open(rows["live"]["secret_sealed"])
    (got,) = receiver.received
    assert got.path.endswith("?sig=secret-of-live")
    assert got.body["Notifications"][0]["LoginName"] == "after-upgrade@x.example"
    Webhook(secret).verify(got.raw, got.headers)  # raises unless signed with the secret just created


def test_an_event_that_makes_an_invalid_payload_is_logged_and_skipped(
    api: Api, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing that fails the trigger's schema is sent; the error names the field; later events still go."""
    api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": receiver.url})
    broken = {"Id": "u-broken", "LoginName": 5, "Email": None, "Title": "Broken", "UserFieldValues": []}
    with api.db.write() as conn:
        events.record(conn, "UserCreated", CLI, api.db.clock(), {"user": broken}, user_id="u-broken")
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "fine@x.example"})
    deliver(Worker(api.db, SecretBox.for_database(api.db.path), api.settings.delivery))
    assert [r.body["Notifications"][0]["LoginName"] for r in receiver.received] == ["fine@x.example"]
    (logged,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "makes an invalid UserCreated notification" in logged and "LoginName: 5 is not of type" in logged
