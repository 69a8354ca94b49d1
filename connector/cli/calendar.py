"""`coursewire calendar`: `settings` (which calendars people may connect, the e-mail fallback, unregistering on a
deleted event; shown, and changed with the checks UpdateCalendarSettings makes), `status` (connections and sync
health, read-only), `resync` (write people's events again, run the mirror until it is idle, remove strays) and
`tenant` (tenant-wide Microsoft 365: shown, connected and disconnected as the CalendarTenant operations do)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import asdict
from typing import Any

import click

from calendars.config import CalendarConfig
from calendars.model import ProviderError
from calendars.tenant import tenant_ready
from calendars.worker import CalendarWorker
from connector.cli.common import database, guid, sealed, settings_of, user_errors
from connector.errors import HttpError
from connector.handlers.calendars import HEALTH_STATUSES, REQUIREMENTS, connect_tenant, refuse_unconfigured, unready
from connector.settings import Settings
from storage import calendar as calendar_store
from storage import calendar_tenant, calendar_watch, outbound
from storage.db import Database
from storage.errors import Invalid
from storage.models import CLI
from storage.secrets import SecretKeyError

# The names the options take -> the CalendarSettings switch, and how the output calls it.
SWITCHES = {
    "microsoft365": ("Microsoft365Enabled", "Microsoft 365"),
    "google": ("GoogleEnabled", "Google"),
    "caldav": ("CalDAVEnabled", "CalDAV"),
    "email": ("EmailFallbackEnabled", "E-mail fallback"),
    "unregister-on-delete": ("UnregisterOnCalendarDelete", "Unregister on delete"),
}
CHOICE = click.Choice(list(SWITCHES), case_sensitive=False)
WIDTH = max(len(label) for _, label in SWITCHES.values()) + 2


@click.group()
def calendar() -> None:
    """The calendar mirror: its settings, the connections' health, and bringing calendars up to date."""


@calendar.command("settings")
@click.option(
    "--enable",
    multiple=True,
    type=CHOICE,
    help="Turn on microsoft365, google, caldav, email or unregister-on-delete (repeatable).",
)
@click.option(
    "--disable",
    multiple=True,
    type=CHOICE,
    help="Turn off microsoft365, google, caldav, email or unregister-on-delete (repeatable).",
)
@click.pass_context
@user_errors
def settings_command(ctx: click.Context, enable: tuple[str, ...], disable: tuple[str, ...]) -> None:
    """Show the calendar settings and the variables each needs; --enable and --disable change them.

    A provider can be turned on only when its OAuth client is configured (COURSEWIRE_MICROSOFT_CLIENT_ID and
    _SECRET, COURSEWIRE_GOOGLE_CLIENT_ID and _SECRET), e-mail only with COURSEWIRE_SMTP_URL and
    COURSEWIRE_MAIL_FROM. Turning a provider off pauses its connections: their events stay but are no longer
    kept up to date, and those people get e-mail instead. unregister-on-delete (on by default): a learner who
    deletes a session's event from their calendar is unregistered; off, the deletion is only recorded.
    """
    both = sorted({e.lower() for e in enable} & {d.lower() for d in disable})
    if both:
        raise click.UsageError(f"--enable and --disable both name {', '.join(both)}")
    settings = settings_of(ctx)
    db = database(settings)
    changes = {SWITCHES[name.lower()][0]: True for name in enable}
    changes.update({SWITCHES[name.lower()][0]: False for name in disable})
    if changes:
        try:
            refuse_unconfigured(settings.calendar, changes)
        except Invalid as exc:
            option = next(o for o, (name, _) in SWITCHES.items() if name == exc.target)
            missing = settings.calendar.missing(REQUIREMENTS[exc.target or ""])
            raise click.ClickException(
                f"--enable {option}: {missing} is not set in this command's environment; set it here as for the server"
            ) from None
        shown = calendar_store.update_settings(db, CLI, changes)
    else:
        shown = calendar_store.get_settings(db)
    for line in describe(shown, settings.calendar):
        click.echo(line)


