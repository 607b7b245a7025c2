"""The dashboard's HTTP contract, in process over a real migrated SQLite database (no browser; the
browser test is tests/integration/test_dashboard_browser.py): the login redirect for pages, htmx
and scripts, the cookie's flags, CSRF refusals, tenants kept apart, the key never in a page, the
result table and a report's verdict, the vendored assets."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.client.models import Report
from app.ui.views import verdict_of
from tests.conftest import clear_caches, migrate

SPEC = {
    "name": "ui job",
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [8]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [4]}},
    "training": {"epochs": 1},
    "seeds": [0, 1],
}
REPORT = {
    "name": "ui job",
    "dataset": {"test_size": 360},
    "method": {"name": "kd"},
    "seeds": [0, 1],
    "teacher": {"arch": {"name": "mlp"}, "test_accuracy": 0.9},
    "student": {
        "arch": {"name": "mlp"},
        "runs": [{}, {}],
        "mean": {"test_accuracy": 0.8},
        "std": {"test_accuracy": 0.01},
    },
    "baseline": {
        "arch": {"name": "mlp"},
        "runs": [{}, {}],
        "mean": {"test_accuracy": 0.75},
        "std": {"test_accuracy": 0.02},
    },
    "summary": {"student_vs_baseline_test_accuracy": 0.05},
    "verdict": {
        "summary": "Distillation helped: +5.0 points over the scratch baseline.",
        "helped": True,
        "warnings": ["the teacher stopped early at epoch 1"],
    },
}


def _app_client(monkeypatch, tmp_path, base_url: str = "http://testserver", auth: str = "keys") -> TestClient:
    url = f"sqlite:///{tmp_path / 'distill.db'}"
    migrate(url)
    monkeypatch.setenv("DISTILL_DATABASE_URL", url)
    monkeypatch.setenv("DISTILL_AUTH", auth)
    clear_caches()
    from app.main import create_app

    return TestClient(create_app(), base_url=base_url)


@pytest.fixture
def web(in_process_env, monkeypatch, tmp_path) -> Iterator[TestClient]:
    with _app_client(monkeypatch, tmp_path) as c:
        yield c


def local_key() -> str:
    from app.config import get_settings

    return get_settings().local_key_file.read_text().strip()


def log_in(web: TestClient, key: str | None = None) -> str:
    key = key or local_key()
    answer = web.post("/ui/login", data={"key": key}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/jobs"
    return key


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def submit(web: TestClient, key: str) -> str:
    answer = web.post("/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_without_a_cookie_pages_go_to_the_login_form(web: TestClient):
    page = web.get("/ui/jobs", headers={"Accept": "text/html"}, follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/ui/login")
    htmx = web.get("/ui/jobs/rows", headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.headers["HX-Redirect"] == "/ui/login"
    script = web.get("/ui/jobs/x/metrics", headers={"Accept": "application/json"})
    assert script.status_code == 401
    web.cookies.set("distill_ui", "dk_revoked-or-unknown", path="/ui")
    stale = web.get("/ui/artifacts", headers={"Accept": "text/html"}, follow_redirects=False)
    assert stale.headers["location"] == "/ui/login"


def test_the_login_cookie_is_httponly_strict_and_scoped_to_the_dashboard(web: TestClient):
    answer = web.post("/ui/login", data={"key": local_key()}, follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    for flag in ("httponly", "samesite=strict", "path=/ui"):
        assert flag in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back
    assert web.get("/v1/jobs").status_code == 401  # the API takes keys in headers only


def test_over_https_the_cookie_is_secure(in_process_env, monkeypatch, tmp_path):
    with _app_client(monkeypatch, tmp_path, base_url="https://testserver") as web:
        answer = web.post("/ui/login", data={"key": local_key()}, follow_redirects=False)
        assert "secure" in answer.headers["set-cookie"].lower()


def test_a_wrong_or_empty_key_is_a_clear_login_error(web: TestClient):
    wrong = web.post("/ui/login", data={"key": "dk_nope"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text and "set-cookie" not in wrong.headers
    assert "Enter your API key" in web.post("/ui/login", data={"key": " "}).text


def test_state_changing_requests_need_the_csrf_token(web: TestClient):
    key = log_in(web)
    job_id = submit(web, key)
    page = web.get(f"/ui/jobs/{job_id}")
    token = csrf_of(page.text)
    assert web.post(f"/ui/jobs/{job_id}/cancel").status_code == 403
    assert web.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": "forged"}).status_code == 403
    refused = web.post("/ui/upload", files={"file": ("a.npz", b"x")}, data={"kind": "dataset"})
    assert refused.status_code == 403 and 'id="upload-error"' in refused.text  # shown in the form
    cross_site = web.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403
    assert web.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()["status"] == "queued"
    done = web.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert web.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()["status"] == "cancelled"
    assert web.post("/ui/login", data={"key": key}, headers={"Origin": "https://evil.example"}).status_code == 403


def test_the_upload_form_refusal_is_shown_with_its_field(web: TestClient):
    log_in(web)
    token = csrf_of(web.get("/ui/jobs").text)
    answer = web.post(
        "/ui/upload",
        headers={"X-CSRF-Token": token},
        data={"kind": "dataset"},
        files={"file": ("model.pkl", b"\x80\x04pickle")},
    )
    assert answer.status_code == 422 and 'id="upload-error"' in answer.text and "/file" in answer.text


def test_another_tenants_job_is_not_found(web: TestClient):
    from app import tenants
    from app.db import get_sessionmaker

    job_id = submit(web, local_key())
    with get_sessionmaker()() as session:
        other = tenants.create_key(session, tenants.create_tenant(session, "other")).key
        session.commit()
    log_in(web, other)
    assert web.get(f"/ui/jobs/{job_id}").status_code == 404
    assert web.get(f"/ui/jobs/{job_id}/metrics").status_code == 404
    assert job_id not in web.get("/ui/jobs").text


def test_a_finished_job_shows_its_result_table_and_verdict_and_never_the_key(web: TestClient):
    from app.db import get_sessionmaker
    from app.models import Job

    key = log_in(web)
    job_id = submit(web, key)
    with get_sessionmaker()() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded", progress=1.0, result=REPORT))
        session.commit()
    page = web.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200 and key not in page.text
    assert "hx-trigger" not in page.text.split('id="panel"')[1].split(">")[0]  # ended: no more polling
    rows = re.findall(r'<th scope="row">([^<]+)</th><td class="num">([^<]+)</td>', page.text)
    assert rows == [
        ("teacher (mlp)", "0.900"),
        ("student (kd, mlp)", "0.800 ± 0.010"),
        ("baseline (scratch, mlp)", "0.750 ± 0.020"),
    ]
    assert "Distillation helped: +5.0 points" in page.text and "stopped early at epoch 1" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-frame-options"] == "DENY"
    for other in ("/ui/jobs", "/ui/artifacts", "/ui/upload"):
        assert key not in web.get(other).text


def test_verdicts_of_every_shape_are_shown():
    assert verdict_of(Report.model_validate({})) is None
    assert verdict_of(Report.model_validate({"verdict": "KD helped"})).headline == "KD helped"
    verdict = verdict_of(Report.model_validate(REPORT))
    assert verdict.headline.startswith("Distillation helped")
    assert ("helped", "True") in verdict.facts and verdict.warnings == ["the teacher stopped early at epoch 1"]


def test_assets_are_served_from_the_service_only(web: TestClient):
    js = web.get("/ui/static/vendor/htmx-2.0.11/htmx.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "Zero-Clause BSD" in web.get("/ui/static/vendor/htmx-2.0.11/LICENSE").text
    assert "MIT" in web.get("/ui/static/vendor/uplot-1.6.32/LICENSE").text
    assert web.get("/ui/static/../session.py").status_code == 404
    assert web.get("/ui/static/%2e%2e/session.py").status_code == 404
    page = web.get("/ui/login").text
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from another host


def test_without_keys_the_login_is_a_continue_button(in_process_env, monkeypatch, tmp_path):
    with _app_client(monkeypatch, tmp_path, auth="off") as web:
        assert "Continue" in web.get("/ui/login").text
        assert web.post("/ui/login", follow_redirects=False).status_code == 303
        assert web.get("/ui/jobs").status_code == 200
        assert csrf_of(web.get("/ui/jobs").text)


def test_the_job_list_pages_to_older_jobs(web: TestClient, monkeypatch):
    from app.ui import views

    key = log_in(web)
    first, second = submit(web, key), submit(web, key)
    monkeypatch.setattr(views, "JOBS_SHOWN", 1)
    newest = web.get("/ui/jobs").text
    assert second in newest and first not in newest
    older = re.search(r'href="(/ui/jobs\?cursor=[^"]+)" id="older"', newest).group(1)
    page = web.get(older.replace("&amp;", "&")).text
    assert first in page and second not in page and 'id="older"' not in page


def test_the_upload_form_streams_past_the_json_body_cap(in_process_env, monkeypatch, tmp_path):
    """The form's body goes to the API's streamed upload: the body guard's JSON cap is not its cap."""
    import io

    import numpy as np

    monkeypatch.setenv("DISTILL_MAX_JSON_BODY_BYTES", "1024")
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, x=rng.normal(size=(60, 8)).astype("float32"), y=np.arange(60) % 3)
    assert len(buffer.getvalue()) > 1024
    with _app_client(monkeypatch, tmp_path) as web:
        log_in(web)
        token = csrf_of(web.get("/ui/jobs").text)
        answer = web.post(
            "/ui/upload",
            headers={"X-CSRF-Token": token},
            data={"kind": "dataset"},
            files={"file": ("tiny.npz", buffer.getvalue())},
        )
        assert answer.status_code == 201 and 'id="upload-ok"' in answer.text, answer.text
        assert "Already stored" not in answer.text
        again = web.post(
            "/ui/upload",
            headers={"X-CSRF-Token": token},
            data={"kind": "dataset"},
            files={"file": ("tiny.npz", buffer.getvalue())},
        )
        assert again.status_code == 200 and "Already stored" in again.text
        assert "rows: 60" in web.get("/ui/artifacts").text
        big_login = web.post("/ui/login", data={"key": "k" * 2000})  # other forms keep the cap
        assert big_login.status_code == 413


