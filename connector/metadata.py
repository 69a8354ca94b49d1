"""`GET /odata/v2/$metadata` (CSDL XML) and `GET /odata/v2/` (the service document) for OData clients.

Excel's and Power BI's "OData feed" (Power Query `OData.Feed`), python-odata and other OData v4 clients read
the service document to list the entity sets and `$metadata` to learn their types before they query them.
Both answer after the edge has authenticated the call (Basic auth, like every call) and charged the rate
limit; they are not operations of the connector document: Power Platform has no use for them and cannot
import an operation that answers XML, so the document and `coursewire check` are unaffected.
"""

from __future__ import annotations

import json
import re
from functools import cache

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector import context
from connector.edge import Route
from storage.odata import MODEL, csdl
from storage.odata.edm import describe

ROOT = "/odata/v2"
METADATA = f"{ROOT}/$metadata"
# For the edge's route guard: these paths exist, for these methods (others are a 405 there).
ROUTES: list[Route] = [
    Route(re.compile(rf"^{re.escape(METADATA)}$"), frozenset({"GET", "HEAD"})),
    Route(re.compile(rf"^{re.escape(ROOT)}/?$"), frozenset({"GET", "HEAD"})),
]
ODATA_VERSION = (b"odata-version", b"4.0")


@cache
def model() -> csdl.Model:
    """The description of storage.odata.MODEL, derived once per process (the model does not change while it runs)."""
    return describe(MODEL)


@cache
def metadata_document() -> bytes:
    """The CSDL XML document."""
    return csdl.metadata_xml(model())


def service_document(base_url: str) -> bytes:
    """The service document (OData JSON Format 4.0 section 5) for a server reached at `base_url`."""
    document = csdl.service_document(model(), f"{base_url}{METADATA}")
    return json.dumps(document, separators=(",", ":")).encode()


class MetadataMiddleware:
    """Answers GET and HEAD on the service root and `$metadata`, and marks the handlers' answers under /odata/v2/
    with `OData-Version: 4.0` (OData 4.0 Protocol 8.1.5: the version of the response, which OData clients
    read the payload by; errors are rendered further out, without it); passes everything on otherwise.

    Sits behind connector.edge.EdgeMiddleware, which has authenticated the request and put the services
    in the scope; ROUTES must be among the edge's routes, or its guard answers 404 first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == ROOT or path.startswith(ROOT + "/")):
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD") and path == METADATA:
            await _answer(scope, send, metadata_document(), b"application/xml")
        elif scope["method"] in ("GET", "HEAD") and path in (ROOT, ROOT + "/"):
            body = service_document(context.base_url(dict(scope)))
            await _answer(scope, send, body, b"application/json;odata.metadata=minimal")
        else:
            await self.app(scope, receive, _versioned(send))


def _versioned(send: Send) -> Send:
    async def versioned(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == ODATA_VERSION[0] for name, _ in headers):
                headers.append(ODATA_VERSION)
            message = {**message, "headers": headers}
        await send(message)

    return versioned


async def _answer(scope: Scope, send: Send, body: bytes, content_type: bytes) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        ODATA_VERSION,
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
