from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import clear_caches


@pytest.fixture
def client(service_env: dict, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The API in process over a real, migrated database (SQLite and PostgreSQL)."""
    monkeypatch.setenv("DISTILL_DATABASE_URL", database_url)
    clear_caches()
    from app.main import create_app

    with TestClient(create_app()) as c:
        yield c
