"""The read pool has no pre-ping (app/db.py): a pooled connection whose server side went
away is dropped at checkout, or the read runs once more on a fresh one. Real PostgreSQL:
its backends are terminated the way a restart ends them."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, exc, text

from app.contract.spec import EXAMPLE_SPEC
from app.db import get_read_engine, read_retrying


@pytest.fixture
def pg_client(client, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL connections only")
    return client


def _terminate_backends(database_url: str) -> int:
    """End every other session on the test database, as a PostgreSQL restart would."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    admin.dispose()
    return ended


def test_a_job_read_after_its_pooled_connections_died_answers(pg_client, database_url):
    job = pg_client.post("/v1/jobs", json=EXAMPLE_SPEC).json()
    assert pg_client.get(f"/v1/jobs/{job['id']}").status_code == 200  # the async pool holds a connection now
    assert pg_client.get("/v1/jobs").status_code == 200  # and the read pool one
    assert get_read_engine().pool.checkedin() >= 1
    assert _terminate_backends(database_url) >= 1
    for _ in range(3):  # each read finds its pooled connection dead, and answers all the same
        r = pg_client.get(f"/v1/jobs/{job['id']}")  # app/async_reads.py
        assert r.status_code == 200, r.text
        assert r.json()["id"] == job["id"] and r.json()["status"] == "queued"
        assert pg_client.get("/v1/jobs").status_code == 200  # app/db.py's read pool
    assert pg_client.get("/v1/jobs/no-such-job").status_code == 404


def _dies_once(connection, calls: list[int]) -> int:
    calls.append(1)
    if len(calls) == 1:  # the server ends this very connection mid-read
        connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return connection.execute(text("SELECT 42")).scalar_one()


def test_a_read_whose_connection_dies_midway_runs_once_more(pg_client):
    calls: list[int] = []
    assert read_retrying(_dies_once, calls) == 42
    assert len(calls) == 2


def _always_fails(connection, calls: list[int]) -> None:
    calls.append(1)
    connection.execute(text("SELECT no_such_column FROM jobs"))


def test_a_read_that_fails_for_another_reason_is_not_retried(pg_client):
    calls: list[int] = []
    with pytest.raises(exc.ProgrammingError):
        read_retrying(_always_fails, calls)
    assert len(calls) == 1
