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
# and inner spaces; whatever names.refused turns away (blank letters such as U+3164) is filtered out.
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
    st.sampled_from(NONCHARACTERS),
    st.sampled_from(sorted(names._BLANK_LETTERS)),
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
    """A login or e-mail holding a control, format (zero-width, bidi), noncharacter or blank letter is a
    400 naming the field and the code point, on create and on rename, and nothing is written."""
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
