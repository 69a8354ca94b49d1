"""FileUpload: who may replace a file, which names are accepted, malformed parts, streaming and crash clean-up."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from support import Api, World, build_world, error, fake_resolve

from connector.app import create_app
from connector.background import Provisioner
from storage import files
from storage.db import Database
from storage.errors import Forbidden
from storage.models import CLI, Actor

BOUNDARY = "cw-test-boundary"


def part(
    content: bytes = b"%PDF-1.7",
    *,
    name: str = "File",
    filename: str | None = "cert.pdf",
    content_type: str | None = "application/pdf",
    disposition: bytes | None = None,
) -> bytes:
    """One multipart part, written by hand so tests control every byte of its headers (RFC 7578 section 4.2).

    The file name goes out as raw UTF-8 in a quoted string with `"` and `\\` backslash-escaped, as
    werkzeug reads it; `disposition` replaces the whole Content-Disposition value.
    """
    if disposition is None:
        disposition = f'form-data; name="{name}"'.encode()
        if filename is not None:
            escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition += f'; filename="{escaped}"'.encode()
    head = b"Content-Disposition: " + disposition + b"\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n".encode()
    return f"--{BOUNDARY}\r\n".encode() + head + b"\r\n" + content + b"\r\n"


def multipart(*parts: bytes, body: str = "content") -> dict[str, Any]:
    """Request arguments for a multipart/form-data body made of `parts` (`body="data"` for requests)."""
    return {
        body: b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(),
        "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    }


def upload(api: Api, path: str, *parts: bytes, user: str | None = None) -> Any:
    return api.post(path, user=user, **multipart(*(parts or (part(),))))


def listing(root: Path) -> set[str]:
    """Every file and folder under root, relative, so a test can say nothing was written."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def file_rows(api: Api) -> list[dict[str, Any]]:
    return [dict(row) for row in api.db.conn.execute("SELECT * FROM files ORDER BY path")]


@pytest.fixture
def world(api: Api) -> World:
    return build_world(api)


# --- who may replace a file ---------------------------------------------------------------------------


def test_a_learner_cannot_replace_another_learners_certificate(api: Api, world: World) -> None:
    """A learner uploading to the path of another learner's certificate gets 403 and the certificate stays."""
    path = f"/certificates/{world.uid('ann')}/upload"
    api.ok("POST", path, user=world.uid("ann"), **multipart(part(b"ann's")))
    replaced = upload(api, path, part(b"bob's"), user=world.uid("bob"))
    assert replaced.status_code == 403
    assert "only the user who uploaded it or an administrator" in error(replaced)["message"]
    assert (api.settings.files_dir / path.strip("/") / "cert.pdf").read_bytes() == b"ann's"
    assert [row["uploaded_by"] for row in file_rows(api)] == [world.uid("ann")]


def test_the_uploader_and_administrators_may_replace_a_file(api: Api, world: World) -> None:
    """The uploader replaces their own file; an administrator (user or the key itself) replaces anyone's,
    and the replaced file then belongs to whoever uploaded its current content."""
    path = "/certificates/shared/upload"
    stored = api.settings.files_dir / "certificates/shared/upload/cert.pdf"
    first = api.ok("POST", path, user=world.uid("ann"), **multipart(part(b"v1")))
    again = api.ok("POST", path, user=world.uid("ann"), **multipart(part(b"v2")))
    assert again["Id"] == first["Id"] and stored.read_bytes() == b"v2"
    api.ok("POST", path, user=world.uid("admin"), **multipart(part(b"v3")))
    assert stored.read_bytes() == b"v3"
    assert upload(api, path, part(b"v4"), user=world.uid("ann")).status_code == 403
    api.ok("POST", path, **multipart(part(b"v5")))  # the API key acting as itself is an administrator
    key_id = api.db.conn.execute("SELECT id FROM api_keys WHERE name = 'tests'").fetchone()[0]
    assert [row["uploaded_by"] for row in file_rows(api)] == [key_id]
    assert stored.read_bytes() == b"v5"


def test_a_learner_cannot_replace_a_file_uploaded_by_the_key(api: Api, world: World) -> None:
    """Files the API key uploaded as itself belong to the key: a learner acting through it cannot replace them."""
    api.ok("POST", "/templates/all", **multipart(part(b"template")))
    assert upload(api, "/templates/all", part(b"mine now"), user=world.uid("cid")).status_code == 403


