"""The document the server publishes at /swagger.json: the connector definition with this server's own scheme,
host and base path, for developers who point their tools (code generators, Postman, API gateways) at it.

It is served without credentials, as /healthz is: tools fetch a document by URL and most send none, and it
holds nothing but the public definition (the same file every checkout ships, no tenant data). So it must be
cheap: the definition is serialized once per process, and the bytes for each address are put together
from it once (a small concatenation) and kept, at most `CACHE_SIZE` addresses, so a client naming ever new
Host headers costs microseconds a request, not a serialization of the document.

Swagger 2.0 has no field for an IPv6 literal (`host` may not hold a colon but the port's), so for such an
address `host` is left out, which Swagger 2.0 defines as "the host serving the documentation". The document
is the one export-connector starts from (certification.loading.shipped_definition), with the host and base
path written as it writes them.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from contextlib import suppress
from threading import Lock
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from certification.export import InvalidOption, checked_host
from connector import context
from connector.edge import HOST, MAX_HOST, header_values
from connector.errors import HttpError
from connector.settings import Settings

PATH = "/swagger.json"
CACHE_SIZE = 64
# The fields export-connector writes for a host (certification.export.connector_files) besides the tenant's own
# values; everything else is the shipped definition as it is.
ADDRESS_FIELDS = ("host", "basePath", "schemes")


def address(base_url: str) -> dict[str, Any]:
    """`host`, `basePath` and `schemes` for a server reached at `base_url` (`https://lms.contoso.com/lms` ->
    host `lms.contoso.com`, basePath `/lms`, schemes `["https"]`).

    Host and base path are written as export-connector writes them (certification.export.checked_host); a host
    it cannot write, an IPv6 literal, is left out (Swagger 2.0's `host` holds no colon but the port's). The
    scheme is the one the server is reached by (export-connector guesses it from the host). Raises ValueError
    for a base URL that is not http(s) with a host.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{base_url!r} is not an http(s) base URL")
    host, base_path = parts.netloc.rpartition("@")[2].lower(), parts.path.rstrip("/") or "/"
    fields: dict[str, Any] = {}
    with suppress(InvalidOption):  # an IPv6 literal: no host
        fields["host"], base_path = checked_host(host, base_path)
    fields["basePath"] = base_path
    fields["schemes"] = [parts.scheme]
    return fields


def served_definition(definition: dict[str, Any], base_url: str) -> dict[str, Any]:
    """`definition` as served to clients of `base_url`: the same document with `address(base_url)` in place
    of its `host`, `basePath` and `schemes` (those first). The input is not changed."""
    rest = {k: v for k, v in definition.items() if k not in ADDRESS_FIELDS}
    return {**address(base_url), **rest}


class Document:
    """The definition's bytes per base URL: serialized once, each address's bytes kept (LRU, CACHE_SIZE)."""

    def __init__(self, definition: dict[str, Any]) -> None:
        rest = {k: v for k, v in definition.items() if k not in ADDRESS_FIELDS}
        # `{` + the address fields + `,` + the rest of the object without its own `{`.
        self._rest = json.dumps(rest, separators=(",", ":"), ensure_ascii=False).encode()[1:]
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = Lock()

    def render(self, base_url: str) -> bytes:
        """The document for `base_url` as UTF-8 JSON; raises ValueError as `address` does."""
        with self._lock:
            cached = self._cache.get(base_url)
            if cached is not None:
                self._cache.move_to_end(base_url)
                return cached
        head = json.dumps(address(base_url), separators=(",", ":"), ensure_ascii=False).encode()[:-1]
        body = head + b"," + self._rest
        with self._lock:
            self._cache[base_url] = body
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return body


class PublishedDocument:
    """ASGI middleware answering GET and HEAD /swagger.json before authentication; other requests pass on.

    The address is the one links carry (connector.context.base_url_of: COURSEWIRE_PUBLIC_URL, else the Host
    header or a trusted proxy's X-Forwarded-Proto/Host), checked as the edge checks it for every other
    request: a Host (or a trusted X-Forwarded-Host) that is not one host name or address with an optional
    port is a 400 naming it, as is another method a 405.
    """

    def __init__(self, app: ASGIApp, settings: Settings, definition: dict[str, Any]) -> None:
        self.app = app
        self.settings = settings
        self.document = Document(definition)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            raise HttpError(405, f"{PATH} accepts GET and HEAD, not {scope['method']}", headers={"Allow": "GET, HEAD"})
        body = self.document.render(self._base_url(scope))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    def _base_url(self, scope: Scope) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        hosts = header_values(scope, b"host")
        if len(hosts) > 1 or (hosts and not _is_host(hosts[0])):
            raise HttpError(400, "the Host header must be one host name or address, with an optional port", "Host")
        base = context.base_url_of(scope, self.settings)
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https"):
            raise HttpError(400, "X-Forwarded-Proto from the proxy must be http or https", "X-Forwarded-Proto")
        if not _is_host(parts.netloc):
            raise HttpError(
                400,
                "X-Forwarded-Host from the proxy must be one host name or address, with an optional port",
                "X-Forwarded-Host",
            )
        return base


def _is_host(text: str) -> bool:
    return len(text) <= MAX_HOST and HOST.fullmatch(text) is not None
