""" "Send an HTTP request" takes the server's own absolute links (a nextLink, a Location) as `uri`, and nothing else
absolute: other hosts, ports and schemes, user-info tricks and paths outside the public base path stay a 400."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from support import Api, error, fake_resolve

from connector.app import create_app
from connector.settings import Settings
from storage import apikeys
from storage.db import Database

HOOK = {"WebHookUri": "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/run?sig=s"}


def make_users(api: Api, count: int) -> None:
    for n in range(count):
        api.ok("POST", "/odata/v2/Users", json={"LoginName": f"u{n}@x.example", "Department": "Ops"})


def proxied(api: Api, uri: str, *, v2: bool = False) -> Any:
    return api.post("/v2/httprequest" if v2 else "/httprequest", json={"method": "GET", "uri": uri})


def test_a_next_link_from_a_real_response_is_followed_through_http_request(api: Api) -> None:
    """The @odata.nextLink a list returned, given back as `uri` to either HttpRequest, answers the next page, as a
    flow that pages through "Send an HTTP request" does (a 400 "must be relative" before)."""
    make_users(api, 12)
    first = api.ok("GET", "/odata/v2/Users", params={"$filter": "Department eq 'Ops'", "$select": "Id,LoginName"})
    link = first["@odata.nextLink"]
    assert link.startswith("http://testserver/odata/v2/Users?")
    direct = api.ok("GET", link)
    for v2 in (False, True):
        response = proxied(api, link, v2=v2)
        assert response.status_code == 200, response.text
        assert response.json() == direct
    seen = [u["Id"] for u in first["value"]]
    page: dict[str, Any] = direct
    while True:  # to the end, each nextLink through HttpRequest
        seen += [u["Id"] for u in page["value"]]
        if "@odata.nextLink" not in page:
            break
        page = proxied(api, page["@odata.nextLink"]).json()
    assert len(seen) == len(set(seen)) == 12


def test_a_location_is_followed_through_http_request_v2(api: Api) -> None:
    """A subscription's Location works as HttpRequest_v2's uri; HttpRequest keeps to /odata/v2/ and refuses it."""
    created = api.post("/webhooks/subscribe/CourseEnrollment", json=HOOK)
    location = created.headers["Location"]
    response = proxied(api, location, v2=True)
    assert response.status_code == 200, response.text
    assert response.json()["Id"] == created.json()["Id"]
    outside = proxied(api, location)
    assert (outside.status_code, error(outside)["target"]) == (400, "uri")
    assert "leaves /odata/v2/" in error(outside)["message"]


@pytest.mark.parametrize(
    "uri",
    [
        "https://testserver/odata/v2/Users",  # another scheme
        "http://testserver:8080/odata/v2/Users",  # another port
        "http://testserver.evil.example/odata/v2/Users",
        "http://evil.example/odata/v2/Users",
        "http://testserverx/odata/v2/Users",
        "http://testserver@evil.example/odata/v2/Users",  # the host is evil.example
        "http://testserver:80@evil.example/odata/v2/Users",
        "http://evil.example@testserver/odata/v2/Users",  # credentials, even to us
        "http://api:key@testserver/odata/v2/Users",
        "http://testserver\\@evil.example/odata/v2/Users",
        "http://testserver\\odata\\v2\\Users",
        "//testserver/odata/v2/Users",
        "ftp://testserver/odata/v2/Users",
        "http://testserver:99999/odata/v2/Users",
        "http://testserver/odata/v2/../../v2/httprequest",
        "http://testserver/odata/v2/%2e%2e/%2e%2e/etc/passwd",
        "http:/odata/v2/Users",
    ],
)
def test_every_other_absolute_uri_stays_a_400(api: Api, uri: str) -> None:
    """Absolute uris that are not this server's own links are 400 naming uri, for both operations."""
    for v2 in (False, True):
        response = proxied(api, uri, v2=v2)
        assert response.status_code == 400, (uri, v2, response.text)
        assert error(response)["target"] == "uri"


def test_own_links_match_by_scheme_host_and_port_not_by_spelling(api: Api) -> None:
    """The default port may be written out and the host's case may differ: it is the same server."""
    make_users(api, 2)
    for uri in ("http://testserver:80/odata/v2/Users", "HTTP://TestServer/odata/v2/Users"):
        response = proxied(api, uri)
        assert response.status_code == 200, (uri, response.text)
        assert len(response.json()["value"]) == 2


@pytest.fixture
def public_api(settings: Settings, db: Database) -> Iterator[Api]:
    """The app behind COURSEWIRE_PUBLIC_URL with a base path, as behind a proxy that serves it under /lms."""
    public = dataclasses.replace(settings, public_url="https://lms.contoso.com/lms")
    app = create_app(public, db=db, validate_responses=True, resolve=fake_resolve)
    with app.test_client() as client:
        yield Api(client, apikeys.create(db, "public", "full").secret, db, public)


def test_behind_a_public_url_its_links_are_the_own_ones(public_api: Api) -> None:
    """With COURSEWIRE_PUBLIC_URL, links under it (base path included) are followed; the request's own host, another
    base path or plain http are not the server's links."""
    make_users(public_api, 7)
    first = public_api.ok("GET", "/odata/v2/Users")
    link = first["@odata.nextLink"]
    assert link.startswith("https://lms.contoso.com/lms/odata/v2/Users?")
    followed = proxied(public_api, link)
    assert followed.status_code == 200, followed.text
    assert len(first["value"]) + len(followed.json()["value"]) == 7
    explicit_port = proxied(public_api, link.replace("contoso.com/", "contoso.com:443/", 1))
    assert explicit_port.status_code == 200, explicit_port.text
    for uri in (
        link.replace("/lms/", "/other/", 1),
        link.replace("/lms/", "/lmsx/", 1),
        link.replace("/lms/", "/", 1),
        link.replace("https:", "http:", 1),
        "http://testserver/odata/v2/Users",
    ):
        response = proxied(public_api, uri)
        assert (response.status_code, error(response)["target"]) == (400, "uri"), uri
