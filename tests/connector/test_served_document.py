"""/swagger.json: the published definition with the server's own scheme, host and base path, valid Swagger 2.0 by
a standard validator, served without credentials, the same document export-connector writes for that host."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV2SpecValidator
from support import Api, error, fake_resolve

from certification import Tenant, connector_files
from certification.loading import shipped_definition
from connector import published
from connector.app import create_app
from connector.settings import Settings
from storage.db import Database

SHIPPED = shipped_definition()


def swagger_errors(doc: dict[str, Any]) -> list[str]:
    """Every error openapi-spec-validator's Swagger 2.0 validator finds (schema and semantics)."""
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in OpenAPIV2SpecValidator(doc).iter_errors()]


def served(app: Any, headers: dict[str, str] | None = None, peer: str = "testclient") -> Any:
    with app.test_client(client=(peer, 40000)) as client:
        return client.get("/swagger.json", headers=headers or {})


def test_the_document_is_served_without_credentials_for_the_requests_host(app: Any) -> None:
    """No Authorization needed (tools fetch it bare); host, basePath and schemes are this server's (it was not served
    at all, and connexion's rendering said `basePath: ""`)."""
    response = served(app, {"Host": "127.0.0.1:18365"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert (doc["host"], doc["basePath"], doc["schemes"]) == ("127.0.0.1:18365", "/", ["http"])
    assert swagger_errors(doc) == []


TENANT = Tenant(
    publisher="Contoso Learning",
    website="https://www.contoso.com",
    privacy_policy="https://www.contoso.com/privacy",
    contact_name="Contoso IT Service Desk",
    contact_email="lms-support@contoso.com",
    brand_color="#0B5CAD",
)


def test_it_is_what_export_connector_writes_but_for_the_tenants_values(app: Any) -> None:
    """The served document is the shipped definition with this server's host/basePath/schemes, written as
    export-connector writes them: for a loopback host, the exported definition but for the publisher's contact and
    links that only export-connector is told."""
    doc = served(app, {"Host": "127.0.0.1:8365"}).json()
    without = {k: v for k, v in doc.items() if k not in published.ADDRESS_FIELDS}
    assert without == {k: v for k, v in SHIPPED.items() if k not in published.ADDRESS_FIELDS}
    exported, _ = connector_files("127.0.0.1:8365", "/", TENANT)
    tenant_fields = ("info", "x-ms-connector-metadata")
    assert {k: v for k, v in doc.items() if k not in tenant_fields} == {
        k: v for k, v in exported.items() if k not in tenant_fields
    }
    assert doc["info"] == {**exported["info"], "contact": SHIPPED["info"]["contact"]}


@pytest.fixture
def public_app(settings: Settings, db: Database) -> Any:
    public = dataclasses.replace(settings, public_url="https://lms.contoso.com/lms")
    return create_app(public, db=db, validate_responses=True, resolve=fake_resolve)


def test_the_public_url_decides_the_address(public_app: Any) -> None:
    """Behind COURSEWIRE_PUBLIC_URL, the document names it, base path included, whatever the request's Host."""
    for headers in ({}, {"Host": "internal:8365"}, {"X-Forwarded-Host": "evil.example"}):
        doc = served(public_app, headers, peer="127.0.0.1").json()
        assert (doc["host"], doc["basePath"], doc["schemes"]) == ("lms.contoso.com", "/lms", ["https"])
        assert swagger_errors(doc) == []


@pytest.mark.parametrize(
    ("peer", "expected"),
    [("127.0.0.1", ("lms.contoso.com:8443", ["https"])), ("203.0.113.9", ("internal:8365", ["http"]))],
)
def test_forwarded_headers_count_only_from_trusted_proxies(app: Any, peer: str, expected: tuple[Any, ...]) -> None:
    """Like every other link: X-Forwarded-Proto/Host steer the address only from COURSEWIRE_TRUSTED_PROXIES."""
    headers = {"Host": "internal:8365", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "lms.contoso.com:8443"}
    doc = served(app, headers, peer=peer).json()
    assert (doc["host"], doc["schemes"]) == expected


@pytest.mark.parametrize(
    ("headers", "target"),
    [
        ({"Host": "a b"}, "Host"),
        ({"Host": "evil.example/x"}, "Host"),
        ({"X-Forwarded-Proto": "javascript:"}, "X-Forwarded-Proto"),
        ({"X-Forwarded-Host": 'x"><script>'}, "X-Forwarded-Host"),
    ],
)
def test_an_address_that_is_no_address_is_refused(app: Any, headers: dict[str, str], target: str) -> None:
    """The edge's rules for Host and a trusted proxy's headers hold here too, before authentication."""
    response = served(app, headers, peer="127.0.0.1")
    assert (response.status_code, error(response)["target"]) == (400, target)


def test_an_ipv6_literal_leaves_host_out(app: Any) -> None:
    """Swagger 2.0's `host` cannot hold an IPv6 literal; without it, clients use the host that served the document."""
    doc = served(app, {"Host": "[::1]:8365"}).json()
    assert "host" not in doc and doc["schemes"] == ["http"]
    assert swagger_errors(doc) == []


def test_head_and_other_methods(app: Any, api: Api) -> None:
    """HEAD answers the headers alone; other methods are 405 in the OData shape, never a FileUpload to swagger.json."""
    with app.test_client() as client:
        head = client.head("/swagger.json")
        assert (head.status_code, head.content) == (200, b"")
        assert int(head.headers["content-length"]) == len(client.get("/swagger.json").content)
    posted = api.post("/swagger.json", files={"File": ("x.txt", b"x")})
    assert (posted.status_code, error(posted)["code"]) == (405, "MethodNotAllowed")
    assert not (api.settings.files_dir / "swagger.json").exists()


def test_each_address_is_rendered_once_and_kept_within_bounds() -> None:
    """The bytes for an address are built once and reused; however many Host names clients send, at most
    CACHE_SIZE are kept."""
    document = published.Document(SHIPPED)
    first = document.render("http://a.example:1")
    assert document.render("http://a.example:1") is first
    for n in range(published.CACHE_SIZE * 2):
        document.render(f"http://h{n}.example")
    assert len(document._cache) == published.CACHE_SIZE
    assert json.loads(document.render("http://a.example:1")) == json.loads(first)


def test_the_shipped_file_itself_is_valid_swagger_once_it_has_a_host() -> None:
    """Every error the validator reports in a served document would come from the shipped file: none does."""
    assert swagger_errors(published.served_definition(SHIPPED, "https://lms.contoso.com")) == []
