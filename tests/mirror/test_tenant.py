"""Tenant-wide Microsoft 365 against the Entra and Graph fakes: the application's client-credentials token, the
roster that connects people by DirectoryObjectId or e-mail, the cross-mailbox $batch sender (20 per call, 4 in
flight per mailbox, every Retry-After honoured on a virtual clock), and the mirror writing through it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from engine_support import World, make_world
from fakes.graph import APP, GraphFake
from fakes.identity import FakeIdentity
from graph_receiver_support import graph_receiver

from calendars import tenant
from calendars.config import CalendarConfig
from calendars.connections import open_provider
from calendars.model import AuthorizationLost, CalendarItem, Rejected, Throttled, Unavailable, Written
from calendars.providers.graph import GraphProvider
from calendars.tenant import MailboxTransport, TenantBatcher, TenantTokens
from calendars.worker import CalendarWorker
from storage import calendar, calendar_tenant, sessions, users
from storage.errors import Conflict
from storage.models import CLI
from storage.secrets import SecretBox

TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
T = TypeVar("T")


class VirtualClock:
    """Monotonic seconds that move only when the batcher waits: `sleep` advances them at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Env:
    identity: FakeIdentity
    graph: GraphFake
    config: CalendarConfig
    clock: VirtualClock

    def batcher(self, session: aiohttp.ClientSession, **options: Any) -> TenantBatcher:
        tokens = TenantTokens(session, self.config, TENANT)
        return TenantBatcher(
            session, self.config.graph_url, tokens, clock=self.clock, sleep=self.clock.sleep, **options
        )

    def provider(self, session: aiohttp.ClientSession, batcher: TenantBatcher, mailbox: str) -> GraphProvider:
        transport = MailboxTransport(batcher, mailbox)
        return GraphProvider(session, self.config.graph_url, batcher.tokens, mailbox=mailbox, transport=transport)

    def batch_calls(self) -> int:
        return sum(1 for method, path in self.graph.requests if (method, path) == ("POST", "/v1.0/$batch"))


@pytest.fixture
def env() -> Iterator[Env]:
    clock = VirtualClock()
    with FakeIdentity(tenant=TENANT) as identity, GraphFake() as graph:
        graph.token_check = lambda token: APP if identity.app_token(token) else None
        graph.enforce_retry_after = True
        graph.monotonic = clock
        config = identity.config(graph_url=f"{graph.url}/v1.0")
        yield Env(identity, graph, config, clock)


