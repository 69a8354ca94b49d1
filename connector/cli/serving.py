"""`coursewire serve` (the API, with provisioning and webhook delivery in the same command) and
`coursewire worker` (webhook delivery alone)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket

import click

from calendars.worker import CalendarWorker
from connector.background import run_both
from connector.cli.common import database, load_demo, sealed, settings_of, user_errors
from storage import files
from webhooks.worker import Worker


def refuse_unusable_address(host: str, port: int) -> None:
    """Raise a one-line ClickException naming the option to change when `coursewire serve` could not listen
    on (host, port): the port is in use or needs privileges, or the host is not an address of this machine.

    Binds and closes a socket on every address the host resolves to, with SO_REUSEADDR as uvicorn binds
    (so a port left in TIME_WAIT by a server that just stopped counts as free, and a listening one does not;
    `::` is probed dual-stack, as uvicorn's multi-process socket listens). A program that takes the port in
    the moment between this probe and uvicorn's bind still makes `serve` fail, by uvicorn's own message.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(
            f"cannot listen on {host!r}: {exc.strerror}; give an address or name of this machine with --host"
        ) from None
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise click.ClickException(_bind_failure(host, port, exc)) from None


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another coursewire, or another program, listens on it); "
            "stop that one, or serve on another port with --port"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} on {host} needs privileges this user lacks; serve on another port with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; listen on another with --host"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}; change --host or --port"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8365, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--workers", type=int, help="Server processes [env COURSEWIRE_WORKERS; default: one per core].")
@click.option("--demo", is_flag=True, help="Load the demo data first (if the database has none).")
@click.option(
    "--worker/--no-worker",
    "in_process_worker",
    default=True,
    show_default=True,
    help="Deliver webhooks and mirror calendars from this process (turn off when `coursewire worker` runs elsewhere).",
)
@click.pass_context
@user_errors
def serve(ctx: click.Context, host: str, port: int, workers: int | None, demo: bool, in_process_worker: bool) -> None:
    """Migrate the database and serve the API, with provisioning, webhook delivery and the calendar mirror in
    this process."""
    import uvicorn

    from connector.background import DeliveryThread, Provisioner

    settings = settings_of(ctx)
    # Before anything is changed or announced: a port another program holds is the commonest failure.
    refuse_unusable_address(host, port)
    db = database(settings)
    # Once, before any server process starts: in a running process these are uploads in flight.
    stale = files.remove_stale_uploads(settings.files_dir)
    if stale:
        click.echo(f"Removed {stale} temporary file(s) of uploads interrupted by a crash.")
    if demo:
        load_demo(db, settings, f"http://{host}:{port}")
    count = workers or settings.workers or os.cpu_count() or 1
    os.environ.update(settings.to_env())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    box = sealed(db)  # before any other thread opens the database: sealing may rewrite the file
    provisioner = Provisioner(db, settings.files_dir, settings.provisioning_interval)
    thread, stop = provisioner.start()
    public_url = settings.public_url or f"http://{host}:{port}"
    delivery = (
        DeliveryThread(db, box, settings.delivery, settings.calendar, public_url).start() if in_process_worker else None
    )
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
            # A new server process answers uvicorn's health check only once it has imported the app, which
            # took 12-24 s on a loaded two-core machine; uvicorn's 5 s default replaced it again and again and
            # the port never opened.
            timeout_worker_healthcheck=60,
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


@click.command()
@click.option(
    "--once",
    is_flag=True,
    help="Deliver and mirror what is due now (batch windows end at once), wait for it, and exit.",
)
@click.pass_context
@user_errors
def worker(ctx: click.Context, once: bool) -> None:
    """Run the webhook delivery worker and the calendar mirror alone (several may share one database)."""
    settings = settings_of(ctx)
    db = database(settings)
    box = sealed(db)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        delivery = Worker(db, box, settings.delivery)
        mirror = CalendarWorker(db, box, settings.calendar, public_url=settings.public_url or "")
        if once:
            async with delivery:
                await delivery.run_until_idle(flush=True)
            async with mirror:
                while await mirror.run_once():
                    pass
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"coursewire worker {delivery.owner}: delivering webhooks and mirroring calendars from {db.path}")
        await run_both(delivery, mirror, stop)

    asyncio.run(run())
