"""Throttling as the connector documents it, against a real `coursewire serve` with two worker processes: 600 calls
per 60 seconds per key, the 601st refused with a 429 that says when the next call will be accepted."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from serving import Server, start

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve`, two workers, with the documented limit set explicitly (600 calls per 60 s)."""
    data = tmp_path_factory.mktemp("throttle") / "data"
    yield from start(data, "--workers", "2", env={"COURSEWIRE_RATE_LIMIT": "600/60"})


@dataclass
class Answer:
    started: float  # wall clock, seconds, before the request was sent
    ended: float  # after the answer arrived
    status: int
    headers: Any  # case-insensitive, as requests gives them
    body: Any


def test_a_burst_of_620_calls_gets_exactly_20_refusals(served: Server) -> None:
    """620 calls from 4 connections within seconds: 600 answered 200 and exactly 20 answered 429 in the OData
    error shape, each with a Retry-After (whole seconds) that is when the first call leaves the window, and a
    message that says the same."""
    local = threading.local()

    def call(_: int) -> Answer:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.auth = served.session.auth
        started = time.time()
        response = local.session.get(served.base + "/odata/v2/Users?$top=1", timeout=30)
        return Answer(started, time.time(), response.status_code, response.headers, response.json())

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, range(620)))
    first = min(a.started for a in answers)
    assert max(a.ended for a in answers) - first < 45, "the burst must fit well inside one window"
    assert sorted({a.status for a in answers}) == [200, 429]
    refused = [a for a in answers if a.status == 429]
    assert len(refused) == 20
    # The window opens with the first accepted call, charged between the first request's start and the end of
    # the first accepted answer; each refusal was charged while its own request was in flight.
    opened_by = min(a.ended for a in answers if a.status == 200)
    for answer in refused:
        seconds = int(answer.headers["Retry-After"])
        assert math.ceil(first + 60 - answer.ended) <= seconds <= math.ceil(opened_by + 60 - answer.started)
        assert answer.body == {
            "error": {
                "code": "TooManyRequests",
                "message": "rate limit of 600 calls in any 60 seconds reached for this API key;"
                f" the next call will be accepted in {seconds} s (Retry-After)",
            }
        }