def run(step: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            return await step(session)

    return asyncio.run(main())


def item(user: str, day: str, subject: str = "Forklift safety", start: datetime | None = None) -> CalendarItem:
    start = start or datetime(2030, 3, 5, 8, 0, tzinfo=UTC)
    return CalendarItem(
        user_id=user,
        session_id="session1",
        day_id=day,
        subject=subject,
        start=start,
        end=start + timedelta(hours=8),
        time_zone="Europe/Berlin",
        body_text=subject,
        body_html=f"<p>{subject}</p>",
        location="Hall B",
    )


def mailbox_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


# -- the application's token ------------------------------------------------------------------------------------


def test_the_application_token_is_cached_until_it_nearly_expires_and_refreshed_on_demand(env: Env) -> None:
    """One client-credentials grant serves many requests; a token about to expire, or refused, is fetched again."""
    now = [datetime(2030, 1, 1, tzinfo=UTC)]

    async def step(session: aiohttp.ClientSession) -> list[str]:
        tokens = TenantTokens(session, env.config, TENANT, clock=lambda: now[0])
        first = [await tokens.access_token(), await tokens.access_token()]
        now[0] += timedelta(seconds=env.identity.access_lifetime - 30)  # within the minute's margin
        second = await tokens.access_token()
        third = await tokens.refresh()
        return [*first, second, third]

    got = run(step)
    assert got[0] == got[1] and len({got[1], got[2], got[3]}) == 3
    assert env.identity.grant_count("client_credentials") == 3
    assert all(env.identity.app_token(token) for token in got[2:])


def test_a_refused_application_is_authorization_lost_naming_the_aadsts_code(env: Env) -> None:
    """An expired client secret (AADSTS7000222) is AuthorizationLost: an administrator must act; no secret is
    shown."""
    env.identity.expire_client_secret()

    async def step(session: aiohttp.ClientSession) -> str:
        with pytest.raises(AuthorizationLost) as caught:
            await TenantTokens(session, env.config, TENANT).access_token()
        return str(caught.value)

    message = run(step)
    assert "AADSTS7000222" in message and TENANT in message
    assert env.config.microsoft_client_secret not in message


def test_tenant_ready_names_the_variable_to_fix() -> None:
    """Enabling needs the client and one named tenant; the 400 names the variable."""
    client = {"microsoft_client_id": "id", "microsoft_client_secret": "not-a-real-secret"}
    good = CalendarConfig(**client, microsoft_tenant=TENANT)
    assert tenant.tenant_ready(good) is None
    assert tenant.tenant_ready(CalendarConfig(microsoft_client_id="id", microsoft_tenant=TENANT)) == (
        "COURSEWIRE_MICROSOFT_CLIENT_SECRET"
    )
    for bad in ("common", "Organizations", "consumers", "not a tenant", ""):
        config = CalendarConfig(**client, microsoft_tenant=bad)
        assert tenant.tenant_ready(config) == "COURSEWIRE_MICROSOFT_TENANT", bad
    domain = CalendarConfig(**client, microsoft_tenant="contoso.com")
    assert tenant.tenant_ready(domain) is None


def test_prove_fails_without_admin_consent_for_user_read_all(env: Env) -> None:
    """The check before enabling reads one user: without User.Read.All consented it is refused, with it passes."""
    run(lambda session: tenant.prove(env.config, session, TENANT))
    env.graph.app_permissions = {"Calendars.ReadWrite"}

    async def step(session: aiohttp.ClientSession) -> None:
        with pytest.raises(Rejected, match="User.Read.All"):
            await tenant.prove(env.config, session, TENANT)

    run(step)


# -- the cross-mailbox sender -----------------------------------------------------------------------------------


def write(env: Env, plan: dict[str, list[CalendarItem]], **options: Any) -> tuple[dict[str, list[Any]], TenantBatcher]:
    """put_many of each mailbox's items at once, as the worker's concurrent pairs do; results by mailbox."""

    async def step(session: aiohttp.ClientSession) -> tuple[dict[str, list[Any]], TenantBatcher]:
        batcher = env.batcher(session, **options)

        async def one(mailbox: str, items: list[CalendarItem]) -> tuple[str, list[Any]]:
            provider = env.provider(session, batcher, mailbox)
            return mailbox, await provider.put_many([(i, None) for i in items])

        done = await asyncio.gather(*(one(m, items) for m, items in plan.items()))
        return dict(done), batcher

    return run(step)


def test_writes_for_many_mailboxes_share_batches_of_twenty(env: Env) -> None:
    """100 events for 60 mailboxes go in 5 $batch calls of /users/{id}/events requests, each stored once."""
    plan: dict[str, list[CalendarItem]] = {}
    for n in range(60):
        env.graph.add_user(mailbox_id(n), f"person{n}@contoso.example")
        plan[mailbox_id(n)] = [item(f"u{n}", f"day{d}") for d in range(2 if n < 40 else 1)]
    results, batcher = write(env, plan)
    assert all(isinstance(r, Written) for rs in results.values() for r in rs)
    assert env.batch_calls() == math.ceil(100 / 20) == batcher.stats.batches
    assert all(size <= 20 for size in batcher.stats.batch_sizes)
    assert {path.split("/")[1] for _, path in env.graph.batch_requests} == {"users"}
    for n in range(60):
        assert len(env.graph.stored(mailbox_id(n))) == (2 if n < 40 else 1)
    assert env.graph.counters["concurrency"] == 0


def test_one_mailbox_never_has_more_than_four_requests_in_flight_across_batches(env: Env) -> None:
    """While a $batch holds 4 requests of a mailbox in Outlook (the fake holds them), more writes for that mailbox
    wait, and other mailboxes' writes go in a batch of their own; so Outlook's limit of 4 is never hit."""
    env.graph.add_user("busy", "busy@contoso.example")
    for n in range(10):
        env.graph.add_user(mailbox_id(n), f"person{n}@contoso.example")

    async def step(session: aiohttp.ClientSession) -> TenantBatcher:
        batcher = env.batcher(session)
        busy = env.provider(session, batcher, "busy")
        env.graph.pause()  # every request waits in its mailbox slot until resume()
        first = asyncio.ensure_future(busy.put_many([(item("busy", f"day{d}"), None) for d in range(4)]))
        await until(lambda: env.graph.active("busy") == 4)
        second = asyncio.ensure_future(busy.put_many([(item("busy", f"day{d}"), None) for d in range(4, 8)]))
        others = [
            asyncio.ensure_future(env.provider(session, batcher, mailbox_id(n)).put(item(f"u{n}", "day0"), None))
            for n in range(10)
        ]
        await until(lambda: env.graph.active(mailbox_id(0)) == 1)  # the others' batch went meanwhile
        await until(lambda: env.graph.counters["calls"] > 2, timeout=0.3)  # a wrong sender would send busy's too
        assert env.graph.active("busy") == 4 and env.graph.counters["concurrency"] == 0
        env.graph.resume()
        results = [*(await first), *(await second), *(await asyncio.gather(*others))]
        assert all(isinstance(r, Written) for r in results), results
        return batcher

    batcher = run(step)
    assert env.graph.counters["concurrency"] == 0 and env.graph.peak("busy") == 4
    assert len(env.graph.stored("busy")) == 8
    assert batcher.stats.batch_sizes == [4, 10, 4]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (polling the fake, which runs in its own thread) until `condition` holds or `timeout` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.005)


