"""With the broker unreachable, a submission is refused quickly with 503 and
nothing is stored (never a stored job that no worker will ever hear of)."""

from __future__ import annotations

import socket

import pytest

from app.contract.spec import EXAMPLE_SPEC
from tests.api.conftest import keyed_client
from tests.conftest import clear_caches


@pytest.fixture
def client_without_broker(in_process_env, database_url, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DISTILL_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("DISTILL_DATABASE_URL", database_url)
    clear_caches()
    with keyed_client() as c:
        yield c


def test_submission_is_refused_with_503_and_nothing_stored(client_without_broker):
    r = client_without_broker.post("/v1/jobs", json=EXAMPLE_SPEC)
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"]
    assert "not stored" in r.json()["detail"]
    assert client_without_broker.get("/v1/jobs").json()["items"] == []


def test_readiness_reports_the_broker(client_without_broker):
    r = client_without_broker.get("/readyz")
    assert r.status_code == 503
    assert "broker: unreachable" in r.json()["detail"]
    assert "database: ok" in r.json()["detail"]