def test_a_file_no_upload_recorded_is_replaced_by_administrators_only(api: Api, world: World) -> None:
    """A file put in the files directory by hand has no uploader: learners get 403, administrators may."""
    placed = api.settings.files_dir / "handbook" / "cert.pdf"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"by hand")
    assert upload(api, "/handbook", user=world.uid("ann")).status_code == 403
    assert placed.read_bytes() == b"by hand"
    api.ok("POST", "/handbook", user=world.uid("admin"), **multipart(part(b"by admin")))
    assert placed.read_bytes() == b"by admin"


def test_the_owner_check_runs_inside_the_write_transaction(db: Database, tmp_path: Path) -> None:
    """Two learners uploading to one path at the same moment cannot both pass the owner check."""
    files_dir = tmp_path / "files"
    arrived = threading.Barrier(2)
    write = db.write

    @contextmanager
    def write_after_both_arrived() -> Iterator[Any]:
        arrived.wait(timeout=10)  # both uploads are now past everything that runs before the transaction
        with write() as conn:
            yield conn

    db.write = write_after_both_arrived  # type: ignore[method-assign]
    outcomes: dict[str, str] = {}

    def send(user_id: str) -> None:
        actor = Actor(kind="user", api_key_id="k", user_id=user_id)
        received = files.receive(files_dir, iter([user_id.encode()]), 1024)
        try:
            files.store(db, actor, files_dir, "certificates/x", "cert.pdf", "application/pdf", received)
            outcomes[user_id] = "stored"
        except Forbidden:
            outcomes[user_id] = "forbidden"

    threads = [threading.Thread(target=send, args=(uid,)) for uid in ("ann", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes.values()) == ["forbidden", "stored"]
    winner = next(uid for uid, outcome in outcomes.items() if outcome == "stored")
    assert (files_dir / "certificates/x/cert.pdf").read_bytes() == winner.encode()


# --- malformed parts and collisions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((part(filename=None),), "has no file name"),
        ((part(filename=""),), "file name is empty"),
        ((part(name="file", filename="x.txt"),), "unexpected part 'file'"),
        ((), "no part named File"),
        ((part(), part()), "only one part named File"),
    ],
    ids=["no-filename", "empty-filename", "misnamed-part", "no-parts", "two-files"],
)
def test_a_missing_or_nameless_file_part_is_400_on_file(api: Api, parts: tuple[bytes, ...], expected: str) -> None:
    """A File part without a file name, with an empty one, missing, or sent twice is a 400 naming File."""
    response = api.post("/certificates/abc/upload", **multipart(*parts))
    assert response.status_code == 400, response.text
    assert error(response)["target"] == "File"
    assert expected in error(response)["message"]
    assert listing(api.settings.files_dir) == set()


def test_an_extra_part_is_400_naming_it(api: Api) -> None:
    """FileUpload takes one part named File; another part is refused by name, and nothing is written."""
    response = upload(api, "/certificates/abc/upload", part(), part(b"x", name="Note", filename=None))
    assert (response.status_code, error(response)["target"]) == (400, "Note")
    assert listing(api.settings.files_dir) == set()


