"""SIGKILL `coursewire worker` between sending and recording: after a restart nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from receiver import Reply, receiving

from storage import apikeys, deliveries, users
from storage.db import Database
from storage.models import CLI
from storage.outbound import parse_networks
from storage.secrets import SecretBox
from webhooks import registry

BIN = Path(sys.executable).parent / "coursewire"
EVENTS = 20

pytestmark = pytest.mark.system


def test_sigkill_between_sending_and_recording_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = Database(data / "coursewire.db")
    db.migrate()
    key = apikeys.create(db, "crash", "full").key
    box = SecretBox.for_database(db.path)
    env = {
        **os.environ,
        "COURSEWIRE_DATA_DIR": str(data),
        "COURSEWIRE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "COURSEWIRE_WEBHOOK_BATCH_WINDOW": "off",
    }
    hold = threading.Event()
    with receiving() as receiver:
        receiver.default = Reply(200, hold=hold)
        registry.subscribe(db, box, CLI, key.id, "UserCreated", f"{receiver.url}/hook", parse_networks("127.0.0.0/8"))
        created = [users.create(db, CLI, {"LoginName": f"u{i}@x.example"})["LoginName"] for i in range(EVENTS)]

        worker = subprocess.Popen([str(BIN), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            receiver.wait_for(EVENTS, timeout=30)  # every POST is open at the receiver, none answered yet
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        hold.set()
        counts = deliveries.counts(db)
        assert (counts["sending"], counts["delivered"]) == (EVENTS, 0)  # sent, but nothing recorded

        receiver.default = Reply(200)
        again = subprocess.run([str(BIN), "worker", "--once"], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr

    assert deliveries.counts(db)["delivered"] == EVENTS
    by_login: dict[str, list[tuple[str, int]]] = {}
    for request in receiver.received:
        body = request.body
        for n in body["Notifications"]:
            by_login.setdefault(n["LoginName"], []).append((body["Id"], body["Attempt"]))
    assert sorted(by_login) == sorted(created)  # every event reached the receiver
    for login, seen in by_login.items():
        ids = {delivery_id for delivery_id, _ in seen}
        assert len(ids) == 1, login  # a duplicate only after the crash, and with the same Id
        assert sorted(a for _, a in seen) == [1, 2], login
    assert Counter(len(seen) for seen in by_login.values()) == {2: EVENTS}
