"""Request handlers, one module per spec tag; each function is the snake_case of an operationId."""

from __future__ import annotations

from typing import Any

OPTION_NAMES = ("filter", "select", "expand", "orderby", "top", "skip", "count", "skiptoken")


def key(value: str) -> str:
    """An OData key as written in a path: bare or single-quoted (`Courses('x')`)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    return value


def options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The OData query options connexion passed (it strips the `$`), keyed with their `$` again."""
    return {f"${name}": kwargs[name] for name in OPTION_NAMES if kwargs.get(name) is not None}
