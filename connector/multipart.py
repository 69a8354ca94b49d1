"""The multipart/form-data body of FileUpload: parsed once, as it arrives, its File part streamed to disk.

connexion's form validator keeps every message of the body in memory while it parses, and Flask parses
the body a second time into spooled files before a handler sees it. Here the body is read message by
message through python-multipart's streaming parser: each part's headers are checked as soon as they
arrive (one part named `File`, with a file name that `storage.files` accepts) and the File part's bytes
go straight into a `storage.files.Upload` in the files directory. The handler receives that Upload
through the request scope (`received_file`); Flask sees an empty body. Memory stays bounded by one
message and one part's headers whatever the size of the upload.

Refusals: no boundary or a malformed or truncated body is 400; a part other than File is 400 naming it;
a File part without a file name, with an empty or unacceptable one, sent twice, or missing is 400 naming
`File`; a folder FileUploadUrl refuses is 400 naming it before any of the body is read; a body that would
leave less free disk than COURSEWIRE_MIN_FREE_BYTES is 507, judged from Content-Length before any of it is
read and again every MiB as it arrives (`storage.files.Upload`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from connexion.exceptions import BadRequestProblem, UnsupportedMediaTypeProblem
from connexion.validators import MultiPartFormDataValidator
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope
from werkzeug.http import parse_options_header

from connector.errors import HttpError
from storage import files
from storage.errors import Invalid

FILE_PART = "File"
SCOPE_KEY = "coursewire.upload"


@dataclass(frozen=True)
class ReceivedFile:
    """The File part of an upload: its file name (NFC), media type as sent, and its bytes in `upload`."""

    file_name: str
    content_type: str | None
    upload: files.Upload


def received_file(scope: dict[str, Any]) -> ReceivedFile | None:
    """The File part the validator received for this request, or None when it did not run."""
    return cast(ReceivedFile | None, scope.get(SCOPE_KEY))


def _text(value: bytes, what: str) -> str:
    """A part header as text: UTF-8, as browsers and HTTP clients send non-ASCII file names (RFC 7578 section 5.1.3)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, f"the {what} header of a part is not UTF-8 text", target=FILE_PART) from None


class _Parts:
    """python-multipart callbacks: judge each part by its headers, write the File part to an Upload."""

    def __init__(
        self,
        boundary: bytes,
        folder: str,
        files_dir: Path,
        max_bytes: int,
        min_free_bytes: int = 0,
        expected: int | None = None,
    ) -> None:
        self.folder = folder
        self.files_dir = files_dir
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.expected = expected
        self.received: ReceivedFile | None = None
        self._writing = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def feed(self, data: bytes) -> None:
        """Parse the next piece of the body (in a worker thread: it writes to disk)."""
        try:
            self.parser.write(data)
        except FormParserError as exc:
            raise HttpError(400, f"the multipart/form-data body is malformed: {exc}") from None

    def finish(self) -> ReceivedFile:
        """The File part, once the whole body was fed; raises 400 when the body is incomplete or has no File."""
        if self.parser.state not in (MultipartState.START, MultipartState.END):
            raise HttpError(400, "the multipart/form-data body ended before its closing boundary")
        if self.received is None:  # an empty body, or a closing boundary and no parts
            raise Invalid(
                "the body has no part named File: send the file as a multipart/form-data part named File",
                target=FILE_PART,
            )
        return self.received

    def discard(self) -> None:
        if self.received is not None:
            self.received.upload.discard()

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise HttpError(400, "a part has no Content-Disposition header naming it (RFC 7578 section 4.2)")
        _, options = parse_options_header(_text(disposition, "Content-Disposition"))
        name = options.get("name")
        if not name:
            raise HttpError(400, "a part's Content-Disposition has no name (RFC 7578 section 4.2)")
        if name != FILE_PART:
            shown = name if len(name) <= 60 else name[:60] + "…"
            # Before the File part, a stray part is most likely the file under another name ("file").
            raise HttpError(
                400,
                f"unexpected part {shown!r}: FileUpload takes one part, named File",
                target=shown if self.received is not None else FILE_PART,
            )
        if self.received is not None:
            raise Invalid("send only one part named File", target=FILE_PART)
        # Refuse a bad name before a byte of the file is written.
        _, file_name = files.check_path(self.folder, options.get("filename"))
        content_type = self._headers.get(b"content-type")
        media_type = parse_options_header(_text(content_type, "Content-Type"))[0].lower() if content_type else None
        files.check_content_type(media_type)
        upload = files.Upload(self.files_dir, self.max_bytes, self.min_free_bytes, self.expected)
        self.received = ReceivedFile(file_name, media_type or None, upload)
        self._writing = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing and self.received is not None:
            self.received.upload.write(memoryview(data)[start:end])

    def _part_end(self) -> None:
        self._writing = False


class MultiPartBodyValidator(MultiPartFormDataValidator):
    """Streams FileUpload's body through `_Parts` instead of buffering it (see the module docstring)."""

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        content_type = Headers(scope=scope).get("content-type")
        if not content_type:
            raise UnsupportedMediaTypeProblem(detail="send the file as multipart/form-data (no Content-Type was given)")
        boundary = parse_options_header(content_type)[1].get("boundary")
        if not boundary:
            raise BadRequestProblem(detail="send the file as multipart/form-data with a boundary (Content-Type)")
        settings = scope["coursewire"].settings
        folder = files.check_folder(scope.get("path_params", {}).get("FileUploadUrl", ""))
        expected = _content_length(scope)
        # Before a byte of the body is read: the edge has already refused a Content-Length over the size limit.
        await asyncio.to_thread(files.check_free_space, settings.files_dir, settings.min_free_bytes, expected or 0)
        try:
            parts = _Parts(
                boundary.encode("latin-1"),
                folder,
                settings.files_dir,
                settings.max_upload_bytes,
                settings.min_free_bytes,
                expected,
            )
        except (FormParserError, UnicodeEncodeError):
            raise BadRequestProblem(detail="the multipart/form-data boundary is not valid") from None
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break  # finish() refuses the incomplete body; nobody is left to read the answer
                chunk = message.get("body", b"")
                if chunk:
                    # Parsing and writing a message takes a moment: off the event loop, one message at a time.
                    await asyncio.to_thread(parts.feed, chunk)
                if not message.get("more_body", False):
                    break
            scope[SCOPE_KEY] = parts.finish()
        except BaseException:
            parts.discard()
            raise
        return _empty_body(receive), _without_body(scope)


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length, or None for a chunked body (the edge refused malformed ones already)."""
    value = Headers(scope=scope).get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _without_body(scope: Scope) -> Scope:
    """The scope downstream sees: the same request with a body of zero bytes (already consumed here)."""
    emptied = dict(scope)
    emptied["headers"] = [
        (name, value) for name, value in scope["headers"] if name not in (b"content-length", b"transfer-encoding")
    ] + [(b"content-length", b"0")]
    return emptied


def _empty_body(receive: Receive) -> Receive:
    sent = False

    async def receive_() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return receive_
