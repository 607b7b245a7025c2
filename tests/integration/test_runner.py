"""A job can always be stopped. Real processes (uvicorn, one Celery worker, embedded mode):
a brought ONNX teacher that never returns (a Loop of 2^40 steps per row past the 32 rows the
upload's check runs), uploaded over HTTP. The time limit and a cancel stop it by killing the
worker's runner process, and the SAME worker then runs the next job; the per-batch teacher
deadline stops it from inside onnxruntime. Errors and events a client reads are structured
and show no server path or traceback."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.jobs import job, submit
from tests.support.polling import poll_until, wait_for_job
from tests.support.services import Service, subprocess_env
from tests.support.specs import tiny_job

pytestmark = pytest.mark.integration

QUICK_STOP = {"stop_grace_seconds": 1, "kill_grace_seconds": 1, "sweep_seconds": 1}


def endless_teacher(cheap_rows: int = 32) -> bytes:
    """Digits logits (x flattened @ W), after a Loop of max(N - cheap_rows, 0) * 2^40 steps:
    instant on the upload's few probe rows, endless on a real batch."""
    from onnx import TensorProto, checker, helper, numpy_helper

    def const(name: str, value, dtype) -> object:
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    weights = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    scalar = lambda name, kind: helper.make_tensor_value_info(name, kind, [])  # noqa: E731
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [scalar("i", TensorProto.INT64), scalar("c_in", TensorProto.BOOL), scalar("v_in", TensorProto.FLOAT)],
        [scalar("c_out", TensorProto.BOOL), scalar("v_out", TensorProto.FLOAT)],
        [const("one", 1.0, np.float32)],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Sub", ["n", "cheap"], ["extra"]),
        helper.make_node("Max", ["extra", "zero"], ["extra_rows"]),
        helper.make_node("Mul", ["extra_rows", "huge"], ["trips"]),
        helper.make_node("Loop", ["trips", "true", "v0"], ["v_final"], body=body),
        helper.make_node("Mul", ["v_final", "fzero"], ["nothing"]),
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "nothing"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "endless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(weights, "W"),
            const("zero", 0, np.int64),
            const("cheap", cheap_rows, np.int64),
            const("huge", 1 << 40, np.int64),
            const("true", True, np.bool_),
            const("v0", 0.0, np.float32),
            const("fzero", 0.0, np.float32),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    return model.SerializeToString()


def endless_job(api, **limits) -> dict:
    r = api.post(
        "/v1/artifacts",
        data={"kind": "teacher", "name": "endless"},
        files={"file": ("endless.onnx", endless_teacher())},
    )
    assert r.status_code in (200, 201), r.text
    return tiny_job(teacher={"artifact": {"id": r.json()["id"]}}, limits=limits)


def assert_nothing_of_the_server_shows(api, svc: Service, job_id: str) -> None:
    home = svc.env["DISTILL_HOME"]
    error = job(api, job_id)["error"] or {}
    shown = [error.get("message") or ""]
    shown += [e["message"] for e in api.get(f"/v1/jobs/{job_id}/events").json()]
    for text in shown:
        assert "Traceback" not in text and home not in text and "site-packages" not in text, text


def start_one_worker(make_service, tmp_path, **settings) -> tuple[Service, object]:
    svc = make_service(subprocess_env(tmp_path, None, "filesystem://", **(QUICK_STOP | settings)))
    worker = svc.start_worker("only")
    # Its heartbeat comes once its runner process is up: a job's time limit must not run out
    # while torch is still being imported (that job would never need a kill).
    poll_until(
        lambda: "1 live worker" in httpx.get(f"{svc.url}/readyz").json()["workers"], timeout=120, what="the runner"
    )
    return svc, worker


