"""Deliveries request a callback byte for byte as it was registered: a flow's signed query (`sig=`, `%2F`-encoded
`sp=`) reaches it unchanged, as a real receiver records the request target. What a request line cannot carry as it
is is refused at subscribe time."""

from __future__ import annotations

import string

import aiohttp
import pytest
from hooks import deliver, make_worker, subscribe
from hypothesis import given
from hypothesis import strategies as st
from receiver import Receiver
from support import Api, error

from storage import outbound

# A Logic Apps / Power Automate "When a HTTP request is received" callback, as the designer shows it.
FLOW_QUERY = (
    "/workflows/8f1e2d3c4b5a69788796a5b4c3d2e1f0/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Zx9%2By%2F3kQ%3D"
)


def new_user(api: Api, login: str) -> None:
    api.ok("POST", "/odata/v2/Users", json={"LoginName": login})


@pytest.mark.parametrize(
    "target",
    [
        FLOW_QUERY,
        "/hook?a=%7e%2f%2F%25&b=%20+x",  # lower-case escapes and an encoded %: never normalized
        "/a%2Fb/c;p=1/?x=y/z?&&=",  # %2F in the path, ; and a second ? in the query
        "/",
    ],
)
def test_the_callback_is_requested_byte_for_byte(api: Api, receiver: Receiver, target: str) -> None:
    """The receiver sees exactly the registered path and query (aiohttp, given the URL as text, sent `sp=/triggers/
    manual/run` and `%7E` as `~`, so the flow refused the call: its signature covers the query as issued)."""
    subscribe(api, "UserCreated", receiver.url + target)
    new_user(api, "byte@x.example")
    deliver(make_worker(api))
    assert [r.path for r in receiver.wait_for(1)] == [target]


def test_characters_beyond_ascii_are_sent_as_their_utf8_escapes(api: Api, receiver: Receiver) -> None:
    """An IRI callback is requested as its URI (RFC 3987 §3.1), the rest still as registered."""
    subscribe(api, "UserCreated", receiver.url + "/flöde/ä?q=ü&sig=a%2Fb")
    new_user(api, "iri@x.example")
    deliver(make_worker(api))
    assert [r.path for r in receiver.wait_for(1)] == ["/fl%C3%B6de/%C3%A4?q=%C3%BC&sig=a%2Fb"]


@pytest.mark.parametrize("bad", ["/a b", "/a\\b", '/a"b', "/a{b}", "/a|b", "/a^b", "/a`b", "/a<b>", "/a\u200bb"])
def test_a_callback_a_request_line_cannot_carry_as_it_is_is_refused(api: Api, receiver: Receiver, bad: str) -> None:
    """A space, backslash or other character RFC 3986 allows only percent-encoded could not be requested as
    registered: 400 naming WebHookUri at subscribe time (it was accepted, then sent altered)."""
    response = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": receiver.url + bad})
    assert (response.status_code, error(response)["target"]) == (400, "WebHookUri")


# Path and query characters RFC 3986 lets a URI hold as they are, percent-encodings included.
_URI_CHARS = st.text(alphabet=string.ascii_letters + string.digits + "-._~:/?[]@!$&'()*+,;=", max_size=40)
_ESCAPES = st.builds(lambda b: f"%{b:02x}" if b % 2 else f"%{b:02X}", st.integers(0, 255))


@given(st.lists(st.one_of(_URI_CHARS, _ESCAPES), max_size=8))
def test_request_url_keeps_every_registered_target(pieces: list[str]) -> None:
    """For any path and query made of what a URI holds as it is, the request target is that text unchanged."""
    target = "/" + "".join(pieces)
    url = outbound.request_url("https://flow.example:8443" + target)
    assert (url.raw_host, url.port) == ("flow.example", 8443)
    expected = target.rstrip("?") if target.endswith("?") and target.count("?") == 1 else target
    assert url.raw_path_qs == expected


def test_error_messages_never_show_the_signed_query() -> None:
    """However aiohttp renders the URL in an exception (as registered or as the request target sent), the attempt
    log shows the origin only."""
    url = "https://flow.example" + FLOW_QUERY
    sent = outbound.request_url(url)
    for shown in (url, str(sent), sent.raw_path_qs, str(aiohttp.client.URL(url))):
        text = outbound.describe(OSError(f"cannot reach {shown}"), url)
        assert "sig=" not in text and "triggers" not in text, text
