"""Uploaded files: one rule for names, bytes streamed to a temporary file, moved into place by their owner.

Files live under `files_dir` at `<folder>/<file name>`, every folder segment and the file name judged by
`name_problem`; the first folders the server keeps for itself (`courses/`, `.upload-*`) are refused. An
upload's bytes go to a `.upload-*` temporary file at the top of `files_dir` as they arrive (`Upload`),
checked against the free-disk floor as they grow. `store` judges it inside one write transaction (the
actor may replace whatever is there, the uploader's quota, the free-disk floor again), records the
`files` row, and renames the temporary file to a staged name that says which row it belongs to
(`.upload-commit-<file id>.<sha256>.<token>`); only after COMMIT is the staged file renamed into place.
A process killed in between leaves either a staged file its row does not describe (the transaction
never committed: it is removed) or one it does (it committed: it is moved into place); `finish_pending`
settles them at start-up, and the next upload to the same path settles its own. So a file on disk is
never newer than its row.

A file belongs to whoever uploaded its current content (`files.uploaded_by`): the acting user's id, or
the API key's id when a key acts as itself. Replacing it takes that same uploader or an administrator.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import unicodedata
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from storage import events, names
from storage.db import Database, iso, new_id
from storage.errors import Conflict, Forbidden, Invalid, StorageError
from storage.models import Actor

MAX_NAME_BYTES = 255  # NAME_MAX of ext4, XFS and btrfs; SharePoint and OneDrive allow no more either
MAX_FOLDERS = 16
MAX_PATH_BYTES = 1024  # the stored relative path, folders and file name together
MAX_CONTENT_TYPE = 255
TEMP_PREFIX = ".upload-"
# A temporary file renamed inside the transaction that records its row: `.upload-commit-<id>.<sha256>.<token>`.
STAGED_PREFIX = TEMP_PREFIX + "commit-"
# First folders the server keeps for itself, by their key (storage.names.key: NFC, case-folded), and why.
RESERVED_FOLDERS = {"courses": "it holds the course folders the server creates (courses/<course id>)"}
# How often, in bytes received, an upload looks at the free disk again.
FREE_SPACE_EVERY = 1 << 20
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


class InsufficientStorage(StorageError):
    """Storing the upload would pass a storage limit (HTTP 507 Insufficient Storage, RFC 4918 section 11.5)."""


class QuotaExceeded(InsufficientStorage):
    """The uploader's files would pass the upload quota (COURSEWIRE_UPLOAD_QUOTA_BYTES)."""


class DiskFull(InsufficientStorage):
    """The disk holding the files would keep less free space than COURSEWIRE_MIN_FREE_BYTES."""


