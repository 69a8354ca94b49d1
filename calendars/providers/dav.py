"""WebDAV plumbing of the CalDAV provider: one account's HTTP requests (Basic auth, timeouts, size caps,
redirects, the SSRF rules for hrefs, the error mapping), and 207 Multi-Status answers read without DTDs.

Everything a server sends is bounded here: bodies by size (MAX_BODY, or a caller's cap), XML parsed with expat
refusing document type declarations (no entity expansion), hrefs resolved and kept on http(s).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn
from urllib.parse import urljoin, urlsplit
from xml.parsers import expat

import aiohttp

from calendars.model import AuthorizationLost, ProviderError, Rejected, Throttled, Unavailable
from storage import outbound

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
# The largest answer read from a CalDAV server: a calendar object or a PROPFIND listing of a home with
# hundreds of calendars stays far below it; anything larger is refused, not read.
MAX_BODY = 4 * 1024 * 1024
TIMEOUT = 30.0  # seconds for one request, answer included
MAX_REDIRECTS = 5  # RFC 6764 §5: /.well-known/caldav redirects to the context path
ERROR_BODY = 64 * 1024  # bytes of an error answer read: enough for its message or precondition element
XML = "application/xml; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str  # the URL that answered (after redirects)


class Http:
    """One account's requests: Basic auth, a timeout, a size cap, redirects, and the error mapping of every verb.

    The session's SSRF guard (storage.outbound.GuardedResolver) checks every host name it resolves, but aiohttp
    never resolves an IP address written in a URL. The URL the person gave was checked when it was accepted
    (storage.outbound.check_url); any other URL the server names (hrefs, redirects) may therefore change host
    only to a host *name*, never to a literal address (`entry`: the accepted URL).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        username: str,
        password: str,
        *,
        entry: str,
        timeout: float,
        max_body: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.session = session
        self.authorization = aiohttp.encode_basic_auth(username, password)
        self.entry_host = (urlsplit(entry).hostname or "").lower()
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_body = max_body
        self.clock = clock

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        redirects: bool = False,
        keep: Collection[int] = (),
        max_body: int | None = None,
    ) -> Answer:
        """The answer to one request, after at most MAX_REDIRECTS redirects when `redirects` (the method kept,
        as CalDAV clients do for PROPFIND; never from https to http). 401/403, 429, 5xx and transport failures
        raise (see `raise_for`) unless their status is in `keep` (then returned with at most ERROR_BODY bytes of
        body: a 403 may carry a precondition, RFC 4918 §16); every other status is returned for the caller to
        judge. `max_body`: this answer's size cap in bytes (default: the account's)."""
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            # The person's credentials go only to the origin asked first: a redirect elsewhere is followed
            # without them (the server does not choose where coursewire sends the password).
            authorize = _origin(url) == origin
            answer = await self._once(method, url, headers, data, keep, max_body or self.max_body, authorize)
            location = answer.headers.get("Location")
            if not (redirects and answer.status in (301, 302, 303, 307, 308) and location):
                return answer
            url = join(url, location)
        raise Rejected(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:  # never repeated: it may hold a password
            raise Rejected(f"{parts.scheme}://{parts.hostname}: put the user name and password in their own fields")
        host = (parts.hostname or "").lower()
        if outbound.literal(host) is not None and host != self.entry_host:
            raise Rejected(f"{url}: the server points to the address {host}, which coursewire does not follow")

    async def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        keep: Collection[int],
        max_body: int,
        authorize: bool = True,
    ) -> Answer:
        self._check(url)
        sent = {**(headers or {}), **({"Authorization": self.authorization} if authorize else {})}
        try:
            async with self.session.request(
                method,
                outbound.request_url(url),
                headers=sent,
                data=data,
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if status in (401, 403, 429) or status >= 500:
                    body = await read_body(response, ERROR_BODY, url, truncate=True)
                    if status in keep:
                        return Answer(status, response.headers, body, url)
                    raise_for(status, response.headers.get("Retry-After"), body, url, self.clock())
                return Answer(status, response.headers, await read_body(response, max_body, url), url)
        except ProviderError:
            raise
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise Rejected(f"{url}: not a usable URL ({exc})") from exc
        except TimeoutError as exc:
            raise Unavailable(f"{url}: no answer within {self.timeout.total:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, outbound.BlockedAddress):  # the session's SSRF guard refused the address
                raise Rejected(f"{url}: {exc.os_error}") from exc
            raise Unavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{url}: {type(exc).__name__}: {exc}") from exc


async def read_body(response: aiohttp.ClientResponse, limit: int, url: str, *, truncate: bool = False) -> bytes:
    """The body, at most `limit` bytes (after content decoding). Larger bodies raise Rejected, or with
    `truncate` are cut (error answers only need an excerpt). The rest is never read."""
    if not truncate and response.content_length is not None and response.content_length > limit:
        raise Rejected(f"{url}: the answer is {response.content_length} bytes, more than the {limit} accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            if truncate:
                break
            raise Rejected(f"{url}: the answer is larger than the {limit} bytes accepted")
    return b"".join(chunks)[:limit]


def raise_for(status: int, retry_after_header: str | None, body: bytes, url: str, now: datetime) -> NoReturn:
    retry_after = outbound.retry_after(retry_after_header, now)
    said = excerpt(body)
    where = f"{url}: {status}" + (f" ({said})" if said else "")
    if status in (401, 403):
        raise AuthorizationLost(f"{where}: the server refused the user name or app password")
    if status == 429 or (status == 503 and retry_after is not None):
        raise Throttled(where, retry_after=retry_after)
    raise Unavailable(where, retry_after=retry_after)


def rejected(answer: Answer, what: str) -> NoReturn:
    said = excerpt(answer.body)
    raise Rejected(f"{what}: {answer.status}" + (f" ({said})" if said else ""))


def excerpt(body: bytes, length: int = 200) -> str:
    """The server's message in a few words: markup removed, whitespace collapsed, at most `length` characters."""
    text = re.sub(r"<[^>]*>", " ", body[: length * 20].decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def strong(etag: str | None) -> str | None:
    """The ETag when it can be used in If-Match (strong, RFC 9110 §13.1.1), else None."""
    if not etag or etag.startswith("W/"):
        return None
    return etag


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit (RFC 6454 §4); None when it has none."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return None
    if port is None or not parts.hostname:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port


@dataclass(frozen=True)
class DavResponse:
    href: str  # absolute
    props: dict[str, ET.Element]  # properties found (2xx propstat), by Clark name
    status: int | None = None  # the response's own DAV:status (a 404 sync-collection member, a 507), if any


async def propfind(http: Http, url: str, depth: int, body: bytes, *, tolerate: bool = False) -> list[DavResponse]:
    """The DAV:response elements of a PROPFIND's 207 Multi-Status (RFC 4918 §9.1, §14.16), hrefs made absolute.
    With `tolerate`, a 404/405/501-like refusal (no WebDAV there) gives [] instead of Rejected."""
    headers = {"Depth": str(depth), "Content-Type": XML}
    answer = await http.send("PROPFIND", url, headers=headers, data=body, redirects=True)
    if answer.status != 207:
        if tolerate and answer.status in (400, 404, 405, 406, 415):
            return []
        rejected(answer, f"PROPFIND {url}")
    return multistatus(answer, f"PROPFIND {url}")[1]


def multistatus(answer: Answer, what: str, *, limit: int | None = None) -> tuple[ET.Element, list[DavResponse]]:
    """The root and the DAV:response elements of a 207 answer, hrefs made absolute (against the URL that
    answered). Raises Rejected for a body that is not a DAV:multistatus, or holds more than `limit` responses."""
    root = parse_xml(answer.body, answer.url)
    if root.tag != f"{{{DAV}}}multistatus":
        raise Rejected(f"{what}: the answer is not a DAV:multistatus")
    found: list[DavResponse] = []
    for response in root.iterfind(f"{{{DAV}}}response"):
        href = response.findtext(f"{{{DAV}}}href")
        if not href:
            continue
        if limit is not None and len(found) >= limit:
            raise Rejected(f"{what}: the answer lists more than {limit} resources")
        props: dict[str, ET.Element] = {}
        for propstat in response.findall(f"{{{DAV}}}propstat"):
            if not ok_status(propstat.findtext(f"{{{DAV}}}status", "")):
                continue
            for prop in propstat.findall(f"{{{DAV}}}prop"):
                props.update((child.tag, child) for child in prop)
        found.append(
            DavResponse(join(answer.url, href.strip()), props, status_code(response.findtext(f"{{{DAV}}}status")))
        )
    return root, found


def status_code(status_line: str | None) -> int | None:
    """The code of an HTTP status line (`HTTP/1.1 404 Not Found` -> 404), None when there is none."""
    parts = (status_line or "").split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() and len(parts[1]) == 3 else None


def preconditions(answer: Answer) -> set[str]:
    """The Clark names of the conditions in an error answer's DAV:error body (RFC 4918 §16), e.g.
    `{DAV:}valid-sync-token`; empty when the body is not such a document."""
    try:
        root = parse_xml(answer.body, answer.url)
    except Rejected:
        return set()
    if root.tag != f"{{{DAV}}}error":
        return set()
    return {child.tag for child in root}


def ok_status(status_line: str) -> bool:
    parts = status_line.split()
    return len(parts) >= 2 and parts[1].startswith("2")


def join(base: str, href: str) -> str:
    """`href` resolved against `base`; Rejected unless http(s), and never from https down to http."""
    joined = urljoin(base, href)
    scheme = urlsplit(joined).scheme
    if scheme not in ("http", "https") or (urlsplit(base).scheme == "https" and scheme != "https"):
        raise Rejected(f"{base}: the server points to {joined}, which coursewire does not follow")
    return joined


def collection_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def first_href(prop: ET.Element | None) -> str | None:
    found = hrefs(prop)
    return found[0] if found else None


def hrefs(prop: ET.Element | None) -> list[str]:
    if prop is None:
        return []
    return [h.text.strip() for h in prop.iter(f"{{{DAV}}}href") if h.text and h.text.strip()]


def text_of(prop: ET.Element | None) -> str:
    return "".join(prop.itertext()).strip() if prop is not None else ""


# Elements one answer may hold: a listing of caldav.MAX_MEMBERS members takes about 8 each. Past it the parser
# stops at once, so a server cannot make coursewire build (or spend seconds on) millions of tiny elements.
MAX_ELEMENTS = 250_000


def parse_xml(data: bytes, url: str) -> ET.Element:
    """The document as an ElementTree element with Clark names (`{DAV:}href`). A document type declaration
    (where entities would be declared: billion laughs, external entities), malformed XML, or more than
    MAX_ELEMENTS elements raises Rejected."""
    builder = ET.TreeBuilder()
    count = 0

    def clark(name: str) -> str:
        namespace, _, local = name.rpartition(" ")
        return f"{{{namespace}}}{local}" if namespace else local

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS:
            raise Rejected(f"{url}: the answer holds more than {MAX_ELEMENTS} XML elements")
        builder.start(clark(name), {clark(k): v for k, v in attributes.items()})

    def refuse(*_: object) -> NoReturn:
        raise Rejected(f"{url}: the answer declares a DTD or entities, which coursewire does not read")

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    parser.EndElementHandler = lambda name: builder.end(clark(name))
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
        return builder.close()
    except (expat.ExpatError, AssertionError) as exc:
        raise Rejected(f"{url}: the answer is not well-formed XML ({exc})") from exc


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url`, the port made explicit for http and https."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port or default
