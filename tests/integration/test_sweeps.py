"""Sweeps with real processes: uvicorn, Celery workers (one killed for real), SQLite and the
filesystem broker, PostgreSQL and Redis. Trials are ordinary jobs; the workers' sweeper
threads release them and write the leaderboard."""

from __future__ import annotations

import signal

import httpx
import pytest

from app.client import Client
from app.contract.spec import TeacherTrain
from tests.integration.test_client_cli import distill
from tests.support.jobs import student_epoch
from tests.support.polling import poll_until, wait_for_job
from tests.support.services import Service, subprocess_env

pytestmark = pytest.mark.integration

# Issue 12 (teacher reuse by content hash) makes one teacher training per sweep; before it
# merges every trial trains its own (the sweep still runs trial 0 alone first).
CACHE_REUSES_TEACHERS = "reuse" in TeacherTrain.model_fields

BASE = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [32]}, "epochs": 3}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "method": {"name": "kd"},
    "training": {"epochs": 3},
    "seeds": [0],
    "baseline": True,
}
GRID = {"name": "tiny grid", "base": BASE, "axes": {"method.temperature": [2.0, 4.0], "method.alpha": [0.5, 0.9]}}


def sweep_of(api: httpx.Client, sweep_id: str) -> dict:
    r = api.get(f"/v1/sweeps/{sweep_id}")
    assert r.status_code == 200, r.text
    return r.json()


def ended(api: httpx.Client, sweep_id: str) -> dict | None:
    sweep = sweep_of(api, sweep_id)
    return sweep if sweep["status"] != "running" else None


def submit(api: httpx.Client, body: dict) -> str:
    r = api.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def trial_jobs(api: httpx.Client, sweep: dict) -> list[dict]:
    return [api.get(f"/v1/jobs/{t['job_id']}").json() for t in sweep["trials"] if t["job_id"]]


@pytest.fixture
def embedded(tmp_path, make_service) -> Service:
    return make_service(
        subprocess_env(tmp_path, None, "filesystem://", sweep_seconds=1, resend_after_seconds=4), workers=1
    )


def test_a_tiny_grid_ends_with_a_leaderboard_and_a_winner_chosen_on_validation(embedded: Service):
    api = embedded.client()
    sweep_id = submit(api, GRID)
    sweep = poll_until(lambda: ended(api, sweep_id), timeout=400, what="the sweep to end", every=1)
    assert sweep["status"] == "succeeded", embedded.dump_logs()
    assert sweep["progress"]["succeeded"] == 4 and sweep["progress"]["pending"] == 0

    result = sweep["result"]
    rows = result["leaderboard"]
    assert len(rows) == 4 and {r["trial"] for r in rows} == {0, 1, 2, 3}
    for r in rows:
        assert r["status"] == "succeeded"
        assert 0 <= r["val_accuracy"]["mean"] <= 1 and 0 <= r["test_accuracy"]["mean"] <= 1
        assert r["scratch_test_accuracy"] is not None and r["parameters"] > 0 and r["latency_ms"] > 0
        # onnxruntime's figures from the trial's report: one example and a batch, on one thread
        assert r["latency_batch_ms"] > 0 and (r["latency_batch_size"], r["latency_threads"]) == (64, 1)
    best_val = max(r["val_accuracy"]["mean"] for r in rows)
    assert result["winner"]["val_accuracy"]["mean"] == best_val
    assert rows[0]["trial"] == result["winner"]["trial"]
    files = {a["filename"] for a in api.get(result["winner"]["artifacts_url"]).json()}
    assert "student.onnx" in files

    jobs = trial_jobs(api, sweep)
    assert len(jobs) == 4 and all(j["attempts"] == 1 for j in jobs)
    first = next(j for j in jobs if j["id"] == sweep["trials"][0]["job_id"])
    assert all(j["created_at"] >= first["finished_at"] for j in jobs if j is not first)  # teacher trial first
    assert result["teacher_trainings"] == (1 if CACHE_REUSES_TEACHERS else 4)

    # The same sweep through the Python client and the `distill sweep` command.
    key = api.headers["Authorization"].removeprefix("Bearer ")
    assert Client(embedded.url, key).wait_sweep(sweep_id, timeout=30).result["winner"] == result["winner"]
    shown = distill(embedded, "sweep", "show", sweep_id)
    assert shown.exit_code == 0, shown.output
    assert f"winner (on validation): trial {result['winner']['trial']}" in shown.output
    assert "4/4 done" in shown.output
    assert "latency: onnxruntime on the CPU, 1 intra-op thread(s)" in shown.output
    watched = distill(embedded, "sweep", "watch", sweep_id)  # an ended sweep: its line, then the board
    assert watched.exit_code == 0 and "Leaderboard (ranked on validation)" in watched.output
    assert f"{result['winner']['trial']} *" in watched.output  # the winner marked

    # The worker draws the figure just after it wrote the result.
    url = poll_until(lambda: (sweep_of(api, sweep_id)["result"] or {}).get("pareto_png_url"), timeout=30, what="figure")
    png = api.get(url)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert set(result["pareto"]) == {"latency_ms", "latency_batch_ms", "parameters", "bytes"}
    assert result["pareto"]["parameters"]
    figures = {f["x"]: f for f in result["figures"]}  # pareto.png's points, in JSON
    assert [p["trial"] for p in figures["latency_ms"]["points"] if p["winner"]] == [result["winner"]["trial"]]
    assert len(figures["latency_batch_ms"]["points"]) == 4


