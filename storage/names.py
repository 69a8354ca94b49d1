"""Names that identify something (logins, e-mails, tags, Urls): what they may contain, and the key they compare by."""

from __future__ import annotations

import unicodedata
from typing import Any

from storage.errors import Invalid

# Characters that draw nothing but are letters or marks, so the category test below does not catch them
# (Unicode's Default_Ignorable_Code_Point minus the variation selectors, which follow a visible base).
_BLANK_LETTERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")

# Cc controls (NUL, escape, ...), Cf format characters (zero-width space and joiners, word joiner, BOM,
# soft hyphen, bidi embeddings, overrides and isolates), Cs lone surrogates, Cn unassigned code points
# and noncharacters, and the line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def key(text: str) -> str:
    """The comparison key of a name: NFC, then full case folding, then NFC again.

    Two names with the same key are the same name: `josé` composed and decomposed, `Straße` and
    `STRASSE`, `Ann` and `ANN`. Case folding is Unicode's full folding (`str.casefold`, CaseFolding.txt
    status C+F); it can undo composition (`ǰ` folds to `j` + combining caron), hence the second NFC.
    Unicode's stability policies keep the key of a string of assigned characters the same in later
    Unicode versions; `refused` turns away unassigned ones, so stored keys never go stale.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


def stored_key(text: str | None) -> str | None:
    """The key of a stored value as the migration backfills it: None for a missing or blank value."""
    if text is None or not text.strip():
        return None
    return key(text.strip())


def refused(text: str) -> tuple[int, str] | None:
    """The first character a name may not contain, as (0-based index, character); None when clean.

    Refused: controls and format characters (invisible, or reordering what is shown), lone surrogates,
    unassigned code points and noncharacters, line and paragraph separators, and letters that draw nothing
    (Hangul fillers). Either makes two different names look the same, or cannot be stored as UTF-8.
    """
    for index, char in enumerate(text):
        if char in _BLANK_LETTERS or unicodedata.category(char) in _REFUSED_CATEGORIES:
            return index, char
    return None


def describe(char: str) -> str:
    """`U+200B (ZERO WIDTH SPACE)`: a character as a message shows it."""
    code = f"U+{ord(char):04X}"
    category = unicodedata.category(char)
    name = unicodedata.name(char, "")
    if name:
        return f"{code} ({name})"
    if category == "Cs":
        return f"{code} (a lone surrogate)"
    if category == "Cn":
        return f"{code} (a noncharacter or unassigned code point)"
    return f"{code} (a control character)"


def check(text: str, target: str, offset: int = 0) -> None:
    """Raise Invalid naming `target` and the first refused character of `text`, if any.

    `offset` is added to the reported position (1-based), for text that was trimmed on the left.
    """
    found = refused(text)
    if found is not None:
        index, char = found
        raise Invalid(
            f"{target} contains {describe(char)} at character {offset + index + 1}: remove invisible, control"
            " and unassigned characters",
            target=target,
        )


def clean(value: Any, target: str, *, limit: int | None = None, required: bool = True) -> str:
    """A name as given, trimmed and composed (NFC), for storing and showing.

    Leading and trailing whitespace is dropped. Raises Invalid naming `target` when the value is not a
    string, is empty and `required`, is longer than `limit` characters, or contains a refused character.
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise Invalid(f"{target} must be a string", target=target)
    text = value.strip()
    # Composition shortens text by a few characters at most (Hangul jamo, stacked marks): a longer value
    # is refused before anything walks it.
    if limit is not None and len(text) > 4 * limit:
        raise Invalid(f"{target} is longer than {limit} characters", target=target)
    check(text, target, offset=len(value) - len(value.lstrip()))
    text = unicodedata.normalize("NFC", text)
    if required and not text:
        raise Invalid(f"{target} must not be empty", target=target)
    if limit is not None and len(text) > limit:
        raise Invalid(f"{target} is longer than {limit} characters", target=target)
    return text
