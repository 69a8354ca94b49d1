"""Fixtures for system tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serving import Server, start


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve` with two worker processes on an empty database."""
    yield from start(tmp_path_factory.mktemp("serve") / "data", "--workers", "2")