def test_an_inner_429_waits_its_mailboxs_retry_after_while_other_mailboxes_go_on(env: Env) -> None:
    """A batcher that may wait (mailbox_wait, as the roster's look-ups do): a mailbox answered 429 inside a $batch
    is sent nothing until its Retry-After has passed (the fake counts early requests); the others are written at
    once; nothing is written twice."""
    for n in range(5):
        env.graph.add_user(mailbox_id(n), f"person{n}@contoso.example")
    env.graph.throttle_mailbox(mailbox_id(0), 1, retry_after=30)
    env.graph.throttle_mailbox(mailbox_id(1), 2, retry_after=10)
    finished: dict[str, float] = {}
    start = env.clock.now

    async def step(session: aiohttp.ClientSession) -> None:
        batcher = env.batcher(session, mailbox_wait=120)

        async def one(n: int) -> None:
            provider = env.provider(session, batcher, mailbox_id(n))
            results = await provider.put_many([(item(f"u{n}", f"day{d}"), None) for d in range(3)])
            assert all(isinstance(r, Written) for r in results), results
            finished[mailbox_id(n)] = env.clock.now - start

        await asyncio.gather(*(one(n) for n in range(5)))
        assert batcher.stats.inner_throttled >= 3  # the mailbox's other requests in that $batch too

    run(step)
    assert env.graph.counters["early"] == 0 and env.graph.counters["mailbox_throttled"] == 3
    assert finished[mailbox_id(0)] >= 30 and finished[mailbox_id(1)] >= 20
    assert all(finished[mailbox_id(n)] == 0 for n in (2, 3, 4))
    for n in range(5):
        assert len(env.graph.stored(mailbox_id(n))) == 3


def test_by_default_a_throttled_mailbox_write_goes_back_to_the_worker_at_once(env: Env) -> None:
    """The worker's batcher does not wait out a mailbox's Retry-After (that would hold its whole round of pairs):
    the write comes back Throttled with the Retry-After, for the dirty queue to retry then; the other mailboxes
    are written at once and nothing is sent to the throttled one early."""
    for n in range(3):
        env.graph.add_user(mailbox_id(n), f"person{n}@contoso.example")
    env.graph.throttle_mailbox(mailbox_id(0), 1, retry_after=30)
    start = env.clock.now
    outcome: dict[str, list[object]] = {}

    async def step(session: aiohttp.ClientSession) -> None:
        batcher = env.batcher(session)

        async def one(n: int) -> None:
            provider = env.provider(session, batcher, mailbox_id(n))
            outcome[mailbox_id(n)] = list(await provider.put_many([(item(f"u{n}", "day0"), None)]))

        await asyncio.gather(*(one(n) for n in range(3)))

    run(step)
    (throttled,) = outcome[mailbox_id(0)]
    assert isinstance(throttled, Throttled) and throttled.retry_after is not None and throttled.retry_after >= 29
    assert env.clock.now - start < 5  # nobody waited the 30 s
    assert all(isinstance(outcome[mailbox_id(n)][0], Written) for n in (1, 2))
    assert env.graph.counters["early"] == 0 and env.graph.stored(mailbox_id(0)) == []


