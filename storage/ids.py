"""Entity keys as clients write them: a GUID in any case, bare or in braces, and the one form ids are stored in.

Every coursewire id is a GUID kept as 36 lower-case characters (`3f2504e0-4f89-41d3-9a0c-0305e82c3301`,
storage.db.new_id). Clients copy ids from places that spell them otherwise: SQL Server and .NET print them in
upper case, SharePoint list settings and registry-style tools wrap them in braces (`{3F2504E0-...}`). Those are
the same id (RFC 9562 §4: GUIDs are compared as numbers; the hex digits are case-insensitive on input and
lower case on output). Text that is not a GUID in one of these spellings is left as it is, for the domain to
refuse or not find.
"""

from __future__ import annotations

import re

_HEX = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_GUID = re.compile(rf"(?P<bare>{_HEX})|\{{(?P<braced>{_HEX})\}}")
# An OData key in a path may also be quoted (`Courses('...')`) or, as OData v2 writes Edm.Guid literals,
# `guid'...'`; quotes around braces (`'{...}'`) come from expressions that quote whatever they are given.
_KEY = re.compile(r"(?:guid)?'(?P<quoted>.*)'", re.IGNORECASE)


def canonical(value: str) -> str:
    """The stored form of a GUID written in any case, bare or in braces, with blanks around it:
    `' {66220A70-7C4D-4E5B-9A0F-3B2C1D0E9F8A} '` -> `'66220a70-7c4d-4e5b-9a0f-3b2c1d0e9f8a'`.

    Returns `value` unchanged when it is not such a GUID (an empty string, a login name, 32 hex digits
    without hyphens): ids are never guessed at.
    """
    match = _GUID.fullmatch(value.strip())
    if match is None:
        return value
    return (match.group("bare") or match.group("braced")).lower()


def is_guid(value: str) -> bool:
    """Whether `value` is a GUID in one of the spellings canonical() accepts."""
    return _GUID.fullmatch(value.strip()) is not None


def canonical_key(text: str) -> str:
    """An OData key as a path writes it (`X`, `'X'`, `{X}`, `'{X}'`, `guid'X'`) in its stored form when X is a
    GUID; any other key unchanged (it names nothing, and the lookup says so)."""
    quoted = _KEY.fullmatch(text.strip())
    inner = quoted.group("quoted") if quoted else text
    return canonical(inner) if is_guid(inner) else text
