"""Unicode logins through the API: names that differ only in case or normalization form are one name (a
second create or a rename into it is a 409), and names holding a control, format or noncharacter are a
400 that changes nothing."""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from support import Api, error

from storage import names

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
serial = itertools.count()

# Letters (every script), marks (so decomposed and composed forms differ), digits, punctuation, symbols
# and inner spaces; whatever names.refused turns away (blank letters such as U+3164, variation selectors,
# U+2800) is filtered out.
PRINTABLE = st.characters(categories=["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd", "Pc", "Pd", "Po", "Sm", "So"])
texts = st.text(PRINTABLE, min_size=1, max_size=24).filter(lambda t: names.refused(t) is None)

CASES: dict[str, Callable[[str], str]] = {
    "same": str,
    "upper": str.upper,
    "lower": str.lower,
    "title": str.title,
    "swapcase": str.swapcase,
    "casefold": str.casefold,
}
FORMS = ("NFC", "NFD")

NONCHARACTERS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [
    chr(plane * 0x10000 + low) for plane in range(17) for low in (0xFFFE, 0xFFFF)
]
# Everything names.refused turns away except lone surrogates, which cannot travel as UTF-8 JSON (the edge
# refuses the body; tests/connector/test_identity_names.py checks storage refuses them too).
REFUSED = st.one_of(
    st.characters(categories=["Cc", "Cf", "Zl", "Zp"]),
    st.characters(categories=["Zs"], exclude_characters=" "),  # refused inside a name (trimmed at its ends)
    st.sampled_from(NONCHARACTERS),
    st.sampled_from(sorted(names.DEFAULT_IGNORABLE)),
    st.sampled_from(sorted(names.BLANK_SYMBOLS)),
)


