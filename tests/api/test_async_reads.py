"""The polled job read in the event loop (app/async_reads.py, PostgreSQL): the same answers
as the threaded path it replaces there, and the same key checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.api.jobs import read_job
from app.api.rendered import RecentBodies
from app.auth import Caller
from app.contract.spec import EXAMPLE_SPEC
from app.db import session_scope
from app.models import Job
from app.tenants import create_key, create_tenant, revoke_key
from tests.support.polling import poll_until


@pytest.fixture
def pg_client(client, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the event-loop read is PostgreSQL's; SQLite keeps the threaded path")
    assert client.app.state.async_reads is not None
    return client


def _threaded_json(job_id: str) -> dict:
    with session_scope() as session:
        tenant_id = session.get(Job, job_id).tenant_id
    return read_job(Caller(tenant_id, None), job_id).model_dump(mode="json")


def _finish(job_id: str) -> None:
    """Every column JobOut shows set, as a finished job has them."""
    at = datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=UTC)
    values = {
        "status": "succeeded",
        "phase": "export",
        "progress": 1.0,
        "attempts": 2,
        "started_at": at,
        "finished_at": at,
        "heartbeat_at": at,
        "result": {"student": {"mean": {"test_accuracy": 0.91}}, "verdict": {"helped": True}},
        "latest_metrics": {"student/seed0": {"epoch": 3, "loss": 0.25}},
    }
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()


def test_the_event_loop_read_answers_what_the_threaded_read_answers(pg_client):
    job_id = pg_client.post("/v1/jobs", json=EXAMPLE_SPEC).json()["id"]
    assert pg_client.get(f"/v1/jobs/{job_id}").json() == _threaded_json(job_id)
    _finish(job_id)
    answer = pg_client.get(f"/v1/jobs/{job_id}").json()
    assert answer["status"] == "succeeded" and answer["result"]["student"]["mean"]["test_accuracy"] == 0.91
    assert answer["started_at"].startswith("2026-12-01T10:30:15.123456")
    assert answer == _threaded_json(job_id)


def test_the_event_loop_read_checks_the_key_like_every_route(pg_client):
    job_id = pg_client.post("/v1/jobs", json=EXAMPLE_SPEC).json()["id"]
    path = f"/v1/jobs/{job_id}"
    assert pg_client.get(path, headers={"Authorization": ""}).status_code == 401
    wrong = pg_client.get(path, headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.json()["detail"]
    with session_scope() as session:
        other = create_key(session, create_tenant(session, "other"), name="t").key
        session.commit()
    # another tenant's job is not even confirmed to exist
    assert pg_client.get(path, headers={"Authorization": f"Bearer {other}"}).status_code == 404
    assert pg_client.get("/v1/jobs/no-such-job").json()["status"] == 404


def test_a_revoked_key_stops_reading_at_once(pg_client):
    with session_scope() as session:
        tenant = create_tenant(session, "revoked")
        new = create_key(session, tenant, name="t")
        session.add(Job(tenant_id=tenant.id, status="queued", spec=EXAMPLE_SPEC))
        session.commit()
        job_id = session.query(Job.id).filter(Job.tenant_id == tenant.id).scalar()
    headers = {"Authorization": f"Bearer {new.key}"}
    assert pg_client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
    with session_scope() as session:
        revoke_key(session, new.record.id)
        session.commit()
    assert pg_client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 401


EPOCHS = {"done": 1, "budget": 10, "planned": 10, "run": None}


def test_a_polled_job_answers_its_latest_row_and_its_eta_keeps_counting_down(pg_client):
    # The JSON of a poll is kept per job (app/api/rendered.py): a new row, and the ETA's
    # countdown between two worker reports, must still reach the client.
    job_id = pg_client.post("/v1/jobs", json=EXAMPLE_SPEC).json()["id"]
    ends_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", estimate={"ends_at": ends_at, "epochs": EPOCHS})
        )
        session.commit()
    first = pg_client.get(f"/v1/jobs/{job_id}").json()
    assert first["status"] == "running" and 3590 < first["eta_seconds"] <= 3600
    later = poll_until(
        lambda: (eta := pg_client.get(f"/v1/jobs/{job_id}").json()["eta_seconds"]) < first["eta_seconds"] and eta,
        timeout=10,
        what="the ETA to count down between two polls",
    )
    assert later < first["eta_seconds"]
    _finish(job_id)
    assert pg_client.get(f"/v1/jobs/{job_id}").json() == _threaded_json(job_id)


def test_recent_bodies_answer_only_for_equal_inputs_and_forget_the_oldest():
    bodies = RecentBodies(size=2)
    bodies.put("a", (1, {"x": [1]}), "A1")
    assert bodies.get("a", (1, {"x": [1]})) == "A1"
    assert bodies.get("a", (1, {"x": [2]})) is None  # a changed value is a miss
    bodies.put("b", (1,), "B")
    bodies.get("a", (1, {"x": [1]}))  # a is now the most recent
    bodies.put("c", (1,), "C")
    assert bodies.get("b", (1,)) is None and bodies.get("a", (1, {"x": [1]})) == "A1"
