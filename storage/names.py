"""Names that identify something (logins, e-mails, tags, Urls): what they may contain, and the key they compare by."""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from storage.errors import Invalid

# Unicode's Default_Ignorable_Code_Point, as DerivedCoreProperties-15.0.0.txt lists it (Unicode 15.0.0,
# 2022-08-05): characters a renderer shows as nothing unless it supports them, whatever their category.
# Besides format characters (which _REFUSED_CATEGORIES already catches) they are letters and marks that
# draw nothing: the Hangul fillers, the Khmer inherent vowels, the combining grapheme joiner, and the
# variation selectors, which change the look of the character before them or, after one they do not
# apply to (`Safety` + U+FE0F), do nothing visible. Python 3.11's unicodedata is 14.0.0; the ranges are
# the same there for every character it assigns (tests/properties/test_login_names.py rebuilds them from
# its categories), and characters it does not assign are refused as unassigned anyway.
_DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),  # Cf SOFT HYPHEN
    (0x034F, 0x034F),  # Mn COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),  # Cf ARABIC LETTER MARK
    (0x115F, 0x1160),  # Lo HANGUL CHOSEONG FILLER..HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # Mn KHMER VOWEL INHERENT AQ..KHMER VOWEL INHERENT AA
    (0x180B, 0x180D),  # Mn MONGOLIAN FREE VARIATION SELECTOR ONE..THREE
    (0x180E, 0x180E),  # Cf MONGOLIAN VOWEL SEPARATOR
    (0x180F, 0x180F),  # Mn MONGOLIAN FREE VARIATION SELECTOR FOUR
    (0x200B, 0x200F),  # Cf ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # Cf LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),  # Cf WORD JOINER..INVISIBLE PLUS
    (0x2065, 0x2065),  # Cn <reserved-2065>
    (0x2066, 0x206F),  # Cf LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0x3164, 0x3164),  # Lo HANGUL FILLER
    (0xFE00, 0xFE0F),  # Mn VARIATION SELECTOR-1..VARIATION SELECTOR-16
    (0xFEFF, 0xFEFF),  # Cf ZERO WIDTH NO-BREAK SPACE
    (0xFFA0, 0xFFA0),  # Lo HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),  # Cn <reserved-FFF0>..<reserved-FFF8>
    (0x1BCA0, 0x1BCA3),  # Cf SHORTHAND FORMAT LETTER OVERLAP..SHORTHAND FORMAT UP STEP
    (0x1D173, 0x1D17A),  # Cf MUSICAL SYMBOL BEGIN BEAM..MUSICAL SYMBOL END PHRASE
    (0xE0000, 0xE0000),  # Cn <reserved-E0000>
    (0xE0001, 0xE0001),  # Cf LANGUAGE TAG
    (0xE0002, 0xE001F),  # Cn <reserved-E0002>..<reserved-E001F>
    (0xE0020, 0xE007F),  # Cf TAG SPACE..CANCEL TAG
    (0xE0080, 0xE00FF),  # Cn <reserved-E0080>..<reserved-E00FF>
    (0xE0100, 0xE01EF),  # Mn VARIATION SELECTOR-17..VARIATION SELECTOR-256
    (0xE01F0, 0xE0FFF),  # Cn <reserved-E01F0>..<reserved-E0FFF>
)
DEFAULT_IGNORABLE = frozenset(chr(c) for first, last in _DEFAULT_IGNORABLE_RANGES for c in range(first, last + 1))

# Symbols that are not default-ignorable but draw an empty cell: BRAILLE PATTERN BLANK (a Braille cell
# with no dots, often used as an "invisible" name) and MUSICAL SYMBOL NULL NOTEHEAD.
BLANK_SYMBOLS = frozenset("\u2800\U0001d159")

# Cc controls (NUL, escape, ...), Cf format characters (zero-width space and joiners, word joiner, BOM,
# soft hyphen, bidi embeddings, overrides and isolates), Cs lone surrogates, Cn unassigned code points
# and noncharacters, and the line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})

