"""What a free worker takes, and what the sweeper sends. Real processes (uvicorn, one
Celery worker, embedded mode: SQLite and the filesystem broker, whose messages are files
the test can count and delete)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.test_runner import endless_job
from tests.support.jobs import job, submit
from tests.support.polling import poll_until, wait_for_job
from tests.support.services import Service, subprocess_env
from tests.support.specs import tiny_job

pytestmark = pytest.mark.integration

LONGER_JOB = tiny_job(training={"epochs": 6, "batch_size": 32})


def tenant_client(svc: Service, admin_key: str, name: str) -> httpx.Client:
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=svc.url, timeout=10, headers=admin) as http:
        tenant = http.post("/v1/admin/tenants", json={"name": name}).json()
        key = http.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={}).json()["key"]
    return svc.client(key)


def started(api: httpx.Client, job_id: str) -> datetime:
    return datetime.fromisoformat(job(api, job_id)["started_at"])


def test_a_tenant_with_many_long_jobs_does_not_starve_another_tenants_small_one(make_service, tmp_path):
    admin_key = "admin-" + uuid.uuid4().hex
    svc = make_service(subprocess_env(tmp_path, None, "filesystem://", admin_key=admin_key))
    svc.start_worker("only")
    busy, small = svc.client(), tenant_client(svc, admin_key, "small")

    many = [submit(busy, {**LONGER_JOB, "name": f"long {i}"}) for i in range(4)]
    wait_for_job(busy, many[0], timeout=120, statuses={"running"}, what="the first long job")
    mine = submit(small, tiny_job(name="small"))  # queued behind three long ones

    for api, job_id in [(small, mine)] + [(busy, j) for j in many]:
        final = wait_for_job(api, job_id, timeout=300)
        assert final["status"] == "succeeded", final["error"]
    # One worker, tenants take turns: the small job ran right after the long job that was
    # running when it came, before the long ones queued earlier.
    assert started(small, mine) < min(started(busy, j) for j in many[1:])
    order = sorted(many, key=lambda j: started(busy, j))
    assert order == many  # and each tenant's own jobs in the order they came


def queued_messages(svc: Service) -> list[Path]:
    folder = Path(svc.env["DISTILL_HOME"]) / "broker" / "messages"
    return sorted(folder.glob(f"*.{svc.env['DISTILL_QUEUE']}.msg"))


def heartbeat(api: httpx.Client, job_id: str) -> datetime:
    return datetime.fromisoformat(job(api, job_id)["heartbeat_at"])


def test_the_sweeper_resends_only_lost_messages_not_those_of_jobs_waiting_for_a_busy_worker(make_service, tmp_path):
    fast = {
        "sweep_seconds": 0.5,
        "resend_after_seconds": 1,
        "heartbeat_seconds": 0.5,
        "stop_grace_seconds": 1,
        "kill_grace_seconds": 1,
    }
    svc = make_service(subprocess_env(tmp_path, None, "filesystem://", **fast))
    svc.start_worker("only")
    api = svc.client()
    blocker = submit(api, endless_job(api))  # keeps the only worker busy until cancelled
    poll_until(lambda: job(api, blocker)["phase"] == "soft_targets", timeout=120, what="the busy worker")
    waiting = [submit(api, tiny_job(name=f"waiting {i}")) for i in range(3)]
    assert len(queued_messages(svc)) == 3

    # Many sweeps later (the running job's heartbeat moved on by 10 sweep intervals), the
    # waiting jobs still have exactly their one message each.
    since = heartbeat(api, blocker)
    poll_until(lambda: heartbeat(api, blocker) > since + timedelta(seconds=5), timeout=60, what="ten sweeps")
    assert len(queued_messages(svc)) == 3
    assert "sweeper sent" not in svc.full_logs()

    for message in queued_messages(svc)[:2]:  # the broker loses two of them
        message.unlink()
    poll_until(lambda: len(queued_messages(svc)) == 3, timeout=30, what="the lost messages sent again")
    assert "sweeper sent 2 job(s) again" in svc.full_logs()

    assert api.post(f"/v1/jobs/{blocker}/cancel").status_code == 202
    assert wait_for_job(api, blocker, timeout=60, what="the cancel")["status"] == "cancelled"
    for job_id in waiting:
        final = wait_for_job(api, job_id, timeout=120)
        assert final["status"] == "succeeded", final["error"]
        events = [e["message"] for e in api.get(f"/v1/jobs/{job_id}/events").json()]
        assert sum("started the job" in m for m in events) == 1
