"""The `distill` command and app.client against a real uvicorn and a real Celery worker
(embedded: SQLite + filesystem broker): submit --wait, show, list, events, download with the
sha256 checked (a tampered file is caught), watch detached with Ctrl-C and re-attached, cancel,
upload, catalog, and the errors a person meets (401 naming where the key was looked for, 422
naming the field). One service for the module; the jobs are tiny digits jobs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.client import ApiError, Client
from tests.conftest import ROOT
from tests.support.polling import poll_until
from tests.support.services import Service, running_service, subprocess_env

pytestmark = pytest.mark.integration

SPEC_YAML = """\
name: client cli
dataset: {name: digits}
teacher: {train: {arch: {name: mlp, hidden: [32]}, epochs: 2}}
student: {arch: {name: mlp, hidden: [8]}}
method: {name: kd, temperature: 4.0}
training: {epochs: 1}
seeds: [0]
baseline: true
"""
# Runs until it is cancelled: a student budget no test waits for.
LONG_SPEC = {
    "name": "client long",
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [8]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "training": {"epochs": 5000, "patience": None},
    "seeds": [0],
    "baseline": False,
}


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> Service:
    root = tmp_path_factory.mktemp("client-cli")
    with running_service(subprocess_env(root, None, "filesystem://"), root, workers=1) as service:
        yield service


def distill(svc: Service, *args: str, **env: str | None):
    """Run `distill ARGS` in-process; the key comes from the service's key file unless env says."""
    env = {"DISTILL_URL": svc.url, "DISTILL_HOME": svc.env["DISTILL_HOME"], "DISTILL_API_KEY": None, **env}
    return CliRunner().invoke(app, list(args), env=env)


def client(svc: Service) -> Client:
    return Client(svc.url, (Path(svc.env["DISTILL_HOME"]) / "api-key").read_text().strip())


@pytest.fixture(scope="module")
def finished(svc: Service, tmp_path_factory) -> tuple[str, str]:
    """A job submitted with `distill submit --wait` (overrides with --set): (job id, output)."""
    spec = tmp_path_factory.mktemp("spec") / "job.yaml"
    spec.write_text(SPEC_YAML)
    result = distill(
        svc, "submit", str(spec), "--set", "seeds=[0,1]", "--set", "training.epochs=2", "--wait", "--every", "0.3"
    )
    assert result.exit_code == 0, result.output + svc.dump_logs()
    return re.search(r"submitted job (\S+)", result.output).group(1), result.output


def test_submit_wait_prints_the_result_in_100_columns(finished):
    _, output = finished
    assert "succeeded" in output
    for row in ("teacher (mlp)", "student (kd, mlp)", "baseline (scratch, mlp)"):
        assert row in output
    assert "mean ± sample std over 2 seeds (0, 1)" in " ".join(output.split())
    assert max(len(line) for line in output.splitlines()) <= 100


def test_the_typed_job_carries_what_the_overrides_asked(svc: Service, finished):
    job = client(svc).get(finished[0])
    assert job.status == "succeeded" and job.ended and job.progress == 1.0
    assert job.spec["seeds"] == [0, 1] and job.spec["training"]["epochs"] == 2
    report = job.result
    assert [run["seed"] for run in report.student.runs] == [0, 1] and report.baseline is not None
    assert 0.0 <= report.student.mean.get("test_accuracy") <= 1.0
    assert report.summary.student_vs_teacher_test_accuracy is not None


def test_show_and_events(svc: Service, finished):
    job_id, _ = finished
    shown = distill(svc, "show", job_id)
    assert shown.exit_code == 0, shown.output
    assert job_id in shown.output and "student vs scratch baseline" in shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 100

    events = distill(svc, "events", job_id)
    assert events.exit_code == 0, events.output
    assert "phase teacher started" in events.output and "job succeeded" in events.output
    # --follow on an ended job prints the same and returns
    followed = distill(svc, "events", job_id, "--follow")
    assert followed.exit_code == 0 and followed.output == events.output


