"""POST /v1/sweeps in process over SQLite and PostgreSQL: admission of every trial (422
naming the axis and value), the teacher trial released alone, cancel, another tenant's 404."""

from __future__ import annotations

from app.db import get_sessionmaker
from app.models import Job
from tests.api.test_tenants import bearer, new_tenant

BASE = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [32]}, "epochs": 2}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "method": {"name": "kd"},
    "training": {"epochs": 2},
    "seeds": [0],
}
GRID = {"name": "grid", "base": BASE, "axes": {"method.temperature": [2.0, 4.0], "method.alpha": [0.5, 0.9]}}


def test_a_grid_expands_and_releases_the_teacher_trial_alone(client):
    r = client.post("/v1/sweeps", json=GRID)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert r.headers["Location"] == f"/v1/sweeps/{sweep['id']}"
    assert [t["config"] for t in sweep["trials"]] == [
        {"method.temperature": 2.0, "method.alpha": 0.5},
        {"method.temperature": 2.0, "method.alpha": 0.9},
        {"method.temperature": 4.0, "method.alpha": 0.5},
        {"method.temperature": 4.0, "method.alpha": 0.9},
    ]
    assert sweep["progress"] | {"best_so_far": None} == {
        "total": 4, "done": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "running": 0, "queued": 1,
        "pending": 3, "stopped_early": 0, "best_so_far": None,
    }  # fmt: skip
    (standing,) = sweep["leaderboard_so_far"]  # the released trials, with their state
    assert (standing["trial"], standing["status"], standing["winner"], standing["val_accuracy"]) == (
        0, "queued", False, None,
    )  # fmt: skip
    first = client.get(f"/v1/jobs/{sweep['trials'][0]['job_id']}").json()
    assert first["status"] == "queued"
    with get_sessionmaker()() as session:
        job = session.get(Job, first["id"])
        assert (job.sweep_id, job.sweep_trial) == (sweep["id"], 0)
        assert job.spec["method"]["temperature"] == 2.0 and job.spec["method"]["alpha"] == 0.5


def test_a_wrong_value_is_refused_naming_its_axis_and_value(client):
    bad = {**GRID, "axes": {"method.temperature": [4.0, -1.0]}}
    r = client.post("/v1/sweeps", json=bad)
    assert r.status_code == 422, r.text
    pointers = [e["pointer"] for e in r.json()["errors"]]
    assert pointers == ["/axes/method.temperature/1"]
    assert "trial 1" in r.json()["errors"][0]["detail"]
    # Nothing was stored.
    assert client.get("/v1/sweeps").json() == [] and client.get("/v1/jobs").json()["items"] == []


def test_a_student_that_does_not_fit_is_refused_at_its_axis(client):
    ladder = {**GRID, "axes": {"student.arch": [{"name": "mlp", "hidden": [8]}, {"name": "cnn", "channels": [4] * 9}]}}
    r = client.post("/v1/sweeps", json=ladder)
    assert r.status_code == 422, r.text
    assert {e["pointer"] for e in r.json()["errors"]} == {"/axes/student.arch/1"}


def test_too_many_trials_and_a_bad_budget_are_refused(client):
    big = {**GRID, "axes": {"method.temperature": [float(t) for t in range(1, 21)], "seeds": [[s] for s in range(11)]}}
    r = client.post("/v1/sweeps", json=big)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/axes"
    r = client.post("/v1/sweeps", json={**GRID, "budget": {"params": 10, "bytes": 10}})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"].startswith("/budget")


def test_cancel_cancels_the_queued_trial_and_ends_the_sweep(client):
    sweep = client.post("/v1/sweeps", json=GRID).json()
    r = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["progress"]["cancelled"] == 1
    assert r.json()["progress"]["pending"] == 3
    assert r.json()["leaderboard_so_far"] is None and r.json()["result"]["leaderboard"][0]["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{sweep['trials'][0]['job_id']}").json()["status"] == "cancelled"
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 409


def test_another_tenants_sweep_answers_404(client):
    sweep = client.post("/v1/sweeps", json=GRID).json()
    other = bearer(new_tenant("other"))
    for method, path in (
        ("GET", f"/v1/sweeps/{sweep['id']}"),
        ("POST", f"/v1/sweeps/{sweep['id']}/cancel"),
        ("GET", f"/v1/sweeps/{sweep['id']}/pareto.png"),
    ):
        r = client.request(method, path, headers=other)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["title"] == "Sweep not found"
    assert client.get("/v1/sweeps", headers=other).json() == []
    assert client.get(f"/v1/sweeps/{sweep['id']}").json()["status"] == "running"


def test_the_median_rule_stops_a_trial_below_the_median_at_its_fraction(client):
    from sqlalchemy import update

    from app import jobs
    from app.models import Sweep
    from app.sweeps import state

    body = {**GRID, "max_parallel": 4, "early_stop": {"fraction": 0.5, "min_trials": 2}}
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    with get_sessionmaker()() as session:
        sweep = session.get(Sweep, sweep_id)
        first = state.trial_jobs(session, sweep_id)[0]
        session.execute(update(Job).where(Job.id == first.id).values(status="succeeded"))
        released, _ = state.advance(session, sweep)
        assert len(released) == 3  # the teacher trial ended: the others go, up to max_parallel
        session.execute(update(Job).where(Job.sweep_id == sweep_id).values(status="running"))
        by_trial = state.trial_jobs(session, sweep_id)
        for index, value in {0: 0.8, 1: 0.7, 2: 0.3, 3: 0.75}.items():
            jobs.add_metrics(session, by_trial[index].id, "student", "seed=0", 1, {"val_accuracy": value})
        # Epochs 2, fraction 0.5: judged at epoch 1, each against the median of the others
        # (trial 1: median of 0.8, 0.3, 0.75 is 0.75; trial 3: of 0.8, 0.7, 0.3 is 0.7, kept).
        assert state.early_stop(session, sweep) == [1, 2]
        assert state.early_stop(session, sweep) == []  # once
        session.commit()
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["progress"]["stopped_early"] == 2
    assert [t["stopped_early"] for t in sweep["trials"]] == [False, True, True, False]
    flagged = [client.get(f"/v1/jobs/{t['job_id']}").json()["cancel_requested"] for t in sweep["trials"]]
    assert flagged == [False, True, True, False]


def test_trials_run_with_the_spec_as_admitted(client):
    sweep = client.post("/v1/sweeps", json=GRID).json()
    first = client.get(f"/v1/jobs/{sweep['trials'][0]['job_id']}").json()
    with get_sessionmaker()() as session:
        assert session.get(Job, first["id"]).spec["limits"]["time_limit_seconds"] is not None  # the default one


def test_a_nul_in_the_sweep_is_refused_not_stored(client):
    r = client.post("/v1/sweeps", json={**GRID, "name": "a\x00b"})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/name"
