"""`coursewire calendar settings`: which calendars people may connect, and the e-mail fallback; shown, and changed
with the checks UpdateCalendarSettings makes."""

from __future__ import annotations

import click

from calendars.config import CalendarConfig
from connector.cli.common import database, settings_of, user_errors
from connector.handlers.calendars import REQUIREMENTS, refuse_unconfigured
from storage import calendar as calendar_store
from storage.errors import Invalid
from storage.models import CLI

# The names the options take -> the CalendarSettings switch, and how the output calls it.
SWITCHES = {
    "microsoft365": ("Microsoft365Enabled", "Microsoft 365"),
    "google": ("GoogleEnabled", "Google"),
    "caldav": ("CalDAVEnabled", "CalDAV"),
    "email": ("EmailFallbackEnabled", "E-mail fallback"),
}
CHOICE = click.Choice(list(SWITCHES), case_sensitive=False)


@click.group()
def calendar() -> None:
    """The calendar mirror: which calendars people may connect, and e-mail for the others."""


@calendar.command("settings")
@click.option(
    "--enable", multiple=True, type=CHOICE, help="Turn on microsoft365, google, caldav or email (repeatable)."
)
@click.option(
    "--disable", multiple=True, type=CHOICE, help="Turn off microsoft365, google, caldav or email (repeatable)."
)
@click.pass_context
@user_errors
def settings_command(ctx: click.Context, enable: tuple[str, ...], disable: tuple[str, ...]) -> None:
    """Show the calendar settings and the variables each needs; --enable and --disable change them.

    A provider can be turned on only when its OAuth client is configured (COURSEWIRE_MICROSOFT_CLIENT_ID and
    _SECRET, COURSEWIRE_GOOGLE_CLIENT_ID and _SECRET), e-mail only with COURSEWIRE_SMTP_URL and
    COURSEWIRE_MAIL_FROM. Turning a provider off pauses its connections: their events stay but are no longer
    kept up to date, and those people get e-mail instead.
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
        missing = config.missing(REQUIREMENTS[name])
        note = ""
        if missing and shown[name]:
            note = f"  (not in effect: {missing} is not set)"
        elif missing:
            note = f"  ({missing} is not set; set it before --enable {option})"
        lines.append(f"{label + ':':17} {state}{note}")
    lines.append(f"Last changed: {shown.get('ModifiedAt') or 'never (defaults)'}")
    return lines
