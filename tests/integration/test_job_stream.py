"""GET /v1/jobs/{id}/stream against a real uvicorn and a real Celery worker (embedded: SQLite and the
filesystem broker): a job's stream carries its events, every metric point and its state to the end;
it resumes after Last-Event-ID; another tenant's job is not found; open streams hold no thread (more
streams than API threads and the API still answers); a client that leaves frees its slot; the
Python client follows a job through the stream."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.client import Client
from app.client.feed import Message, parse_messages
from tests.conftest import ROOT
from tests.support.polling import poll_until
from tests.support.services import Service, running_service, subprocess_env
from tests.support.specs import EVERY_EXPORT, tiny_job

pytestmark = pytest.mark.integration

SMALL = tiny_job(
    name="stream",
    teacher={"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 2}},
    training={"epochs": 2},
    export=EVERY_EXPORT,
)
ENDLESS = {**SMALL, "name": "stream endless", "training": {"epochs": 5000, "patience": None}}
THREADS = 4  # the fewest the API takes: more streams than this must not starve it


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("stream")
    settings = {"api_threads": THREADS, "stream_poll_seconds": 0.2, "stream_heartbeat_seconds": 0.5, "max_streams": 8}
    with running_service(subprocess_env(root, None, "filesystem://", **settings), root, workers=1) as service:
        yield service


def submit(svc: Service, spec: dict) -> str:
    with svc.client() as http:
        response = http.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        return response.json()["id"]


def read_stream(svc: Service, job_id: str, last_event_id: str | None = None) -> list[Message]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with svc.client() as http, http.stream("GET", f"/v1/jobs/{job_id}/stream", headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(parse_messages(r.iter_lines()))


@pytest.fixture(scope="module")
def finished(svc: Service) -> tuple[str, list[Message]]:
    job_id = submit(svc, SMALL)
    return job_id, read_stream(svc, job_id)


def test_stream_carries_events_metrics_and_state_to_the_end(svc: Service, finished) -> None:
    job_id, messages = finished
    kinds = [m.event for m in messages]
    assert kinds[-1] == "end", kinds
    jobs = [json.loads(m.data) for m in messages if m.event == "job"]
    assert jobs[-1]["status"] == "succeeded", jobs[-1]
    assert [j["progress"] for j in jobs] == sorted(j["progress"] for j in jobs)
    with svc.client() as http:
        events = http.get(f"/v1/jobs/{job_id}/events").json()
        series = http.get(f"/v1/jobs/{job_id}/metrics").json()["series"]
    streamed_events = [json.loads(m.data)["id"] for m in messages if m.event == "event"]
    assert streamed_events == [e["id"] for e in events]
    points = {
        (m["phase"], m["run"], m["name"], m["epoch"], m["value"]) for m in map(json.loads, _data(messages, "metric"))
    }
    expected = {
        (s["phase"], s["run"], s["name"], e, v) for s in series for e, v in zip(s["epochs"], s["values"], strict=True)
    }
    assert points == expected and points
    ids = [m.id for m in messages if m.id]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("."))))


def _data(messages: list[Message], kind: str) -> list[str]:
    return [m.data for m in messages if m.event == kind]


def test_resumes_after_last_event_id(svc: Service, finished) -> None:
    job_id, messages = finished
    metrics = [m for m in messages if m.event == "metric"]
    middle = metrics[len(metrics) // 2]
    resumed = read_stream(svc, job_id, last_event_id=middle.id)
    # Exactly the messages after it (each look sends its events before its metrics, so the order
    # of the two kinds may interleave differently).
    seen_after = sorted(m.data for m in messages[messages.index(middle) + 1 :] if m.event in ("event", "metric"))
    assert sorted(m.data for m in resumed if m.event in ("event", "metric")) == seen_after
    assert resumed[-1].event == "end"
    assert json.loads(_data(resumed, "job")[-1])["status"] == "succeeded"


def test_another_tenant_gets_not_found(svc: Service, finished) -> None:
    job_id, _ = finished
    created = subprocess.run(
        [sys.executable, "-m", "app.admin", "create-key", "other"],
        env=svc.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    with svc.client(created.stdout.strip()) as http:
        response = http.get(f"/v1/jobs/{job_id}/stream")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_streams_hold_no_thread_and_a_client_that_leaves_frees_its_slot(svc: Service) -> None:
    job_id = submit(svc, ENDLESS)
    try:
        with svc.client() as http:
            streams = [http.stream("GET", f"/v1/jobs/{job_id}/stream", timeout=30) for _ in range(8)]
            responses = [s.__enter__() for s in streams]
            assert all(r.status_code == 200 for r in responses)
            lines = [r.iter_lines() for r in responses]  # kept: a dropped iterator closes its stream
            assert all(next(each).startswith("retry:") for each in lines)  # every stream is live
            # More open streams than API threads, and the API still answers at once.
            assert http.get(f"/v1/jobs/{job_id}", timeout=5).status_code == 200
            assert http.get(f"/v1/jobs/{job_id}/stream").status_code == 503  # the cap: 8 streams
            for s in streams:
                s.__exit__(None, None, None)
            # The server notices at its next heartbeat and frees the slots.
            poll_until(lambda: _opens(http, job_id), timeout=20, what="a freed stream slot")
    finally:
        with svc.client() as http:
            http.post(f"/v1/jobs/{job_id}/cancel")


def _opens(http: httpx.Client, job_id: str) -> bool:
    with http.stream("GET", f"/v1/jobs/{job_id}/stream", timeout=10) as response:
        return response.status_code == 200


def test_client_follows_a_job_through_the_stream(svc: Service) -> None:
    key = (Path(svc.env["DISTILL_HOME"]) / "api-key").read_text().strip()
    with Client(svc.url, key) as client:
        handle = client.submit(SMALL)
        updates = list(client.follow(handle.id))
    assert updates[-1].job.status == "succeeded"
    assert any(u.events for u in updates)
    assert sum(len(u.events) for u in updates) == len({e.id for u in updates for e in u.events})
