"""`coursewire events` (the event log) and `coursewire deliveries` (webhook deliveries: list, show, redeliver)."""

from __future__ import annotations

import json

import click

from connector.cli.common import database, guid, settings_of, user_errors
from storage import deliveries, events
from storage.errors import Conflict
from storage.models import CLI


@click.command("events")
@click.option("--after", type=int, default=None, help="Only events after this sequence number.")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--course", callback=guid, help="Only events about this course id.")
@click.option("--user", callback=guid, help="Only events about this user id.")
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
    """List domain events from the event log: the latest --limit (or the first after --after), oldest first."""
    db = database(settings_of(ctx))
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


@click.group("deliveries", invoke_without_command=True)
@click.option(
    "--status", type=click.Choice(deliveries.STATUSES), help="Only deliveries in this state (dead: dead letters)."
)
@click.option("--subscription", callback=guid, help="Only deliveries to this subscription id.")
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
    db = database(settings_of(ctx))
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
@click.argument("delivery_id", callback=guid)
@click.pass_context
@user_errors
def deliveries_show(ctx: click.Context, delivery_id: str) -> None:
    """Show one delivery: its notifications and every attempt, as JSON."""
    click.echo(json.dumps(deliveries.get(database(settings_of(ctx)), delivery_id), indent=2, ensure_ascii=False))


@deliveries_command.command("redeliver")
@click.argument("delivery_ids", nargs=-1, callback=guid)
@click.option("--all-dead", is_flag=True, help="Redeliver every dead letter (of --event, if given).")
@click.option("--event", help="With --all-dead: only dead letters of this trigger.")
@click.pass_context
@user_errors
def deliveries_redeliver(ctx: click.Context, delivery_ids: tuple[str, ...], all_dead: bool, event: str | None) -> None:
    """Send dead letters again now, under the same ids; a running worker picks them up."""
    db = database(settings_of(ctx))
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