_REFUSED = DEFAULT_IGNORABLE | BLANK_SYMBOLS


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

    `text` is a name already trimmed of whitespace at its ends (`clean` does that). Refused:
    - controls and format characters (invisible, or reordering what is shown), lone surrogates,
      unassigned code points and noncharacters, line and paragraph separators;
    - every other Default_Ignorable_Code_Point (variation selectors, Hangul fillers, the combining
      grapheme joiner, tag characters) and symbols that draw a blank (U+2800, U+1D159);
    - spaces other than U+0020 (no-break, ideographic, thin, ...): inside a name they pass for an
      ordinary space.
    Each makes two different names look the same, or cannot be stored as UTF-8. Names that need a
    zero-width joiner or non-joiner (emoji sequences, some Persian and Indic spellings) stay refused:
    the joiners are format characters, and a name with one looks like the name without it.
    """
    for index, char in enumerate(text):
        if char in _REFUSED or unicodedata.category(char) in _REFUSED_CATEGORIES or _odd_space(char):
            return index, char
    return None


def _odd_space(char: str) -> bool:
    return char != " " and unicodedata.category(char) == "Zs"


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
        fix = (
            "use an ordinary space (U+0020) between words"
            if _odd_space(char)
            else "remove invisible, blank, control and unassigned characters"
        )
        raise Invalid(f"{target} contains {describe(char)} at character {offset + index + 1}: {fix}", target=target)


def clean(value: Any, target: str, *, limit: int | None = None, required: bool = True) -> str:
    """A name as given, trimmed and composed (NFC), for storing and showing.

    Leading and trailing whitespace (any Unicode space, as `str.strip` knows it) is dropped, so a stored
    name never starts or ends with one. Raises Invalid naming `target` when the value is not a
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


# The ASCII characters RFC 3986 section 2 lets a URI hold as they are: unreserved, reserved (gen-delims
# and sub-delims) and the `%` of percent-encodings. Other ASCII (space, `"<>\^`{|}`) must be encoded;
# a backslash in particular is read as `/` by browsers and not by urlsplit, so `https://a\@b` would name
# one host to us and another to the user. Characters beyond ASCII are allowed as in an IRI (RFC 3987),
# under the rules of `refused`.
_URI_ASCII = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def web_url(value: Any, target: str, *, limit: int | None = None) -> str | None:
    """An absolute http or https URL, trimmed and composed (NFC) but otherwise as given; None when the
    value is missing, null or blank (the property is cleared).

    Raises Invalid naming `target` when the value is not a string, holds a character `refused` turns
    away or ASCII that RFC 3986 section 2 allows only percent-encoded (space, backslash, ...), has no
    scheme (a relative `/path` or `//host/path`) or one other than http and https (`javascript:`,
    `data:`, `file:`), has no host (`https:host`, `https:///path`), carries credentials (`user:pass@`
    or `user@`: RFC 3986 section 3.2.1 deprecates them, and `https://good.example@evil.example` shows
    one host and opens another), or has a port that is not a number up to 65535.
    """
    text = clean(value, target, limit=limit, required=False)
    if not text:
        return None
    # Messages do not echo the URL: it may carry a password or a meeting's access token.
    scheme = _SCHEME.match(text)
    if scheme is None:
        raise Invalid(f"{target} must be an absolute http or https URL, such as https://host/path", target=target)
    if scheme.group(1).lower() not in ("http", "https"):
        raise Invalid(
            f"{target} must be an http or https URL, such as https://host/path (not {scheme.group(1)}:)",
            target=target,
        )
    for index, char in enumerate(text):
        if char < "\x80" and char not in _URI_ASCII:
            raise Invalid(
                f"{target} contains {describe(char)} at character {index + 1}: a URL holds it only" " percent-encoded",
                target=target,
            )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError as exc:
        raise Invalid(f"{target} is not a valid URL ({exc}): check its host and port", target=target) from None
    if "@" in parts.netloc:
        raise Invalid(
            f"{target} must not carry credentials (user:password@ before the host): remove them",
            target=target,
        )
    if not parts.hostname:
        raise Invalid(f"{target} has no host: write it as {scheme.group(1)}://host/path", target=target)
    return text
