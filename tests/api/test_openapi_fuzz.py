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
KEY: dict[str, str] = {}  # the current test's API key, set by `embedded`
ADMIN_KEY = "fuzz-admin-key"


@schema.auth(refresh_interval=None, retry_on=[])
class TenantKey:
    """The document declares bearer keys: schemathesis applies this one, except to the cases it
    made without a key on purpose (they must get 401), and sends wrong keys too (ignored_auth)."""

    def get(self, case, context) -> str:
        if case.operation.path.startswith("/v1/admin/"):
            return ADMIN_KEY
        return KEY.get("key", "")  # collection asks before any test ran

    def set(self, case, data: str, context) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def embedded(in_process_env, tmp_path, monkeypatch) -> str:
    """A migrated SQLite database with one tenant; returns its API key."""
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    migrate(url)
    monkeypatch.setenv("DISTILL_DATABASE_URL", url)
    # schemathesis sends wrong keys to every route and expects 401 (its ignored_auth check):
    # without this, the wrong-key limit would answer 429 first.
    monkeypatch.setenv("DISTILL_AUTH_FAILURES_PER_MINUTE", "0")
    monkeypatch.setenv("DISTILL_ADMIN_KEY", ADMIN_KEY)  # the admin routes are fuzzed too
    clear_caches()
    with get_sessionmaker()() as session:
        key = tenants.create_key(session, tenants.local_tenant(session)).key
        session.commit()
    KEY["key"] = key
    return key


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(case, embedded):
    # Schema-valid specs are refused on purpose when they cannot run (a CNN deeper than
    # the input allows) or reuse an Idempotency-Key with another body: 422 by contract.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