def name_problem(name: str) -> str | None:
    """Why `name` (NFC-normalized already) cannot name a stored file or folder, or None when it can.

    The answer completes a sentence about the name ("... contains ':', which Windows ..."). Refused:
    empty names, `.` and `..`, `/` and `\\`, control and invisible characters (Unicode categories Cc, Cf,
    Cs, Zl, Zp), the characters Windows, SharePoint and OneDrive refuse (`" * : < > ? |`), names of blank
    space only, a leading space, a trailing dot or space, Windows device names (CON, PRN, AUX, NUL,
    COM0-9, LPT0-9 and superscript digits, any case, with or without an extension) and names over 255
    UTF-8 bytes. Blank space is any character `str.isspace` accepts, so a leading or trailing no-break
    space (U+00A0) or ideographic space is refused like an ASCII one. Everything else is accepted: spaces
    inside, accents, any script, `#`, `&`, brackets.
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
    if name[0].isspace():
        return "starts with a space" + _which_space(name[0])
    if name.endswith("."):
        return "ends with a dot, which Windows drops"
    if name[-1].isspace():
        return "ends with a space" + (", which Windows drops" if name[-1] == " " else _which_space(name[-1]))
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in RESERVED_NAMES:
        return f"is the reserved device name {stem} on Windows (with or without an extension)"
    return None


def _which_space(character: str) -> str:
    """` (U+00A0 NO-BREAK SPACE), which cannot be seen` for blank space other than the ASCII space."""
    if character == " ":
        return ""
    label = unicodedata.name(character, "")
    return f" (U+{ord(character):04X}{' ' + label if label else ''}), which cannot be seen"


def _shown(text: str, limit: int = 60) -> str:
    """A quoted excerpt of a name for an error message: never more than `limit` characters of it."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_folder(path: str) -> str:
    """Return FileUploadUrl as the NFC-normalized folder `a/b/c` files are stored under.

    Raises Invalid (target `FileUploadUrl`) when the path is over MAX_PATH_BYTES, has more than
    MAX_FOLDERS segments, a segment breaks `name_problem`, or the first folder is one the server keeps for
    itself (`courses`, or a name starting with `.upload-`, compared by `storage.names.key`: any case, any
    Unicode form); the message says which rule and which segment.
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
    first = names.key(segments[0])
    if first in RESERVED_FOLDERS or first.startswith(TEMP_PREFIX):
        why = RESERVED_FOLDERS.get(first, f"names starting with {TEMP_PREFIX!r} are the server's temporary files")
        raise Invalid(
            f"FileUploadUrl {_shown(path)}: the first folder {_shown(segments[0])} is reserved: {why};"
            " upload under another folder, such as certificates/<id>/upload",
            target="FileUploadUrl",
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


def free_bytes(path: Path) -> int:
    """Bytes free to unprivileged writers on the file system holding `path` or, while it does not exist yet,
    its nearest existing parent (statvfs: f_bavail blocks of f_frsize bytes)."""
    for candidate in (path, *path.parents):
        try:
            stat = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        return stat.f_bavail * stat.f_frsize
    return 0


def check_free_space(files_dir: Path, min_free_bytes: int, incoming: int = 0) -> None:
    """Raise DiskFull (target `File`) when `incoming` more bytes would leave less than `min_free_bytes`
    free on the file system holding `files_dir` (COURSEWIRE_MIN_FREE_BYTES; 0 still refuses what cannot fit).

    The floor keeps room for the database, whose writes fail for everyone on a full disk.
    """
    if free_bytes(files_dir) - incoming < min_free_bytes:
        raise DiskFull(
            f"the server is short of disk space: storing this upload would leave less than {min_free_bytes:,} bytes"
            " free, the reserve COURSEWIRE_MIN_FREE_BYTES keeps for the database; try again later or tell the"
            " server's operator",
            target="File",
        )


def _disk_full(exc: OSError) -> StorageError | OSError:
    """ENOSPC and EDQUOT as DiskFull (a 507, not a 500); any other OSError as it is."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull("the server's disk is full: the upload could not be written; try again later", target="File")
    return exc


def _remove(out: IO[bytes], paths: list[Path]) -> None:
    out.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths[-1])


