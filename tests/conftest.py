"""Shared fixtures: a real SQLite file per test, the real app with response validation, API keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support import Api, Clock, fake_resolve

from connector.app import create_app
from connector.settings import Settings
from storage import apikeys
from storage.db import Database
from storage.outbound import parse_networks
from webhooks.config import DeliveryConfig


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2030, 3, 1, 8, 0, tzinfo=UTC))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Webhook receivers of the tests listen on 127.0.0.1; batching is off unless a test turns it on.
    delivery = DeliveryConfig(
        allowed_networks=parse_networks("127.0.0.0/8"), batch_window=0, retry_schedule=(5, 30, 120)
    )
    return Settings(
        data_dir=tmp_path / "data", rate_limit=None, page_size=5, max_upload_bytes=64 * 1024, delivery=delivery
    )


@pytest.fixture
def db(settings: Settings, clock: Clock) -> Iterator[Database]:
    database = Database(settings.database_path, clock=clock)
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def app(settings: Settings, db: Database) -> Any:
    return create_app(settings, db=db, validate_responses=True, resolve=fake_resolve)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with app.test_client() as c:
        yield c


@pytest.fixture
def api(client: TestClient, db: Database, settings: Settings) -> Api:
    return Api(client, apikeys.create(db, "tests", "full").secret, db, settings)


@pytest.fixture
def read_api(client: TestClient, db: Database, settings: Settings) -> Api:
    return Api(client, apikeys.create(db, "reader", "read").secret, db, settings)
