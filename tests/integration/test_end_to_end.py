"""Submit a job over HTTP to a real uvicorn server, let a real Celery worker run
it, poll it to the end, download the student and check it with onnxruntime.

Runs twice: embedded (SQLite + filesystem broker) and distributed (PostgreSQL +
Redis)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from app.contract.spec import JobSpec
from tests.support.polling import poll_until, wait_for_job
from tests.support.services import Service
from tests.support.specs import EVERY_EXPORT, tiny_job

pytestmark = pytest.mark.integration

# The tiny job with every phase in it: two seeds and a baseline, a teacher that may stop early,
# the ONNX file to check.
JOB = tiny_job(
    name="integration",
    teacher={"train": {"arch": {"name": "mlp", "hidden": [64]}, "epochs": 6, "patience": 3}},
    student={"arch": {"name": "mlp", "hidden": [16]}},
    method={"name": "kd", "temperature": 4.0, "alpha": 0.9},
    training={"epochs": 4},
    seeds=[0, 1],
    baseline=True,
    export=EVERY_EXPORT,
)
PHASES = ["teacher", "soft_targets", "student", "baseline", "evaluate", "export"]


def test_job_runs_to_a_student_that_matches_its_report(service: Service, tmp_path: Path):
    api = service.client()
    r = api.post("/v1/jobs", json=JOB)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    polls: list[dict] = []
    job = wait_for_job(api, job_id, timeout=240, what="the job to finish", every=0.5, seen=polls)
    assert job["status"] == "succeeded", (job["error"], service.dump_logs())
    assert job["progress"] == 1.0 and job["attempts"] == 1 and job["eta_seconds"] is None

    # The epoch budget: every epoch trained, the teacher's early stop taken off its budget of 6.
    # While it ran, once an epoch was measured, the job had an ETA.
    teacher_epochs = job["result"]["teacher"]["epochs_run"]
    assert job["epochs"] == {"done": teacher_epochs + 16, "budget": teacher_epochs + 16, "planned": 22, "run": None}
    running = [p for p in polls if p["status"] == "running" and (p["epochs"] or {}).get("done", 0) >= 1]
    assert all(p["eta_seconds"] is not None and p["eta_seconds"] >= 0 for p in running)

    # Phases, in order, as events.
    events = api.get(f"/v1/jobs/{job_id}/events").json()
    started = [e["phase"] for e in events if e["message"].startswith("phase ")]
    assert started == PHASES

    # Per-epoch series for the teacher and for each seed of student and baseline.
    series = api.get(f"/v1/jobs/{job_id}/metrics", params={"name": "val_accuracy"}).json()["series"]
    runs = {(s["phase"], s["run"]) for s in series}
    assert {("student", "seed=0"), ("student", "seed=1"), ("baseline", "seed=0"), ("baseline", "seed=1")} <= runs
    assert any(phase == "teacher" for phase, _ in runs)
    student0 = next(s for s in series if (s["phase"], s["run"]) == ("student", "seed=0"))
    assert student0["epochs"] == [1, 2, 3, 4]
    assert job["latest_metrics"] is not None

    report = job["result"]
    assert len(report["student"]["runs"]) == 2 and report["baseline"] is not None

    artifacts = {a["filename"]: a for a in api.get(f"/v1/jobs/{job_id}/artifacts").json()}
    assert {"student.onnx", "student.safetensors", "report.json"} <= set(artifacts)

    onnx = api.get(artifacts["student.onnx"]["content_url"])
    assert onnx.status_code == 200
    assert hashlib.sha256(onnx.content).hexdigest() == artifacts["student.onnx"]["sha256"]
    path = tmp_path / "student.onnx"
    path.write_bytes(onnx.content)

    # The user's check: the file alone, on the raw test inputs, gives the claimed accuracy.
    import onnxruntime as ort

    from worker.distill.data import load_dataset

    splits = load_dataset(JobSpec.model_validate(JOB).dataset, Path(service.env["DISTILL_DATA_CACHE_DIR"]))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: splits.test.x})
    onnx_accuracy = float(np.mean(logits.argmax(axis=1) == splits.test.y))
    assert onnx_accuracy == pytest.approx(report["exported"]["test_accuracy"], abs=1e-9)

    downloaded = api.get(artifacts["report.json"]["content_url"]).json()
    assert downloaded["exported"] == report["exported"]
    weights = api.get(artifacts["student.safetensors"]["content_url"])
    from safetensors.numpy import load as load_safetensors

    assert load_safetensors(weights.content), "safetensors file holds tensors"


def test_a_running_job_is_cancelled_at_a_batch_and_the_worker_takes_the_next(service: Service):
    api = service.client()
    long_job = {**JOB, "name": "long", "training": {"epochs": 2000, "batch_size": 8}, "seeds": [0]}
    job_id = api.post("/v1/jobs", json=long_job).json()["id"]
    poll_until(
        lambda: api.get(f"/v1/jobs/{job_id}").json()["phase"] == "student", timeout=120, what="the student phase"
    )

    r = api.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    job = wait_for_job(api, job_id, timeout=60, what="the cancel to land")
    assert job["status"] == "cancelled" and job["result"] is None
    # Metrics so far are kept.
    assert api.get(f"/v1/jobs/{job_id}/metrics", params={"phase": "teacher"}).json()["series"]

    # The worker is free again: the next job runs.
    next_id = api.post("/v1/jobs", json={**JOB, "seeds": [0], "baseline": False}).json()["id"]
    job = wait_for_job(api, next_id, timeout=180, what="the next job", every=0.5)
    assert job["status"] == "succeeded", job["error"]
