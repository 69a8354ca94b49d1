"""A real webhook receiver on 127.0.0.1 for every test of this folder that asks for one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from receiver import Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r