def test_the_dashboard_counts_against_its_keys_rate_limit(in_process_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_RATE_LIMIT_PER_MINUTE", "1")
    monkeypatch.setenv("DISTILL_RATE_LIMIT_BURST", "3")
    with _app_client(monkeypatch, tmp_path) as web:
        log_in(web)  # one token
        assert web.get("/ui/jobs").status_code == 200
        assert web.get("/ui/artifacts").status_code == 200
        limited = web.get("/ui/jobs/rows", headers={"HX-Request": "true"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_wrong_keys_at_the_login_form_are_rate_limited_per_address(in_process_env, monkeypatch, tmp_path):
    """As on the API: the login form is no faster a way to guess keys."""
    monkeypatch.setenv("DISTILL_AUTH_FAILURES_PER_MINUTE", "1")
    monkeypatch.setenv("DISTILL_AUTH_FAILURES_BURST", "2")
    with _app_client(monkeypatch, tmp_path) as web:
        assert [web.post("/ui/login", data={"key": f"dk_guess{i}"}).status_code for i in range(2)] == [401, 401]
        limited = web.post("/ui/login", data={"key": "dk_guess2"})
        assert limited.status_code == 429 and 'id="login-error"' in limited.text
        assert int(limited.headers["retry-after"]) > 0 and "set-cookie" not in limited.headers
        assert web.get("/v1/jobs", headers={"Authorization": "Bearer dk_guess3"}).status_code == 429  # one count
        log_in(web)  # the right key still gets in


def test_a_running_job_shows_its_epoch_budget_and_time_left(web: TestClient):
    from datetime import timedelta

    from app.db import get_sessionmaker
    from app.models import Job, utcnow

    key = log_in(web)
    job_id = submit(web, key)
    run = {"phase": "teacher", "name": "teacher", "epoch": 14, "budget": 60}
    estimate = {
        "ends_at": (utcnow() + timedelta(minutes=10)).isoformat(),
        "epochs": {"done": 14, "budget": 380, "planned": 420, "run": run},
    }
    latest = {"phase": "teacher", "run": "teacher", "epoch": 14, "values": {"val_accuracy": 0.9}}
    with get_sessionmaker()() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", started_at=utcnow(), estimate=estimate, latest_metrics=latest)
        )
        session.commit()
    page = web.get(f"/ui/jobs/{job_id}").text
    assert "epoch 14 of 60" in page
    assert re.search(r'<dd id="epochs">14 of 380 <span class="muted">\(planned 420', page)
    assert re.search(r"about (9|10) min \d\d s left", page), re.findall(r"about [^<]* left", page)


def test_a_queued_job_says_it_waits_for_a_worker_and_a_failed_one_shows_its_error(web: TestClient):
    from app import jobs
    from app.db import get_sessionmaker

    key = log_in(web)
    waiting, failing = submit(web, key), submit(web, key)
    assert "waiting for a worker: none has been seen in the last 30 s" in web.get(f"/ui/jobs/{waiting}").text
    assert 'class="muted small waiting">waiting for a worker' in web.get("/ui/jobs").text
    with get_sessionmaker()() as session:
        jobs.fail(session, failing, "cannot read /srv/x/uploads/data.npz", code="artifact_unavailable", field="dataset")
        session.commit()
    page = web.get(f"/ui/jobs/{failing}").text
    assert 'id="job-error">cannot read data.npz' in page and "<code>dataset</code>" in page and "/srv" not in page
    assert 'id="job-waiting"' not in page
