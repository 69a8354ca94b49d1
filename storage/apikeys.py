"""API keys: created with the CLI, stored only as SHA-256 hashes, Read Only or Full Control, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3

from storage import events
from storage.db import Database, iso, new_id
from storage.errors import Invalid, NotFound
from storage.models import CLI, Actor, ApiKey, NewApiKey

KEY_PREFIX = "cw_"


def hash_secret(secret: str) -> str:
    """Keys are 256-bit random strings, so a fast unsalted hash is enough: no guessing is feasible."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        access=row["access"],
        key_prefix=row["key_prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def create(db: Database, name: str, access: str = "full", actor: Actor = CLI) -> NewApiKey:
    """Create a key; return it with its secret, which is never stored and cannot be shown again.

    Raises Invalid for an empty name or an access other than `full` or `read`.
    """
    if not name.strip():
        raise Invalid("the key needs a name", target="name")
    if access not in ("full", "read"):
        raise Invalid(f"access must be 'full' or 'read', not {access!r}", target="access")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    now = db.clock()
    key_id = new_id()
    with db.write() as conn:
        conn.execute(
            "INSERT INTO api_keys (id, name, access, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, name.strip(), access, hash_secret(secret), secret[:10], iso(now)),
        )
        events.record(conn, "ApiKeyCreated", actor, now, {"ApiKeyId": key_id, "Name": name, "Access": access})
        row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return NewApiKey(_key(row), secret)


def authenticate(db: Database, secret: str) -> ApiKey | None:
    """Return the live key whose secret this is, or None (unknown or revoked)."""
    digest = hash_secret(secret)
    row = db.conn.execute("SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (digest,)).fetchone()
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    return _key(row)


def list_keys(db: Database) -> list[ApiKey]:
    """Return every key, revoked ones included, oldest first."""
    with db.read() as conn:
        return [_key(r) for r in conn.execute("SELECT * FROM api_keys ORDER BY created_at, id")]


def revoke(db: Database, key_id: str, actor: Actor = CLI) -> ApiKey:
    """Revoke a key (idempotent); return it. Raises NotFound for an unknown id."""
    now = db.clock()
    with db.write() as conn:
        row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", target="id")
        if row["revoked_at"] is None:
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (iso(now), key_id))
            events.record(conn, "ApiKeyRevoked", actor, now, {"ApiKeyId": key_id, "Name": row["name"]})
        row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return _key(row)