def test_an_outer_429_pauses_every_mailbox_for_its_retry_after(env: Env) -> None:
    """A $batch call answered 429 as a whole is sent again only after its Retry-After, and then goes through."""
    for n in range(3):
        env.graph.add_user(mailbox_id(n), f"person{n}@contoso.example")
    env.graph.fail_next("throttle", retry_after=20, method="POST")
    start = env.clock.now
    results, batcher = write(env, {mailbox_id(n): [item(f"u{n}", "day0")] for n in range(3)})
    assert all(isinstance(r, Written) for rs in results.values() for r in rs)
    assert batcher.stats.outer_throttled == 1 and env.batch_calls() == 2
    assert env.clock.now - start >= 20 and env.graph.counters["early"] == 0


def test_a_lost_batch_answer_is_retried_without_duplicates(env: Env) -> None:
    """When a $batch ran but its answer was lost, the retried creates carry the same transactionIds, so each
    mailbox still holds one event per item."""
    for n in range(4):
        env.graph.add_user(mailbox_id(n), f"person{n}@contoso.example")
    plan = {mailbox_id(n): [item(f"u{n}", "day0"), item(f"u{n}", "day1")] for n in range(4)}
    env.graph.fail_next("lose", method="POST")
    first, _ = write(env, plan)
    assert all(isinstance(r, Unavailable) for rs in first.values() for r in rs)
    again, _ = write(env, plan)
    assert all(isinstance(r, Written) for rs in again.values() for r in rs)
    assert env.graph.counters["deduplicated"] == 8
    for n in range(4):
        assert len(env.graph.stored(mailbox_id(n))) == 2


def test_a_mailbox_throttled_for_longer_than_the_batcher_waits_is_handed_back_as_throttled(env: Env) -> None:
    """A Retry-After beyond max_wait is not slept through: the write fails Throttled so the worker comes back."""
    env.graph.add_user(mailbox_id(0), "person0@contoso.example")
    env.graph.throttle_mailbox(mailbox_id(0), 1, retry_after=3600)
    results, _ = write(env, {mailbox_id(0): [item("u0", "day0")]}, max_wait=60)
    (only,) = results[mailbox_id(0)]
    assert type(only).__name__ == "Throttled" and only.retry_after is not None and only.retry_after >= 3500
    assert env.graph.counters["early"] == 0


def test_tenant_mode_reads_changes_and_subscribes_to_users_events(env: Env) -> None:
    """The provider's read, delta and subscription methods work under /users/{id}: the subscription's resource is
    users/{id}/events."""
    env.graph.add_user(mailbox_id(0), "person0@contoso.example")
    with graph_receiver() as receiver:

        async def step(session: aiohttp.ClientSession) -> None:
            batcher = env.batcher(session)
            provider = env.provider(session, batcher, mailbox_id(0))
            soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)  # inside the delta window
            written = await provider.put(item("u0", "day0", start=soon), None)
            await provider.check_calendar()
            got = await provider.get(written)
            assert got is not None and got.key == "u0.day0"
            feed = await provider.changes(None)
            assert [c.provider_id for c in feed.changes] == [written.provider_id]
            watch = await provider.watch(receiver.url, "s3cret", datetime.now(UTC) + timedelta(days=2))
            subs = env.graph.subscriptions_of(mailbox_id(0))
            assert [s.resource for s in subs] == [f"users/{mailbox_id(0)}/events"]
            await provider.unwatch(watch)
            await provider.delete(written)

        run(step)
    assert env.graph.stored(mailbox_id(0)) == []


