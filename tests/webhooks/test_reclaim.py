"""A worker that starts takes back at once the deliveries a dead worker of its host held (storage/leases.py through
storage.deliveries.release_abandoned), and leaves those of running workers to their lease."""

from __future__ import annotations

import os
import subprocess
import sys

from hooks import deliver, make_worker, subscribe
from receiver import Receiver
from support import Api, Clock, build_world

from storage import deliveries, leases
from webhooks.worker import dispatch


def claim_all(api: Api, owner: str) -> list[deliveries.Claimed]:
    """Dispatch, assemble and claim everything due, as a worker that then crashes would."""
    dispatch(api.db, api.settings.delivery)
    deliveries.assemble(api.db, batch=False)
    return deliveries.claim(api.db, owner, 100, api.settings.delivery.lease)


def test_deliveries_of_a_dead_worker_go_out_at_once_with_the_next_attempt(api: Api, receiver: Receiver) -> None:
    subscribe(api, "UserCreated", f"{receiver.url}/hook")
    build_world(api)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    claimed = claim_all(api, f"{leases.host_identity()}:{child.pid}:0a1b2c3d")
    assert claimed

    deliver(make_worker(api))  # the injected clock has not moved: the lease has not expired

    assert sorted(r.body["Id"] for r in receiver.received) == sorted(c.id for c in claimed)
    assert {r.body["Attempt"] for r in receiver.received} == {2}


def test_deliveries_of_a_running_worker_wait_for_its_lease(api: Api, receiver: Receiver, clock: Clock) -> None:
    subscribe(api, "UserCreated", f"{receiver.url}/hook")
    build_world(api)
    claimed = claim_all(api, f"{leases.host_identity()}:{os.getpid()}:0a1b2c3d")
    assert claimed

    deliver(make_worker(api))
    assert receiver.received == []

    clock.advance(seconds=api.settings.delivery.lease.total_seconds() + 1)
    deliver(make_worker(api))
    assert sorted(r.body["Id"] for r in receiver.received) == sorted(c.id for c in claimed)
