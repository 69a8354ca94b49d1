"""The storage exception tree: domain verbs raise these; only the HTTP edge maps them to status codes."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error a storage verb raises on purpose.

    `message` says what to fix; `target` names the input field at fault, when one is.
    """

    def __init__(self, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target


class Invalid(StorageError):
    """The input breaks a rule of the domain (a missing user login, an end before a start)."""


class NotFound(StorageError):
    """The entity named by the request does not exist (or is deleted)."""


class Conflict(StorageError):
    """The request is valid but clashes with the current state (already enrolled, Url taken)."""


class Forbidden(StorageError):
    """The acting user may not do this."""


def excerpt(value: object, limit: int = 60) -> str:
    """A short, printable rendering of a client's value for an error message.

    Strings longer than `limit` characters come back as their start and length
    (`'abc…' (2,000,000 characters)`), arrays and objects as their size only, so a message never
    echoes a large value whole and never costs more than `limit` characters of work to build.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{repr(value[:limit])[:-1]}…{repr(value[:limit])[-1]} ({len(value):,} characters)"
    if isinstance(value, list):
        return f"an array of {len(value):,} items"
    if isinstance(value, dict):
        return f"an object with {len(value):,} properties"
    if value is None or isinstance(value, bool):  # as the client wrote it: JSON's null, true, false
        return "null" if value is None else str(value).lower()
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


# Messages the server stores about what went wrong (a delivery's last error, a provisioning failure): the
# document declares them at most 4,096 characters, and an exception's text has no bound of its own.
MAX_STORED_MESSAGE = 4000


def clip(text: str | None, limit: int = MAX_STORED_MESSAGE) -> str | None:
    """`text` cut to at most `limit` characters (ending in `…` when cut); None stays None."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