def test_an_endless_teacher_is_killed_at_the_time_limit_and_on_cancel_and_the_worker_goes_on(make_service, tmp_path):
    svc, worker = start_one_worker(make_service, tmp_path, teacher_batch_seconds=3600)
    api = svc.client()
    spec = endless_job(api, time_limit_seconds=4)

    limited = submit(api, spec)
    final = wait_for_job(api, limited, timeout=120, what="the time limit to stop the job")
    assert final["status"] == "failed"
    assert (final["error"]["code"], final["error"]["field"]) == ("time_limit_exceeded", "limits.time_limit_seconds")

    cancelled = submit(api, {**spec, "limits": {}})
    poll_until(lambda: job(api, cancelled)["phase"] == "soft_targets", timeout=120, what="the endless teacher to run")
    r = api.post(f"/v1/jobs/{cancelled}/cancel")
    assert r.status_code == 202, r.text
    final = wait_for_job(api, cancelled, timeout=60, what="the cancel to stop the job")
    assert final["status"] == "cancelled"

    following = submit(api, tiny_job())
    final = wait_for_job(api, following, timeout=120, what="the next job")
    assert final["status"] == "succeeded", final["error"]
    assert worker.poll() is None  # the same worker, still up, ran it
    # Its main process never loaded torch (only its spawned runner process does).
    assert "libtorch" not in Path(f"/proc/{worker.pid}/maps").read_text()
    assert svc.full_logs().count("killing its runner process") == 2
    for job_id in (limited, cancelled):
        assert_nothing_of_the_server_shows(api, svc, job_id)


def test_a_teacher_past_its_batch_deadline_fails_the_job_saying_so(make_service, tmp_path):
    svc, _ = start_one_worker(make_service, tmp_path, teacher_batch_seconds=1)
    api = svc.client()
    stuck = submit(api, endless_job(api))
    final = wait_for_job(api, stuck, timeout=120, what="the teacher deadline")
    assert final["status"] == "failed"
    assert (final["error"]["code"], final["error"]["field"]) == ("teacher_deadline_exceeded", "teacher.artifact")
    assert "teacher_batch_seconds" in final["error"]["message"]
    assert_nothing_of_the_server_shows(api, svc, stuck)

    following = submit(api, tiny_job())
    assert wait_for_job(api, following, timeout=120, what="the next job")["status"] == "succeeded"
    # Stopped from inside onnxruntime: the runner process lived on.
    assert "killing its runner process" not in svc.full_logs()


def runner_pids(svc: Service) -> list[int]:
    return [int(pid) for pid in re.findall(r"runner process (\d+) started", svc.full_logs())]


def test_a_runner_process_killed_under_its_job_fails_it_after_max_attempts_and_is_replaced(make_service, tmp_path):
    svc, worker = start_one_worker(make_service, tmp_path, teacher_batch_seconds=3600)
    api = svc.client()
    stuck = submit(api, endless_job(api, max_attempts=1))
    poll_until(lambda: job(api, stuck)["phase"] == "soft_targets", timeout=120, what="the endless teacher")
    os.kill(runner_pids(svc)[-1], signal.SIGKILL)  # as the kernel's OOM killer would
    final = wait_for_job(api, stuck, timeout=60, what="the job to fail")
    assert (final["status"], final["error"]["code"]) == ("failed", "worker_lost")
    assert "killed by signal 9" in final["error"]["message"]

    following = submit(api, tiny_job())
    assert wait_for_job(api, following, timeout=120, what="the next job")["status"] == "succeeded"
    assert len(runner_pids(svc)) == 2 and worker.poll() is None


def test_a_warm_shutdown_stops_an_endless_job_hands_it_back_and_leaves_no_process(make_service, tmp_path):
    svc, worker = start_one_worker(make_service, tmp_path, teacher_batch_seconds=3600)
    api = svc.client()
    stuck = submit(api, endless_job(api))
    poll_until(lambda: job(api, stuck)["phase"] == "soft_targets", timeout=120, what="the endless teacher")

    worker.send_signal(signal.SIGTERM)  # to the main process only, as `docker stop` does
    worker.wait(timeout=60)
    final = job(api, stuck)
    assert final["status"] == "queued"  # handed back, for another worker to resume
    assert any("handed the job back" in e["message"] for e in api.get(f"/v1/jobs/{stuck}/events").json())
    runners = runner_pids(svc)
    assert runners
    for pid in runners:  # the runner process did not outlive its worker
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
