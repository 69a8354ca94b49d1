"""Delivery when things go wrong: dead letters and order, disabled subscriptions, backlogs behind a
retry, a database or key that fails the worker, answers nobody foresaw, and callbacks that try to
reach internal hosts through IPv6."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from hooks import deliver, make_worker, subscribe
from receiver import Receiver, Reply
from support import Api, Clock, build_world, error

from connector.cli import main
from storage import deliveries, outbound
from storage.secrets import SecretBox
from webhooks.worker import Worker

MISMATCH = b'{"error":{"code":"TriggerInputSchemaMismatch","message":"..."}}'


def titles(receiver: Receiver) -> list[str]:
    """The session titles CourseSessionUpdated notifications carried, in the order they arrived."""
    return [c["After"] for r in receiver.received for n in r.body["Notifications"] for c in n["Changes"]]


def rename(api: Api, session_id: str, title: str) -> None:
    api.ok("PATCH", f"/odata/v2/CourseSessions({session_id})", json={"Title": title})


def first_update_failing(api: Api, receiver: Receiver, **config: Any) -> tuple[str, dict[str, Any], Worker]:
    """A session renamed "First", its CourseSessionUpdated subscriber answering 500: (session, sub, worker)."""
    session = build_world(api, max_attendees="5").session["Id"]
    sub = subscribe(api, "CourseSessionUpdated", receiver.url)
    receiver.default = Reply(500)
    worker = make_worker(api, **config)
    rename(api, session, "First")
    deliver(worker)
    return session, sub, worker


def writes_in_idle_rounds(worker: Worker, rounds: int = 10) -> int:
    """Run rounds of a started worker; return how many write transactions (SQLite's one lock) they took."""
    taken: list[int] = []
    original = worker.db.write

    def write() -> Any:
        taken.append(1)
        return original()

    async def go() -> None:
        async with worker:
            worker.db.write = write  # type: ignore[method-assign]
            try:
                for _ in range(rounds):
                    worker.tick()
            finally:
                worker.db.write = original  # type: ignore[method-assign]

    asyncio.run(go())
    return len(taken)


def test_a_dead_letter_is_not_redelivered_after_a_later_one_about_its_entity(
    api: Api, receiver: Receiver, clock: Clock
) -> None:
    """First dies; Second, about the same session, goes once First is dead; First may not follow it."""
    session = build_world(api, max_attendees="5").session["Id"]
    subscribe(api, "CourseSessionUpdated", receiver.url)
    receiver.script = [Reply(500)] * 4  # the first try and the three retries of the test schedule
    rename(api, session, "First")
    rename(api, session, "Second")
    worker = make_worker(api)
    for _ in range(5):
        deliver(worker)
        clock.advance(minutes=5)
    assert titles(receiver) == ["First"] * 4 + ["Second"]
    (dead,) = deliveries.list_deliveries(api.db, status="dead")
    refused = api.post(f"/webhooks/deliveries({dead['Id']})/Redeliver")
    assert refused.status_code == 409
    assert "a later notification about session:" in error(refused)["message"]
    assert "out of order" in error(refused)["message"]


def test_redeliver_all_dead_goes_oldest_first_and_one_entity_at_a_time(api: Api, receiver: Receiver) -> None:
    """Two dead letters about one session: the older goes first; the newer waits for a second run."""
    session = build_world(api, max_attendees="5").session["Id"]
    subscribe(api, "CourseSessionUpdated", receiver.url)
    receiver.default = Reply(400, body=MISMATCH)
    worker = make_worker(api)
    rename(api, session, "First")
    deliver(worker)
    rename(api, session, "Second")
    deliver(worker)
    assert len(deliveries.list_deliveries(api.db, status="dead")) == 2
    receiver.received.clear()
    receiver.default = Reply(204)

    def redeliver_all() -> Any:
        return CliRunner().invoke(
            main, ["--data-dir", str(api.settings.data_dir), "deliveries", "redeliver", "--all-dead"]
        )

    first = redeliver_all()
    assert first.exit_code == 1
    assert "pending again" in first.output and "is on its way; redeliver this one once it has ended" in first.output
    deliver(worker)
    assert redeliver_all().exit_code == 0
    deliver(worker)
    assert titles(receiver) == ["First", "Second"]


def test_a_disabled_subscription_dead_letters_what_waits_and_idles_without_writing(
    api: Api, receiver: Receiver, clock: Clock
) -> None:
    """Nothing stays queued on a disabled subscription; once revived, its dead letters go in order."""
    session, sub, worker = first_update_failing(api, receiver, disable_after=60.0)
    rename(api, session, "Second")  # held behind First
    for _ in range(4):
        clock.advance(minutes=5)
        deliver(worker)
    assert api.ok("GET", f"/webhooks/subscriptions({sub['Id']})")["Status"] == "disabled"
    counts = deliveries.counts(api.db)
    assert (counts["queued"], counts["dead"]) == (0, 2)
    assert writes_in_idle_rounds(worker) == 0

    receiver.received.clear()
    receiver.default = Reply(204)
    assert api.post("/webhooks/subscribe/CourseSessionUpdated", json={"WebHookUri": receiver.url}).status_code == 200
    for dead in reversed(deliveries.list_deliveries(api.db, status="dead")):
        api.ok("POST", f"/webhooks/deliveries({dead['Id']})/Redeliver")
        deliver(worker)
    assert titles(receiver) == ["First", "Second"]


def test_notifications_held_behind_a_retry_cost_an_idle_round_nothing(
    api: Api, receiver: Receiver, clock: Clock
) -> None:
    """However many notifications wait behind a failing one, rounds neither see them nor write."""
    session, sub, worker = first_update_failing(api, receiver)  # retried in 5 s
    now = api.db.clock()
    with api.db.write() as conn:  # 3,000 more about the same session, as a long outage would queue
        for n in range(3000):
            deliveries.enqueue(conn, sub["Id"], 10_000_000 + n, f"session:{session}", {"n": n}, now, now)
    writes_in_idle_rounds(worker, rounds=2)  # the rounds that hold them, 2,000 at most per round
    assert deliveries.due(api.db) == (False, False)
    assert writes_in_idle_rounds(worker) == 0
    assert deliveries.counts(api.db)["queued"] == 3000


def test_an_outcome_is_recorded_even_when_the_database_refused_it_once(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A locked database while recording does not lose the outcome, so nothing is sent twice."""
    subscribe(api, "UserCreated", receiver.url)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    worker = make_worker(api)
    record = deliveries.record
    calls: list[int] = []

    def locked_once(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        record(*args, **kwargs)

    monkeypatch.setattr(deliveries, "record", locked_once)

    async def go() -> None:
        async with worker:
            worker.tick()
            await asyncio.wait(set(worker._inflight))
            with pytest.raises(sqlite3.OperationalError):
                worker.tick()
            worker.tick()

    asyncio.run(go())
    assert deliveries.counts(api.db)["delivered"] == 1
    assert len(receiver.received) == 1


def test_a_callback_that_cannot_be_decrypted_is_a_failed_attempt_not_a_stuck_one(
    api: Api, receiver: Receiver, clock: Clock
) -> None:
    """A worker holding another secret key records each claim as a failure that says why, on the schedule."""
    subscribe(api, "UserCreated", receiver.url)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    wrong = Worker(api.db, SecretBox(Fernet.generate_key()), api.settings.delivery, rng=lambda: 0.5)
    deliver(wrong)
    (delivery,) = deliveries.list_deliveries(api.db)
    assert delivery["Status"] == "pending" and "could not decrypt the callback" in delivery["LastError"]
    clock.advance(seconds=6)
    deliver(make_worker(api))  # the right key: delivered on the first retry
    assert [r.body["Attempt"] for r in receiver.received] == [2]


def raw_server(answer: bytes) -> tuple[str, list[bytes]]:
    """A TCP server that answers every request with these exact bytes (what no HTTP library would send)."""
    server = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            requests.append(conn.recv(65536))
            conn.sendall(answer)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", requests


def test_errors_in_the_attempt_log_do_not_reveal_the_callback_signature(api: Api) -> None:
    """aiohttp names the whole URL in some errors; the log keeps only scheme, host and port."""
    base, _ = raw_server(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n")
    subscribe(api, "UserCreated", f"{base}/workflows/abc/triggers/manual/run?sig=TOPSECRETSAS")
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    deliver(make_worker(api))
    (delivery,) = api.ok("GET", "/webhooks/deliveries")["value"]
    shown = api.ok("GET", f"/webhooks/deliveries({delivery['Id']})")
    assert delivery["LastError"].startswith("ClientResponseError: 400")
    assert "TOPSECRETSAS" not in str(shown) and "/workflows/abc" not in str(shown)


def test_an_unreadable_retry_after_falls_back_to_the_schedule(api: Api, clock: Clock) -> None:
    """`Retry-After: ²` is not a number of seconds: the attempt is a failure retried on the schedule."""
    answer = b"HTTP/1.1 503 Busy\r\nRetry-After: \xc2\xb2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    base, requests = raw_server(answer)
    subscribe(api, "UserCreated", f"{base}/hook")
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    worker = make_worker(api)
    deliver(worker)
    clock.advance(seconds=6)
    deliver(worker)
    (delivery,) = deliveries.list_deliveries(api.db)
    log = deliveries.get(api.db, delivery["Id"])["AttemptLog"]
    assert [(a["StatusCode"], a["Outcome"]) for a in log] == [(503, "retry"), (503, "retry")]
    assert len(requests) == 2


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("64:ff9b::a00:5", "NAT64 of 10.0.0.5"),
        ("64:ff9b:1::a9fe:a9fe", "local-use NAT64 of 169.254.169.254"),
        ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
        ("::a00:1", "IPv4-compatible 10.0.0.1"),
        ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1"),
    ],
)
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(api: Api, address: str, why: str) -> None:
    """An IPv6 address that a gateway turns into an internal IPv4 one is as internal as that one."""
    assert not outbound.allowed(address, ()), why
    response = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": f"https://[{address}]/hook"})
    assert (response.status_code, error(response)["target"]) == (400, "WebHookUri")


def test_ipv6_forms_of_public_ipv4_addresses_pass() -> None:
    assert outbound.allowed("64:ff9b::808:808", ()) and outbound.allowed("2002:808:808::1", ())