# -- the roster -------------------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path, learners=("lena", "omar", "pia", "quinn", "rosa"))


def roster(env: Env, world: World, box: SecretBox) -> tenant.RosterResult:
    async def step(session: aiohttp.ClientSession) -> tenant.RosterResult:
        batcher = env.batcher(session)
        return await tenant.roster_round(world.db, box, env.config, session, world.now[0], batcher=batcher)

    return run(step)


def tenant_connection(world: World, person: str) -> calendar.Connection | None:
    found = calendar.active_connection(world.db, world.people[person])
    return found if found is not None and calendar_tenant.tenant_mailbox(world.db, found.id) else None


def test_the_roster_connects_people_by_directory_object_id_or_e_mail_and_keeps_opt_outs(env: Env, world: World) -> None:
    """Lena by DirectoryObjectId, omar by e-mail (userPrincipalName), pia by e-mail when her DirectoryObjectId is
    not in the tenant; quinn has no mailbox; rosa has her own calendar. Each connection is Microsoft365 with the
    mailbox's address and recorded as CalendarConnected; an opted-out connection is never made again."""
    box = SecretBox.for_database(":memory:")
    lena_id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    users.update(world.db, CLI, world.people["lena"], {"DirectoryObjectId": lena_id})
    users.update(world.db, CLI, world.people["pia"], {"DirectoryObjectId": "9f2504e0-4f89-41d3-9a0c-0305e82c3309"})
    env.graph.add_user(lena_id, "lena.l@contoso.example")
    env.graph.add_user(mailbox_id(2), "omar.mail@contoso.example", upn="omar@example.org")
    env.graph.add_user(mailbox_id(3), "pia@example.org")
    world.settings(CalDAVEnabled=True)
    world.connect("rosa")  # her own CalDAV calendar
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)

    result = roster(env, world, box)
    assert (result.connected, result.missed, result.error) == (3, 2, None)  # quinn and ivan have no mailbox
    lena, omar, pia = (tenant_connection(world, p) for p in ("lena", "omar", "pia"))
    assert lena is not None and lena.account == "lena.l@contoso.example" and lena.provider == "Microsoft365"
    assert omar is not None and calendar_tenant.tenant_mailbox(world.db, omar.id) == mailbox_id(2)
    assert pia is not None and calendar_tenant.tenant_mailbox(world.db, pia.id) == mailbox_id(3)
    assert tenant_connection(world, "quinn") is None and tenant_connection(world, "rosa") is None
    with world.db.read() as conn:
        connected = {r[0] for r in conn.execute("SELECT user_id FROM events WHERE type = 'CalendarConnected'")}
    assert {world.people[p] for p in ("lena", "omar", "pia")} <= connected

    calendar.set_sync_enabled(world.db, CLI, world.people["omar"], False)  # omar opts out
    looked_up = len(env.graph.batch_requests)
    again = roster(env, world, box)
    assert (again.connected, again.looked_up) == (0, 0)  # misses wait a day; opted-out stays as it is
    assert len(env.graph.batch_requests) == looked_up
    omar_now = calendar.active_connection(world.db, world.people["omar"])
    assert omar_now is not None and omar_now.id == omar.id and not omar_now.sync_enabled
    assert calendar_tenant.tenant_state(world.db) is not None


def test_the_roster_finds_people_whose_sign_in_name_is_not_their_address_by_mail_unless_ambiguous(
    env: Env, world: World
) -> None:
    """Many organizations sign in as `x@contoso.onmicrosoft.com` and mail as `x@example.org`: omar is found by
    `mail` once `GET /users/{address}` answers 404; quinn's address holds a quote, sent doubled in the OData
    literal; pia's address is the mail of two tenant users, so she is connected to neither."""
    box = SecretBox.for_database(":memory:")
    users.update(world.db, CLI, world.people["quinn"], {"Email": "quinn.o'hara@example.org"})
    env.graph.add_user(mailbox_id(2), "omar@example.org", upn="omar.o@contoso.onmicrosoft.com")
    env.graph.add_user(mailbox_id(4), "quinn.o'hara@example.org", upn="quinn@contoso.onmicrosoft.com")
    env.graph.add_user(mailbox_id(3), "pia@example.org", upn="pia.one@contoso.onmicrosoft.com")
    env.graph.add_user(mailbox_id(5), "PIA@example.org", upn="pia.two@contoso.onmicrosoft.com")
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)

    result = roster(env, world, box)
    assert result.error is None
    omar, quinn = tenant_connection(world, "omar"), tenant_connection(world, "quinn")
    assert omar is not None and calendar_tenant.tenant_mailbox(world.db, omar.id) == mailbox_id(2)
    assert omar.account == "omar@example.org"
    assert quinn is not None and calendar_tenant.tenant_mailbox(world.db, quinn.id) == mailbox_id(4)
    assert tenant_connection(world, "pia") is None
    assert result.connected == 2


