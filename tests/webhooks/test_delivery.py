"""Webhook delivery end to end: actions through the API, a real worker, real receivers on 127.0.0.1.

Time is the injected clock: a retry falls due when the test moves the clock, never after a sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import jsonschema
import pytest
from aiohttp.abc import AbstractResolver
from hooks import deliver, make_worker, subscribe
from receiver import Receiver, Reply, receiving
from standardwebhooks.webhooks import Webhook
from support import Api, Clock, World, build_world, error

from connector.settings import Settings
from storage import apikeys, calendar, deliveries
from storage.db import Database
from storage.models import CLI
from storage.secrets import SecretBox
from webhooks import payloads
from webhooks.registry import EVENTS
from webhooks.worker import Worker


def enroll(api: Api, world: World, name: str) -> dict[str, Any]:
    body = {"userLoginName": world.login(name), "courseSessionId": world.session["Id"]}
    return api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Enroll", json=body)  # type: ignore[no-any-return]


def envelope_validator(trigger: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(payloads.body_schema(trigger))  # x-nullable or not, a null is refused


def test_every_trigger_fires_on_its_action_with_a_signed_payload_of_its_schema(api: Api, receiver: Receiver) -> None:
    """All 19 triggers: each action posts its notification, valid against the trigger's schema, signed."""
    secrets = {event: subscribe(api, event, f"{receiver.url}/{event}")["Secret"] for event in EVENTS}
    world = build_world(api, max_attendees="1")
    course, session = world.course["Id"], world.session["Id"]
    cid = enroll(api, world, "cid")  # the only seat
    ann = enroll(api, world, "ann")  # waitlisted
    api.ok("POST", f"/odata/v2/Enrollments({cid['Id']})/Cancel", 204, json={"message": "moved"})  # Ann promoted
    api.ok("POST", f"/odata/v2/Enrollments({ann['Id']})/Start", 204)
    api.ok(
        "POST",
        f"/odata/v2/CourseSessions({session})/Attendance",
        json={"Attendance": [{"UserLoginName": "ann@x.example", "Status": "Attended"}]},
    )
    api.ok("POST", f"/odata/v2/Enrollments({ann['Id']})/Complete", 204)
    api.ok("PATCH", f"/odata/v2/CourseSessions({session})", json={"Title": "Morning (moved)"})
    api.ok("DELETE", f"/odata/v2/CourseSessions({session})", 204)
    api.ok("POST", f"/odata/v2/Courses({course})/Unpublish", 204)
    api.ok("DELETE", f"/odata/v2/Courses({course})", 204)
    api.ok("DELETE", f"/odata/v2/Users({world.uid('dee')})", 204)
    gated = build_world_course(api, world, "LineManagerApproval")
    api.ok(
        "POST", f"/odata/v2/Courses({gated})/Enroll", json={"userLoginName": world.login("bob")}, user=world.uid("bob")
    )
    # A connected calendar whose refresh token stopped working (the calendar worker marks it so).
    calendar.update_settings(api.db, CLI, {"CalDAVEnabled": True})
    calendar.connect(
        api.db,
        CLI,
        world.uid("bob"),
        "CalDAV",
        account="bob@cal.example",
        calendar="https://cal.example/",
        credentials="x",
    )
    connection = calendar.active_connection(api.db, world.uid("bob"))
    assert connection is not None
    calendar.set_status(api.db, connection.id, "NeedsReauthorization", "invalid_grant: AADSTS700082")
    deliver(make_worker(api))

    fired: dict[str, Any] = {}
    for r in receiver.received:
        fired.setdefault(r.path.strip("/"), r)
    assert set(fired) == set(EVENTS)
    for received in receiver.received:
        event = received.path.strip("/")
        body = received.body
        assert envelope_validator(event).is_valid(body), list(envelope_validator(event).iter_errors(body))[:3]
        assert body["Attempt"] == 1 and body["Id"] == received.headers["webhook-id"]
        assert all(n["Action"] == event and n["TimeStamp"].endswith("Z") for n in body["Notifications"])
        Webhook(secrets[event]).verify(received.raw, received.headers)
    # Deliveries about different entities go out concurrently: look notifications up, not by arrival.
    sent: dict[str, list[dict[str, Any]]] = {}
    for received in receiver.received:
        sent.setdefault(received.path.strip("/"), []).extend(received.body["Notifications"])
    assert {n["Users"][0]["EnrollmentId"] for n in sent["CourseEnrollment"]} >= {cid["Id"], ann["Id"]}
    assert [n["EnrollmentStatusText"] for n in sent["CourseCompleted"]] == ["Completed"]
    assert [n["EnrollmentId"] for n in sent["WaitlistPromotion"]] == [ann["Id"]]
    assert [n["Changes"] for n in sent["CourseSessionUpdated"]] == [
        [{"Property": "Title", "Before": "Morning", "After": "Morning (moved)"}]
    ]
    assert [n["IsDeleted"] for n in sent["UserDeleted"]] == [True]
    assert [n["EnrollmentStatusText"] for n in sent["EnrollmentApprovalRequest"]] == ["PendingApproval"]


