"""schemathesis fuzzes every operation of the served document, authenticated, against `coursewire serve`
with demo data: no input may cause a 5xx, and every response must match the document's own schema."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from serving import Server, start

pytestmark = [pytest.mark.system, pytest.mark.slow]

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi" / "apiDefinition.swagger.json"
schema = schemathesis.openapi.from_dict(json.loads(DOCUMENT.read_text()))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with demo data and throttling off (the fuzzer calls far more than 600 times a minute)."""
    yield from start(
        tmp_path_factory.mktemp("fuzz") / "data", "--workers", "2", "--demo", env={"COURSEWIRE_RATE_LIMIT": "off"}
    )


@schema.parametrize()
# CI runs 25 examples per operation; COURSEWIRE_FUZZ_EXAMPLES=500 digs deeper locally.
@settings(
    max_examples=int(os.environ.get("COURSEWIRE_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_document(case, fuzz_server: Server) -> None:
    """Random valid and invalid requests never crash the server or break the response schema."""
    case.call_and_validate(
        base_url=fuzz_server.base,
        session=fuzz_server.session,
        checks=[not_a_server_error, response_schema_conformance],
    )