def test_a_budget_no_candidate_meets_is_a_clear_result(embedded: Service):
    api = embedded.client()
    ladder = {
        "base": BASE | {"baseline": False, "training": {"epochs": 1}},
        "axes": {"student.arch": [{"name": "mlp", "hidden": [8]}, {"name": "mlp", "hidden": [16]}]},
        "budget": {"params": 10},
    }
    sweep_id = submit(api, ladder)
    sweep = poll_until(lambda: ended(api, sweep_id), timeout=300, what="the sweep to end", every=1)
    assert sweep["status"] == "succeeded"
    answer = sweep["result"]["budget"]
    assert answer["met"] is False and answer["fitting"] == 0 and answer["candidates"] == 2
    assert "no finished candidate has parameters <= 10" in answer["detail"]
    assert sweep["result"]["winner"] is None and len(sweep["result"]["leaderboard"]) == 2


def test_cancelling_a_sweep_cancels_its_trials(embedded: Service):
    api = embedded.client()
    slow = GRID | {"base": BASE | {"training": {"epochs": 40, "batch_size": 8}}}
    sweep_id = submit(api, slow)
    first = sweep_of(api, sweep_id)["trials"][0]["job_id"]
    wait_for_job(api, first, timeout=120, statuses={"running"}, what="trial 0 runs")
    r = api.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert r.status_code == 200, r.text
    sweep = poll_until(lambda: ended(api, sweep_id), timeout=120, what="the sweep to end", every=0.5)
    assert sweep["status"] == "cancelled"
    assert [t["status"] for t in sweep["trials"]] == ["cancelled", "pending", "pending", "pending"]
    assert sweep["result"]["winner"] is None
    # Nothing more is released afterwards.
    assert all(j["status"] == "cancelled" for j in trial_jobs(api, sweep_of(api, sweep_id)))


def test_a_worker_killed_mid_sweep_loses_one_trials_epoch_not_the_sweep(make_service, distributed_env):
    svc = make_service(distributed_env())
    api = svc.client()
    worker = svc.start_worker("w0")
    # Trial 0 (the teacher trial) short, trial 1 long enough (small batches) to be killed mid-trial.
    base = BASE | {"baseline": False, "training": {"batch_size": 8}, "limits": {"max_attempts": 4}}
    body = {"base": base, "axes": {"training.epochs": [2, 6]}}
    sweep_id = submit(api, body | {"max_parallel": 1})

    second = poll_until(
        lambda: sweep_of(api, sweep_id)["trials"][1]["job_id"], timeout=400, what="trial 1 released", every=0.5
    )
    poll_until(lambda: student_epoch(api, second) >= 2, timeout=240, what="trial 1 at student epoch 2")
    svc.kill(worker, signal.SIGKILL)
    svc.start_worker("w1")

    sweep = poll_until(lambda: ended(api, sweep_id), timeout=500, what="the sweep to end", every=1)
    assert sweep["status"] == "succeeded", svc.dump_logs()
    jobs = trial_jobs(api, sweep)
    assert len(jobs) == 2 and len({j["id"] for j in jobs}) == 2  # each trial once
    assert [j["attempts"] for j in jobs] == [1, 2]
    assert len(api.get("/v1/jobs").json()["items"]) == 2  # no duplicate trial job
    messages = [e["message"] for e in api.get(f"/v1/jobs/{second}/events").json()]
    assert any("resumed" in m and "student" in m for m in messages), messages
    assert len(sweep["result"]["leaderboard"]) == 2 and sweep["result"]["winner"] is not None
