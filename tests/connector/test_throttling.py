"""The 429 of the HTTP edge (connector/edge.py `_charge`): Retry-After in whole seconds rounded up, the same wait
in the message, and a retry after that many seconds accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector import errors
from connector.edge import _charge
from storage.models import ApiKey
from storage.ratelimit import RateLimiter

KEY = ApiKey(id="0b6c1f8e-4d1a-4a3e-9b59-2f6d8c1e7a10", name="busy", access="full", key_prefix="cw_", created_at="")


class Clock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def refusal(limiter: RateLimiter) -> errors.HttpError:
    with pytest.raises(errors.HttpError) as raised:
        _charge(limiter, KEY)
    return raised.value


@pytest.mark.parametrize(
    ("elapsed", "retry_after"), [(0.5, "60"), (1.0, "59"), (58.0, "2"), (58.25, "2"), (59.999999, "1")]
)
def test_retry_after_is_the_wait_rounded_up(tmp_path: Path, elapsed: float, retry_after: str) -> None:
    """Refused `elapsed` seconds after the first of 2 calls, the answer is a 429 whose Retry-After (RFC 9110
    §10.2.3: whole seconds) is the exact wait rounded up, and whose OData error message says the same."""
    clock = Clock()
    limiter = RateLimiter(tmp_path / "ratelimit.db", 2, 60, clock=clock)
    _charge(limiter, KEY)
    _charge(limiter, KEY)
    clock.now += elapsed
    refused = refusal(limiter)
    assert (refused.status, refused.headers) == (429, {"Retry-After": retry_after})
    body = json.loads(errors.body(refused.status, refused.message, refused.target))
    assert body == {
        "error": {
            "code": "TooManyRequests",
            "message": "rate limit of 2 calls in any 60 seconds reached for this API key;"
            f" the next call will be accepted in {retry_after} s (Retry-After)",
        }
    }


def test_a_retry_after_retry_after_is_accepted(tmp_path: Path) -> None:
    """A caller that waits Retry-After seconds gets through; one call a microsecond before the exact wait does not."""
    clock = Clock()
    limiter = RateLimiter(tmp_path / "ratelimit.db", 3, 10, clock=clock)
    for step in (0.0, 0.3, 0.3):
        clock.now += step
        _charge(limiter, KEY)
    clock.now += 0.15  # 0.75 s after the first call, which leaves the window 9.25 s later
    refused_at = clock.now
    seconds = int(refusal(limiter).headers["Retry-After"])
    assert seconds == 10
    clock.now = refused_at + 9.249999
    assert refusal(limiter).headers["Retry-After"] == "1"
    clock.now = refused_at + seconds
    _charge(limiter, KEY)
