"""`coursewire apikey` (create, list, revoke) and `coursewire demo`."""

from __future__ import annotations

import json

import click

from connector.cli.common import database, guid, load_demo, settings_of, user_errors
from storage import apikeys


@click.group()
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
    created = apikeys.create(database(settings_of(ctx)), name, access)
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
    keys = apikeys.list_keys(database(settings_of(ctx)))
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
@click.argument("key_id", callback=guid)
@click.pass_context
@user_errors
def apikey_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by id; calls with it are refused from now on."""
    key = apikeys.revoke(database(settings_of(ctx)), key_id)
    click.echo(f"Revoked key {key.id} ({key.name}).")


@click.command()
@click.option(
    "--base-url", default="http://127.0.0.1:8365", show_default=True, help="Public URL used in catalog and course Urls."
)
@click.pass_context
@user_errors
def demo(ctx: click.Context, base_url: str) -> None:
    """Load a demo catalog, courses, sessions, users and enrollments (once)."""
    settings = settings_of(ctx)
    load_demo(database(settings), settings, base_url)
