"""`coursewire check` (the certification checks on connector files) and `coursewire export-connector` (the
files for a tenant's own connector), both run by the certification package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

import certification
from calendars.config import CalendarConfig, CalendarConfigError
from certification import InvalidOption, Tenant, UnreadableFile

FILE = click.Path(path_type=Path)


def _sibling_properties(definition: Path) -> Path | None:
    """The apiProperties.json beside a definition, as paconn and export-connector lay them out, if any."""
    beside = definition.parent / certification.PROPERTIES_PATH.name
    return beside if beside.is_file() else None


@click.command()
@click.argument("definition", required=False, type=FILE)
@click.argument("properties", required=False, type=FILE)
def check(definition: Path | None, properties: Path | None) -> None:
    """Check connector files against Power Platform's schemas, the certification rules and the LMS365 contract.

    DEFINITION and PROPERTIES default to the files coursewire ships. Given DEFINITION alone, the
    apiProperties.json beside it is checked too when there is one. Exits 1 when a file has errors, 2 when
    a file cannot be read.
    """
    if definition is None:
        definition, properties = certification.DEFINITION_PATH, certification.PROPERTIES_PATH
    elif properties is None:
        properties = _sibling_properties(definition)
    try:
        problems = certification.check_all(definition, properties)
    except UnreadableFile as exc:
        names = {definition: "DEFINITION", properties: "PROPERTIES"}
        if exc.path not in names:  # a file coursewire ships: the installation is broken
            raise click.ClickException(f"coursewire's own file {exc}; reinstall coursewire") from None
        raise click.BadParameter(f"{exc.path}: {exc.reason}", param_hint=names[exc.path]) from None
    click.echo(f"Checked {definition}" + (f" and {properties}" if properties else " (no apiProperties.json)"))
    for p in problems:
        click.echo(f"{p.severity.upper():7} {p.rule}: {p.where}: {p.message}")
    failed = [p for p in problems if p.severity == "error"]
    warnings = len(problems) - len(failed)
    for rule, where, message in environment_warnings():
        click.echo(f"WARNING {rule}: {where}: {message}")
        warnings += 1
    click.echo(f"{len(failed)} error(s), {warnings} warning(s)")
    if failed:
        sys.exit(1)


def environment_warnings() -> list[tuple[str, str, str]]:
    """(rule, where, message) for what this server's environment leaves off: the calendar mirror's e-mail
    fallback without COURSEWIRE_SMTP_URL or COURSEWIRE_MAIL_FROM (people without a connected calendar then get
    no invitations), push notifications from Microsoft 365 and Google without an https COURSEWIRE_PUBLIC_URL,
    or a calendar variable `coursewire serve` would refuse."""
    try:
        config = CalendarConfig.from_env()
    except CalendarConfigError as exc:
        return [("CalendarSettingInvalid", "environment", f"{exc}; coursewire serve refuses to start with it")]
    warnings = []
    missing = config.missing("Email")
    if missing:
        warnings.append(
            (
                "EmailFallbackOff",
                missing,
                "not set, so the e-mail fallback is off: people without a connected calendar get no session"
                " invitations (set COURSEWIRE_SMTP_URL and COURSEWIRE_MAIL_FROM)",
            )
        )
    public = os.environ.get("COURSEWIRE_PUBLIC_URL", "").strip()
    if (config.microsoft_client_id or config.google_client_id) and not public.startswith("https://"):
        warnings.append(
            (
                "CalendarPushOff",
                "COURSEWIRE_PUBLIC_URL",
                "not an https address, so Microsoft 365 and Google cannot notify coursewire of changes in people's"
                " calendars: a deleted event is noticed only by the sweep every COURSEWIRE_CALENDAR_SWEEP_SECONDS",
            )
        )
    return warnings


@click.command("export-connector")
@click.option("--host", required=True, help="Public host (and port) of your coursewire server, e.g. lms.contoso.com")
@click.option("--base-path", default="/", show_default=True, help="Path prefix if coursewire is not at the root.")
@click.option("--publisher", required=True, help="Who publishes the connector: words of letters and digits.")
@click.option("--website", required=True, help="Your organisation's website (https://...).")
@click.option("--privacy-policy", required=True, help="URL of your privacy policy.")
@click.option("--contact-name", required=True, help="Who supports the connector, e.g. Contoso IT Service Desk.")
@click.option("--contact-email", required=True, help="Their e-mail address.")
@click.option("--contact-url", help="Their support page [default: the website].")
@click.option("--brand-color", required=True, help="Icon background colour, #rrggbb (not #007ee5 or #ffffff).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("connector-export"),
    show_default=True,
    help="Folder to write apiDefinition.swagger.json and apiProperties.json to.",
)
def export_connector(
    host: str,
    base_path: str,
    publisher: str,
    website: str,
    privacy_policy: str,
    contact_name: str,
    contact_email: str,
    contact_url: str | None,
    brand_color: str,
    out_dir: Path,
) -> None:
    """Write the two custom-connector files for your host and organisation, ready for import or
    `paconn create`. Values left as the shipped template's examples are refused."""
    tenant = Tenant(publisher, website, privacy_policy, contact_name, contact_email, brand_color, contact_url)
    try:
        written = certification.export_connector(host, base_path, out_dir, tenant)
    except InvalidOption as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{exc.option}'") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"Check them with: coursewire check {written[0]} {written[1]}")
