"""The `coursewire` command line: serve, the delivery worker, API keys, demo data, contract checks,
connector export, events and webhook deliveries."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from connector.settings import Settings, SettingsError
from storage import apikeys, deliveries, events, files, subscriptions
from storage.db import Database
from storage.errors import Conflict, StorageError
from storage.models import CLI
from storage.secrets import SecretBox
from webhooks.worker import Worker

F = TypeVar("F", bound=Callable[..., Any])


def _settings(ctx: click.Context) -> Settings:
    try:
        settings: Settings = ctx.obj["settings"]()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def _database(settings: Settings) -> Database:
    db = Database(settings.database_path)
    db.migrate()
    return db


def user_errors(fn: F) -> F:
    """Turn domain errors into one clear line instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StorageError, SettingsError, ValueError) as exc:
            raise click.ClickException(getattr(exc, "message", None) or str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="COURSEWIRE_DATA_DIR",
    help="Where the database and files live [env COURSEWIRE_DATA_DIR; default ./data].",
)
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """coursewire: a self-hosted backend for the LMS365 Power Platform connector."""
    env = dict(os.environ)
    if data_dir is not None:
        env["COURSEWIRE_DATA_DIR"] = str(data_dir)
    ctx.obj = {"settings": lambda: Settings.from_env(env)}


def _sealed(db: Database) -> SecretBox:
    """The secret box, after encrypting the callbacks a database from before migration 0004 kept in clear."""
    box = SecretBox.for_database(db.path)
    sealed = subscriptions.seal_legacy(db, box)
    if sealed:
        click.echo(
            f"Encrypted {sealed} webhook callback(s) stored in clear; the database file was rewritten without them."
        )
    return box


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8365, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", type=int, help="Server processes [env COURSEWIRE_WORKERS; default: one per core].")
@click.option("--demo", is_flag=True, help="Load the demo data first (if the database has none).")
@click.option(
    "--worker/--no-worker",
    "in_process_worker",
    default=True,
    show_default=True,
    help="Deliver webhooks from this process (turn off when `coursewire worker` runs elsewhere).",
)
@click.pass_context
@user_errors
def serve(ctx: click.Context, host: str, port: int, workers: int | None, demo: bool, in_process_worker: bool) -> None:
    """Migrate the database and serve the API, with provisioning and webhook delivery in this process."""
    import uvicorn

    from connector.background import DeliveryThread, Provisioner

    settings = _settings(ctx)
    db = _database(settings)
    # Once, before any server process starts: in a running process these are uploads in flight.
    stale = files.remove_stale_uploads(settings.files_dir)
    if stale:
        click.echo(f"Removed {stale} temporary file(s) of uploads interrupted by a crash.")
    if demo:
        _load_demo(db, settings, f"http://{host}:{port}")
    count = workers or settings.workers or os.cpu_count() or 1
    os.environ.update(settings.to_env())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    box = _sealed(db)  # before any other thread opens the database: sealing may rewrite the file
    provisioner = Provisioner(db, settings.files_dir, settings.provisioning_interval)
    thread, stop = provisioner.start()
    delivery = DeliveryThread(db, box, settings.delivery).start() if in_process_worker else None
    click.echo(f"coursewire: serving http://{host}:{port} with {count} worker(s); data in {settings.data_dir}")
    try:
        uvicorn.run(
            "connector.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=count,
            loop="uvloop",
            # uvicorn's httptools protocol plus limits on request heads: COURSEWIRE_MAX_HEADER_BYTES (431),
            # COURSEWIRE_HEADER_TIMEOUT (408), and an OData 503 past COURSEWIRE_MAX_CONNECTIONS.
            http="connector.server:HttpProtocol",
            # No route is a WebSocket: an Upgrade request stays an HTTP request under the same limits.
            ws="none",
            # uvicorn answers 503 once the connections it holds, counting the one asking, reach this number.
            limit_concurrency=settings.max_connections + 1,
            # Idle keep-alive connections are closed 5 s after their last response (uvicorn's default, kept).
            timeout_keep_alive=5,
            # Connections the kernel has accepted and the workers have not yet (uvicorn's default; the kernel
            # caps it at net.core.somaxconn). They cost no descriptor in a worker, only kernel memory.
            backlog=2048,
            log_level="warning",
            access_log=False,
            # coursewire decides itself which peers' X-Forwarded-* headers count (COURSEWIRE_TRUSTED_PROXIES);
            # uvicorn's own handling would replace the peer address with a client-supplied one first.
            proxy_headers=False,
        )
    finally:
        stop.set()
        if delivery is not None:
            delivery.stop()
        thread.join(timeout=5)


