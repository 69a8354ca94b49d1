"""Who a request acts as: the API key itself, or the user named by LMS365-User-Id."""

from __future__ import annotations

from storage import lookups
from storage.db import Database
from storage.errors import Invalid
from storage.models import Actor, ApiKey


def resolve_actor(db: Database, key: ApiKey, user_ref: str | None) -> Actor:
    """Who a request acts as: the key itself (an administrator) or the user named by LMS365-User-Id.

    Raises Invalid (target `LMS365-User-Id`) when the header names no live user.
    """
    if not user_ref:
        return Actor(kind="apikey", api_key_id=key.id, is_admin=True)
    row = lookups.user_by_reference(db.conn, user_ref.strip())
    if row is None:
        raise Invalid(
            f"LMS365-User-Id {user_ref!r} names no user: give a user Id or a DirectoryObjectId",
            target="LMS365-User-Id",
        )
    return Actor(
        kind="user",
        api_key_id=key.id,
        user_id=row["id"],
        login_name=row["login_name"],
        is_admin=row["role"] == "Administrator",
    )
