"""The jobs API over a real database (SQLite and PostgreSQL) with a real
filesystem broker that no worker consumes, so submitted jobs stay queued."""

from __future__ import annotations

import copy

import pytest

from app.contract.spec import EXAMPLE_SPEC

PROBLEM = "application/problem+json"


def spec(**changes) -> dict:
    body = copy.deepcopy(EXAMPLE_SPEC)
    body.update(changes)
    return body


def submit(client, body=None, **headers):
    return client.post("/v1/jobs", json=body or spec(), headers=headers)


def test_submit_returns_202_location_and_queued_job(client):
    r = submit(client)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == 0.0
    assert job["spec"]["method"] == {"name": "kd", "temperature": 4.0, "alpha": 0.9}
    assert job["spec"]["training"]["epochs"] == 40  # defaults filled in, given values kept

    got = client.get(r.headers["location"]).json()
    assert got["id"] == job["id"] and got["status"] == "queued"
    events = client.get(f"/v1/jobs/{job['id']}/events").json()
    assert [e["message"] for e in events] == ["job submitted"]


def test_list_paginates_newest_first_and_filters_by_status(client):
    ids = [submit(client, spec(name=f"job {i}")).json()["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))

    client.post(f"/v1/jobs/{ids[1]}/cancel")
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[1]]
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()["items"]
    assert ids[1] not in {j["id"] for j in queued} and len(queued) == 4


def test_bad_cursor_is_a_problem(client):
    r = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert r.json()["errors"][0]["pointer"] == "/cursor"


def test_cancel_a_queued_job_at_once_and_idempotently(client):
    job_id = submit(client).json()["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] is not None
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    messages = [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    assert messages == ["job submitted", "job cancelled before it started"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/cancel"),
        ("get", "/v1/jobs/{id}/events"),
        ("get", "/v1/jobs/{id}/metrics"),
        ("get", "/v1/jobs/{id}/artifacts"),
        ("get", "/v1/artifacts/{id}"),
        ("get", "/v1/artifacts/{id}/content"),
    ],
)
def test_unknown_id_is_404_problem(client, method, path):
    r = getattr(client, method)(path.format(id="00000000-0000-0000-0000-000000000000"))
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == 404 and "00000000-0000-0000-0000-000000000000" in body["detail"]


@pytest.mark.parametrize(
    "change, pointer",
    [
        ({"dataset": {"name": "imagenet"}}, "/dataset/name"),
        ({"student": {"arch": {"name": "transformer"}}}, "/student/arch"),
        ({"method": {"name": "kd", "temperature": 0}}, "/method/temperature"),
        ({"method": {"name": "kd", "temperature": -2}}, "/method/temperature"),
        ({"method": {"name": "kd", "alpha": 1.5}}, "/method/alpha"),
        ({"method": {"name": "kd", "alpha": -0.1}}, "/method/alpha"),
        ({"method": {"name": "telepathy"}}, "/method"),
        ({"training": {"epoch": 3}}, "/training/epoch"),
        ({"seeds": [1, 1]}, "/seeds"),
        # 4 pooling stages cannot fit an 8x8 digit: caught at submission, not by a worker.
        (
            {"dataset": {"name": "digits"}, "student": {"arch": {"name": "cnn", "channels": [8, 8, 8, 8]}}},
            "/student/arch/channels",
        ),
        (
            {
                "dataset": {"name": "digits"},
                "teacher": {"train": {"arch": {"name": "cnn", "channels": [8, 8, 8, 8, 8]}}},
            },
            "/teacher/train/arch/channels",
        ),
    ],
)
def test_invalid_spec_is_422_problem_naming_the_field(client, change, pointer):
    r = submit(client, spec(**change))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == 422 and body["title"]
    assert pointer in {e["pointer"] for e in body["errors"]}, body["errors"]
    assert pointer in body["detail"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing stored


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(client):
    first = submit(client, spec(), **{"Idempotency-Key": "k-1"})
    again = submit(client, spec(), **{"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = submit(client, spec(seeds=[7]), **{"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_a_new_job_has_no_metrics_or_artifacts_yet(client):
    job_id = submit(client).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/metrics").json() == {"series": []}
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json() == []


@pytest.mark.parametrize(
    "ending, status, code",
    [
        (None, "queued", 200),  # cancelled at once
        ("claim", "running", 202),  # flagged; the worker stops at its next batch
        ("succeed", "succeeded", 409),
        ("fail", "failed", 409),
        ("cancel", "cancelled", 200),  # already cancelled: nothing to do, same answer
    ],
)
def test_cancel_in_every_state(client, ending, status, code):
    from app import jobs
    from app.db import get_sessionmaker

    job_id = submit(client).json()["id"]
    with get_sessionmaker()() as s:
        if ending in {"claim", "succeed", "fail"}:
            jobs.claim(s, job_id, "w", 60)
        if ending == "succeed":
            jobs.succeed(s, job_id, "w", {"ok": True})
        elif ending == "fail":
            jobs.fail(s, job_id, "boom", owner="w")
        elif ending == "cancel":
            jobs.request_cancel(s, job_id)
        s.commit()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == status

    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == code, r.text
    after = client.get(f"/v1/jobs/{job_id}").json()
    if code == 409:
        assert r.headers["content-type"] == PROBLEM and after["status"] == status
    elif status == "running":
        assert after["status"] == "running" and after["cancel_requested"] is True
    else:
        assert after["status"] == "cancelled"
