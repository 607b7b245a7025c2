"""Waiting with a deadline: poll a condition until it holds, never sleep as synchronisation."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# The statuses a job never leaves (app.jobs.TERMINAL, as the HTTP API spells them).
JOB_ENDED = frozenset({"succeeded", "failed", "cancelled"})
# What a timed-out wait for a job says about the job it saw last (a job's JSON is long).
_JOB_GIST = ("id", "status", "phase", "progress", "attempts", "error")


class NotYet:
    """A falsy answer that carries what a condition saw: poll_until goes on polling and, at its
    deadline, shows `seen` as the last value (a bare False would say nothing)."""

    def __init__(self, seen: object) -> None:
        self.seen = seen

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.seen)


def poll_until(condition: Callable[[], T], *, timeout: float, what: str, every: float = 0.2) -> T:
    """Call condition() every `every` seconds until it returns something truthy, and return that.
    Past `timeout` seconds: AssertionError naming `what` and the last value condition() returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {_short(value)}")
        time.sleep(every)  # the interval between two looks, not synchronisation


def wait_for_job(
    api: httpx.Client,
    job_id: str,
    *,
    timeout: float,
    statuses: Collection[str] = JOB_ENDED,
    what: str | None = None,
    every: float = 0.2,
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """GET /v1/jobs/{job_id} until its status is one of `statuses` (by default: it ended) and
    return that job. `seen`, if given, gets every job polled (what a client saw on the way)."""

    def reached() -> dict[str, Any] | NotYet:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if seen is not None:
            seen.append(job)
        if job["status"] in statuses:
            return job
        return NotYet({key: job.get(key) for key in _JOB_GIST})

    if what is None:
        what = (
            f"job {job_id} to end"
            if set(statuses) == JOB_ENDED
            else f"job {job_id} to be {' or '.join(sorted(statuses))}"
        )
    return poll_until(reached, timeout=timeout, what=what, every=every)


def _short(value: object, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
