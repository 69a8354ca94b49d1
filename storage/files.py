"""Uploaded files: one rule for names, bytes streamed to a temporary file, moved into place by their owner.

Files live under `files_dir` at `<folder>/<file name>`, every folder segment and the file name judged by
`name_problem`. An upload's bytes go to a `.upload-*` temporary file at the top of `files_dir` as they
arrive (`Upload`); `store` moves it into place inside the write transaction that records the `files`
row, after checking that the actor may replace whatever is there. A file belongs to whoever uploaded its
current content (`files.uploaded_by`): the acting user's id, or the API key's id when a key acts as
itself. Replacing it takes that same uploader or an administrator.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import unicodedata
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from storage import events
from storage.db import Database, iso, new_id
from storage.errors import Conflict, Forbidden, Invalid
from storage.models import Actor

MAX_NAME_BYTES = 255  # NAME_MAX of ext4, XFS and btrfs; SharePoint and OneDrive allow no more either
MAX_FOLDERS = 16
MAX_PATH_BYTES = 1024  # the stored relative path, folders and file name together
MAX_CONTENT_TYPE = 255
TEMP_PREFIX = ".upload-"
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# Refused by Windows, SharePoint and OneDrive in any file or folder name.
WINDOWS_CHARACTERS = frozenset('"*:<>?|')
SEPARATORS = frozenset("/\\")
# Control characters, invisible formatting (zero-width, bidi overrides, BOM), unpaired surrogates and
# the Unicode line and paragraph separators: none can be seen in a name, and they make names that look
# alike but differ, or that read backwards ("invoice\u202efdp.exe").
INVISIBLE = {
    "Cc": "control character",
    "Cf": "invisible formatting character",
    "Cs": "unpaired surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}
# Windows device names, refused with or without an extension ("con.txt"), in any case, with the digits
# 0-9 and their superscript forms.
_DIGITS = "0123456789\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
RESERVED_NAMES = frozenset({"CON", "PRN", "AUX", "NUL"} | {f"{p}{d}" for p in ("COM", "LPT") for d in _DIGITS})


class TooLarge(Invalid):
    """The upload is larger than the configured limit."""


def name_problem(name: str) -> str | None:
    """Why `name` (NFC-normalized already) cannot name a stored file or folder, or None when it can.

    The answer completes a sentence about the name ("... contains ':', which Windows ..."). Refused:
    empty names, `.` and `..`, `/` and `\\`, control and invisible characters (Unicode categories Cc, Cf,
    Cs, Zl, Zp), the characters Windows, SharePoint and OneDrive refuse (`" * : < > ? |`), names of blank
    space only, a leading space, a trailing dot or space, Windows device names (CON, PRN, AUX, NUL,
    COM0-9, LPT0-9 and superscript digits, any case, with or without an extension) and names over 255
    UTF-8 bytes. Everything else is accepted: spaces inside, accents, any script, `#`, `&`, brackets.
    """
    if not name:
        return "is empty"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long in UTF-8; a name may have at most {MAX_NAME_BYTES} bytes"
    if name == ".":
        return "is '.', which means the current folder"
    if name == "..":
        return "is '..', which means the parent folder"
    for character in name:
        if character in SEPARATORS:
            return f"contains '{character}', a path separator"
        kind = INVISIBLE.get(unicodedata.category(character))
        if kind:
            label = unicodedata.name(character, "")
            return f"contains the {kind} U+{ord(character):04X}" + (f" ({label})" if label else "")
        if character in WINDOWS_CHARACTERS:
            return f"contains '{character}', which Windows, SharePoint and OneDrive do not allow in names"
    if not name.strip():
        return "is only blank space"
    if name.startswith(" "):
        return "starts with a space"
    if name.endswith("."):
        return "ends with a dot, which Windows drops"
    if name.endswith(" "):
        return "ends with a space, which Windows drops"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in RESERVED_NAMES:
        return f"is the reserved device name {stem} on Windows (with or without an extension)"
    return None


def _shown(text: str, limit: int = 60) -> str:
    """A quoted excerpt of a name for an error message: never more than `limit` characters of it."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_folder(path: str) -> str:
    """Return FileUploadUrl as the NFC-normalized folder `a/b/c` files are stored under.

    Raises Invalid (target `FileUploadUrl`) when the path is over MAX_PATH_BYTES, has more than
    MAX_FOLDERS segments, or a segment breaks `name_problem`; the message says which rule and which segment.
    """
    path = unicodedata.normalize("NFC", path)
    size = len(path.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise Invalid(
            f"FileUploadUrl is {size} bytes long in UTF-8; the stored path (folders and file name) may have at"
            f" most {MAX_PATH_BYTES} bytes",
            target="FileUploadUrl",
        )
    segments = path.split("/")
    if len(segments) > MAX_FOLDERS:
        raise Invalid(
            f"FileUploadUrl has {len(segments)} folders; at most {MAX_FOLDERS} folders are allowed",
            target="FileUploadUrl",
        )
    for number, segment in enumerate(segments, 1):
        problem = name_problem(segment)
        if problem == "is empty":
            problem = "is empty (two '/' in a row, or a '/' at the start or end)"
        if problem:
            raise Invalid(
                f"FileUploadUrl {_shown(path)}: folder {number} {_shown(segment)} {problem}", target="FileUploadUrl"
            )
    return path


def check_file_name(name: str | None) -> str:
    """Return the file name of the File part, NFC-normalized; never shortened or otherwise rewritten.

    Raises Invalid (target `File`) when there is no file name or it breaks `name_problem`.
    """
    if name is None:
        raise Invalid(
            "the File part has no file name: send it as a file, with"
            ' Content-Disposition: form-data; name="File"; filename="certificate.pdf"',
            target="File",
        )
    if not name:
        raise Invalid(
            "the File part's file name is empty: give the file a name, such as certificate.pdf", target="File"
        )
    name = unicodedata.normalize("NFC", name)
    problem = name_problem(name)
    if problem:
        raise Invalid(f"the file name {_shown(name)} {problem}", target="File")
    return name


def check_path(folder: str, file_name: str | None) -> tuple[str, str]:
    """Return `(folder, file name)` checked and normalized, their joined path within MAX_PATH_BYTES.

    Raises Invalid naming FileUploadUrl or File, as `check_folder` and `check_file_name` do; a path
    too long only because of the file name names File.
    """
    folder = check_folder(folder)
    name = check_file_name(file_name)
    size = len(f"{folder}/{name}".encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise Invalid(
            f"the file name makes the stored path {size} bytes long in UTF-8; at most {MAX_PATH_BYTES} bytes:"
            " use a shorter file name or folder",
            target="File",
        )
    return folder, name


def check_content_type(content_type: str | None) -> str:
    """Return the File part's media type, `application/octet-stream` when none was sent.

    Raises Invalid (target `File`) when it is longer than MAX_CONTENT_TYPE characters or holds a
    control character: it is stored and returned with the file.
    """
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    if len(content_type) > MAX_CONTENT_TYPE:
        raise Invalid(
            f"the File part's Content-Type is {len(content_type)} characters long; at most {MAX_CONTENT_TYPE}",
            target="File",
        )
    if any(unicodedata.category(c) == "Cc" for c in content_type):
        raise Invalid("the File part's Content-Type contains a control character", target="File")
    return content_type


def _remove(out: IO[bytes], path: str) -> None:
    out.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Upload:
    """The bytes of one upload on their way to disk: a `.upload-*` temporary file at the top of
    `files_dir` (same file system as the target, so `store` moves it with one rename), counted and
    hashed as they arrive.

    The temporary file is removed by `discard()`, or when the object is garbage-collected without
    having been stored, so a request that fails anywhere leaves nothing behind; a process killed
    mid-upload leaves it for `remove_stale_uploads` at the next start.
    """

    def __init__(self, files_dir: Path, max_bytes: int) -> None:
        files_dir.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=files_dir, prefix=TEMP_PREFIX)
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.size = 0
        self._out = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self._cleanup = weakref.finalize(self, _remove, self._out, path)

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`. Raises TooLarge (target `File`) once the upload passes `max_bytes`."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLarge(f"File is larger than the limit of {self.max_bytes} bytes", target="File")
        self._digest.update(data)
        self._out.write(data)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written so far."""
        return self._digest.hexdigest()

    def discard(self) -> None:
        """Close and remove the temporary file, unless it was stored; safe to call more than once."""
        self._cleanup()

    def move_to(self, target: Path) -> None:
        """Close the temporary file and rename it to `target` (atomically replacing a file there)."""
        self._out.close()
        os.replace(self.path, target)
        self._cleanup.detach()


def receive(files_dir: Path, chunks: Iterable[bytes], max_bytes: int) -> Upload:
    """Write `chunks` to a new Upload in `files_dir` and return it; raises TooLarge past `max_bytes`."""
    upload = Upload(files_dir, max_bytes)
    try:
        for chunk in chunks:
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    return upload


def uploader(actor: Actor) -> str:
    """What `files.uploaded_by` records for an actor: the acting user's id, else the API key's id (a
    key acting as itself), else the actor kind (`cli`, `system`)."""
    return actor.user_id or actor.api_key_id or actor.kind


def _who(actor: Actor) -> str:
    if actor.kind == "user":
        return f"user '{actor.login_name or actor.user_id}'"
    return f"{actor.kind} '{actor.api_key_id}'" if actor.api_key_id else actor.kind


def _check_place(files_dir: Path, folder: str, name: str) -> None:
    """Raise Conflict when a folder segment is an existing file, or the file name an existing folder."""
    current = files_dir
    for number, segment in enumerate(folder.split("/"), 1):
        current = current / segment
        if os.path.lexists(current) and not current.is_dir():
            prefix = "/".join(folder.split("/")[:number])
            raise Conflict(
                f"FileUploadUrl: {_shown(prefix)} is a file, so it cannot hold folders; upload under another path",
                target="FileUploadUrl",
            )
    target = current / name
    if target.is_dir():
        raise Conflict(
            f"File: a folder named {_shown(name)} already exists in {_shown(folder)}; give the file another name",
            target="File",
        )
    if os.path.lexists(target) and not target.is_file():
        raise Conflict(f"File: {_shown(name)} in {_shown(folder)} exists and is not a file", target="File")


def _check_owner(actor: Actor, row: Any, target: Path, relative: str) -> None:
    """Raise Forbidden unless the actor may write `relative`: anyone may create a file, only its uploader or
    an administrator may replace it, and only an administrator one that no upload recorded."""
    if actor.is_admin:
        return
    if row is not None and row["uploaded_by"] != uploader(actor):
        raise Forbidden(
            f"{_who(actor)} may not replace {relative}: only the user who uploaded it or an administrator may"
        )
    if row is None and os.path.lexists(target):
        raise Forbidden(
            f"{_who(actor)} may not replace {relative}: it was not uploaded through the API, so only an"
            " administrator may"
        )


def store(
    db: Database,
    actor: Actor,
    files_dir: Path,
    folder: str,
    file_name: str | None,
    content_type: str | None,
    upload: Upload,
) -> dict[str, Any]:
    """Move `upload` to `<files_dir>/<folder>/<file name>` and record it; return the FileInfo shape
    (Id, Path, FileName, Size, ContentType, Sha256, UploadedAt) and record a `FileUploaded` event.

    The names are normalized to NFC and checked (`check_path`); the owner and collision checks, the row,
    the event and the rename happen in one write transaction (BEGIN IMMEDIATE), so two uploads to one
    path are judged one after the other. The upload is discarded whatever happens unless stored.
    Raises Invalid (400: bad name or path, target `File` or `FileUploadUrl`), Forbidden (403: the file
    exists and the actor is neither its uploader nor an administrator), Conflict (409: the name is an
    existing folder, target `File`, or a folder segment an existing file, target `FileUploadUrl`).
    """
    try:
        folder, name = check_path(folder, file_name)
        media_type = check_content_type(content_type)
        relative = f"{folder}/{name}"
        target = files_dir / relative
        now = db.clock()
        with db.write() as conn:
            row = conn.execute("SELECT id, uploaded_by FROM files WHERE path = ?", (relative,)).fetchone()
            _check_place(files_dir, folder, name)
            _check_owner(actor, row, target, relative)
            info = {
                "Id": row["id"] if row else new_id(),
                "Path": relative,
                "FileName": name,
                "Size": upload.size,
                "ContentType": media_type,
                "Sha256": upload.sha256,
                "UploadedAt": iso(now),
            }
            conn.execute(
                "INSERT INTO files (id, path, file_name, size, content_type, sha256, uploaded_at, uploaded_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size,"
                " content_type = excluded.content_type, sha256 = excluded.sha256, uploaded_at = excluded.uploaded_at,"
                " uploaded_by = excluded.uploaded_by",
                (
                    info["Id"],
                    relative,
                    name,
                    upload.size,
                    media_type,
                    info["Sha256"],
                    info["UploadedAt"],
                    uploader(actor),
                ),
            )
            events.record(conn, "FileUploaded", actor, now, {"file": info}, user_id=actor.user_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            upload.move_to(target)
        return info
    finally:
        upload.discard()


def remove_stale_uploads(files_dir: Path) -> int:
    """Delete the `.upload-*` temporary files at the top of `files_dir`; return how many were deleted.

    Uploads in progress own such files too, so call this once per server start, before any server
    process accepts requests (`coursewire serve` does), never from a server process. Stored files
    are never touched: they always sit inside at least one folder, and folders are left alone.
    """
    try:
        entries = list(os.scandir(files_dir))
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
    return removed
