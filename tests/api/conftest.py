from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from tests.conftest import clear_caches


@pytest.fixture
def client(in_process_env: dict, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The API in process over a real, migrated database (SQLite and PostgreSQL)."""
    monkeypatch.setenv("DISTILL_DATABASE_URL", database_url)
    clear_caches()
    with keyed_client() as c:
        yield c


@contextmanager
def keyed_client() -> Iterator[TestClient]:
    """The app in process, holding the key its first start created for the tenant 'local'."""
    from app.config import get_settings
    from app.main import create_app

    with TestClient(create_app()) as c:
        c.headers["Authorization"] = f"Bearer {get_settings().local_key_file.read_text().strip()}"
        yield c
