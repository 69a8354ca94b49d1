"""The one table from failures to HTTP statuses, rendered as the OData error body."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from werkzeug.exceptions import HTTPException as WerkzeugHTTPException

from storage import errors
from storage.files import InsufficientStorage, TooLarge

log = logging.getLogger("coursewire")

CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalServerError",
    503: "ServiceUnavailable",
    507: "InsufficientStorage",
}

# Domain errors, most specific first.
STORAGE_STATUS: list[tuple[type[errors.StorageError], int]] = [
    (TooLarge, 413),
    (InsufficientStorage, 507),  # RFC 4918 section 11.5: an upload quota or the free-disk floor
    (errors.Invalid, 400),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
]


class HttpError(Exception):
    """An error raised at the edge itself (auth, throttling, routing) with its status and headers."""

    def __init__(self, status: int, message: str, target: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.target = target
        self.headers = headers or {}


# A message says what to fix in a sentence or two; anything longer is a value quoted whole by mistake.
MAX_MESSAGE = 1000
MAX_TARGET = 200


def body(status: int, message: str, target: str | None = None) -> bytes:
    """The OData error body for a status; message and target are cut to MAX_MESSAGE / MAX_TARGET characters."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    error: dict[str, Any] = {"code": CODES.get(status, "Error"), "message": message}
    if target:
        error["target"] = target if len(target) <= MAX_TARGET else target[: MAX_TARGET - 1] + "…"
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def response(
    status: int, message: str, target: str | None = None, headers: dict[str, str] | None = None
) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=status,
        body=body(status, message, target),
        content_type="application/json",
        headers=headers or {},
    )


_QUOTED = re.compile(r"'([^']+)'")


def _problem_target(detail: str) -> str | None:
    """Name the field a connexion validation message is about (`'x' is a required property - 'Room'`)."""
    path = re.search(r" - '([^']+)'$", detail)
    required = re.match(r"'([^']+)' is a required property", detail)
    if required:
        return f"{path[1]}.{required[1]}" if path else required[1]
    if path:
        return path[1]
    named = re.search(r"(?:parameter|Extra .*?parameter\(s\)) '?([^' ]+)'?", detail)
    if named:
        return named[1]
    quoted = _QUOTED.findall(detail)
    return quoted[-1] if quoted else None


def _problem(exc: ProblemException) -> ConnexionResponse:
    status = exc.status_code or 500
    detail = str(exc.detail or exc.title or CODES.get(status, "Error"))
    target = getattr(exc, "target", None) or (_problem_target(detail) if status == 400 else None)
    if status == 400 and target and target not in detail:
        detail = f"{detail} ({target})"
    headers = dict(exc.headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Basic realm="coursewire"')
    return response(status, detail.rstrip("."), target, headers)


def handle(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Render any exception as the OData error body; unexpected ones are logged and answered 500."""
    if isinstance(exc, HttpError):
        return response(exc.status, exc.message, exc.target, exc.headers)
    for cls, status in STORAGE_STATUS:
        if isinstance(exc, cls):
            return response(status, exc.message, exc.target)
    if isinstance(exc, ProblemException):
        return _problem(exc)
    if isinstance(exc, WerkzeugHTTPException | StarletteHTTPException):
        code: int = getattr(exc, "code", None) or getattr(exc, "status_code", None) or 500
        message = {
            404: "no operation at this path; see openapi/apiDefinition.swagger.json",
            405: "this path does not accept that method",
            413: "the request body is too large",
        }.get(code, str(getattr(exc, "description", None) or getattr(exc, "detail", "")) or CODES.get(code, "Error"))
        return response(code, message)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return response(500, "the server failed to handle this request; the error has been logged")
