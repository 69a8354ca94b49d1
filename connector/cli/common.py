"""What the commands share: the settings and database of the invocation, one-line user errors, the secret box
and the demo data."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from connector.settings import Settings, SettingsError
from storage import ids, subscriptions
from storage.db import Database
from storage.errors import StorageError
from storage.secrets import SecretBox

F = TypeVar("F", bound=Callable[..., Any])


def settings_of(ctx: click.Context) -> Settings:
    """The settings of this invocation (environment and `--data-dir`); a bad value is a one-line error."""
    try:
        settings: Settings = ctx.obj["settings"]()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def database(settings: Settings) -> Database:
    """The database, migrated to the latest schema."""
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


def sealed(db: Database) -> SecretBox:
    """The secret box, after encrypting the callbacks a database from before migration 0004 kept in clear."""
    box = SecretBox.for_database(db.path)
    count = subscriptions.seal_legacy(db, box)
    if count:
        click.echo(
            f"Encrypted {count} webhook callback(s) stored in clear; the database file was rewritten without them."
        )
    return box


def load_demo(db: Database, settings: Settings, base_url: str) -> None:
    """Load the demo data once and print its key (or say it is already there)."""
    from connector import demo as demo_data

    created = demo_data.load(db, settings.files_dir, settings.public_url or base_url)
    if created is None:
        click.echo("Demo data is already loaded. Create a key with: coursewire apikey create --name NAME")
    else:
        click.echo("Loaded demo data: catalog Contoso Academy, 8 users, 3 courses, 3 sessions, 6 enrollments.")
        click.echo(f"Demo API key (Full Control): username api, password {created.secret}")


def guid(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback: an id option or argument in the stored form, as the API reads it (`storage.ids`):
    upper case and braces are accepted; a tuple (nargs=-1) is read item by item; None stays None."""
    if isinstance(value, tuple):
        return tuple(ids.canonical(v) for v in value)
    return ids.canonical(value) if isinstance(value, str) else value
