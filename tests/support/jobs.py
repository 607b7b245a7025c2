"""A job over HTTP, as a client sees it: submit it, read it, its events, how far its student got
(waiting for it: tests/support/polling.py)."""

from __future__ import annotations

from typing import Any

import httpx


def submit(api: httpx.Client, body: dict[str, Any]) -> str:
    """POST the job; it must be accepted (202). Its id."""
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    return api.get(f"/v1/jobs/{job_id}").json()


def events(api: httpx.Client, job_id: str) -> list[str]:
    """The messages of the job's events, oldest first."""
    return [e["message"] for e in api.get(f"/v1/jobs/{job_id}/events").json()]


def student_epoch(api: httpx.Client, job_id: str) -> int:
    """The epoch of the job's latest metric if it is a student's, else 0."""
    latest = job(api, job_id)["latest_metrics"] or {}
    return latest.get("epoch", 0) if latest.get("phase") == "student" else 0