def test_a_truncated_body_is_400_and_leaves_no_temporary_file(api: Api) -> None:
    """A body that ends inside the file part is refused and its partly written temporary file removed."""
    body = part(b"x" * 5000)[:-100]
    response = api.post(
        "/certificates/abc/upload",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert (response.status_code, error(response)["code"]) == (400, "BadRequest")
    assert listing(api.settings.files_dir) == set()


def test_uploads_refused_once_on_disk_leave_no_temporary_file(api: Api, world: World) -> None:
    """Uploads refused after their bytes reached disk (403 not the owner, 409 collision, 413) leave nothing behind."""
    api.ok("POST", "/certificates/abc", user=world.uid("ann"), **multipart(part(b"ann's")))
    before = listing(api.settings.files_dir)
    assert upload(api, "/certificates/abc", part(b"x" * 10_000), user=world.uid("bob")).status_code == 403
    assert upload(api, "/certificates", part(b"x", filename="abc")).status_code == 409
    too_big = part(b"x" * (api.settings.max_upload_bytes + 1))
    assert upload(api, "/certificates/abc", too_big, user=world.uid("ann")).status_code == 413
    assert listing(api.settings.files_dir) == before


def test_an_upload_dropped_without_being_stored_removes_its_temporary_file(tmp_path: Path) -> None:
    """Whatever path a failing request takes, its temporary file goes when the upload is no longer referenced."""
    received = files.receive(tmp_path, [b"partial"], 1024)
    assert [p.name for p in tmp_path.iterdir()] == [received.path.name]
    del received
    assert list(tmp_path.iterdir()) == []


def test_a_name_colliding_with_a_folder_is_409_on_file(api: Api) -> None:
    """Uploading `cert.pdf` where a folder `cert.pdf` exists is 409 naming File, not a 500."""
    api.ok("POST", "/docs/cert.pdf/inner", **multipart(part(b"inner")))
    response = upload(api, "/docs")
    assert (response.status_code, error(response)["target"]) == (409, "File")
    assert "folder" in error(response)["message"]
    assert (api.settings.files_dir / "docs/cert.pdf/inner/cert.pdf").read_bytes() == b"inner"


def test_a_folder_colliding_with_a_file_is_409_on_the_upload_url(api: Api) -> None:
    """Uploading under `docs/cert.pdf/` where a file `docs/cert.pdf` exists is 409 naming FileUploadUrl."""
    api.ok("POST", "/docs", **multipart(part(b"outer")))
    before = listing(api.settings.files_dir)
    response = upload(api, "/docs/cert.pdf/inner")
    assert (response.status_code, error(response)["target"]) == (409, "FileUploadUrl")
    assert "docs/cert.pdf" in error(response)["message"]
    assert listing(api.settings.files_dir) == before


# --- names ----------------------------------------------------------------------------------------------

ACCEPTED_NAMES = [
    "Certificate of completion.pdf",
    "José Ñúñez \u2013 résumé.pdf",
    "Jose\u0301.pdf",  # decomposed: stored as its NFC form
    "证书 2024.pdf",
    "#1 & (final) [v2] {a} 50%+x=y, ok; 'yes'!.pdf",
    ".hidden",
    "Ωmega~_-.tar.gz",
    "CONSOLE.txt",
    "COM10",
    "in\u00a0between",  # a non-breaking space inside a name is fine; at either end it is refused like a space
    "x" * 251 + ".pdf",
]


def test_ordinary_file_names_are_stored_as_their_nfc_form(api: Api) -> None:
    """Spaces, accents, other scripts and punctuation flows use are accepted, stored at the NFC form."""
    for name in ACCEPTED_NAMES:
        body = api.ok("POST", "/certificates/abc/upload", **multipart(part(name.encode(), filename=name)))
        nfc = unicodedata.normalize("NFC", name)
        assert (body["FileName"], body["Path"]) == (nfc, f"certificates/abc/upload/{nfc}"), name
        assert (api.settings.files_dir / "certificates/abc/upload" / nfc).read_bytes() == name.encode(), name


REFUSED_NAMES = [
    ("../../x.txt", "'/'"),
    ("..", "'..'"),
    (".", "'.'"),
    ("a/b.txt", "'/'"),
    ("C:\\Users\\x.txt", "':'"),
    ("dir\\x.txt", "'\\'"),
    ("a\x01b.txt", "U+0001"),
    ("a\x7fb.txt", "U+007F"),
    ("a\u200bb.txt", "U+200B"),
    ("invoice\u202efdp.exe", "U+202E"),
    ("\ufeffbom.txt", "U+FEFF"),
    ("line\u2028break.txt", "U+2028"),
    ("a:b.txt", "':'"),
    ('a"b.txt', "'\"'"),
    ("a*b.txt", "'*'"),
    ("a<b.txt", "'<'"),
    ("a>b.txt", "'>'"),
    ("a?b.txt", "'?'"),
    ("a|b.txt", "'|'"),
    ("name.", "ends with a dot"),
    ("name ", "ends with a space"),
    (" name", "starts with a space"),
    ("\u00a0nbsp", "starts with a space (U+00A0"),
    ("nbsp\u00a0", "ends with a space (U+00A0"),
    ("\u3000ideographic.txt", "starts with a space (U+3000"),
    ("em.txt\u2003", "ends with a space (U+2003"),
    ("\u00a0\u2009", "only blank space"),
    ("CON", "reserved"),
    ("con.txt", "reserved"),
    ("Nul.tar.gz", "reserved"),
    ("aux .txt", "reserved"),
    ("COM0.log", "reserved"),
    ("lpt9", "reserved"),
    ("COM\u00b9.txt", "reserved"),
    ("LPT\u2074", "reserved"),
    ("x" * 252 + ".pdf", "255 bytes"),
    ("é" * 128, "255 bytes"),
]


def test_unsafe_file_names_are_400_naming_the_rule(api: Api) -> None:
    """Separators, '..', control and invisible characters, characters Windows/SharePoint refuse, trailing
    dots and spaces, device names and over-long names are a 400 on File; nothing is shortened or written."""
    for name, says in REFUSED_NAMES:
        response = upload(api, "/certificates/abc/upload", part(filename=name))
        assert response.status_code == 400, (name, response.text)
        body = error(response)
        assert body["target"] == "File", name
        assert says in body["message"], (name, body["message"])
        assert listing(api.settings.files_dir) == set(), name
        assert file_rows(api) == [], name


def test_folder_segments_follow_the_same_rule(api: Api) -> None:
    """Each FileUploadUrl segment is NFC-normalized and judged like a file name, with target FileUploadUrl."""
    body = api.ok("POST", "/" + quote("Certificats José/Année 2024"), **multipart(part(filename="a.pdf")))
    assert body["Path"] == "Certificats José/Année 2024/a.pdf"
    decomposed = api.ok("POST", "/" + quote("Jose\u0301"), **multipart(part(filename="b.pdf")))
    assert decomposed["Path"] == "José/b.pdf"
    for path, says in [
        ("/a/CON/upload", "reserved"),
        ("/a/..%2F..%2Fetc/upload", "'..'"),
        ("/a/" + quote("x\u200by"), "U+200B"),
        ("/a/" + quote("what?"), "'?'"),
        ("/a/trailing./upload", "ends with a dot"),
        ("/a/" + quote("\u00a0lead"), "starts with a space"),
        ("/a/" + quote("trail\u202f") + "/upload", "ends with a space"),
        ("/a//b", "empty"),
        ("/a/b/", "empty"),
    ]:
        response = upload(api, path)
        assert (response.status_code, error(response).get("target")) == (400, "FileUploadUrl"), path
        assert says in error(response)["message"], path
    assert not (api.settings.files_dir / "a").exists()


def test_folder_depth_and_path_length_are_bounded_and_named(api: Api) -> None:
    """At most 16 folders and 1024 bytes of stored path; the 400 says which limit was passed."""
    api.ok("POST", "/" + "/".join(["d"] * 16), **multipart(part()))
    deep = upload(api, "/" + "/".join(["d"] * 17))
    assert (deep.status_code, error(deep)["target"]) == (400, "FileUploadUrl")
    assert "16 folders" in error(deep)["message"]
    long_folder = upload(api, "/" + "/".join(["f" * 250] * 5))  # the document's maxLength refuses it first
    assert (long_folder.status_code, error(long_folder)["target"]) == (400, "FileUploadUrl")
    assert "1024" in error(long_folder)["message"]
    wide_folder = upload(api, "/" + quote("/".join(["é" * 120] * 5)))  # 604 characters, 1204 UTF-8 bytes
    assert (wide_folder.status_code, error(wide_folder)["target"]) == (400, "FileUploadUrl")
    assert "1024 bytes" in error(wide_folder)["message"]
    folder = "/".join(["g" * 250] * 4)  # 1003 bytes: room for a short name only
    api.ok("POST", "/" + folder, **multipart(part(filename="short.pdf")))
    long_name = upload(api, "/" + folder, part(filename="n" * 40 + ".pdf"))
    assert (long_name.status_code, error(long_name)["target"]) == (400, "File")
    assert "1024 bytes" in error(long_name)["message"]


def test_a_chunked_upload_is_stored(api: Api) -> None:
    """A body sent without Content-Length (chunked, as streaming clients do) is parsed as it arrives and stored."""
    body = multipart(part(b"a" * 20_000 + b"b" * 20_000, filename="chunked.bin"))
    content = body.pop("content")
    chunks = iter([content[i : i + 1000] for i in range(0, len(content), 1000)])
    stored = api.ok("POST", "/chunked", content=chunks, **body)
    assert stored["Size"] == 40_000
    assert (api.settings.files_dir / "chunked/chunked.bin").read_bytes() == b"a" * 20_000 + b"b" * 20_000


def test_an_oversized_part_content_type_is_400(api: Api) -> None:
    """The File part's Content-Type is stored and returned, so a hostile one longer than 255 characters is refused."""
    response = upload(api, "/certificates/abc/upload", part(content_type="application/" + "x" * 300))
    assert (response.status_code, error(response)["target"]) == (400, "File")
    assert listing(api.settings.files_dir) == set()


# --- the server's own folders -----------------------------------------------------------------------------

RESERVED_FIRST_FOLDERS = [
    "/courses",
    "/courses/new-course-id",
    "/Courses/x",
    "/COURSES",
    "/" + quote("cour\u017fes"),  # long s: the same name once case-folded, as names compare
    "/.upload-x",
    "/.UPLOAD-commit-x/y",
]


def test_the_servers_own_folders_are_not_open_to_uploads(api: Api, world: World) -> None:
    """`courses/` (the provisioner's course folders) and `.upload-*` (temporary files) as the first folder are a
    400 naming FileUploadUrl and saying why, in any case and Unicode form, for learners and administrators alike."""
    before = listing(api.settings.files_dir)
    for path in RESERVED_FIRST_FOLDERS:
        for user in (world.uid("ann"), world.uid("admin"), None):
            response = upload(api, path, part(filename="x.pdf"), user=user)
            assert (response.status_code, error(response).get("target")) == (400, "FileUploadUrl"), (path, user)
            assert "reserved" in error(response)["message"], path
    assert "course folders" in error(upload(api, "/courses", part(filename=world.course["Id"])))["message"]
    assert listing(api.settings.files_dir) == before
    assert file_rows(api) == []
    api.ok("POST", "/certificates/courses", user=world.uid("ann"), **multipart(part()))  # deeper: an ordinary name
    api.ok("POST", "/courses-2024", user=world.uid("ann"), **multipart(part()))


# --- quota and free disk ------------------------------------------------------------------------------------


@pytest.fixture
def limited(api: Api) -> Iterator[Callable[..., Api]]:
    """Another app on the same database and files, with some limits changed (Settings built in the test)."""
    with ExitStack() as stack:

        def make(**limits: int) -> Api:
            settings = replace(api.settings, **limits)
            app = create_app(settings, db=api.db, validate_responses=True, resolve=fake_resolve)
            return Api(stack.enter_context(app.test_client()), api.secret, api.db, settings)

        yield make


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_a_learner_cannot_fill_the_disk_past_the_upload_quota(api: Api, world: World, limited: Any) -> None:
    """The review's example scaled down: a learner's uploads stop at the quota with a 507 naming it and
    COURSEWIRE_UPLOAD_QUOTA_BYTES; replacing one's own file counts the new size only; other learners have their
    own quota; administrators have none."""
    quota = limited(upload_quota_bytes=100_000)
    ann, bob, admin = world.uid("ann"), world.uid("bob"), world.uid("admin")
    quota.ok("POST", "/ann/a", user=ann, **multipart(part(b"a" * 40_000)))
    quota.ok("POST", "/ann/b", user=ann, **multipart(part(b"b" * 40_000)))
    before, rows = listing(api.settings.files_dir), file_rows(api)
    over = upload(quota, "/ann/c", part(b"c" * 40_000), user=ann)
    assert over.status_code == 507, over.text
    refusal = error(over)
    assert (refusal["code"], refusal["target"]) == ("InsufficientStorage", "File")
    assert "COURSEWIRE_UPLOAD_QUOTA_BYTES" in refusal["message"] and "100,000 bytes" in refusal["message"]
    assert (listing(api.settings.files_dir), file_rows(api)) == (before, rows)  # no file, no row, no temporary file
    quota.ok("POST", "/ann/c", user=ann, **multipart(part(b"c" * 20_000)))  # exactly at the quota
    quota.ok("POST", "/ann/a", user=ann, **multipart(part(b"A" * 40_000)))  # a replacement of the same size
    assert upload(quota, "/ann/a", part(b"A" * 40_001), user=ann).status_code == 507
    assert (api.settings.files_dir / "ann/a/cert.pdf").read_bytes() == b"A" * 40_000
    quota.ok("POST", "/bob/a", user=bob, **multipart(part(b"b" * 60_000)))
    for n in range(3):
        quota.ok("POST", f"/admin/{n}", user=admin, **multipart(part(b"z" * 60_000)))
        quota.ok("POST", f"/key/{n}", **multipart(part(b"k" * 60_000)))  # the key acting as itself
    off = limited(upload_quota_bytes=0)
    off.ok("POST", "/ann/d", user=ann, **multipart(part(b"d" * 60_000)))


def test_the_quota_is_judged_inside_the_write_transaction(db: Database, tmp_path: Path) -> None:
    """Two uploads by one learner at the same moment cannot both fit under a quota that holds one of them."""
    files_dir = tmp_path / "files"
    arrived = threading.Barrier(2)
    write = db.write

    @contextmanager
    def write_after_both_arrived() -> Iterator[Any]:
        arrived.wait(timeout=10)
        with write() as conn:
            yield conn

    db.write = write_after_both_arrived  # type: ignore[method-assign]
    actor = Actor(kind="user", api_key_id="k", user_id="ann")
    outcomes: list[str] = []

    def send(folder: str) -> None:
        received = files.receive(files_dir, iter([b"x" * 6_000]), 10_000)
        try:
            files.store(db, actor, files_dir, folder, "a.bin", None, received, quota_bytes=10_000)
            outcomes.append("stored")
        except files.QuotaExceeded:
            outcomes.append("over quota")

    threads = [threading.Thread(target=send, args=(folder,)) for folder in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["over quota", "stored"]


def test_uploads_are_refused_while_the_disk_is_short_for_administrators_too(api: Api, limited: Any) -> None:
    """With less free disk than COURSEWIRE_MIN_FREE_BYTES would leave, an upload is a 507 before its body is
    stored, with or without Content-Length, for the key itself too, and nothing is left on disk."""
    api.ok("POST", "/before", **multipart(part()))  # creates the files directory
    short = limited(min_free_bytes=free_bytes(api.settings.files_dir) + (1 << 40))
    before = listing(api.settings.files_dir)
    declared = upload(short, "/docs")
    body = multipart(part(b"x" * 30_000))
    content = body.pop("content")
    chunked = short.post("/docs", content=iter([content[i : i + 1000] for i in range(0, len(content), 1000)]), **body)
    for response in (declared, chunked):
        assert response.status_code == 507, response.text
        assert error(response)["code"] == "InsufficientStorage"
        assert "COURSEWIRE_MIN_FREE_BYTES" in error(response)["message"]
    assert listing(api.settings.files_dir) == before


def test_an_upload_stops_as_soon_as_the_disk_runs_short(tmp_path: Path) -> None:
    """Free disk is checked as the bytes arrive: an upload that would eat into the reserve stops early and its
    temporary file is removed (a real disk: the reserve is set 8 MiB below what is free now)."""
    chunk = b"x" * (1 << 20)
    consumed = 0

    def chunks() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(64):
            consumed += 1
            yield chunk

    tmp_path.joinpath("files").mkdir()
    reserve = free_bytes(tmp_path) - (8 << 20)
    with pytest.raises(files.DiskFull) as refused:
        files.receive(tmp_path / "files", chunks(), 1 << 30, min_free_bytes=reserve)
    assert "COURSEWIRE_MIN_FREE_BYTES" in refused.value.message
    assert consumed < 64
    assert listing(tmp_path / "files") == set()


def test_free_disk_is_checked_again_before_the_file_is_stored(db: Database, tmp_path: Path) -> None:
    """An upload received while the disk had room is still refused when the disk is short as it is stored."""
    files_dir = tmp_path / "files"
    received = files.receive(files_dir, iter([b"x" * 1000]), 10_000)
    with pytest.raises(files.DiskFull):
        files.store(
            db, CLI, files_dir, "docs", "a.bin", None, received, min_free_bytes=free_bytes(tmp_path) + (1 << 40)
        )
    assert listing(files_dir) == set()
    assert db.conn.execute("SELECT count(*) FROM files").fetchone()[0] == 0


# --- a crash between the file and its row ---------------------------------------------------------------------

CRASH = """
import os, signal, sys
from pathlib import Path
from storage import files
from storage.db import Database
from storage.models import CLI

database, files_dir, when = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
db = Database(database)
real_replace, calls = os.replace, 0


def replace(source, target):
    global calls
    calls += 1
    if when == "before the second rename" and calls == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, target)
    if when == "after the first rename" and calls == 1:
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace
upload = files.receive(files_dir, [b"version 2"], 1024)
files.store(db, CLI, files_dir, "docs", "a.txt", "text/plain", upload)
print("the store finished without being killed")
"""


def crash_while_storing(db: Database, files_dir: Path, when: str) -> subprocess.CompletedProcess[str]:
    """Store `docs/a.txt` as version 1 here, then version 2 in a subprocess that SIGKILLs itself at `when`."""
    files.store(db, CLI, files_dir, "docs", "a.txt", "text/plain", files.receive(files_dir, [b"version 1"], 1024))
    return subprocess.run(
        [sys.executable, "-c", CRASH, str(db.path), str(files_dir), when],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored(db: Database, files_dir: Path) -> tuple[bytes, bool]:
    """The content at docs/a.txt, and whether the row's size and hash describe exactly that content."""
    content = (files_dir / "docs/a.txt").read_bytes()
    row = db.conn.execute("SELECT size, sha256 FROM files WHERE path = 'docs/a.txt'").fetchone()
    return content, (row["size"], row["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())


def recover_at_start_up(db: Database, files_dir: Path) -> None:
    """What `coursewire serve` does at start: clean up, then the provisioner's first pass settles pending files."""
    files.remove_stale_uploads(files_dir)
    thread, stop = Provisioner(db, files_dir).start()
    stop.set()
    thread.join(timeout=30)


@pytest.mark.parametrize(
    ("when", "content"),
    [("after the first rename", b"version 1"), ("before the second rename", b"version 2")],
    ids=["killed-before-commit", "killed-after-commit"],
)
def test_a_kill_while_storing_leaves_the_file_and_its_row_agreeing(
    db: Database, tmp_path: Path, when: str, content: bytes
) -> None:
    """A server killed while it stores a replacement leaves, after the next start, the old file with its row (the
    transaction never committed) or the new file with its row (it did): never a file its row does not describe,
    and no temporary file."""
    files_dir = tmp_path / "files"
    killed = crash_while_storing(db, files_dir, when)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    recover_at_start_up(db, files_dir)
    assert stored(db, files_dir) == (content, True)
    assert [p.name for p in files_dir.iterdir()] == ["docs"]


def test_the_next_upload_to_a_path_finishes_a_committed_one_first(db: Database, tmp_path: Path) -> None:
    """A replacement committed but not yet moved into place (the server was killed) is settled by the next upload
    to the same path, so the newest upload wins and nothing is left at the top of the files directory."""
    files_dir = tmp_path / "files"
    assert crash_while_storing(db, files_dir, "before the second rename").returncode == -signal.SIGKILL
    files.store(db, CLI, files_dir, "docs", "a.txt", "text/plain", files.receive(files_dir, [b"version 3"], 1024))
    assert stored(db, files_dir) == (b"version 3", True)
    assert [p.name for p in files_dir.iterdir()] == ["docs"]


# --- start-up clean-up ------------------------------------------------------------------------------------


def test_stale_upload_files_are_removed_but_nothing_else(tmp_path: Path) -> None:
    """Clean-up removes `.upload-*` temporary files at the top of the files directory and nothing uploaded."""
    files_dir = tmp_path / "files"
    (files_dir / ".upload-folder").mkdir(parents=True)  # a folder a user named so: kept
    (files_dir / ".upload-folder" / ".upload-notes.txt").write_bytes(b"kept")  # an uploaded file: kept
    (files_dir / ".upload-abc123").write_bytes(b"partial")
    (files_dir / ".upload-commit-abc").write_bytes(b"committed, not yet in place: the provisioner settles it")
    (files_dir / ".upload-").write_bytes(b"")
    (files_dir / "upload-x").write_bytes(b"kept")
    assert files.remove_stale_uploads(files_dir) == 2
    assert listing(files_dir) == {
        ".upload-folder",
        ".upload-folder/.upload-notes.txt",
        ".upload-commit-abc",
        "upload-x",
    }
    assert files.remove_stale_uploads(tmp_path / "missing") == 0


def test_building_the_app_never_removes_temporary_files(settings: Any, db: Database) -> None:
    """Each server process builds the app; building it must not delete another process's upload in flight."""
    settings.files_dir.mkdir(parents=True)
    in_flight = settings.files_dir / ".upload-inflight"
    in_flight.write_bytes(b"partial")
    create_app(settings, db=db)
    assert in_flight.exists()


# --- real `coursewire serve` ------------------------------------------------------------------------------

BIN = Path(sys.executable).parent / "coursewire"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """A `coursewire serve --workers 1` subprocess (one process, so its RSS is the server's)."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.env = {**os.environ, "COURSEWIRE_DATA_DIR": str(data), "COURSEWIRE_RATE_LIMIT": "off"}
        if not (data / "coursewire.db").exists():
            created = subprocess.run(
                [str(BIN), "apikey", "create", "--name", "files", "--json"],
                env=self.env,
                capture_output=True,
                text=True,
                check=True,
            )
            (data / "key").write_text(json.loads(created.stdout)["key"])
        self.key = (data / "key").read_text()
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (data / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--port", str(self.port), "--workers", "1", "--no-worker"],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:  # a readiness probe, not a fixed sleep
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError((data / "serve.log").read_text())
            time.sleep(0.05)

    def peak_rss_kib(self) -> int:
        """The process's peak resident set (VmHWM) so far, in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _body_file(path: Path, size: int) -> tuple[Path, int]:
    """A multipart body with one File part of `size` bytes, written to disk so the client streams it too."""
    with path.open("wb") as out:
        out.write(part(b"", filename="big.bin", content_type="application/octet-stream")[:-2])
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            out.write(block)
        out.write(f"\r\n--{BOUNDARY}--\r\n".encode())
    return path, path.stat().st_size


@pytest.mark.system
@pytest.mark.slow
def test_a_40_mb_upload_streams_to_disk(tmp_path: Path) -> None:
    """A 40 MiB upload raises the server's peak memory by far less than its size (measured: see README)."""
    body, length = _body_file(tmp_path / "body", 40 << 20)
    server = Serve(tmp_path / "data")
    try:
        auth = ("api", server.key)
        warm = requests.post(server.base + "/warm", auth=auth, timeout=30, **multipart(part(b"w"), body="data"))
        assert warm.status_code == 200, warm.text
        before = server.peak_rss_kib()
        with body.open("rb") as stream:
            response = requests.post(
                server.base + "/big",
                data=stream,
                auth=auth,
                timeout=120,
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(length)},
            )
        assert response.status_code == 200, response.text
        assert response.json()["Size"] == 40 << 20
        growth_mib = (server.peak_rss_kib() - before) / 1024
        assert growth_mib < 16, f"peak RSS grew by {growth_mib:.1f} MiB for a 40 MiB upload"
    finally:
        server.stop()


@pytest.mark.system
@pytest.mark.slow
def test_temporary_files_of_a_killed_upload_are_removed_at_start_up(tmp_path: Path) -> None:
    """SIGKILL during an upload leaves its temporary file; the next `coursewire serve` removes it."""
    data = tmp_path / "data"
    files_dir = data / "files"
    server = Serve(data)
    stalled = socket.create_connection(("127.0.0.1", server.port))
    try:
        form = multipart(part(filename=".upload-notes"), body="data")
        kept = requests.post(server.base + "/notes", auth=("api", server.key), timeout=30, **form)
        assert kept.status_code == 200, kept.text
        head = part(b"", filename="big.bin")[:-2]
        stalled.sendall(
            b"POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
            + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
            + b"Authorization: Basic "
            + base64.b64encode(f"api:{server.key}".encode())
            + b"\r\n\r\n"
            + head
            + b"x" * 300_000
        )
        deadline = time.monotonic() + 30
        while not [p for p in files_dir.glob(".upload-*") if p.stat().st_size > 0]:
            assert time.monotonic() < deadline, "the upload never reached a temporary file"
            time.sleep(0.02)
    finally:
        server.stop(signal.SIGKILL)
        stalled.close()
    assert list(files_dir.glob(".upload-*")), "the crash should have left the temporary file behind"
    again = Serve(data)
    try:
        assert list(files_dir.glob(".upload-*")) == []
        assert (files_dir / "notes" / ".upload-notes").read_bytes() == b"%PDF-1.7"
    finally:
        again.stop()
