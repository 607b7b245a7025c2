"""The dashboard's sweep pages in process over a real migrated SQLite database (the browser test
runs a real sweep: tests/integration/test_dashboard_browser.py): the list, a sweep's progress and
standings while it runs, the leaderboard with the winner marked once it ended, another tenant's
sweep not found, cancel only with the CSRF token."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.ui.test_dashboard_http import REPORT, _app_client, csrf_of, local_key, log_in

SWEEP = {
    "name": "ui sweep",
    "base": {
        "dataset": {"name": "digits"},
        "teacher": {"train": {"arch": {"name": "mlp", "hidden": [8]}, "epochs": 1}},
        "student": {"arch": {"name": "mlp", "hidden": [4]}},
        "method": {"name": "kd"},
        "training": {"epochs": 2},
        "seeds": [0],
    },
    "axes": {"method.temperature": [2.0, 4.0]},
}


@pytest.fixture
def web(in_process_env, monkeypatch, tmp_path) -> Iterator[TestClient]:
    with _app_client(monkeypatch, tmp_path) as c:
        yield c


def submit_sweep(web: TestClient, key: str) -> dict:
    answer = web.post("/v1/sweeps", json=SWEEP, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 202, answer.text
    return answer.json()


def report(val: float, test: float) -> dict:
    out = copy.deepcopy(REPORT)
    out["student"]["mean"] |= {
        "val_accuracy": val,
        "test_accuracy": test,
        "parameters": 300.0,
        "bytes": 1208.0,
        "latency_onnx_ms": 0.02,
        "latency_onnx_batch_ms": 0.3,
        "latency_onnx_batch_size": 64.0,
        "latency_onnx_threads": 1.0,
    }
    return out


def finish_trial(sweep_id: str, trial: int, val: float, test: float) -> None:
    from app.db import get_sessionmaker
    from app.models import Job, Sweep
    from app.sweeps import state

    with get_sessionmaker()() as session:
        job = state.trial_jobs(session, sweep_id)[trial]
        values = {"status": "succeeded", "progress": 1.0, "result": report(val, test)}
        session.execute(update(Job).where(Job.id == job.id).values(**values))
        state.advance(session, session.get(Sweep, sweep_id))  # what a worker's sweeper does
        session.commit()


def panel_tag(html: str) -> str:
    return html.split('id="sweep-panel"')[1].split(">")[0]


def rows_of(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr data-trial="(\d+)" data-winner="(true|false)"', html)


def test_a_running_sweep_shows_its_progress_and_standings_then_its_winner(web: TestClient):
    key = log_in(web)
    sweep = submit_sweep(web, key)
    listed = web.get("/ui/sweeps")
    assert listed.status_code == 200 and f'data-sweep="{sweep["id"]}"' in listed.text
    assert 'hx-get="/ui/sweeps/rows"' in listed.text  # a running sweep: the list refreshes

    page = web.get(f"/ui/sweeps/{sweep['id']}")
    assert page.status_code == 200 and key not in page.text
    assert "0/2 trials done · 0 running · 1 queued · 1 not yet released" in page.text
    assert 'hx-trigger="every 2s"' in panel_tag(page.text)  # it polls while the sweep runs
    assert "Standings so far" in page.text and 'id="best-so-far">none yet' in page.text

    finish_trial(sweep["id"], 0, val=0.7, test=0.8)
    page = web.get(f"/ui/sweeps/{sweep['id']}/panel")
    assert "1/2 trials done" in page.text and "trial 0 (method.temperature = 2.0): validation 0.700" in page.text
    assert rows_of(page.text) == [("0", "true"), ("1", "false")]  # the best so far, marked
    assert f'href="/ui/jobs/{sweep["trials"][0]["job_id"]}"' in page.text  # each trial links to its job

    finish_trial(sweep["id"], 1, val=0.9, test=0.6)
    page = web.get(f"/ui/sweeps/{sweep['id']}")
    assert "Leaderboard" in page.text and "Standings so far" not in page.text
    assert rows_of(page.text) == [("1", "true"), ("0", "false")]  # chosen on validation, not test
    assert re.search(r'id="winner">Winner, chosen on validation: <strong>trial 1</strong>', page.text)
    assert "onnxruntime on the CPU, 1 intra-op thread(s)" in page.text and "batch of 64" in page.text
    assert 'id="early-stop">off' in page.text
    assert "The figure is being drawn" in page.text  # the worker draws it; the panel asks until then
    assert 'hx-trigger="every 2s"' in panel_tag(page.text)
    assert 'hx-get="/ui/sweeps/rows"' not in web.get("/ui/sweeps").text  # none running: no refresh


def test_another_tenants_sweep_is_not_found(web: TestClient):
    from app import tenants
    from app.db import get_sessionmaker

    sweep = submit_sweep(web, local_key())
    with get_sessionmaker()() as session:
        other = tenants.create_key(session, tenants.create_tenant(session, "other")).key
        session.commit()
    log_in(web, other)
    for path in ("", "/panel", "/pareto.png"):
        assert web.get(f"/ui/sweeps/{sweep['id']}{path}").status_code == 404, path
    assert sweep["id"] not in web.get("/ui/sweeps").text


def test_cancel_from_the_page_needs_the_csrf_token(web: TestClient):
    key = log_in(web)
    sweep = submit_sweep(web, key)
    token = csrf_of(web.get(f"/ui/sweeps/{sweep['id']}").text)
    assert web.post(f"/ui/sweeps/{sweep['id']}/cancel").status_code == 403
    headers = {"Authorization": f"Bearer {key}"}
    assert web.get(f"/v1/sweeps/{sweep['id']}", headers=headers).json()["status"] == "running"
    done = web.post(f"/ui/sweeps/{sweep['id']}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/ui/sweeps/{sweep['id']}"
    assert web.get(f"/v1/sweeps/{sweep['id']}", headers=headers).json()["status"] == "cancelled"
    assert 'id="cancel-sweep"' not in web.get(f"/ui/sweeps/{sweep['id']}").text
