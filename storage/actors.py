"""Who a request acts as: the API key itself, or the user named by LMS365-User-Id."""

from __future__ import annotations

from storage import lookups
from storage.db import Database
from storage.errors import Invalid, excerpt
from storage.models import Actor, ApiKey

HEADER = "LMS365-User-Id"
# A user Id or DirectoryObjectId is a GUID: 36 characters, 38 with braces; anything longer names no one.
MAX_REFERENCE = 64


def resolve_actor(db: Database, key: ApiKey, user_ref: str | None) -> Actor:
    """Who a request acts as: the key itself (`user_ref` None) or the live user `user_ref` names (their Id or
    DirectoryObjectId, as LMS365-User-Id carries it).

    A Full Control key acting as itself is an administrator; a Read Only key reads everything the API lists but
    is never an administrator, whoever it names. A user acts with their Role, capped by the key's access.
    Raises Invalid (target `LMS365-User-Id`) when the header is present but empty, too long, or names no live
    user: a request never falls back to acting as the key.
    """
    full = key.access == "full"
    if user_ref is None:
        return Actor(kind="apikey", api_key_id=key.id, is_admin=full, reads_all=True)
    ref = user_ref.strip()
    if not ref:
        raise Invalid(
            f"{HEADER} is empty: give a user Id or DirectoryObjectId, or leave the header out to act as the API key",
            target=HEADER,
        )
    row = lookups.user_by_reference(db.conn, ref) if len(ref) <= MAX_REFERENCE else None
    if row is None:
        raise Invalid(f"{HEADER} {excerpt(ref)} names no user: give a user Id or a DirectoryObjectId", target=HEADER)
    administrator = row["role"] == "Administrator"
    return Actor(
        kind="user",
        api_key_id=key.id,
        user_id=row["id"],
        login_name=row["login_name"],
        is_admin=administrator and full,
        reads_all=administrator,
    )


def same_user(db: Database, actor: Actor, user_ref: str) -> bool:
    """Whether `user_ref` (an Id or DirectoryObjectId) names the user `actor` acts as."""
    ref = user_ref.strip()
    if actor.kind != "user" or not ref or len(ref) > MAX_REFERENCE:
        return False
    row = lookups.user_by_reference(db.conn, ref)
    return row is not None and row["id"] == actor.user_id
