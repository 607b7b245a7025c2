"""Onboarding with real processes (uvicorn, Celery workers): the embedded API migrates a fresh
DISTILL_HOME itself, a worker's heartbeat (with its devices) reaches /readyz, queued jobs and the
GPU admission, a clean shutdown removes it at once and a killed worker ages out; an API over a
PostgreSQL schema that is behind refuses to start and says what to run."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import httpx
from alembic import command
from sqlalchemy import create_engine, select, text

from app.schema import alembic_config
from tests.conftest import PG_ADMIN_URL, REDIS_URL, ROOT, _empty_postgres
from tests.support.polling import poll_until, wait_for_job
from tests.support.services import BIN, free_port, subprocess_env
from tests.support.specs import EVERY_EXPORT, tiny_job

TINY_JOB = tiny_job(export=EVERY_EXPORT)
CUDA_JOB = {**TINY_JOB, "training": {"epochs": 1, "device": "cuda"}}


def workers_line(api: httpx.Client) -> str:
    return api.get("/readyz").json()["workers"]


def cuda_refusal(api: httpx.Client) -> str | None:
    """The 422's detail, or None when a live worker has a GPU (the job is then cancelled)."""
    r = api.post("/v1/jobs", json=CUDA_JOB)
    if r.status_code == 202:
        api.post(f"/v1/jobs/{r.json()['id']}/cancel")
        return None
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["pointer"] == "/training/device"
    return error["detail"]


def test_a_fresh_embedded_home_is_migrated_and_a_workers_heartbeat_is_seen(make_service, tmp_path):
    env = subprocess_env(tmp_path, None, "filesystem://", migrated=False, worker_seen_seconds=600)
    assert not Path(env["DISTILL_HOME"]).exists()
    svc = make_service(env)  # no `alembic upgrade head`: the API does it
    assert "distill: migrated the SQLite database from empty to 0009" in (svc.logs / "api.log").read_text()
    api = svc.client()
    assert workers_line(api).startswith("none: no worker seen in the last 600 s")
    queued = api.post("/v1/jobs", json=TINY_JOB).json()
    assert queued["status_detail"] == "waiting for a worker: none has been seen in the last 600 s"
    assert "no worker has been seen in the last 600 s" in cuda_refusal(api)

    worker = svc.start_worker("hb")
    line = poll_until(lambda: (w := workers_line(api)).startswith("1 live") and w, timeout=180, what="the heartbeat")
    assert "cpu (1)" in line
    done = wait_for_job(api, queued["id"], timeout=180, statuses={"succeeded"}, what="the worker to run the queued job")
    assert done["status_detail"] is None
    refusal = cuda_refusal(api)
    if "cuda" not in line:  # a CPU machine: the refusal names what the live worker has
        assert refusal == (
            f'no live worker has a GPU ({line}): use "auto" or "cpu", or start a worker on a machine with CUDA'
        )
    else:
        assert refusal is None

    svc.kill(worker, signal.SIGTERM)  # a clean shutdown removes its row: no 600 s wait
    assert workers_line(api).startswith("none")


def test_a_killed_worker_ages_out_on_postgresql(make_service, tmp_path, postgres_database):
    database = _empty_postgres(postgres_database)
    svc = make_service(subprocess_env(tmp_path, database, REDIS_URL, worker_seen_seconds=4))
    api = svc.client()
    worker = svc.start_worker("doomed")
    poll_until(lambda: workers_line(api).startswith("1 live"), timeout=180, what="the heartbeat")

    from app.models import Worker

    engine = create_engine(database)
    with engine.connect() as connection:
        (row,) = connection.execute(select(Worker)).all()
    engine.dispose()
    assert row.id.startswith("doomed-") and row.queue == svc.env["DISTILL_QUEUE"]
    assert {"type": "cpu"}.items() <= row.devices[0].items() and row.pid > 0

    svc.kill(worker, signal.SIGKILL)  # no shutdown handler runs: the row stays, and ages out
    poll_until(lambda: workers_line(api).startswith("none"), timeout=30, what="the dead worker to age out")
    job = api.post("/v1/jobs", json=TINY_JOB).json()
    assert job["status_detail"] == "waiting for a worker: none has been seen in the last 4 s"


def test_the_api_refuses_a_postgresql_schema_that_is_behind(tmp_path):
    name = f"distill_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        command.upgrade(alembic_config(url), "0007")
        env = subprocess_env(tmp_path, url, REDIS_URL, migrated=False)
        port = str(free_port())
        started = subprocess.run(
            [str(BIN / "uvicorn"), "app.main:app", "--host", "127.0.0.1", "--port", port],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode != 0
        assert (
            "distill cannot start: the database schema is at revision 0007, this code needs 0009: "
            "run `alembic upgrade head` with the same DISTILL_DATABASE_URL, then start again"
        ) in started.stderr + started.stdout
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