def test_a_guest_whose_mail_is_a_learners_address_is_no_mailbox_for_them(env: Env, world: World) -> None:
    """Lena's Email is her own outside address, which the tenant knows as the `mail` of a guest (B2B) user,
    `lena.guest_gmail.com#EXT#@contoso.onmicrosoft.com`: a guest has no mailbox in the tenant, so lena gets no
    tenant connection and is remembered as a miss; omar, a member found the same way, is connected."""
    box = SecretBox.for_database(":memory:")
    users.update(world.db, CLI, world.people["lena"], {"Email": "lena.guest@gmail.com"})
    env.graph.add_user(mailbox_id(1), "lena.guest@gmail.com", upn="lena.guest_gmail.com#EXT#@contoso.onmicrosoft.com")
    env.graph.add_user(mailbox_id(2), "omar@example.org", upn="omar.o@contoso.onmicrosoft.com")
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)

    result = roster(env, world, box)
    assert result.error is None
    assert tenant_connection(world, "lena") is None
    assert calendar.active_connection(world.db, world.people["lena"]) is None
    omar = tenant_connection(world, "omar")
    assert omar is not None and calendar_tenant.tenant_mailbox(world.db, omar.id) == mailbox_id(2)
    assert result.connected == 1
    assert ("GET", "/users") in env.graph.batch_requests  # lena was looked for by mail, and refused as a guest
    with world.db.read() as conn:
        missed = {r[0] for r in conn.execute("SELECT user_id FROM calendar_tenant_misses")}
    assert world.people["lena"] in missed


def test_a_mail_lookup_answered_400_misses_that_person_and_the_round_goes_on(env: Env, world: World) -> None:
    """Graph answers 400 to the `$filter=mail eq` for quinn's address: that matches nobody, as a 400 on `GET
    /users/{key}` does, instead of ending the round. The others are connected in the same round, quinn is
    remembered as a miss (not looked up again the next round) and no error is recorded."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(1), "lena@example.org")
    env.graph.add_user(mailbox_id(2), "omar@example.org", upn="omar.o@contoso.onmicrosoft.com")
    env.graph.add_user(mailbox_id(3), "pia@example.org", upn="pia.p@contoso.onmicrosoft.com")
    env.graph.unfilterable.add("QUINN@example.org")
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)

    result = roster(env, world, box)
    assert result.error is None
    assert result.connected == 3
    for person, n in (("lena", 1), ("omar", 2), ("pia", 3)):
        found = tenant_connection(world, person)
        assert found is not None and calendar_tenant.tenant_mailbox(world.db, found.id) == mailbox_id(n)
    assert tenant_connection(world, "quinn") is None
    with world.db.read() as conn:
        missed = {r[0] for r in conn.execute("SELECT user_id FROM calendar_tenant_misses")}
    assert world.people["quinn"] in missed
    state = calendar_tenant.tenant_state(world.db)
    assert state is not None and state.last_error is None and state.connections == 3
    assert roster(env, world, box).looked_up == 0  # the miss waits, like any other


def test_a_person_who_no_longer_matches_is_dropped_and_quinn_is_found_once_added(env: Env, world: World) -> None:
    """After a day the roster checks again: omar's address changed (no mailbox any more) so his connection is
    being removed; quinn, added to the tenant meanwhile, is connected."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(2), "omar@example.org")
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)
    assert roster(env, world, box).connected == 1
    omar = tenant_connection(world, "omar")
    assert omar is not None

    users.update(world.db, CLI, world.people["omar"], {"Email": "omar@elsewhere.example"})
    env.graph.add_user(mailbox_id(4), "quinn@example.org")
    world.advance(days=1, seconds=1)
    result = roster(env, world, box)
    assert (result.dropped, result.connected) == (1, 1)
    dropped = calendar.connection_by_id(world.db, omar.id)
    assert dropped is not None and dropped.state == "removing"
    assert tenant_connection(world, "quinn") is not None