def test_download_checks_sha256_and_catches_a_tampered_file(svc: Service, finished, tmp_path: Path):
    job_id, _ = finished
    result = distill(svc, "download", job_id, str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    artifacts = {a.filename: a for a in client(svc).artifacts(job_id)}
    assert {"student.onnx", "report.json"} <= set(artifacts)
    for name, artifact in artifacts.items():
        assert hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest() == artifact.sha256

    stored = Path(svc.env["DISTILL_HOME"]) / "artifacts" / "jobs" / job_id / "student.onnx"
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit flipped in the store
    try:
        result = distill(svc, "download", job_id, str(tmp_path / "again"))
    finally:
        stored.write_bytes(original)
    assert result.exit_code == 1
    assert "student.onnx: sha256 mismatch" in " ".join(result.output.split())
    assert not (tmp_path / "again" / "student.onnx").exists()
    assert not [p for p in (tmp_path / "again").iterdir() if p.name.endswith(".part")]


def stacks(pid: int) -> str:
    """Every thread's Python stack in a running process (py-spy, a dev dependency)."""
    dump = subprocess.run(
        [str(Path(sys.executable).parent / "py-spy"), "dump", "--pid", str(pid)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return dump.stdout + dump.stderr


def test_watch_detaches_on_ctrl_c_reattaches_and_cancel_stops_the_job(svc: Service, tmp_path: Path):
    api = client(svc)
    handle = api.submit(LONG_SPEC)
    poll_until(lambda: api.get(handle.id).latest_metrics is not None, timeout=60, what="the job to train")

    log = tmp_path / "watch.out"
    env = {
        **svc.env,
        "DISTILL_URL": svc.url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with log.open("wb") as out:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "watch", handle.id, "--every", "0.2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            poll_until(lambda: "phase student started" in log.read_text(), timeout=30, what="watch to attach")
            watcher.send_signal(signal.SIGINT)
            try:
                code = watcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Seen about once in three full runs, not reproduced alone: say where it hangs.
                pytest.fail(f"watch ignored Ctrl-C for 30 s; its threads:\n{stacks(watcher.pid)}")
            assert code == 130
        finally:
            if watcher.poll() is None:
                watcher.kill()
                api.cancel(handle.id)  # the module's one worker is free for the next tests
    assert f"Re-attach with: distill watch {handle.id}" in " ".join(log.read_text().split())
    assert api.get(handle.id).status == "running"  # detaching left the job alone

    cancelled = distill(svc, "cancel", handle.id)
    assert cancelled.exit_code == 0 and handle.id in cancelled.output, cancelled.output
    again = distill(svc, "watch", handle.id, "--every", "0.2")
    assert again.exit_code == 1, again.output  # the job did not succeed
    assert "cancelled" in again.output
    assert handle.wait(every=0.2, timeout=30).status == "cancelled"


def test_list_filters_and_pages_with_the_cursor(svc: Service, finished):
    result = distill(svc, "list", "--status", "succeeded")
    assert result.exit_code == 0 and finished[0] in result.output, result.output
    assert "client long" not in result.output  # that job was cancelled
    api = client(svc)
    page = api.list(limit=1)
    assert len(page.items) == 1 and page.next_cursor
    assert len({job.id for job in api.iter_jobs(page_size=1)}) >= 2
    paged = distill(svc, "list", "--limit", "1")
    assert "distill list --cursor" in paged.output


def test_upload_a_dataset_twice(svc: Service, tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=rng.normal(size=(60, 8)).astype("float32"), y=np.arange(60) % 3)
    first = distill(svc, "upload", str(path), "--kind", "dataset", "--name", "tiny")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("uploaded: dataset ")
    second = distill(svc, "upload", str(path), "--kind", "dataset")
    assert second.exit_code == 0 and "already uploaded" in second.output, second.output
    artifact_id = first.output.split()[2]
    assert [a.id for a in client(svc).uploads(kind="dataset")] == [artifact_id]


def test_catalog(svc: Service):
    result = distill(svc, "catalog")
    assert result.exit_code == 0, result.output
    for name in ("digits", "mnist1d", "kd", "teacher_assistant", "temperature=8.0"):
        assert name in result.output
    assert client(svc).catalog().datasets["digits"]["num_classes"] == 10


def test_a_401_says_where_the_key_was_looked_for(svc: Service, tmp_path: Path):
    wrong = distill(svc, "--key", "dk_not-a-key", "list")
    assert wrong.exit_code == 1
    assert "the key from --key" in wrong.output and "Traceback" not in wrong.output
    nowhere = distill(svc, "list", DISTILL_HOME=str(tmp_path))
    assert nowhere.exit_code == 1
    said = " ".join(nowhere.output.split())
    assert "401" in said and "--key (not given)" in said and "$DISTILL_API_KEY (not set)" in said
    assert str(tmp_path / "api-key") in said
    from_env = distill(svc, "list", DISTILL_HOME=str(tmp_path), DISTILL_API_KEY="dk_wrong")
    assert "the key from $DISTILL_API_KEY" in " ".join(from_env.output.split())


def test_a_422_names_the_field(svc: Service, tmp_path: Path):
    spec = tmp_path / "job.json"
    spec.write_text(
        '{"dataset": {"name": "digits"}, "student": {"arch": {"name": "mlp", "hidden": [8]}}, '
        '"teacher": {"train": {"arch": {"name": "mlp", "hidden": [8]}}}, "method": {"name": "kd"}}'
    )
    result = distill(svc, "submit", str(spec), "--set", "method.temperature=-1")
    assert result.exit_code == 1
    assert "422" in result.output and "/method/temperature" in result.output
    with pytest.raises(ApiError) as caught:
        client(svc).submit({"dataset": {"name": "digits"}, "student": {"arch": {"name": "nope"}}})
    assert caught.value.status == 422 and any(p.startswith("/student/arch") for p in caught.value.pointers)


def test_an_idempotency_key_makes_a_second_submission_the_same_job(svc: Service):
    api = client(svc)
    spec = {**LONG_SPEC, "name": "client idempotent"}
    first = api.submit(spec, idempotency_key="client-test-1")
    try:
        assert api.submit(spec, idempotency_key="client-test-1").id == first.id
    finally:
        first.cancel()
    assert first.wait(every=0.2, timeout=60).status == "cancelled"


def test_labels_a_structured_failure_and_delete_through_the_command(svc: Service, tmp_path: Path):
    spec = tmp_path / "labelled.json"
    spec.write_text(json.dumps({**LONG_SPEC, "name": "client labelled", "limits": {"time_limit_seconds": 3}}))
    submitted = distill(svc, "submit", str(spec), "--set", "metadata.team=vision", "--quiet")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.output.strip()
    api = client(svc)
    assert api.get(job_id).metadata == {"team": "vision"}

    listed = distill(svc, "list", "--metadata", "team=vision")
    assert listed.exit_code == 0 and job_id in listed.output, listed.output
    assert job_id not in distill(svc, "list", "--metadata", "team=nlp").output
    assert [j.id for j in api.list(metadata={"team": "vision"}).items] == [job_id]
    assert api.list(metadata={"team": "vision"}).items[0].spec is None  # the list is light

    refused = distill(svc, "delete", job_id)  # not ended yet
    assert refused.exit_code == 1 and "409" in refused.output, refused.output
    failed = poll_until(lambda: (j := api.get(job_id)).ended and j, timeout=120, what="the time limit")
    assert (failed.status, failed.error.code, failed.error.field) == (
        "failed",
        "time_limit_exceeded",
        "limits.time_limit_seconds",
    )
    shown = " ".join(distill(svc, "show", job_id).output.split())
    assert "time limit exceeded" in shown and "code time_limit_exceeded, field limits.time_limit_seconds" in shown
    assert "metadata team=vision" in shown

    deleted = distill(svc, "delete", job_id)
    assert deleted.exit_code == 0 and f"deleted job {job_id}" in deleted.output
    with pytest.raises(ApiError) as caught:
        api.get(job_id)
    assert caught.value.status == 404
