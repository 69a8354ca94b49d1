"""`coursewire calendar`: `settings` (which calendars people may connect, the e-mail fallback, unregistering on a
deleted event; shown, and changed with the checks UpdateCalendarSettings makes), `status` (connections and sync
health, read-only) and `resync` (queue people's sessions and run the mirror until it is idle)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import asdict
from typing import Any

import click

from calendars.config import CalendarConfig
from calendars.worker import CalendarWorker
from connector.cli.common import database, guid, sealed, settings_of, user_errors
from connector.handlers.calendars import HEALTH_STATUSES, REQUIREMENTS, refuse_unconfigured
from connector.settings import Settings
from storage import calendar as calendar_store
from storage import calendar_watch
from storage.db import Database
from storage.errors import Invalid
from storage.models import CLI

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


@calendar.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.pass_context
@user_errors
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Show the calendar connections by status, one line for each that is not Connected (its person, provider,
    status, last error and last check), and the sync health (GetCalendarSyncHealth). Changes nothing."""
    db = database(settings_of(ctx))
    connections = calendar_store.connections_health(db)
    by_status = Counter(c.status for c in connections)
    troubled = sorted((c for c in connections if c.status != "Connected"), key=lambda c: (c.login_name, c.provider))
    health = calendar_watch.health(db)
    pending = calendar_store.pending(db)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "by_status": dict(sorted(by_status.items())),
                    "not_connected": [asdict(c) for c in troubled],
                    "health": health,
                    "pending_pairs": pending,
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


# --- resync ------------------------------------------------------------------------------------------------


@calendar.command("resync")
@click.option("--user", "user_id", callback=guid, help="Only this user's sessions (a user Id).")
@click.option("--session", "session_id", callback=guid, help="Only this session's people (a session Id).")
@click.option("--dry-run", is_flag=True, help="Print the pairs and connections it would queue; change nothing.")
@click.pass_context
@user_errors
def resync_command(ctx: click.Context, user_id: str | None, session_id: str | None, dry_run: bool) -> None:
    """Bring calendars up to date: queue each (person, session) pair of --user, of --session, of both (their
    sessions in common) or, with neither, every pair with a registration, an instructor or a calendar item;
    ask a full check of the connected calendars concerned (every connection with neither option); then run
    the calendar mirror until it is idle, with a progress bar. --dry-run prints what it would queue instead.
    Run it with the server's environment (the providers' OAuth clients, the mail server)."""
    settings = settings_of(ctx)
    db = database(settings)
    pairs = sorted(calendar_store.resync_pairs(db, user_id, session_id))
    # The connections concerned: the people of the pairs (and --user's, pairs or not); with neither, everyone's.
    users = None
    if user_id is not None or session_id is not None:
        users = {u for u, _ in pairs} | ({user_id} if user_id else set())
    connections = calendar_store.active_connection_ids(db, users)
    if dry_run:
        _describe_resync(db, pairs, connections)
        return
    marked, checks = calendar_store.queue_resync(db, pairs, connections, db.clock())
    click.echo(
        f"Queued {marked} pair(s) and a full check of {len(connections)} connected calendar(s)"
        f" ({checks} watched now; the others get one when they are next watched)."
    )
    worked = _run_mirror(db, settings, len(pairs))
    waiting = calendar_store.pending(db)
    click.echo(
        f"Done: the calendar mirror worked on {worked} pair(s) and check(s); {waiting} pair(s) wait for a retry"
        " (see coursewire calendar status)."
        if waiting
        else f"Done: the calendar mirror worked on {worked} pair(s) and check(s); no pair is waiting."
    )


def _describe_resync(db: Database, pairs: list[tuple[str, str]], connections: list[str]) -> None:
    found = [c for c in (calendar_store.connection_by_id(db, i) for i in connections) if c is not None]
    logins, titles = calendar_store.names_of(
        db, [u for u, _ in pairs] + [c.user_id for c in found], [s for _, s in pairs]
    )
    click.echo(f"Would queue {len(pairs)} pair(s) (person, session):")
    for line in sorted(
        f"  {logins.get(user, user)}  {titles.get(session, '?')} ({session})" for user, session in pairs
    ):
        click.echo(line)
    click.echo(f"Would ask a full check of {len(connections)} connected calendar(s):")
    for line in sorted(
        f"  {logins.get(c.user_id, c.user_id)}  {c.provider}" + (f"  {c.account}" if c.account else "") for c in found
    ):
        click.echo(line)
    click.echo("Dry run: nothing was changed.")


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
