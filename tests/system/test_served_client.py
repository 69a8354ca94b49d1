"""A client generated from the server's own /swagger.json (bravado, tests/system/served_client.py) calls a real
`coursewire serve`: the document is valid Swagger 2.0 with the address the server is reached at, and its
operations work as described, including "Send an HTTP request" following a nextLink the server returned."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import OpenAPIV2SpecValidator
from serving import Server, start

pytestmark = pytest.mark.system
CLIENT = Path(__file__).with_name("served_client.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve` on an empty database, with pages of two rows so three users make a nextLink."""
    data = tmp_path_factory.mktemp("served") / "data"
    yield from start(data, "--workers", "1", env={"COURSEWIRE_PAGE_SIZE": "2"})


def test_the_served_document_is_valid_swagger_for_this_server(server: Server) -> None:
    """Fetched without credentials, as tools do: valid Swagger 2.0, and it names the address it was fetched from
    (it was not served; connexion's rendering said `basePath: ""` and `host: localhost:8365`)."""
    response = requests.get(server.base + "/swagger.json", timeout=30)
    assert response.status_code == 200
    doc = response.json()
    assert [e.message for e in OpenAPIV2SpecValidator(doc).iter_errors()] == []
    assert f"{doc['schemes'][0]}://{doc['host']}{doc['basePath'].rstrip('/')}" == server.base


def test_a_generated_client_calls_the_server(server: Server) -> None:
    """bravado builds a client from the served document and calls it: a body, a `({Id})` path, a PATCH, OData
    options named `$filter`/`$select`/`$top`, an error in the OData shape, and the nextLink of a real response
    given to HttpRequest and HttpRequest_v2 as `uri` (a 400 before: only relative uris were taken)."""
    ran = subprocess.run(
        [sys.executable, str(CLIENT), server.base, server.session.auth[1]],  # type: ignore[index]
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert {"Users", "Courses", "Enrollments", "HttpRequest", "Webhooks"} <= set(seen["resources"])
    assert (seen["by_id"], seen["updated_city"]) == ("gen0@x.example", "Aarhus")
    assert seen["first_page"] == ["gen0@x.example", "gen1@x.example"]
    assert seen["next_link"].startswith(server.base + "/odata/v2/Users?")
    for name in ("HttpRequest", "HttpRequest_v2"):
        assert seen[name] == {"status": 200, "logins": ["gen2@x.example"]}, name
    assert seen["bad_filter"]["status"] == 400
    assert seen["bad_filter"]["error"]["target"] == "$filter"