def build_world_course(api: Api, world: World, flow: str) -> str:
    course = api.ok(
        "POST",
        "/odata/v2/Courses",
        json={
            "CourseCatalogId": world.catalog["Id"],
            "CourseType": "ELearning",
            "Title": "Gated",
            "Description": "Needs the manager's approval",
            "Culture": "en-US",
            "UICulture": "en-US",
            "Url": "gated",
            "EnrollmentFlow": flow,
        },
    )
    api.provision()
    api.ok("POST", f"/odata/v2/Courses({course['Id']})/Publish", 204)
    return str(course["Id"])


def test_failing_receiver_gets_the_same_id_with_rising_attempts(api: Api, receiver: Receiver, clock: Clock) -> None:
    """500, 502, then 200: three POSTs with one Id and Attempt 1, 2, 3, each when the schedule says."""
    subscribe(api, "UserCreated", receiver.url)
    receiver.script = [Reply(500), Reply(502)]
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "new@x.example"})
    worker = make_worker(api)
    deliver(worker)
    assert len(receiver.received) == 1
    clock.advance(seconds=4)  # the first retry waits 5 s
    deliver(worker)
    assert len(receiver.received) == 1
    clock.advance(seconds=2)
    deliver(worker)
    clock.advance(seconds=31)
    deliver(worker)
    bodies = [r.body for r in receiver.received]
    assert [b["Attempt"] for b in bodies] == [1, 2, 3]
    assert len({b["Id"] for b in bodies}) == 1
    log = deliveries.get(api.db, bodies[0]["Id"])
    assert log["Status"] == "delivered"
    assert [(a["StatusCode"], a["Outcome"]) for a in log["AttemptLog"]] == [
        (500, "retry"),
        (502, "retry"),
        (200, "delivered"),
    ]


def test_retry_after_is_honoured(api: Api, receiver: Receiver, clock: Clock) -> None:
    """A 503 asking for 120 s is not retried at 5 s (the schedule) but after 120 s."""
    subscribe(api, "UserCreated", receiver.url)
    receiver.script = [Reply(503, headers={"Retry-After": "120"})]
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "new@x.example"})
    worker = make_worker(api)
    deliver(worker)
    clock.advance(seconds=60)
    deliver(worker)
    assert len(receiver.received) == 1
    clock.advance(seconds=61)
    deliver(worker)
    assert [r.body["Attempt"] for r in receiver.received] == [1, 2]


def test_gone_410_removes_the_subscription(api: Api, receiver: Receiver) -> None:
    """A callback answering 410 is the flow deleted: the subscription goes, nothing more is sent."""
    sub = subscribe(api, "UserCreated", receiver.url)
    receiver.default = Reply(410)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    deliver(make_worker(api))
    assert api.get(f"/webhooks/subscriptions({sub['Id']})").status_code == 404
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "two@x.example"})
    deliver(make_worker(api))
    assert len(receiver.received) == 1


def test_delete_stops_deliveries(api: Api, receiver: Receiver, clock: Clock) -> None:
    """After DELETE nothing more arrives: neither queued notifications nor retries of failed ones."""
    sub = subscribe(api, "UserCreated", receiver.url)
    receiver.default = Reply(500)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    worker = make_worker(api)
    deliver(worker)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "two@x.example"})
    api.ok("DELETE", f"/webhooks/subscriptions({sub['Id']})", 204)
    clock.advance(hours=1)
    deliver(worker)
    assert len(receiver.received) == 1
    assert [d["Status"] for d in deliveries.list_deliveries(api.db)] == ["cancelled"]