@main.command()
@click.option(
    "--once", is_flag=True, help="Deliver what is due now (batch windows end at once), wait for it, and exit."
)
@click.pass_context
@user_errors
def worker(ctx: click.Context, once: bool) -> None:
    """Run the webhook delivery worker alone (several may share one database)."""
    settings = _settings(ctx)
    db = _database(settings)
    box = _sealed(db)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        delivery = Worker(db, box, settings.delivery)
        if once:
            async with delivery:
                await delivery.run_until_idle(flush=True)
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"coursewire worker {delivery.owner}: delivering webhooks from {db.path}")
        await delivery.run(stop)

    asyncio.run(run())


@main.group()
def apikey() -> None:
    """Create, list and revoke API keys (Basic auth: username `api`, password the key)."""


@apikey.command("create")
@click.option("--name", required=True, help="A name to recognise the key by.")
@click.option(
    "--access",
    type=click.Choice(["full", "read"]),
    default="full",
    show_default=True,
    help="Full Control may write; Read Only may only read.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {id, username, key, access} as JSON.")
@click.pass_context
@user_errors
def apikey_create(ctx: click.Context, name: str, access: str, as_json: bool) -> None:
    """Create a key and print it once: it is stored only as a hash."""
    created = apikeys.create(_database(_settings(ctx)), name, access)
    if as_json:
        click.echo(json.dumps({"id": created.key.id, "username": "api", "key": created.secret, "access": access}))
        return
    click.echo(f"Created {'Full Control' if access == 'full' else 'Read Only'} key {created.key.id} ({name}).")
    click.echo("Username: api")
    click.echo(f"Password: {created.secret}")
    click.echo("Store it now: coursewire keeps only a hash and cannot show it again.")


@apikey.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_context
@user_errors
def apikey_list(ctx: click.Context, as_json: bool) -> None:
    """List keys (never their secrets)."""
    keys = apikeys.list_keys(_database(_settings(ctx)))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "name": k.name,
                        "access": k.access,
                        "prefix": k.key_prefix,
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                    }
                    for k in keys
                ]
            )
        )
        return
    if not keys:
        click.echo("No API keys. Create one with: coursewire apikey create --name NAME")
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        click.echo(f"{k.id}  {k.access:4}  {k.key_prefix}…  {k.name}  ({state}, created {k.created_at})")


@apikey.command("revoke")
@click.argument("key_id")
@click.pass_context
@user_errors
def apikey_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by id; calls with it are refused from now on."""
    key = apikeys.revoke(_database(_settings(ctx)), key_id)
    click.echo(f"Revoked key {key.id} ({key.name}).")


def _load_demo(db: Database, settings: Settings, base_url: str) -> None:
    from connector import demo as demo_data

    created = demo_data.load(db, settings.files_dir, settings.public_url or base_url)
    if created is None:
        click.echo("Demo data is already loaded. Create a key with: coursewire apikey create --name NAME")
    else:
        click.echo("Loaded demo data: catalog Contoso Academy, 8 users, 3 courses, 3 sessions, 6 enrollments.")
        click.echo(f"Demo API key (Full Control): username api, password {created.secret}")


@main.command()
@click.option(
    "--base-url", default="http://127.0.0.1:8365", show_default=True, help="Public URL used in catalog and course Urls."
)
@click.pass_context
@user_errors
def demo(ctx: click.Context, base_url: str) -> None:
    """Load a demo catalog, courses, sessions, users and enrollments (once)."""
    settings = _settings(ctx)
    _load_demo(_database(settings), settings, base_url)


@main.command()
@user_errors
def check() -> None:
    """Check the connector files against Power Platform's schemas and certification rules."""
    from connector import contract

    problems = contract.check_all()
    for p in problems:
        click.echo(f"{p.severity.upper():7} {p.rule}: {p.where}: {p.message}")
    failed = [p for p in problems if p.severity == "error"]
    click.echo(f"{len(failed)} error(s), {len(problems) - len(failed)} warning(s)")
    if failed:
        sys.exit(1)


@main.command("export-connector")
@click.option("--host", required=True, help="Public host (and port) of your coursewire server, e.g. lms.contoso.com")
@click.option("--base-path", default="/", show_default=True, help="Path prefix if coursewire is not at the root.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("connector-export"),
    show_default=True,
    help="Folder to write apiDefinition.swagger.json and apiProperties.json to.",
)
@user_errors
def export_connector(host: str, base_path: str, out_dir: Path) -> None:
    """Write the two custom-connector files for your host, ready for import or `paconn create`."""
    from connector import contract

    for path in contract.export_connector(host, base_path, out_dir):
        click.echo(f"wrote {path}")