class Upload:
    """The bytes of one upload on their way to disk: a `.upload-*` temporary file at the top of
    `files_dir` (same file system as the target, so `store` moves it with renames), counted, hashed and
    checked against the free-disk floor as they arrive.

    The temporary (or staged) file is removed by `discard()`, or when the object is garbage-collected
    without having been stored, so a request that fails anywhere leaves nothing behind; a process killed
    mid-upload leaves it for `remove_stale_uploads` (or, once staged, `finish_pending`) at the next start.
    """

    def __init__(self, files_dir: Path, max_bytes: int, min_free_bytes: int = 0, expected: int | None = None) -> None:
        """`expected`: the bytes announced to come (Content-Length), judged against the free-disk floor at once.

        Raises DiskFull before creating anything when they would not leave `min_free_bytes` free.
        """
        files_dir.mkdir(parents=True, exist_ok=True)
        check_free_space(files_dir, min_free_bytes, expected or 0)
        fd, path = tempfile.mkstemp(dir=files_dir, prefix=TEMP_PREFIX)
        self.files_dir = files_dir
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.expected = expected or 0
        self.size = 0
        self._checked = 0
        self._out = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self._paths = [self.path]
        self._cleanup = weakref.finalize(self, _remove, self._out, self._paths)

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`. Raises TooLarge (target `File`) once the upload passes `max_bytes`, DiskFull when
        what is left to come (by `expected`) would eat into the free-disk floor (looked at every MiB) or the
        disk is full."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLarge(f"File is larger than the limit of {self.max_bytes} bytes", target="File")
        if self.size - self._checked >= FREE_SPACE_EVERY:
            self._checked = self.size
            check_free_space(self.files_dir, self.min_free_bytes, max(self.expected - self.size, 0))
        self._digest.update(data)
        try:
            self._out.write(data)
        except OSError as exc:
            raise _disk_full(exc) from None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written so far."""
        return self._digest.hexdigest()

    def discard(self) -> None:
        """Close and remove the temporary file, unless it was stored; safe to call more than once."""
        self._cleanup()

    def stage(self, file_id: str) -> None:
        """Close the temporary file and rename it to the staged name of row `file_id` with this content's hash
        (inside the transaction that records the row: see the module docstring)."""
        try:
            self._out.close()
        except OSError as exc:
            raise _disk_full(exc) from None
        staged = self.files_dir / f"{STAGED_PREFIX}{file_id}.{self.sha256}.{self.path.name[len(TEMP_PREFIX) :]}"
        os.replace(self.path, staged)
        self.path = staged
        self._paths.append(staged)

    def finish(self, target: Path) -> None:
        """Rename the staged file to `target` (after COMMIT), atomically replacing the file there.

        Already gone means another upload to the same path or `finish_pending` moved it into place. Any
        other OSError is raised and the staged file left for `finish_pending` at the next start: its row
        is committed, so removing it would leave a row that describes no file.
        """
        self._cleanup.detach()
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, target)


def receive(
    files_dir: Path, chunks: Iterable[bytes], max_bytes: int, min_free_bytes: int = 0, expected: int | None = None
) -> Upload:
    """Write `chunks` to a new Upload in `files_dir` and return it; raises TooLarge past `max_bytes`, DiskFull
    as `Upload` does."""
    upload = Upload(files_dir, max_bytes, min_free_bytes, expected)
    try:
        for chunk in chunks:
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    return upload


def _staged(files_dir: Path, file_id: str | None = None) -> Iterator[tuple[Path, str, str]]:
    """The staged files at the top of `files_dir` (of row `file_id` only, when given) as (path, id, sha256);
    names that do not parse come out with an empty id."""
    try:
        entries = list(os.scandir(files_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.name.startswith(STAGED_PREFIX) or not entry.is_file(follow_symlinks=False):
            continue
        parts = entry.name[len(STAGED_PREFIX) :].split(".")
        staged_id, sha = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        if file_id is None or staged_id == file_id:
            yield Path(entry.path), staged_id, sha


def _settle(staged: Path, sha: str, row_sha: str | None, target: Path | None) -> bool:
    """Move a staged file into place when its row (committed) describes it, else remove it; return whether it
    was moved. Only under the write lock, so no transaction that could still commit it is in progress."""
    if row_sha is not None and row_sha == sha and target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(staged, target)
        return True
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged)
    return False


def finish_pending(db: Database, files_dir: Path) -> int:
    """Settle staged uploads left by a process killed around COMMIT; return how many were moved into place.

    A staged file whose row was committed with its hash is renamed into place; any other (its transaction
    never committed) is removed. Safe while uploads are in progress (each file is judged inside a write
    transaction, and uploads stage theirs inside theirs); takes the write lock only when a staged file
    exists. A file that cannot be moved is left for the next call. Raises nothing for one file's OSError.
    """
    staged = list(_staged(files_dir))
    if not staged:
        return 0
    moved = 0
    with db.write() as conn:
        for path, file_id, sha in staged:
            row = conn.execute("SELECT path, sha256 FROM files WHERE id = ?", (file_id,)).fetchone()
            try:
                moved += _settle(path, sha, row and row["sha256"], row and files_dir / row["path"])
            except OSError:
                continue
    return moved


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


def _check_quota(conn: Any, actor: Actor, row: Any, size: int, quota_bytes: int) -> None:
    """Raise QuotaExceeded unless the uploader's files, with this upload of `size` bytes in place of the file
    it replaces (when theirs), stay within `quota_bytes`."""
    who = uploader(actor)
    used = conn.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE uploaded_by = ?", (who,)).fetchone()[0]
    if row is not None and row["uploaded_by"] == who:
        used -= row["size"]
    if used + size > quota_bytes:
        raise QuotaExceeded(
            f"{_who(actor)} keeps {used:,} bytes in uploaded files; this upload of {size:,} bytes would pass the"
            f" upload quota of {quota_bytes:,} bytes per user (COURSEWIRE_UPLOAD_QUOTA_BYTES): replace one of"
            " your files instead, or ask an administrator",
            target="File",
        )


def store(
    db: Database,
    actor: Actor,
    files_dir: Path,
    folder: str,
    file_name: str | None,
    content_type: str | None,
    upload: Upload,
    *,
    quota_bytes: int = 0,
    min_free_bytes: int = 0,
) -> dict[str, Any]:
    """Move `upload` to `<files_dir>/<folder>/<file name>` and record it; return the FileInfo shape
    (Id, Path, FileName, Size, ContentType, Sha256, UploadedAt) and record a `FileUploaded` event.

    The names are normalized to NFC and checked (`check_path`); the owner, collision, quota and free-disk
    checks, the row, the event and the staging rename happen in one write transaction (BEGIN IMMEDIATE),
    so two uploads to one path, or by one uploader, are judged one after the other; the rename into place
    follows COMMIT (module docstring). `quota_bytes` (0: none) bounds the sum of the sizes of the files an
    uploader who is not an administrator owns, this one included in place of the one it replaces;
    `min_free_bytes` is the free-disk floor, for everyone. The upload is discarded unless stored.
    Raises Invalid (400: bad name or path, target `File` or `FileUploadUrl`), Forbidden (403: the file
    exists and the actor is neither its uploader nor an administrator), Conflict (409: the name is an
    existing folder, target `File`, or a folder segment an existing file, target `FileUploadUrl`),
    QuotaExceeded or DiskFull (507, target `File`).
    """
    try:
        folder, name = check_path(folder, file_name)
        media_type = check_content_type(content_type)
        relative = f"{folder}/{name}"
        target = files_dir / relative
        now = db.clock()
        with db.write() as conn:
            row = conn.execute("SELECT id, size, sha256, uploaded_by FROM files WHERE path = ?", (relative,)).fetchone()
            if row is not None:  # a replacement committed before a crash goes in place first
                for staged, _, sha in _staged(files_dir, row["id"]):
                    _settle(staged, sha, row["sha256"], target)
            _check_place(files_dir, folder, name)
            _check_owner(actor, row, target, relative)
            if quota_bytes and not actor.is_admin:
                _check_quota(conn, actor, row, upload.size, quota_bytes)
            check_free_space(files_dir, min_free_bytes)
            file_id: str = row["id"] if row else new_id()
            info = {
                "Id": file_id,
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
                    file_id,
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
            upload.stage(file_id)
        upload.finish(target)
        return info
    finally:
        upload.discard()


def remove_stale_uploads(files_dir: Path) -> int:
    """Delete the `.upload-*` temporary files at the top of `files_dir`; return how many were deleted.

    Uploads in progress own such files too, so call this once per server start, before any server
    process accepts requests (`coursewire serve` does), never from a server process. Stored files
    are never touched: they always sit inside at least one folder, and folders are left alone. Staged
    files (`.upload-commit-*`) are left for `finish_pending`, which asks the database whether to keep them.
    """
    try:
        entries = list(os.scandir(files_dir))
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        if (
            entry.name.startswith(TEMP_PREFIX)
            and not entry.name.startswith(STAGED_PREFIX)
            and entry.is_file(follow_symlinks=False)
        ):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
    return removed