def test_trigger_update_deletes_the_old_callback_and_subscribes_the_new(api: Api, clock: Clock) -> None:
    """Power Platform's sequence on saving a changed trigger: DELETE the old, subscribe the new."""
    with receiving() as old, receiving() as new:
        first = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": old.url})
        api.ok("DELETE", first.headers["Location"].replace("http://testserver", ""), 204)
        second = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": new.url})
        assert second.status_code == 201 and second.json()["Id"] != first.json()["Id"]
        again = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": old.url})
        assert again.status_code == 201  # a deleted subscription is not revived: the flow subscribes anew
        api.ok("DELETE", again.headers["Location"].replace("http://testserver", ""), 204)
        api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
        deliver(make_worker(api))
        assert (len(old.received), len(new.received)) == (0, 1)


def test_redirects_are_not_followed(api: Api, clock: Clock) -> None:
    """A 3xx is a failed attempt, retried at the callback itself; its Location is never visited."""
    with receiving() as callback, receiving() as elsewhere:
        callback.script = [Reply(302, headers={"Location": elsewhere.url})]
        subscribe(api, "UserCreated", callback.url)
        api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
        worker = make_worker(api)
        deliver(worker)
        clock.advance(seconds=6)
        deliver(worker)
        assert elsewhere.received == []
        assert [r.body["Attempt"] for r in callback.received] == [1, 2]
    (delivery,) = deliveries.list_deliveries(api.db)
    log = deliveries.get(api.db, delivery["Id"])["AttemptLog"]
    assert [(a["StatusCode"], a["Outcome"]) for a in log] == [(302, "retry"), (200, "delivered")]


def test_attempts_time_out_and_long_answers_are_kept_short(api: Api, receiver: Receiver, clock: Clock) -> None:
    """An attempt past the timeout fails and is retried; the attempt log keeps 2 KiB of an answer."""
    release = threading.Event()
    receiver.script = [Reply(200, hold=release), Reply(500, body=b"x" * 10_000)]
    subscribe(api, "UserCreated", receiver.url)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    worker = make_worker(api, timeout=0.3)  # aiohttp times out in real time; kept short
    try:
        deliver(worker)
    finally:
        release.set()
    clock.advance(seconds=6)
    deliver(worker)
    (delivery,) = deliveries.list_deliveries(api.db)
    first, second = deliveries.get(api.db, delivery["Id"])["AttemptLog"]
    assert (first["StatusCode"], first["Error"], first["Outcome"]) == (None, "timed out after 0.3 s", "retry")
    assert (second["StatusCode"], second["Outcome"], len(second["Response"])) == (500, "retry", 2048)


def test_two_workers_on_one_database_send_each_delivery_once(api: Api, settings: Settings, clock: Clock) -> None:
    """Two running workers, each with its own connection, share 40 deliveries: all sent, none twice."""
    gate = threading.Event()
    loops: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    def work(name: str) -> None:
        db = Database(settings.database_path, clock=clock)
        config = dataclasses.replace(settings.delivery, concurrency=4)
        worker = Worker(db, SecretBox.for_database(db.path), config, owner=f"test:{name}")

        async def go() -> None:
            stop = asyncio.Event()
            loops[name] = (asyncio.get_running_loop(), stop)
            await worker.run(stop)

        asyncio.run(go())
        db.close()

    with receiving() as receiver:
        subscribe(api, "UserCreated", receiver.url)
        for n in range(40):
            api.ok("POST", "/odata/v2/Users", json={"LoginName": f"user{n}@x.example"})
        receiver.script = [Reply(200, hold=gate) for _ in range(8)]
        threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        try:
            # Eight POSTs open at once, more than either worker's four: both are sending.
            receiver.wait_for(8)
        finally:
            gate.set()
        receiver.wait_for(40)
        for loop, stop in loops.values():
            loop.call_soon_threadsafe(stop.set)
        for t in threads:
            t.join(30)
        ids = [r.body["Id"] for r in receiver.received]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert deliveries.counts(api.db)["delivered"] == 40


def test_a_slow_receiver_does_not_hold_up_others(api: Api) -> None:
    """While one callback takes its time, another subscription's notification is delivered."""
    release = threading.Event()
    with receiving() as slow, receiving() as fast:
        slow.default = Reply(200, hold=release)
        subscribe(api, "UserCreated", slow.url)
        subscribe(api, "UserCreated", fast.url)
        api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})

        async def go() -> None:
            async with make_worker(api) as worker:
                worker.tick()
                await asyncio.to_thread(slow.wait_for, 1)
                await asyncio.to_thread(fast.wait_for, 1)
                # The fast callback got its POST while the slow one still holds its request open.
                assert not release.is_set()
                release.set()
                await worker.drain()

        asyncio.run(go())
    assert deliveries.counts(api.db)["delivered"] == 2


