"""Onboarding (issue 14, item 8) over a real database (SQLite and PostgreSQL), no worker process:
labels and the list's filter, the list without specs and results, structured errors, deleting jobs
and uploads (with their files), and what the workers' heartbeats tell the API (rows written by the
worker's own heartbeat function; tests/integration/test_workers.py runs real workers)."""

from __future__ import annotations

import copy
import io
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import update

from app import jobs
from app.contract.spec import EXAMPLE_SPEC
from app.db import get_sessionmaker
from app.models import Artifact, Job, Worker, utcnow
from app.storage import get_storage
from tests.api.test_tenants import bearer, new_tenant
from worker.heartbeat import beat

CPU = [{"type": "cpu", "name": "x86_64", "count": 2}]
GPU = [*CPU, {"type": "cuda", "index": 0, "name": "NVIDIA H200"}]


@pytest.fixture(autouse=True)
def _workers_read_afresh(client, monkeypatch):
    """These tests change heartbeats between two reads: no per-process reuse of the last read."""
    from app.config import get_settings

    monkeypatch.setenv("DISTILL_WORKER_STATUS_CACHE_SECONDS", "0")
    get_settings.cache_clear()


def spec(**changes) -> dict:
    return copy.deepcopy(EXAMPLE_SPEC) | changes


def submit(client, body: dict) -> dict:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def ids(page: dict) -> list[str]:
    return [j["id"] for j in page["items"]]


# --- metadata -------------------------------------------------------------------------------


def test_jobs_keep_their_labels_and_the_list_filters_on_them(client):
    vision = submit(client, spec(metadata={"team": "vision", "ticket": "ML-1:a"}))
    both = submit(client, spec(metadata={"team": "vision", "tier": "gold"}))
    nlp = submit(client, spec(metadata={"team": "nlp"}))
    submit(client, spec())

    assert vision["metadata"] == {"team": "vision", "ticket": "ML-1:a"}
    assert "metadata" not in vision["spec"]  # the job's, not the engine's
    assert client.get(f"/v1/jobs/{nlp['id']}").json()["metadata"] == {"team": "nlp"}

    def listed(*labels: str) -> list[str]:
        return ids(client.get("/v1/jobs", params={"metadata": list(labels)}).json())

    assert listed("team:vision") == [both["id"], vision["id"]]
    assert listed("team:vision", "tier:gold") == [both["id"]]  # every label must match
    assert listed("ticket:ML-1:a") == [vision["id"]]  # the value is what follows the first colon
    assert listed("team:nothing") == []
    assert len(listed()) == 4


