"""Uploaded files: stored under the data directory at a checked relative path, recorded with a hash."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from storage import events
from storage.db import Database, iso, new_id
from storage.errors import Invalid
from storage.models import Actor

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")


class TooLarge(Invalid):
    """The upload is larger than the configured limit."""


def check_folder(path: str) -> str:
    """Return the normalized relative folder `a/b/c`; raise Invalid when it could escape or is odd."""
    segments = [s for s in path.replace("\\", "/").split("/")]
    if not path or path.startswith("/") or any(not _SEGMENT.fullmatch(s) or set(s) == {"."} for s in segments):
        raise Invalid(
            f"FileUploadUrl {path!r}: use a relative path of letters, digits, '.', '-', '_' or '~' segments,"
            " such as certificates/1234/upload",
            target="FileUploadUrl",
        )
    if len(segments) > 16:
        raise Invalid("FileUploadUrl has more than 16 segments", target="FileUploadUrl")
    return "/".join(segments)


def check_file_name(name: str | None) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    if not base or not _SEGMENT.fullmatch(base):
        raise Invalid(
            f"File: the file name {name!r} must be letters, digits, '.', '-', '_' or '~' (at most 128)", target="File"
        )
    return base


def store(
    db: Database,
    actor: Actor,
    files_dir: Path,
    folder: str,
    file_name: str | None,
    content_type: str | None,
    stream: BinaryIO,
    max_bytes: int,
) -> dict[str, Any]:
    """Save the stream as `<files_dir>/<folder>/<file_name>` (replacing an older file there).

    Writes to a temporary file first and moves it into place inside the database transaction, so a
    failed upload leaves neither a file nor a row. Raises Invalid for a bad path or name, TooLarge past
    `max_bytes`.
    """
    folder = check_folder(folder)
    name = check_file_name(file_name)
    relative = f"{folder}/{name}"
    target = files_dir / relative
    files_dir.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=files_dir, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"File is larger than the limit of {max_bytes} bytes", target="File")
                digest.update(chunk)
                out.write(chunk)
        now = db.clock()
        with db.write() as conn:
            row = conn.execute("SELECT id FROM files WHERE path = ?", (relative,)).fetchone()
            file_id = row["id"] if row else new_id()
            conn.execute(
                "INSERT INTO files (id, path, file_name, size, content_type, sha256, uploaded_at, uploaded_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size,"
                " content_type = excluded.content_type, sha256 = excluded.sha256, uploaded_at = excluded.uploaded_at,"
                " uploaded_by = excluded.uploaded_by",
                (
                    file_id,
                    relative,
                    name,
                    size,
                    content_type or "application/octet-stream",
                    digest.hexdigest(),
                    iso(now),
                    actor.user_id or actor.api_key_id or actor.kind,
                ),
            )
            info = {
                "Id": file_id,
                "Path": relative,
                "FileName": name,
                "Size": size,
                "ContentType": content_type or "application/octet-stream",
                "Sha256": digest.hexdigest(),
                "UploadedAt": iso(now),
            }
            events.record(conn, "FileUploaded", actor, now, {"file": info}, user_id=actor.user_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        return info
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