def test_batching_sends_notifications_due_together_in_one_post(api: Api, receiver: Receiver, clock: Clock) -> None:
    """With a batch window, three users created within it reach the flow in one POST, in order."""
    subscribe(api, "UserCreated", receiver.url)
    for name in ("one", "two", "three"):
        api.ok("POST", "/odata/v2/Users", json={"LoginName": f"{name}@x.example"})
    worker = make_worker(api, batch_window=2.0)
    deliver(worker)
    assert receiver.received == []  # still inside the window
    clock.advance(seconds=2)
    deliver(worker)
    assert len(receiver.received) == 1
    assert [n["LoginName"] for n in receiver.notifications()] == ["one@x.example", "two@x.example", "three@x.example"]


def test_a_failing_entity_does_not_hold_up_others(api: Api, receiver: Receiver, clock: Clock) -> None:
    """Ann's Started fails and waits for its retry; Bob's Started, another entity, goes out at once."""
    world = build_world(api, max_attendees="5")
    for event in ("CourseStarted", "CourseCompleted"):
        subscribe(api, event, f"{receiver.url}/any")
    ann, bob = enroll(api, world, "ann"), enroll(api, world, "bob")
    receiver.script = [Reply(503)]
    api.ok("POST", f"/odata/v2/Enrollments({ann['Id']})/Start", 204)
    worker = make_worker(api)
    deliver(worker)
    # Both subscriptions are separate flows; order holds within each. Use one trigger for the order check:
    sub = subscribe(api, "CourseUnenrollment", f"{receiver.url}/order")
    assert sub["Event"] == "CourseUnenrollment"
    api.ok("POST", f"/odata/v2/Enrollments({bob['Id']})/Start", 204)
    deliver(worker)
    started = [n["Users"][0]["EnrollmentId"] for r in receiver.received for n in r.body["Notifications"]]
    assert started == [ann["Id"], bob["Id"]]  # Ann's first attempt (503), then Bob's, not blocked by Ann's
    clock.advance(seconds=10)
    deliver(worker)
    assert [r.body["Attempt"] for r in receiver.received] == [1, 1, 2]


def test_per_entity_order_within_one_subscription(api: Api, receiver: Receiver, clock: Clock) -> None:
    """Two updates of one session: while the first waits for its retry, the second is held back."""
    world = build_world(api, max_attendees="5")
    session = world.session["Id"]
    subscribe(api, "CourseSessionUpdated", receiver.url)
    receiver.script = [Reply(503)]
    api.ok("PATCH", f"/odata/v2/CourseSessions({session})", json={"Title": "First"})
    worker = make_worker(api)
    deliver(worker)
    api.ok("PATCH", f"/odata/v2/CourseSessions({session})", json={"Title": "Second"})
    deliver(worker)
    assert len(receiver.received) == 1  # the second update waits behind the first
    clock.advance(seconds=6)
    deliver(worker)
    titles = [
        (r.body["Attempt"], [c["After"] for n in r.body["Notifications"] for c in n["Changes"]])
        for r in receiver.received
    ]
    assert titles == [(1, ["First"]), (2, ["First"]), (1, ["Second"])]


def test_schema_mismatch_goes_to_dead_letters_and_can_be_redelivered(api: Api, receiver: Receiver) -> None:
    """Power Platform's TriggerInputSchemaMismatch 400 is not retried; an admin redelivers it later."""
    subscribe(api, "UserCreated", receiver.url)
    receiver.script = [Reply(400, body=b'{"error":{"code":"TriggerInputSchemaMismatch","message":"..."}}')]
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    worker = make_worker(api)
    deliver(worker)
    dead = api.ok("GET", "/webhooks/deliveries", params={"Status": "dead"})["value"]
    assert len(dead) == 1 and "TriggerInputSchemaMismatch" in dead[0]["DeadReason"]
    again = api.ok("POST", f"/webhooks/deliveries({dead[0]['Id']})/Redeliver")
    assert again["Status"] == "pending"
    deliver(worker)
    assert [r.body["Attempt"] for r in receiver.received] == [1, 2]
    assert len({r.body["Id"] for r in receiver.received}) == 1
    assert api.ok("GET", f"/webhooks/deliveries({dead[0]['Id']})")["Status"] == "delivered"
    assert api.post(f"/webhooks/deliveries({dead[0]['Id']})/Redeliver").status_code == 409


