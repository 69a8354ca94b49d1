"""The `coursewire` command line: serve, the delivery worker, API keys, demo data, contract checks,
connector export, events, webhook deliveries and the calendar mirror's settings. One module per group of
commands; this one holds the `coursewire` group and its `--data-dir`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from connector.cli import calendar, certify, keys, logs, serving
from connector.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="COURSEWIRE_DATA_DIR",
    help="Where the database and files live [env COURSEWIRE_DATA_DIR; default ./data].",
)
@click.version_option(package_name="coursewire", prog_name="coursewire", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """coursewire: a self-hosted backend for the LMS365 Power Platform connector."""
    env = dict(os.environ)
    if data_dir is not None:
        env["COURSEWIRE_DATA_DIR"] = str(data_dir)
    ctx.obj = {"settings": lambda: Settings.from_env(env)}


for command in (
    serving.serve,
    serving.worker,
    keys.apikey,
    keys.demo,
    certify.check,
    certify.export_connector,
    logs.events_command,
    logs.deliveries_command,
    calendar.calendar,
):
    main.add_command(command)