def test_the_roster_does_nothing_until_the_tenant_is_enabled_and_records_a_refused_application(
    env: Env, world: World
) -> None:
    """No tenant row: no request. A refused application ends the round with the error on the tenant row."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(2), "omar@example.org")
    assert roster(env, world, box).looked_up == 0 and env.graph.requests == []
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)
    env.identity.expire_client_secret()
    result = roster(env, world, box)
    state = calendar_tenant.tenant_state(world.db)
    assert result.error is not None and "AADSTS7000222" in result.error
    assert state is not None and state.last_error == result.error and state.connections == 0


def test_enable_tenant_refuses_shared_authorities_and_non_administrators(world: World) -> None:
    """TenantId must name one tenant; only administrators connect it."""
    from storage.errors import Forbidden, Invalid
    from storage.models import Actor

    with pytest.raises(Invalid):
        calendar_tenant.enable_tenant(world.db, CLI, "common")
    learner = Actor(kind="user", user_id=world.people["lena"])
    with pytest.raises(Forbidden):
        calendar_tenant.enable_tenant(world.db, learner, TENANT)
    state = calendar_tenant.enable_tenant(world.db, CLI, TENANT)
    assert state.enabled and state.tenant_id == TENANT


# -- the mirror, end to end -------------------------------------------------------------------------------------


def test_the_worker_writes_a_rostered_persons_sessions_into_their_mailbox_and_removes_them_on_disable(
    env: Env, world: World
) -> None:
    """Nobody clicks anything: the roster connects lena, the worker's open_provider writes her session under
    /users/{id}/events with the application token; disabling the tenant removes the event."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(1), "lena@example.org")
    world.settings(Microsoft365Enabled=True)
    session_id = world.session("Forklift safety")
    world.enroll("lena", session_id)
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)
    assert roster(env, world, box).connected == 1

    async def rounds() -> None:
        async with CalendarWorker(world.db, box, env.config) as worker:
            for _ in range(4):
                await worker.run_once(world.now[0])

    asyncio.run(rounds())
    stored = env.graph.stored(mailbox_id(1))
    assert len(stored) == 1 and "Forklift safety" in stored[0].fields["subject"]
    (key,) = stored[0].properties.values()  # our tag: <user id>.<session day id>
    assert key.startswith(world.people["lena"] + ".")
    assert any(path.startswith(f"/users/{mailbox_id(1)}/") for _, path in env.graph.batch_requests)

    calendar_tenant.disable_tenant(world.db, CLI, keep_events=False)
    asyncio.run(rounds())
    assert env.graph.stored(mailbox_id(1)) == []
    assert calendar.active_connection(world.db, world.people["lena"]) is None