def test_labels_are_bounded_and_named_when_wrong(client):
    def refused(metadata) -> list[str]:
        r = client.post("/v1/jobs", json=spec(metadata=metadata))
        assert r.status_code == 422, r.text
        return [e["pointer"] for e in r.json()["errors"]]

    assert refused({f"k{i}": "v" for i in range(17)}) == ["/metadata"]
    assert refused({"team": "v" * 513}) == ["/metadata/team"]
    assert all(p.startswith("/metadata/") for p in refused({"has space": "v"}))
    assert refused({"team": 3}) == ["/metadata/team"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing stored

    bad = client.get("/v1/jobs", params={"metadata": "team=vision"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/metadata"
    assert "KEY:VALUE" in bad.json()["errors"][0]["detail"]


# --- the list -------------------------------------------------------------------------------


def test_the_list_embeds_spec_and_result_only_when_asked(client):
    job = submit(client, spec())
    with get_sessionmaker()() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(result={"summary": {"speedup": 3.0}}))
        session.commit()

    plain = client.get("/v1/jobs").json()["items"][0]
    assert plain["id"] == job["id"] and plain["spec"] is None and plain["result"] is None
    assert plain["status"] == "queued" and plain["metadata"] == {}

    both = client.get("/v1/jobs", params={"expand": "spec,result"}).json()["items"][0]
    assert both["spec"]["method"]["name"] == "kd" and both["result"] == {"summary": {"speedup": 3.0}}
    repeated = client.get("/v1/jobs", params={"expand": ["spec"]}).json()["items"][0]
    assert repeated["spec"] is not None and repeated["result"] is None
    # the job itself always has both
    assert client.get(f"/v1/jobs/{job['id']}").json()["result"] == {"summary": {"speedup": 3.0}}

    wrong = client.get("/v1/jobs", params={"expand": "spec,events"})
    assert wrong.status_code == 422 and "events" in wrong.json()["errors"][0]["detail"]


# --- structured errors ----------------------------------------------------------------------


def test_a_failed_jobs_error_is_code_message_field_without_server_paths(client):
    job = submit(client, spec())
    with get_sessionmaker()() as session:
        jobs.fail(
            session,
            job["id"],
            "cannot read /srv/distill/var/artifacts/uploads/t/ab/data.npz:\n  bad header",
            code="artifact_unavailable",
            field="dataset.artifact",
        )
        session.commit()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["status"] == "failed"
    assert got["error"] == {
        "code": "artifact_unavailable",
        "message": "cannot read data.npz: bad header",
        "field": "dataset.artifact",
    }
    assert (got["error_code"], got["error_field"]) == ("artifact_unavailable", "dataset.artifact")  # older clients
    events = [e["message"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()]
    assert "job failed: cannot read data.npz: bad header" in events and not any("/srv" in e for e in events)
    listed = client.get("/v1/jobs", params={"status": "failed"}).json()["items"]
    assert listed[0]["error"]["code"] == "artifact_unavailable"
    # a job that did not fail has no error
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["items"] == []


# --- deleting -------------------------------------------------------------------------------


def _job_output(job_id: str, name: str = "student.onnx") -> Artifact:
    """An output file as the worker stores it (app/storage.put_file) and its row."""
    storage = get_storage()
    source = storage.root / "scratch" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"onnx bytes")
    stored = storage.put_file(source, f"jobs/{job_id}/{name}")
    with get_sessionmaker()() as session:
        artifact = Artifact(
            tenant_id=session.get(Job, job_id).tenant_id,
            job_id=job_id,
            kind="student",
            format="onnx",
            filename=name,
            media_type="application/octet-stream",
            storage_key=stored.key,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
        )
        session.add(artifact)
        session.commit()
    return artifact


def test_an_ended_job_is_deleted_with_its_files_and_a_live_one_is_not(client):
    job = submit(client, spec())
    output = _job_output(job["id"])
    files = get_storage().path(f"jobs/{job['id']}")
    assert (files / "student.onnx").is_file()

    running = client.delete(f"/v1/jobs/{job['id']}")
    assert running.status_code == 409 and "cancel it" in running.json()["detail"]
    refused = client.delete(f"/v1/artifacts/{output.id}")  # its job has not ended
    assert refused.status_code == 409 and "queued" in refused.json()["detail"]

    other = bearer(new_tenant("other"))
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{job['id']}", headers=other).status_code == 404  # not theirs
    assert files.is_dir()

    gone = client.delete(f"/v1/jobs/{job['id']}")
    assert gone.status_code == 204 and gone.content == b""
    assert not files.exists()
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.get(f"/v1/artifacts/{output.id}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/events").status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404


def _dataset(client) -> dict:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(size=(40, 4)).astype(np.float32), y=np.arange(40) % 2)
    r = client.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": ("data.npz", buf.getvalue())})
    assert r.status_code == 201, r.text
    return r.json()


def test_an_upload_is_deleted_with_its_files_unless_an_active_job_names_it(client):
    data = _dataset(client)
    with get_sessionmaker()() as session:
        folder = get_storage().path(session.get(Artifact, data["id"]).storage_key).parent
    assert {p.name for p in folder.iterdir()} >= {"data.npz", "arrays.npz"}
    uses = spec(dataset={"artifact": data["id"]}, teacher={"train": {"arch": {"name": "mlp", "hidden": [8]}}})
    job = submit(client, uses)

    refused = client.delete(f"/v1/artifacts/{data['id']}")
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert job["id"] in refused.json()["detail"] and "queued" in refused.json()["detail"]
    assert client.delete(f"/v1/artifacts/{data['id']}", headers=bearer(new_tenant("other"))).status_code == 404

    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert client.delete(f"/v1/artifacts/{data['id']}").status_code == 204
    assert not folder.exists()
    assert client.get(f"/v1/artifacts/{data['id']}").status_code == 404
    again = client.post("/v1/jobs", json=uses)
    assert again.status_code == 422 and "/dataset/artifact" in [e["pointer"] for e in again.json()["errors"]]
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"  # the job stays


# --- workers --------------------------------------------------------------------------------


def _heartbeat(worker_id: str, devices: list[dict], *, seen_ago: float = 0.0) -> None:
    from app.config import get_settings

    with get_sessionmaker()() as session:
        beat(session, worker_id, devices, get_settings().queue)
        if seen_ago:
            at = utcnow() - timedelta(seconds=seen_ago)
            session.execute(update(Worker).where(Worker.id == worker_id).values(last_seen_at=at))
        session.commit()


def test_readyz_and_queued_jobs_say_whether_a_worker_is_live(client):
    none = client.get("/readyz")
    assert none.status_code == 200  # jobs are taken; they wait
    assert none.json()["workers"].startswith("none: no worker seen in the last 30 s")
    job = submit(client, spec())
    assert job["status_detail"] == "waiting for a worker: none has been seen in the last 30 s"

    _heartbeat("gone@host", GPU, seen_ago=31)  # heard from too long ago: not live
    _heartbeat("elsewhere@host", GPU)
    with get_sessionmaker()() as session:  # a worker of another queue takes none of these jobs
        session.execute(update(Worker).where(Worker.id == "elsewhere@host").values(queue="another-queue"))
        session.commit()
    assert client.get("/readyz").json()["workers"].startswith("none")

    _heartbeat("w1@host", CPU)
    assert client.get("/readyz").json()["workers"] == "1 live worker: cpu (1)"
    detail = client.get(f"/v1/jobs/{job['id']}").json()["status_detail"]
    assert detail == "waiting in the queue for a free worker; 1 live worker: cpu (1)"
    assert client.get("/v1/jobs").json()["items"][0]["status_detail"] == detail

    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert client.get(f"/v1/jobs/{job['id']}").json()["status_detail"] is None


def test_a_cuda_job_is_refused_unless_a_live_worker_has_a_gpu(client):
    cuda = spec(training={"epochs": 40, "device": "cuda"})

    def refusal() -> str:
        r = client.post("/v1/jobs", json=cuda)
        assert r.status_code == 422, r.text
        (error,) = r.json()["errors"]
        assert (error["pointer"], error["type"]) == ("/training/device", "no_gpu_worker")
        return error["detail"]

    assert "no worker has been seen in the last 30 s" in refusal()
    _heartbeat("w1@host", CPU)
    assert "no live worker has a GPU (1 live worker: cpu (1))" in refusal()
    assert submit(client, spec(training={"epochs": 40, "device": "auto"}))["status"] == "queued"
    _heartbeat("old-gpu@host", GPU, seen_ago=60)
    refusal()

    _heartbeat("gpu@host", GPU)
    assert client.get("/readyz").json()["workers"] == "2 live workers: cpu (2), cuda NVIDIA H200 (1)"
    job = submit(client, cuda)
    assert job["status"] == "queued" and "2 live workers" in job["status_detail"]

    _heartbeat("gpu@host", GPU, seen_ago=60)  # the GPU worker went away: the queued job says so
    detail = client.get(f"/v1/jobs/{job['id']}").json()["status_detail"]
    assert detail.startswith("waiting for a worker with a GPU (training.device is cuda); 1 live worker: cpu (1)")
