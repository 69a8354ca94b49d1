"""Secrets at rest: callback URLs and signing secrets are stored encrypted with a key kept outside the database.

The key is a Fernet key (AES-128-CBC with HMAC-SHA256) read from COURSEWIRE_SECRET_KEY, or from a file
next to the database (`secret.key`, created on first use, readable by its owner only). A copy of the
database alone reveals no callback URL and no signing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret.key"


class SecretKeyError(RuntimeError):
    """The encryption key is missing, malformed, or not the one the data was sealed with."""


class SecretBox:
    """Encrypts and decrypts short strings with one key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(f"not a valid secret key (32 url-safe base64 bytes expected): {exc}") from None
        self._key = bytes(key)

    @classmethod
    def for_database(cls, database_path: str, environ: dict[str, str] | None = None) -> SecretBox:
        """The key from COURSEWIRE_SECRET_KEY, else `secret.key` beside the database (created if absent)."""
        env = os.environ if environ is None else environ
        if env.get("COURSEWIRE_SECRET_KEY"):
            return cls(env["COURSEWIRE_SECRET_KEY"].encode())
        if database_path == ":memory:":
            return cls(Fernet.generate_key())
        path = Path(database_path).parent / KEY_FILE
        if not path.exists():
            # Written whole under another name, then linked: a process starting at the same moment
            # either wins the link or reads the winner's complete key, never a half-written file.
            path.parent.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".{KEY_FILE}.{os.getpid()}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return cls(path.read_bytes().strip())

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret does not decrypt with this key (COURSEWIRE_SECRET_KEY changed?)"
            ) from None

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for another use (`skiptoken`), HMAC-SHA256 of `purpose` under this key: every
        process sharing the key derives the same one, and it reveals nothing of the key itself."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()
