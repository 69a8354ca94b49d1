"""The notification endpoints as Graph reaches them: a real `coursewire serve`, no API key, the validation handshake
and a change notification that makes a connection's check due in the served database [MS5][MS6]."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from serving import Server, start

from storage import calendar, calendar_watch
from storage.db import Database
from storage.models import CLI
from storage.users import create as create_user

pytestmark = [pytest.mark.system, pytest.mark.slow]

SECRET = "client-state-served-0123456789"  # noqa: S105 (a test value)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    # No in-process worker: nothing else touches the watch row (this connection's credentials are a stand-in).
    yield from start(tmp_path / "data", "--workers", "1", "--no-worker")


def test_graph_reaches_the_receiver_of_a_served_app(served: Server, tmp_path: Path) -> None:
    """Without authentication, the handshake is echoed as text/plain and a notification with the right clientState
    is acknowledged (202) and marks the connection's check due; one with a wrong clientState is acknowledged and
    changes nothing."""
    db = Database(tmp_path / "data" / "coursewire.db")
    try:
        calendar.update_settings(db, CLI, {"Microsoft365Enabled": True})
        user_id = str(create_user(db, CLI, {"LoginName": "ann@contoso.example", "Email": "ann@contoso.example"})["Id"])
        calendar.connect(db, CLI, user_id, "Microsoft365", account="ann", calendar=None, credentials="-")
        connection = calendar.active_connection(db, user_id)
        assert connection is not None
        now = db.clock()
        calendar_watch.ensure(db, now)
        calendar_watch.set_channel(
            db,
            connection.id,
            channel_id="sub-ann",
            resource_id=None,
            hashed_secret=calendar_watch.secret_hash(SECRET),
            expires_at=None,
            renew_at=None,
        )
        url = served.base + "/calendar/notifications/microsoft365"

        echoed = requests.post(url, params={"validationToken": "Validation: Token+1"}, timeout=10)
        assert echoed.status_code == 200, echoed.text
        assert echoed.headers["content-type"].startswith("text/plain") and echoed.text == "Validation: Token+1"

        def notify(secret: str) -> requests.Response:
            entry = {"subscriptionId": "sub-ann", "clientState": secret, "changeType": "deleted", "resource": "x"}
            return requests.post(url, json={"value": [entry]}, timeout=10)

        wrong = notify("not-the-secret")
        assert wrong.status_code == 202 and wrong.content == b""
        watch = calendar_watch.of_connection(db, connection.id)
        assert watch is not None and watch.last_notification_at is None

        right = notify(SECRET)
        assert right.status_code == 202 and right.content == b""
        watch = calendar_watch.of_connection(db, connection.id)
        assert watch is not None and watch.last_notification_at is not None
        assert abs(watch.last_notification_at - db.clock()) < timedelta(minutes=1)
    finally:
        db.close()
