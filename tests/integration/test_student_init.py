"""student.init end to end, over HTTP to a real uvicorn server and a real Celery worker
(SQLite + filesystem broker): a job's exported student.safetensors is uploaded and named as the
next job's starting point; that job's students and baseline begin from those weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.polling import wait_for_job
from tests.support.services import Service, subprocess_env

pytestmark = pytest.mark.integration

SPEC = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [32]}, "epochs": 3}},
    "student": {"arch": {"name": "mlp", "hidden": [16]}},
    "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
    "training": {"epochs": 3, "batch_size": 64},
    "seeds": [0],
    "baseline": False,
}


def _finished(api, job_id: str, svc: Service) -> dict:
    job = wait_for_job(api, job_id, timeout=240, what="the job to finish", every=0.5)
    assert job["status"] == "succeeded", (job["error"], svc.dump_logs())
    return job


def test_a_jobs_student_is_the_next_jobs_starting_point(make_service, tmp_path: Path):
    svc: Service = make_service(subprocess_env(tmp_path, None, "filesystem://"), workers=1)
    api = svc.client()

    first = api.post("/v1/jobs", json=SPEC)
    assert first.status_code == 202, first.text
    job = _finished(api, first.json()["id"], svc)
    files = {a["filename"]: a for a in api.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    weights = api.get(files["student.safetensors"]["content_url"]).content

    upload = api.post("/v1/artifacts", data={"kind": "teacher"}, files={"file": ("student.safetensors", weights)})
    assert upload.status_code == 201, upload.text
    init = {"artifact": upload.json()["id"]}
    wrong = api.post("/v1/jobs", json={**SPEC, "student": {"arch": {"name": "mlp", "hidden": [8]}, "init": init}})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["pointer"] == "/student/init/artifact"

    # One epoch at a learning rate too small to move the weights: the run ends where it began.
    still = {"epochs": 1, "batch_size": 64, "lr": 1e-9, "lr_schedule": "constant"}
    second = api.post(
        "/v1/jobs", json={**SPEC, "student": {**SPEC["student"], "init": init}, "training": still, "baseline": True}
    )
    assert second.status_code == 202, second.text
    report = _finished(api, second.json()["id"], svc)["result"]
    exported = job["result"]["exported"]["test_accuracy"]
    for section in ("student", "baseline"):
        assert report[section]["init"] == {**init, "format": "safetensors"}
        assert report[section]["runs"][0]["test_accuracy"] == pytest.approx(exported, abs=1e-9)
    events = " ".join(e["message"] for e in api.get(f"/v1/jobs/{second.json()['id']}/events").json())
    assert "start from the uploaded weights" in events and "so does the baseline" in events
