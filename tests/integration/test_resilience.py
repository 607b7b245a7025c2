"""Jobs survive crashes, restarts, duplicates and shutdowns. Real processes: uvicorn,
Celery workers (killed for real), PostgreSQL and Redis (throwaway ones where a test
restarts them). The database is the source of truth; the broker only wakes workers."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.support.jobs import events, job, student_epoch, submit
from tests.support.polling import poll_until, wait_for_job
from tests.support.services import FAST_RECOVERY, PostgresServer, RedisServer, subprocess_env
from tests.support.specs import tiny_job

pytestmark = pytest.mark.integration

# Slow enough per epoch (a small CNN on MNIST-1D, small batches) to kill it mid-phase.
SLOW_JOB = {
    "name": "slow",
    "dataset": {"name": "mnist1d"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [32]}, "epochs": 2}},
    "student": {"arch": {"name": "cnn", "channels": [16, 32], "hidden": 32}},
    "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
    "training": {"epochs": 8, "batch_size": 32},
    "seeds": [0],
    "baseline": False,
    "export": {"formats": ["safetensors"]},
    "limits": {"max_attempts": 6},
}


def test_sigkilled_workers_resume_from_checkpoints_until_the_job_succeeds(make_service, distributed_env):
    svc = make_service(distributed_env())
    api = svc.client()
    worker = svc.start_worker("w0")
    job_id = submit(api, SLOW_JOB)

    kills = 2  # twice: a resumed attempt is itself resumed
    for k in range(kills):
        # Past at least one new epoch checkpoint of the student, then pull the plug.
        target = 2 + 3 * k
        poll_until(
            lambda target=target: student_epoch(api, job_id) >= target, timeout=180, what=f"student epoch {target}"
        )
        svc.kill(worker, signal.SIGKILL)
        worker = svc.start_worker(f"w{k + 1}")

    final = wait_for_job(api, job_id, timeout=240, what="the job to finish")
    assert final["status"] == "succeeded", final["error"]
    assert final["attempts"] == kills + 1

    messages = events(api, job_id)
    resumed = [m for m in messages if "resumed" in m and "student" in m]
    assert len(resumed) >= kills, messages
    assert all("epoch 0" not in m for m in resumed)  # never from zero
    assert messages.count("job succeeded") == 1
    assert_outputs_stored_once(api, job_id)

    # Each epoch appears once in the series, however often it was run.
    series = api.get(f"/v1/jobs/{job_id}/metrics", params={"phase": "student", "name": "val_accuracy"}).json()
    (val,) = series["series"]
    assert val["epochs"] == sorted(set(val["epochs"])) and val["epochs"][-1] == 8

    # And the numbers are those of an uninterrupted run of the same spec.
    from app.contract.spec import JobSpec
    from worker.distill.pipeline import run_job
    from worker.distill.reporting import MemoryReporter

    scratch = Path(svc.env["DISTILL_HOME"]) / "uninterrupted"
    clean = run_job(
        JobSpec.model_validate(SLOW_JOB),
        MemoryReporter(scratch / "ckpt"),
        scratch,
        Path(svc.env["DISTILL_DATA_CACHE_DIR"]),
    ).report
    got = final["result"]["student"]["runs"][0]
    want = clean["student"]["runs"][0]
    for key in ("test_accuracy", "val_accuracy", "test_nll", "best_epoch"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_warm_shutdown_hands_the_job_back_and_another_worker_resumes_it(make_service, distributed_env):
    svc = make_service(distributed_env())
    api = svc.client()
    worker = svc.start_worker("w0")
    job_id = submit(api, SLOW_JOB)
    poll_until(lambda: student_epoch(api, job_id) >= 2, timeout=180, what="student epoch 2")

    worker.send_signal(signal.SIGTERM)  # to the main process only, as `docker stop` does
    worker.wait(timeout=60)
    handed = wait_for_job(api, job_id, timeout=30, statuses={"queued"}, what="hand-back")
    assert handed
    assert any("handed the job back" in m for m in events(api, job_id))

    svc.start_worker("w1")
    final = wait_for_job(api, job_id, timeout=240, what="the job to finish")
    assert final["status"] == "succeeded", final["error"]
    assert any("resumed student" in m for m in events(api, job_id))


def test_a_job_that_always_kills_its_worker_fails_after_max_attempts(make_service, distributed_env):
    svc = make_service(distributed_env())
    api = svc.client()
    job_id = submit(api, {**SLOW_JOB, "limits": {"max_attempts": 2}})
    for attempt in (1, 2):
        worker = svc.start_worker(f"w{attempt}")
        poll_until(
            lambda attempt=attempt: job(api, job_id)["attempts"] == attempt and job(api, job_id)["status"] == "running",
            timeout=120,
            what=f"attempt {attempt}",
        )
        svc.kill(worker, signal.SIGKILL)  # like an out-of-memory kill, every time
    svc.start_worker("reaper")  # a live worker's sweeper notices the lost lease
    final = wait_for_job(api, job_id, timeout=60, what="the job to fail")
    assert final["status"] == "failed"
    assert "max_attempts 2" in final["error"]["message"] and final["error"]["field"] == "limits.max_attempts"
    assert final["attempts"] == 2


def test_a_duplicate_delivery_is_ignored_while_the_lease_is_live(make_service, distributed_env):
    # Redis redelivers an unacknowledged task after the visibility timeout, here 2 s,
    # while the first worker still runs it for much longer.
    svc = make_service(distributed_env(visibility_timeout_seconds=2))
    api = svc.client()
    svc.start_worker("w0")
    svc.start_worker("w1")
    job_id = submit(api, {**SLOW_JOB, "training": {"epochs": 5, "batch_size": 32}})
    final = wait_for_job(api, job_id, timeout=240, what="the job to finish")
    assert final["status"] == "succeeded", final["error"]
    assert final["attempts"] == 1
    messages = events(api, job_id)
    assert sum("started the job" in m for m in messages) == 1
    assert "duplicate delivery" in svc.dump_logs()  # it was delivered again, and skipped


def test_redis_and_postgres_restarts_lose_no_accepted_job(make_service, tmp_path: Path):
    redis, postgres = RedisServer(), PostgresServer()
    redis.start()
    postgres.start()
    try:
        svc = make_service(subprocess_env(tmp_path, postgres.url, redis.url, **FAST_RECOVERY))
        api = svc.client()
        svc.start_worker("w0")
        running = submit(api, {**SLOW_JOB, "training": {"epochs": 6, "batch_size": 32}})
        queued = [submit(api, tiny_job()) for _ in range(3)]
        poll_until(lambda: job(api, running)["status"] == "running", timeout=120, what="a running job")

        redis.stop()  # the queued messages die with it (no persistence)
        r = api.post("/v1/jobs", json=tiny_job())
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        redis.start()
        queued.append(poll_until(lambda: _submit_when_ready(api), timeout=30, what="submission after redis"))

        postgres.stop()
        assert api.get(f"/v1/jobs/{running}").status_code == 503
        postgres.start()
        queued.append(poll_until(lambda: _submit_when_ready(api), timeout=30, what="submission after postgres"))

        for job_id in [running, *queued]:
            final = wait_for_job(api, job_id, timeout=240, what=f"job {job_id}")
            assert final["status"] == "succeeded", (job_id, final["error"])
            assert events(api, job_id).count("job succeeded") == 1
        # The messages of the queued jobs died with Redis; the sweeper sent them again.
        assert "sweeper sent" in svc.dump_logs()
        svc.stop()  # while its servers live: a worker whose Redis is gone waits out its SIGTERM (20 s)
    finally:
        redis.stop()
        postgres.destroy()


def _submit_when_ready(api: httpx.Client) -> str | None:
    try:
        r = api.post("/v1/jobs", json=tiny_job())
    except httpx.TransportError:
        return None
    return r.json()["id"] if r.status_code == 202 else None


MANY = 12  # the runner process keeps torch imported: a tiny job takes about a second


def test_many_jobs_on_two_workers_with_one_killed_none_lost_none_twice(make_service, distributed_env):
    svc = make_service(distributed_env())
    api = svc.client()
    workers = [svc.start_worker("w0"), svc.start_worker("w1")]
    ids = [submit(api, tiny_job(name=f"tiny {i}")) for i in range(MANY)]

    def succeeded() -> int:  # one request, not one per job: polling must not starve the workers
        page = api.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
        return len(page["items"])

    poll_until(lambda: succeeded() >= MANY // 4, timeout=300, what="a quarter of the jobs done", every=1)
    svc.kill(workers[0], signal.SIGKILL)
    svc.start_worker("w2")

    def unfinished() -> int:
        page = api.get("/v1/jobs", params={"status": ["queued", "running"], "limit": 100}).json()
        return len(page["items"])

    poll_until(lambda: unfinished() == 0, timeout=600, what="every job to end", every=1)
    for job_id in ids:
        final = job(api, job_id)
        assert final["status"] == "succeeded", (job_id, final["error"])
        assert events(api, job_id).count("job succeeded") == 1
        assert_outputs_stored_once(api, job_id)


def test_a_job_past_its_time_limit_fails_with_a_clear_error(make_service, distributed_env):
    svc = make_service(distributed_env())
    api = svc.client()
    svc.start_worker("w0")
    job_id = submit(
        api, {**SLOW_JOB, "training": {"epochs": 500, "batch_size": 32}, "limits": {"time_limit_seconds": 8}}
    )
    final = wait_for_job(api, job_id, timeout=120, what="the time limit")
    assert final["status"] == "failed"
    assert "time limit exceeded" in final["error"]["message"]
    # The worker is free again afterwards.
    next_id = submit(api, tiny_job())
    assert wait_for_job(api, next_id, timeout=120, what="the next job")["status"] == "succeeded"


def assert_outputs_stored_once(api, job_id: str) -> None:
    """The student's files, the report (json, html, curves) and the kept teacher each stored
    once, however often the job was killed and resumed."""
    names = [a["filename"] for a in api.get(f"/v1/jobs/{job_id}/artifacts").json()]
    outputs = [n for n in names if n.startswith(("student.", "report.")) or n == "curves.png"]
    assert "report.json" in outputs and any(n.startswith("student.") for n in outputs), names
    if not job(api, job_id)["result"].get("teacher_reused"):  # a job that reused one keeps none
        assert "teacher.safetensors" in names, names
    assert len(names) == len(set(names)), names