def test_exhausted_deliveries_die_and_a_subscription_failing_for_days_is_disabled(
    api: Api, receiver: Receiver, clock: Clock
) -> None:
    """After the last retry a delivery is dead with its reason; failing past disable_after disables."""
    sub = subscribe(api, "UserCreated", receiver.url)
    receiver.default = Reply(500)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    worker = make_worker(api, disable_after=3600.0)
    for _ in range(4):
        deliver(worker)
        clock.advance(minutes=30)
    assert len(receiver.received) == 4  # first try and the three retries of the schedule
    (dead,) = deliveries.list_deliveries(api.db, status="dead")
    assert dead["DeadReason"].startswith("gave up after 4 attempts; last: HTTP 500")
    assert api.ok("GET", f"/webhooks/subscriptions({sub['Id']})")["Status"] == "disabled"
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "two@x.example"})
    deliver(worker)
    assert len(receiver.received) == 4
    assert subscribe_again(api, receiver.url)["Status"] == "active"


def subscribe_again(api: Api, url: str) -> dict[str, Any]:
    response = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": url})
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://internal.example/hook", "10.1.2.3"),
        ("https://metadata.example/latest", "169.254.169.254"),
        ("https://mixed.example/hook", "192.168.1.10"),
        ("https://10.0.0.7/hook", "10.0.0.7"),
        ("http://flow.example/hook", "must use https"),
        ("https://nxdomain.example/hook", "does not resolve"),
        ("https://user:pw@flow.example/hook", "user name or password"),
        ("ftp://flow.example/hook", "absolute https URL"),
    ],
)
def test_callbacks_to_internal_addresses_are_refused(api: Api, url: str, says: str) -> None:
    response = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": url})
    assert response.status_code == 400
    assert error(response)["target"] == "WebHookUri" and says in error(response)["message"]


def test_the_address_is_checked_again_at_delivery(api: Api, clock: Clock) -> None:
    """A host that resolved to a public address at subscribe time but to 10.x at delivery is not posted to."""
    subscribe(api, "UserCreated", "https://rebind.example/hook")

    class Rebinding(AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
            return [{"hostname": host, "host": "10.9.8.7", "port": port, "family": 2, "proto": 0, "flags": 0}]

        async def close(self) -> None:
            pass

    api.ok("POST", "/odata/v2/Users", json={"LoginName": "one@x.example"})
    settings = dataclasses.replace(api.settings.delivery, allowed_networks=())
    worker = Worker(api.db, SecretBox.for_database(api.db.path), settings, rng=lambda: 0.5, resolver=Rebinding())
    deliver(worker)
    (pending,) = deliveries.list_deliveries(api.db)
    assert pending["Status"] == "pending" and "not public" in pending["LastError"]


def test_subscriptions_are_listed_for_admins_and_only_their_own_for_others(api: Api) -> None:
    """An administrator lists every key's subscriptions; a learner acting through a key sees none of them
    (not even its key's: those are the flows'), and cannot read or delete any."""
    other = Api(api.client, apikeys.create(api.db, "other", "full").secret, api.db, api.settings)
    mine = subscribe(api, "UserCreated", "https://flow.example/mine")
    theirs = subscribe(other, "UserCreated", "https://flow.example/theirs")
    learner = api.ok("POST", "/odata/v2/Users", json={"LoginName": "learner@x.example"})["Id"]
    listed = api.ok("GET", "/webhooks/subscriptions")["value"]
    assert {s["Id"] for s in listed} == {mine["Id"], theirs["Id"]}
    assert all(s["WebHookUri"] == "https://flow.example/…" and "Secret" not in s for s in listed)
    assert api.ok("GET", "/webhooks/subscriptions", user=learner)["value"] == []
    assert api.get(f"/webhooks/subscriptions({mine['Id']})", user=learner).status_code == 403
    assert api.get(f"/webhooks/subscriptions({theirs['Id']})", user=learner).status_code == 403
    assert api.delete(f"/webhooks/subscriptions({theirs['Id']})", user=learner).status_code == 403
    assert api.get("/webhooks/deliveries", user=learner).status_code == 403