def test_an_expired_application_secret_holds_tenant_writes_without_sending_anybody_to_reauthorize(
    env: Env, world: World
) -> None:
    """The application's secret expires: that is the administrator's to fix, once. No tenant-made connection
    becomes NeedsReauthorization (which would tell every learner to authorize what they cannot, and switch them
    all to e-mail invitations duplicating the events already in their mailboxes); the session's edit waits and
    lands once the secret works again."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(1), "lena@example.org")
    world.settings(Microsoft365Enabled=True, EmailFallbackEnabled=True)
    session_id = world.session("Forklift safety")
    world.enroll("lena", session_id)
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)
    assert roster(env, world, box).connected == 1

    mails: list[str] = []

    async def send_mail(method: str, item: CalendarItem, *_: Any) -> None:
        mails.append(f"{method} {item.subject}")

    async def rounds() -> None:
        async with CalendarWorker(world.db, box, env.config, send_mail=send_mail) as worker:
            for _ in range(4):
                await worker.run_once(world.now[0])

    asyncio.run(rounds())
    (before,) = env.graph.stored(mailbox_id(1))
    env.identity.expire_client_secret()
    sessions.update(world.db, CLI, session_id, {"Title": "Night shift"})
    world.advance(seconds=1)
    asyncio.run(rounds())
    lena = calendar.active_connection(world.db, world.people["lena"])
    assert lena is not None and lena.status == "Connected"
    with world.db.read() as conn:
        kinds = {r[0] for r in conn.execute("SELECT type FROM events")}
    assert "CalendarConnectionNeedsReauthorization" not in kinds
    assert mails == []  # no e-mail invitations meanwhile
    assert calendar.pending(world.db) == 1  # the edit waits for the application
    assert "Night shift" not in env.graph.stored(mailbox_id(1))[0].fields["subject"]

    env.identity.secret_expired = False  # the administrator put a new secret in place
    world.advance(seconds=600)
    asyncio.run(rounds())
    (after,) = env.graph.stored(mailbox_id(1))
    assert after.immutable_id == before.immutable_id and "Night shift" in after.fields["subject"]


def test_open_provider_builds_the_tenant_provider_only_for_tenant_made_connections(env: Env, world: World) -> None:
    """A connection the roster made writes through the tenant's batcher; a person's own OAuth one does not."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(1), "lena@example.org")
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)
    roster(env, world, box)
    lena = calendar.active_connection(world.db, world.people["lena"])
    assert lena is not None

    async def step(session: aiohttp.ClientSession) -> tuple[object, object]:
        mine = open_provider(lena, session, world.db, box, env.config)
        own = calendar.Connection(**{**lena.__dict__, "credentials": box.seal('{"refresh_token": "r"}')})
        other = open_provider(own, session, world.db, box, env.config)
        return mine._transport, other._transport  # type: ignore[attr-defined]

    mine, other = run(step)
    assert isinstance(mine, MailboxTransport) and mine.mailbox == mailbox_id(1)
    assert not isinstance(other, MailboxTransport)


def test_the_worker_runs_the_roster_itself_every_roster_interval(env: Env, world: World) -> None:
    """With the tenant enabled, the worker's own rounds connect people (no explicit roster call): lena's
    session reaches her mailbox; quinn, not in the tenant at first, is looked up again only after
    tenant.RELOOK (a day), on the first roster round after that."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(1), "lena@example.org")
    world.settings(Microsoft365Enabled=True)
    session_id = world.session("Forklift safety")
    for person in ("lena", "quinn"):
        world.enroll(person, session_id)
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)

    async def rounds() -> None:
        async with CalendarWorker(world.db, box, env.config) as worker:
            for _ in range(4):
                await worker.run_once(world.now[0])
            env.graph.add_user(mailbox_id(2), "quinn@example.org")
            await worker.run_once(world.now[0])
            world.now[0] += timedelta(seconds=env.config.roster_seconds)
            await worker.run_once(world.now[0])
            assert tenant_connection(world, "quinn") is None  # a person without a mailbox waits a day
            world.now[0] += tenant.RELOOK
            for _ in range(4):
                await worker.run_once(world.now[0])

    asyncio.run(rounds())
    assert len(env.graph.stored(mailbox_id(1))) == 1
    assert len(env.graph.stored(mailbox_id(2))) == 1


def test_a_tenant_made_connection_is_opted_out_of_not_disconnected(env: Env, world: World) -> None:
    """DELETE on a calendar the tenant connected is a 409 naming what to do (SyncEnabled false), since the
    roster would connect the person again at once; turning sync off keeps the connection, opted out."""
    box = SecretBox.for_database(":memory:")
    env.graph.add_user(mailbox_id(1), "lena@example.org")
    calendar_tenant.enable_tenant(world.db, CLI, TENANT)
    assert roster(env, world, box).connected == 1
    with pytest.raises(Conflict, match="SyncEnabled false"):
        calendar.disconnect(world.db, CLI, world.people["lena"], keep_events=False)
    calendar.set_sync_enabled(world.db, CLI, world.people["lena"], False)
    assert roster(env, world, box).connected == 0
    found = tenant_connection(world, "lena")
    assert found is not None and not found.sync_enabled
