"""Properties of FileUpload's one rule for names.

(a) every name is either stored at exactly its NFC form inside the files directory, or refused with
Invalid on File and nothing written (no row, no file, no temporary file); (b) ordinary names are always
accepted, so (a) cannot pass by refusing everything; (c) a name holding any refused character, or that
Windows would alter or open as a device, or that starts or ends with any blank space (str.isspace: a
non-breaking space as much as an ASCII one), is refused, naming why; (d) folder segments follow the same
rule, and a first folder the server keeps for itself (`courses`, `.upload-*`, compared by their key) is
refused in every spelling; (e) the same holds through HTTP, where the name travels in a multipart header.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import Api, error

from storage import files, names
from storage.db import Database
from storage.errors import Invalid
from storage.models import CLI

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FOLDERS = (f"p{n}" for n in itertools.count())

# Every code point, unpaired surrogates included (hypothesis leaves them out unless told).
ANY_CHARACTER = st.characters(exclude_categories=())
# Pieces that break names when put anywhere in them, or at their ends.
HOSTILE = st.sampled_from(
    [".", "..", "/", "\\", " ", "\x00", "\n", "\x7f", "\u200b", "\u202e", "\ufeff", "\u2028", ":", "?", "*", "|", "CON"]
)
SAFE_PUNCTUATION = "#&()[]{}!@$%+,;=~'-_"
# Letters, marks and digits of every script, as names in flows have them.
WORD_CHARACTER = st.characters(categories=["L", "M", "N"])


@st.composite
def ordinary_names(draw: st.DrawFn) -> str:
    """Names a flow would send: words of any script with spaces, dots and safe punctuation inside."""
    inner = draw(st.text(st.one_of(WORD_CHARACTER, st.sampled_from(SAFE_PUNCTUATION + " .")), max_size=40))
    first = draw(st.one_of(WORD_CHARACTER, st.sampled_from(SAFE_PUNCTUATION)))
    last = draw(st.one_of(WORD_CHARACTER, st.sampled_from(SAFE_PUNCTUATION)))
    name = unicodedata.normalize("NFC", first + inner + last)
    assume(name.split(".", 1)[0].rstrip(" ").upper() not in files.RESERVED_NAMES)
    assume(len(name.encode()) <= files.MAX_NAME_BYTES)
    return name


ANY_NAME = st.one_of(
    st.text(ANY_CHARACTER, max_size=20),
    st.lists(st.one_of(st.text(ANY_CHARACTER, max_size=4), HOSTILE, ordinary_names()), max_size=5).map("".join),
    st.text(st.sampled_from("é\u0301e\u00e9中 ."), min_size=80, max_size=140),  # near 255 bytes, NFC-sensitive
)


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, Path]]:
    root = tmp_path_factory.mktemp("names")
    db = Database(root / "t.db")
    db.migrate()
    yield db, root / "files"
    db.close()


def store(place: tuple[Database, Path], folder: str, name: str) -> dict[str, Any]:
    db, files_dir = place
    upload = files.receive(files_dir, [name.encode("utf-8", "surrogatepass")], 1 << 20)
    return files.store(db, CLI, files_dir, folder, name, "text/plain", upload)


def check_round_trip_or_nothing(place: tuple[Database, Path], folder: str, name: str) -> bool:
    """Store `name`; assert property (a); return whether it was accepted."""
    db, files_dir = place
    before = listing(files_dir)
    rows = db.conn.execute("SELECT count(*) FROM files").fetchone()[0]
    try:
        info = store(place, folder, name)
    except Invalid as exc:
        assert exc.target == "File", exc.message
        assert listing(files_dir) == before
        assert db.conn.execute("SELECT count(*) FROM files").fetchone()[0] == rows
        return False
    nfc = unicodedata.normalize("NFC", name)
    assert (info["Path"], info["FileName"]) == (f"{folder}/{nfc}", nfc)
    stored = files_dir / folder / nfc
    assert stored.resolve().parent == (files_dir / folder).resolve()
    assert stored.read_bytes() == name.encode("utf-8", "surrogatepass")
    assert listing(files_dir) - before <= {folder, f"{folder}/{nfc}"}
    assert not [p for p in files_dir.iterdir() if p.name.startswith(files.TEMP_PREFIX)]
    return True


@SETTINGS
@given(name=ANY_NAME)
def test_every_name_is_stored_at_its_nfc_form_or_refused_with_nothing_written(
    place: tuple[Database, Path], name: str
) -> None:
    """Whatever name a flow sends, the file lands at exactly NFC(name) in its folder, or nothing is written."""
    accepted = check_round_trip_or_nothing(place, next(FOLDERS), name)
    assert accepted == (files.name_problem(unicodedata.normalize("NFC", name)) is None)


@settings(SETTINGS, max_examples=100)  # each accepted name is a committed write
@given(name=ordinary_names())
def test_ordinary_names_are_always_accepted(place: tuple[Database, Path], name: str) -> None:
    """Names of letters, digits, marks, spaces, dots and common punctuation in any script are stored."""
    assert check_round_trip_or_nothing(place, next(FOLDERS), name), files.name_problem(name)


REFUSED_CHARACTER = st.one_of(
    st.sampled_from(sorted(files.SEPARATORS | files.WINDOWS_CHARACTERS)),
    st.characters(categories=["Cc", "Cf", "Zl", "Zp"]),
)


@SETTINGS
@given(name=ordinary_names(), character=REFUSED_CHARACTER, at=st.integers(min_value=0))
def test_a_refused_character_anywhere_is_named_in_the_400(
    place: tuple[Database, Path], name: str, character: str, at: int
) -> None:
    """A separator, control, invisible or Windows-refused character anywhere in a name refuses it, naming it."""
    at %= len(name) + 1
    hostile = name[:at] + character + name[at:]
    with pytest.raises(Invalid) as refused:
        store(place, next(FOLDERS), hostile)
    message = refused.value.message
    assert refused.value.target == "File"
    assert f"'{character}'" in message or f"U+{ord(character):04X}" in message or "bytes long" in message


@SETTINGS
@given(
    name=ordinary_names(),
    change=st.sampled_from(["trailing dot", "trailing space", "leading space", "device name"]),
    device=st.sampled_from(sorted(files.RESERVED_NAMES)),
    case=st.sampled_from([str.upper, str.lower, str.title]),
)
def test_names_windows_would_alter_or_open_as_a_device_are_refused(
    place: tuple[Database, Path], name: str, change: str, device: str, case: Any
) -> None:
    """A trailing dot or space, a leading space, or a device name stem (any case, any extension) is refused."""
    hostile = {
        "trailing dot": name + ".",
        "trailing space": name + " ",
        "leading space": " " + name,
        "device name": case(device) + "." + name,
    }[change]
    with pytest.raises(Invalid) as refused:
        store(place, next(FOLDERS), hostile)
    said = {"trailing dot": "ends with a dot", "trailing space": "ends with a space", "leading space": "starts with"}
    assert said.get(change, "reserved device name") in refused.value.message or "bytes long" in refused.value.message


# Every character str.isspace accepts: ASCII space, no-break spaces, the en/em/thin spaces, tabs and the rest.
BLANK = st.sampled_from([c for c in map(chr, range(0x110000)) if c.isspace()])


@SETTINGS
@given(name=ordinary_names(), blank=BLANK, leading=st.booleans())
def test_blank_space_at_either_end_is_refused_like_an_ascii_space(
    place: tuple[Database, Path], name: str, blank: str, leading: bool
) -> None:
    """A name that starts or ends with any Unicode blank space (U+00A0, U+3000, ...) is refused, as a space is."""
    hostile = blank + name if leading else name + blank
    with pytest.raises(Invalid) as refused:
        store(place, next(FOLDERS), hostile)
    message = refused.value.message
    said = "starts with a space" if leading else "ends with a space"
    assert said in message or f"U+{ord(blank):04X}" in message or "bytes long" in message, message
    assert refused.value.target == "File"


# Spellings that fold to the reserved names: any case, and the long s that case folding turns into s.
SPELLINGS = {"s": "sS\u017f"}


@st.composite
def reserved_spellings(draw: st.DrawFn) -> str:
    """`courses` or `.upload-<anything>` spelled in any case, with the long s where an s is."""
    word = draw(st.sampled_from(["courses", ".upload-"]))
    spelled = "".join(draw(st.sampled_from(SPELLINGS.get(c, c + c.upper()))) for c in word)
    return spelled + (draw(ordinary_names()) if word == ".upload-" else "")


@settings(SETTINGS, max_examples=150)  # a pure check: fewer examples cover the spellings
@given(first=st.one_of(reserved_spellings(), ANY_NAME))
def test_a_first_folder_the_server_keeps_is_refused_in_every_spelling(first: str) -> None:
    """`courses/...` and `.upload-*/...` are refused naming FileUploadUrl in any spelling whose key is theirs,
    and a first folder is refused for being reserved only then."""
    assume("/" not in first and files.name_problem(unicodedata.normalize("NFC", first)) is None)
    key = names.key(first)
    reserved = key == "courses" or key.startswith(".upload-")
    try:
        files.check_folder(f"{first}/x")
    except Invalid as exc:
        assert exc.target == "FileUploadUrl"
        assert reserved and "reserved" in exc.message, exc.message
        return
    assert not reserved


@SETTINGS
@given(segment=ANY_NAME)
def test_folder_segments_follow_the_same_rule_as_file_names(segment: str) -> None:
    """A text is accepted as a folder segment exactly when it is accepted as a file name, at the same NFC form."""
    assume("/" not in segment)  # a '/' makes two segments of a folder, and is refused in a file name
    try:
        as_name: str | None = files.check_file_name(segment)
    except Invalid:
        as_name = None
    try:
        folder: str | None = files.check_folder(f"certificates/{segment}")
    except Invalid as exc:
        assert exc.target == "FileUploadUrl"
        folder = None
    assert folder == (None if as_name is None else f"certificates/{as_name}")


BOUNDARY = "prop-boundary"
# What a multipart header can carry: no CR or LF (they end the header), no unpaired surrogates (not UTF-8).
HEADER_CHARACTER = st.characters(exclude_categories=["Cs"], exclude_characters="\r\n")


def file_part(name: str) -> dict[str, Any]:
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="File"; filename="{quoted}"\r\n\r\n'.encode()
        + b"content\r\n"
        + f"--{BOUNDARY}--\r\n".encode()
    )
    return {"content": body, "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    name=st.one_of(
        st.text(HEADER_CHARACTER, max_size=20),
        st.lists(st.one_of(st.text(HEADER_CHARACTER, max_size=4), HOSTILE, ordinary_names()), max_size=4)
        .map("".join)
        .filter(lambda n: "\n" not in n),
    ),
)
def test_names_through_http_round_trip_or_are_400(api: Api, name: str) -> None:
    """Through the API, a name sent in the File part's header is stored at exactly its NFC form, or refused
    with a 400 on File and nothing written; an acceptable name is never refused."""
    folder = next(FOLDERS)
    before = listing(api.settings.files_dir)
    rows = api.db.conn.execute("SELECT count(*) FROM files").fetchone()[0]
    response = api.post(f"/{folder}", **file_part(name))
    nfc = unicodedata.normalize("NFC", name)
    if files.name_problem(nfc) is None:
        assert response.status_code == 200, response.text
        assert response.json()["Path"] == f"{folder}/{nfc}"
        assert (api.settings.files_dir / folder / nfc).read_bytes() == b"content"
    else:
        assert response.status_code == 400, response.text
        assert error(response)["target"] == "File"
        assert listing(api.settings.files_dir) == before
        assert api.db.conn.execute("SELECT count(*) FROM files").fetchone()[0] == rows