@main.command("events")
@click.option("--after", type=int, default=None, help="Only events after this sequence number.")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--course", help="Only events about this course id.")
@click.option("--user", help="Only events about this user id.")
@click.option("--limit", type=int, default=50, show_default=True, help="How many events to show.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@click.pass_context
@user_errors
def events_command(
    ctx: click.Context,
    after: int | None,
    types: tuple[str, ...],
    course: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List domain events from the event log, oldest first."""
    db = _database(_settings(ctx))
    if after is not None:
        found = [
            e
            for e in events.read_after(db, after, limit=limit, types=types or None)
            if (not course or e.course_id == course) and (not user or e.user_id == user)
        ]
    else:
        found = events.latest(db, limit=limit, types=types or None, course_id=course, user_id=user)
    for e in found:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "seq": e.seq,
                        "id": e.id,
                        "type": e.type,
                        "occurred_at": e.occurred_at,
                        "actor": e.actor,
                        "course_id": e.course_id,
                        "session_id": e.session_id,
                        "enrollment_id": e.enrollment_id,
                        "user_id": e.user_id,
                        "data": e.data,
                    }
                )
            )
        else:
            about = " ".join(
                f"{k}={v}"
                for k, v in (
                    ("course", e.course_id),
                    ("session", e.session_id),
                    ("enrollment", e.enrollment_id),
                    ("user", e.user_id),
                )
                if v
            )
            click.echo(f"{e.seq:>6}  {e.occurred_at}  {e.type:28} {about}")
    if not found and not as_json:
        click.echo("No events.")


@main.group("deliveries", invoke_without_command=True)
@click.option(
    "--status", type=click.Choice(deliveries.STATUSES), help="Only deliveries in this state (dead: dead letters)."
)
@click.option("--subscription", help="Only deliveries to this subscription id.")
@click.option("--event", help="Only deliveries of this trigger, such as CourseCompleted.")
@click.option("--limit", type=int, default=50, show_default=True, help="How many to show, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@click.pass_context
@user_errors
def deliveries_command(
    ctx: click.Context, status: str | None, subscription: str | None, event: str | None, limit: int, as_json: bool
) -> None:
    """List webhook deliveries; `show` one with its attempts, `redeliver` dead letters."""
    if ctx.invoked_subcommand is not None:
        return
    db = _database(_settings(ctx))
    rows = deliveries.list_deliveries(db, status=status, subscription_id=subscription, event=event, limit=limit)
    for d in rows:
        if as_json:
            click.echo(json.dumps(d))
        else:
            last = d["DeadReason"] or d["LastError"] or (f"HTTP {d['LastStatusCode']}" if d["LastStatusCode"] else "")
            click.echo(
                f"{d['Id']}  {d['CreatedAt']}  {d['Event']:24} {d['Status']:9} attempts={d['Attempts']}"
                f" notifications={d['Notifications']}  {last}".rstrip()
            )
    if not rows and not as_json:
        counts = deliveries.counts(db)
        click.echo("No deliveries. " + ", ".join(f"{k}: {v}" for k, v in counts.items()))


@deliveries_command.command("show")
@click.argument("delivery_id")
@click.pass_context
@user_errors
def deliveries_show(ctx: click.Context, delivery_id: str) -> None:
    """Show one delivery: its notifications and every attempt, as JSON."""
    click.echo(json.dumps(deliveries.get(_database(_settings(ctx)), delivery_id), indent=2, ensure_ascii=False))


@deliveries_command.command("redeliver")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Redeliver every dead letter (of --event, if given).")
@click.option("--event", help="With --all-dead: only dead letters of this trigger.")
@click.pass_context
@user_errors
def deliveries_redeliver(ctx: click.Context, delivery_ids: tuple[str, ...], all_dead: bool, event: str | None) -> None:
    """Send dead letters again now, under the same ids; a running worker picks them up."""
    db = _database(_settings(ctx))
    ids = list(delivery_ids)
    if all_dead:  # oldest first, so that notifications about one entity go in the order they happened
        dead = deliveries.list_deliveries(db, status="dead", event=event, limit=1_000_000)
        ids += [d["Id"] for d in reversed(dead)]
    if not ids:
        raise click.UsageError("name delivery ids, or pass --all-dead")
    refused = 0
    for delivery_id in dict.fromkeys(ids):
        try:
            deliveries.redeliver(db, CLI, delivery_id)
        except Conflict as exc:
            click.echo(f"Error: {exc.message}", err=True)
            refused += 1
            continue
        click.echo(f"{delivery_id}: pending again")
    if refused:
        raise click.ClickException(f"{refused} of {len(set(ids))} not redelivered (see above)")