def describe(shown: dict[str, object], config: CalendarConfig) -> list[str]:
    """One line per switch (on or off, and the variable it is missing, if any), then when they last changed."""
    lines = []
    for option, (name, label) in SWITCHES.items():
        state = "on" if shown[name] else "off"
        missing = config.missing(REQUIREMENTS.get(name, ""))
        note = ""
        if missing and shown[name]:
            note = f"  (not in effect: {missing} is not set)"
        elif missing:
            note = f"  ({missing} is not set; set it before --enable {option})"
        lines.append(f"{label + ':':{WIDTH}} {state}{note}")
    lines.append(f"Last changed: {shown.get('ModifiedAt') or 'never (defaults)'}")
    return lines


# --- status ------------------------------------------------------------------------------------------------

# Pairs waiting for a retry that `calendar status` lists.
RETRYING_SHOWN = 20


@calendar.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.pass_context
@user_errors
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Show the calendar connections by status, one line for each that is not Connected (its person, provider,
    status, last error and last check), the sync health (GetCalendarSyncHealth) and the first 20 pairs waiting
    for a retry (person, session, failures, next try, last error). Changes nothing."""
    db = database(settings_of(ctx))
    connections = calendar_store.connections_health(db)
    by_status = Counter(c.status for c in connections)
    troubled = sorted((c for c in connections if c.status != "Connected"), key=lambda c: (c.login_name, c.provider))
    health = calendar_watch.health(db)
    pending = calendar_store.pending(db)
    retrying = calendar_store.retrying(db, RETRYING_SHOWN)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "by_status": dict(sorted(by_status.items())),
                    "not_connected": [asdict(c) for c in troubled],
                    "health": health,
                    "pending_pairs": pending,
                    "retrying": [asdict(r) for r in retrying],
                }
            )
        )
        return
    counts = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items()))
    click.echo(f"Connections: {len(connections)}" + (f" ({counts})" if counts else ""))
    for c in troubled:
        error = c.last_error or c.last_check_error
        click.echo(
            f"  {c.login_name}  {c.provider}  {c.status}  last check: {c.last_check_at or 'never'}"
            + (f"  error: {error}" if error else "")
        )
    stored = health["ByStatus"]
    assert isinstance(stored, dict)
    click.echo(
        f"Watched: {health['Watched']}; channel errors: {health['ChannelErrors']}; check errors:"
        f" {health['CheckErrors']}; oldest check: {health['OldestCheckAt'] or 'none'}; soonest channel expiry:"
        f" {health['SoonestChannelExpiry'] or 'none'}"
    )
    click.echo(
        f"Stored statuses: {', '.join(f'{s} {stored.get(s, 0)}' for s in HEALTH_STATUSES)}; pairs waiting for the"
        f" worker: {pending}"
    )
    if retrying:
        click.echo(f"Waiting for a retry (the first {RETRYING_SHOWN}, soonest first):")
    for r in retrying:
        click.echo(
            f"  {r.login_name}  {r.session_title or r.session_id}  failed {r.attempts}x  next try: {r.due_at}"
            + (f"  error: {r.last_error}" if r.last_error else "")
        )


# --- resync ------------------------------------------------------------------------------------------------


@calendar.command("resync")
@click.option("--user", "user_id", callback=guid, help="Only this user's sessions (a user Id).")
@click.option("--session", "session_id", callback=guid, help="Only this session's people (a session Id).")
@click.option("--dry-run", is_flag=True, help="Print what it would write and remove; change nothing.")
@click.pass_context
@user_errors
def resync_command(ctx: click.Context, user_id: str | None, session_id: str | None, dry_run: bool) -> None:
    """Repair connected calendars: write every event of --user, of --session, of both (their sessions in common)
    or, with neither, of everyone again as it should be (an event missing from a calendar is created again, not
    taken for a deletion by the person), create what was never written, run the calendar mirror until it is
    idle (with a progress bar), then remove the events of ours a calendar holds without a record (strays).
    --dry-run prints the pairs, the calendars and the strays found, and changes nothing. Run it with the
    server's environment (the providers' OAuth clients, the mail server)."""
    settings = settings_of(ctx)
    db = database(settings)
    pairs = sorted(calendar_store.resync_pairs(db, user_id, session_id))
    # The calendars concerned: the people of the pairs (and --user's, pairs or not); with neither, everyone's.
    users = None
    if user_id is not None or session_id is not None:
        users = {u for u, _ in pairs} | ({user_id} if user_id else set())
    ids = calendar_store.active_connection_ids(db, users)
    connections = [c for c in (calendar_store.connection_by_id(db, i) for i in ids) if c is not None]
    if dry_run:
        _describe_resync(db, pairs, connections)
        found = asyncio.run(_strays(db, settings, connections, remove=False))
        click.echo(f"Would remove {found} stray event(s) of ours.")
        click.echo("Dry run: nothing was changed.")
        return
    with db.write() as conn:
        marked, _ = calendar_watch.force_rewrite(conn, db.clock(), user_id=user_id, session_id=session_id)
    click.echo(f"Queued {len(pairs)} pair(s); {marked} event(s) to write again.")
    worked = _run_mirror(db, settings, len(pairs))
    removed = asyncio.run(_strays(db, settings, connections, remove=True))
    waiting = calendar_store.pending(db)
    left = f"{waiting} pair(s) wait for a retry (see coursewire calendar status)." if waiting else "no pair is waiting."
    click.echo(f"Done: the calendar mirror worked on {worked} pair(s) and check(s); removed {removed} stray(s); {left}")


def _describe_resync(db: Database, pairs: list[tuple[str, str]], connections: list[calendar_store.Connection]) -> None:
    logins, titles = calendar_store.names_of(
        db, [u for u, _ in pairs] + [c.user_id for c in connections], [s for _, s in pairs]
    )
    click.echo(f"Would queue {len(pairs)} pair(s) (person, session):")
    for line in sorted(
        f"  {logins.get(user, user)}  {titles.get(session, '?')} ({session})" for user, session in pairs
    ):
        click.echo(line)
    click.echo(f"Would look for strays in {len(connections)} connected calendar(s):")
    for line in sorted(
        f"  {logins.get(c.user_id, c.user_id)}  {c.provider}" + (f"  {c.account}" if c.account else "")
        for c in connections
    ):
        click.echo(line)


async def _strays(db: Database, settings: Settings, connections: list[calendar_store.Connection], remove: bool) -> int:
    """Find (and with `remove`, delete) each calendar's strays (calendars.resync); a calendar that cannot be
    read is named with the reason and skipped. Returns how many strays were found (or removed)."""
    from calendars import resync
    from calendars.connections import open_provider

    box = sealed(db)
    total = 0
    async with outbound.guarded_session(settings.calendar.allowed_networks, user_agent="coursewire-resync/1") as http:
        for connection in connections:
            try:
                provider = open_provider(connection, http, db, box, settings.calendar)
                found = await resync.strays(db, provider, connection)
                failed = await resync.remove(provider, found) if remove else []
                await provider.close()
            except (ProviderError, ValueError, KeyError, SecretKeyError, outbound.BlockedURL) as exc:
                hint = (
                    " (run resync with the server's environment: COURSEWIRE_ALLOWED_NETWORKS)"
                    if isinstance(exc, outbound.BlockedURL) or "BlockedURL" in str(exc)
                    else ""
                )
                click.echo(
                    f"Could not read the {connection.provider} calendar of user {connection.user_id}: {exc}{hint}"
                )
                continue
            for stray in found:
                click.echo(f"{'Stray' if not remove else 'Removing stray'}: {stray.provider_id} ({stray.key})")
            for stray, why in failed:
                click.echo(f"Could not remove {stray.provider_id}: {why}")
            total += len(found) - len(failed)
    return total


def _run_mirror(db: Database, settings: Settings, queued: int) -> int:
    """Rounds of the calendar worker until one finds nothing due (as `coursewire worker --once`), the bar
    advancing by what each round worked on (CalendarWorker.run_once: pairs and checks, capped at `queued`);
    returns how many pairs and checks that was in all."""
    box = sealed(db)

    async def rounds(bar: Any) -> int:
        mirror = CalendarWorker(db, box, settings.calendar, public_url=settings.public_url or "")
        worked = 0
        async with mirror:
            while n := await mirror.run_once():
                bar.update(min(n, max(queued - worked, 0)))
                worked += n
        return worked

    with click.progressbar(length=queued, label="Bringing calendars up to date") as bar:
        return asyncio.run(rounds(bar))


# --- tenant ------------------------------------------------------------------------------------------------


@calendar.command("tenant")
@click.option("--connect", is_flag=True, help="Connect the tenant of COURSEWIRE_MICROSOFT_TENANT (checked first).")
@click.option("--disconnect", is_flag=True, help="Stop tenant-wide mode and disconnect the calendars it connected.")
@click.option("--keep-events", is_flag=True, help="With --disconnect: leave the events coursewire wrote.")
@click.option("--json", "as_json", is_flag=True, help="Print the state as one JSON object (GetCalendarTenant's).")
@click.pass_context
@user_errors
def tenant_command(ctx: click.Context, connect: bool, disconnect: bool, keep_events: bool, as_json: bool) -> None:
    """Show tenant-wide Microsoft 365: the tenant, whether it is on, how many calendars it connected and its last
    round. --connect does what ConnectCalendarTenant does (COURSEWIRE_MICROSOFT_CLIENT_ID, _SECRET and _TENANT
    set, Microsoft365Enabled on, then Microsoft asked for the application's token and one user: admin consent
    for Calendars.ReadWrite and User.Read.All); --disconnect what DisconnectCalendarTenant does: the calendars
    the tenant connected are disconnected and, without --keep-events, the events coursewire wrote there are
    removed by the worker. Run it with the server's environment."""
    if connect and disconnect:
        raise click.UsageError("--connect and --disconnect cannot be combined")
    if keep_events and not disconnect:
        raise click.UsageError("--keep-events goes with --disconnect")
    settings = settings_of(ctx)
    db = database(settings)
    if connect:
        try:
            connect_tenant(db, CLI, settings.calendar)
        except Invalid as exc:
            if exc.target and exc.target == tenant_ready(settings.calendar):
                raise click.ClickException(
                    unready(exc.target, "set it in this command's environment as for the server")
                ) from None
            raise
        except HttpError as exc:
            raise click.ClickException(exc.message) from None
    elif disconnect:
        calendar_tenant.disable_tenant(db, CLI, keep_events=keep_events)
    state = calendar_tenant.tenant_state(db)
    if as_json:
        click.echo(json.dumps(state.as_api() if state else {"Enabled": False}))
        return
    for line in describe_tenant(state, settings.calendar, bool(calendar_store.get_settings(db)["Microsoft365Enabled"])):
        click.echo(line)


def describe_tenant(state: calendar_tenant.TenantState | None, config: CalendarConfig, enabled: bool) -> list[str]:
    """The tenant's lines; while it is not on, what --connect still needs (a variable, Microsoft365Enabled)."""
    if state is None:
        lines = ["Microsoft 365 tenant: not connected"]
    else:
        lines = [
            f"Microsoft 365 tenant: {state.tenant_id} ({'on' if state.enabled else 'off'})",
            f"Connected at: {state.enabled_at or 'never'}",
            f"Calendars it connected: {state.connections}",
            f"Last roster round: {state.last_roster_at or 'never'}"
            + (f"  error: {state.last_error}" if state.last_error else ""),
        ]
    if state is None or not state.enabled:
        variable = tenant_ready(config)
        if variable:
            what = " to the tenant id or a verified domain, not common" if variable.endswith("_TENANT") else ""
            lines.append(f"Before --connect: set {variable}{what}")
        elif not enabled:
            lines.append("Before --connect: coursewire calendar settings --enable microsoft365")
    return lines
