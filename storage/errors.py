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
