"""schemathesis against the OpenAPI document, in process, over a real SQLite
database: no 5xx, and every response matches the schema. Bounded, so the suite
stays fast."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from app import tenants
from app.db import get_sessionmaker
from app.main import create_app
from tests.conftest import clear_caches, migrate

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@pytest.fixture
def embedded(service_env, tmp_path, monkeypatch) -> str:
    """A migrated SQLite database with one tenant; returns its API key."""
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    migrate(url)
    monkeypatch.setenv("DISTILL_DATABASE_URL", url)
    clear_caches()
    with get_sessionmaker()() as session:
        key = tenants.create_key(session, tenants.local_tenant(session)).key
        session.commit()
    return key


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(case, embedded):
    # Schema-valid specs are refused on purpose when they cannot run (a CNN deeper than
    # the input allows) or reuse an Idempotency-Key with another body: 422 by contract.
    case.call_and_validate(headers={"Authorization": f"Bearer {embedded}"}, excluded_checks=[positive_data_acceptance])