@st.composite
def same_name_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two spellings of one name: the same text in another case and normalization form."""
    text = draw(texts)
    first, second = (
        unicodedata.normalize(draw(st.sampled_from(FORMS)), CASES[draw(st.sampled_from(sorted(CASES)))](text))
        for _ in range(2)
    )
    # Case mapping is not always undone by folding (U+0131 dotless i upper-cases to I): such pairs are two names.
    assume(names.key(first) == names.key(second) and len(first) <= 200 and len(second) <= 200)
    return first, second


def unique(pair: tuple[str, str]) -> tuple[str, str]:
    """The pair behind a prefix no other example uses (a `-` composes with nothing, so keys stay equal)."""
    prefix = f"p{next(serial)}-"
    return prefix + pair[0], prefix + pair[1]


@st.composite
def with_refused_inside(draw: st.DrawFn) -> tuple[str, str]:
    """A name with one refused character inside it (not at an end, where blanks would be trimmed)."""
    text = draw(texts.filter(lambda t: len(t) >= 2))
    char = draw(REFUSED)
    at = draw(st.integers(1, len(text) - 1))
    return text[:at] + char + text[at:], char


def count(api: Api) -> int:
    return int(api.db.conn.execute("SELECT count(*) FROM users").fetchone()[0])


def assert_status(response: Any, status: int, target: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err = error(response)
    assert err["target"] == target, err
    return err


@SETTINGS
@given(pair=same_name_pairs())
def test_a_second_create_with_the_same_key_is_a_409(api: Api, pair: tuple[str, str]) -> None:
    """Whatever the script, a login or e-mail in another case or normalization form names the user who has
    it: a second create is a 409 naming the holder, and a lookup by it finds that user."""
    first, second = unique(pair)
    holder = api.ok("POST", "/odata/v2/Users", json={"LoginName": first, "Email": f"{first}@x.example"})
    before = count(api)
    err = assert_status(api.post("/odata/v2/Users", json={"LoginName": second}), 409, "LoginName")
    assert holder["Id"] in err["message"]
    err = assert_status(
        api.post("/odata/v2/Users", json={"LoginName": f"other-{first}", "Email": f"{second}@X.EXAMPLE"}), 409, "Email"
    )
    assert holder["Id"] in err["message"]
    assert count(api) == before
    report = api.ok("POST", "/odata/v2/Users", json={"LoginName": f"report-{first}", "ManagerLoginName": second})
    assert report["ManagerId"] == holder["Id"]


@SETTINGS
@given(pair=same_name_pairs(), other=texts)
def test_a_rename_into_a_taken_key_is_a_409_and_into_ones_own_is_fine(
    api: Api, pair: tuple[str, str], other: str
) -> None:
    """PATCH follows POST: renaming a user into another's name in any case or form is refused and changes
    nothing; a user may respell their own name."""
    first, second = unique(pair)
    holder = api.ok("POST", "/odata/v2/Users", json={"LoginName": first})
    mover = api.ok("POST", "/odata/v2/Users", json={"LoginName": f"r{next(serial)}-{other}"})
    path = f"/odata/v2/Users({mover['Id']})"
    err = assert_status(api.patch(path, json={"LoginName": second}), 409, "LoginName")
    assert holder["Id"] in err["message"]
    assert api.ok("GET", path)["LoginName"] == mover["LoginName"]
    respelled = api.ok("PATCH", f"/odata/v2/Users({holder['Id']})", json={"LoginName": second})
    assert respelled["LoginName"] == unicodedata.normalize("NFC", second.strip())


@SETTINGS
@given(spoof=with_refused_inside())
def test_a_name_with_a_control_or_format_character_is_a_400_that_creates_nothing(
    api: Api, spoof: tuple[str, str]
) -> None:
    """A login or e-mail holding a control, format (zero-width, bidi), noncharacter, default-ignorable
    (variation selector, filler), blank symbol or non-ASCII space is a 400 naming the field and the code
    point, on create and on rename, and nothing is written."""
    name, char = spoof
    code = f"U+{ord(char):04X}"
    before = count(api)
    assert code in assert_status(api.post("/odata/v2/Users", json={"LoginName": name}), 400, "LoginName")["message"]
    email = api.post("/odata/v2/Users", json={"LoginName": f"e{next(serial)}", "Email": f"{name}@x.example"})
    assert code in assert_status(email, 400, "Email")["message"]
    assert count(api) == before
    user = api.ok("POST", "/odata/v2/Users", json={"LoginName": f"s{next(serial)}"})
    path = f"/odata/v2/Users({user['Id']})"
    assert code in assert_status(api.patch(path, json={"LoginName": name}), 400, "LoginName")["message"]
    assert api.ok("GET", path)["LoginName"] == user["LoginName"]


@settings(max_examples=500)
@given(text=st.text())
@example(text="\u01f0")  # ǰ folds to j + combining caron: only the second NFC composes it again
@example(text="\u1e9e\u0390")  # capital sharp s folds to ss; ΐ to three characters
def test_the_key_ignores_normalization_form_and_is_stable(text: str) -> None:
    """The key is the same for every normalization form of a text, is NFC itself, and keys to itself."""
    k = names.key(text)
    assert names.key(unicodedata.normalize("NFD", text)) == k
    assert names.key(unicodedata.normalize("NFC", text)) == k
    assert unicodedata.is_normalized("NFC", k)
    assert names.key(k) == k


# The inputs of Default_Ignorable_Code_Point's derivation that Python's unicodedata does not give, from
# PropList-15.0.0.txt: Variation_Selector, Other_Default_Ignorable_Code_Point, Prepended_Concatenation_Mark.
VARIATION_SELECTOR = [(0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF)]
OTHER_DEFAULT_IGNORABLE = [
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0000),
    (0xE0002, 0xE001F),
    (0xE0080, 0xE00FF),
    (0xE01F0, 0xE0FFF),
]
PREPENDED_CONCATENATION_MARK = [
    (0x0600, 0x0605),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
]
PREPENDED_CONCATENATION_MARK += [(0x110BD, 0x110BD), (0x110CD, 0x110CD)]


def code_points(ranges: list[tuple[int, int]]) -> set[str]:
    return {chr(c) for first, last in ranges for c in range(first, last + 1)}


def test_the_embedded_table_is_unicodes_default_ignorable_derivation() -> None:
    """names.DEFAULT_IGNORABLE is exactly what DerivedCoreProperties.txt derives (Other_Default_Ignorable_Code_Point
    + Cf + Variation_Selector - White_Space - FFF9..FFFB - 13430..13440 - Prepended_Concatenation_Mark),
    with Cf and White_Space taken from Python's own character data, so a mistyped range fails here."""
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    format_chars = {c for c in every if unicodedata.category(c) == "Cf"}
    derived = (code_points(OTHER_DEFAULT_IGNORABLE) | format_chars | code_points(VARIATION_SELECTOR)) - (
        {c for c in every if c.isspace()}
        | code_points([(0xFFF9, 0xFFFB), (0x13430, 0x13440)])
        | code_points(PREPENDED_CONCATENATION_MARK)
    )
    assert frozenset(derived) == names.DEFAULT_IGNORABLE


def test_every_default_ignorable_and_blank_character_is_refused_and_visible_text_is_not() -> None:
    """Whatever renders as nothing or as a blank is refused, each of them; ordinary letters, marks that
    draw (an accent), emoji without a selector and inner ASCII spaces are not."""
    for char in sorted(names.DEFAULT_IGNORABLE | names.BLANK_SYMBOLS):
        assert names.refused(f"a{char}b") == (1, char), f"U+{ord(char):04X}"
    for text in ("Safety", "Jos\u00e9", "Jose\u0301", "\u2764 team", "\u5b89\u5168 \u6559\u80b2", "\u2801"):
        assert names.refused(text) is None, text
