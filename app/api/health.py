"""Liveness, readiness and Prometheus metrics.

/healthz is async and touches nothing: it answers from the event loop even when every
thread is busy. /metrics is cheap: the API process's own figures always, and the job
counts (all tenants together) only for the holder of DISTILL_METRICS_KEY, read from the
database at most every metrics_cache_seconds."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool

from app.api.schemas import problems
from app.auth import presented_key
from app.config import get_settings
from app.db import session_scope
from app.jobs import Status
from app.models import Job, TeacherCacheStats, TeacherOutput
from app.problems import Problem
from app.queue import broker_reachable
from app.workers import live_workers

router = APIRouter(tags=["health"])
READY_EXAMPLE = {"database": "ok", "broker": "ok", "workers": "1 live worker: cpu (1), cuda NVIDIA H200 (1)"}


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Liveness: answers from the event loop without touching the database or the broker."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database and the broker answer; whether a worker is live",
    description="200 when the API can take jobs (database and broker answer), 503 otherwise. "
    "`workers` says how many workers were heard from within DISTILL_WORKER_SEEN_SECONDS and their "
    "devices, or that none was: jobs are accepted then, and wait for a worker.",
    responses={
        200: {"content": {"application/json": {"example": READY_EXAMPLE}}},
        **problems(503),
    },
)
def readyz() -> dict[str, str]:
    """Readiness: 200 when the database and the broker answer, else 503 naming which does not;
    the live workers beside them (none: queued jobs wait)."""
    checks, workers = {}, "unknown (the database does not answer)"
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            live = live_workers(session)
            workers = live.summary() if live.count else f"none: {live.summary()}; queued jobs wait for one"
    except Exception as exc:
        checks.setdefault("database", f"unreachable: {type(exc).__name__}")
    checks["broker"] = "ok" if broker_reachable() else "unreachable"
    if any(v != "ok" for v in checks.values()):
        detail = "; ".join(f"{k}: {v}" for k, v in {**checks, "workers": workers}.items())
        raise Problem(503, "Not ready", detail, headers={"Retry-After": "5"})
    return {**checks, "workers": workers}


CACHE_COUNTERS = ("hits", "misses", "corrupt", "evictions", "bypassed", "teachers_reused")


class JobCounts:
    """Jobs by status and the teacher cache's totals, all tenants together, read at most every
    `metrics_cache_seconds`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._counts: dict[str, int] = {}
        self._cache: dict[str, int] = {}

    def get(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            if time.monotonic() - self._at >= get_settings().metrics_cache_seconds:
                with session_scope() as session:
                    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
                    sums = [func.coalesce(func.sum(getattr(TeacherCacheStats, c)), 0) for c in CACHE_COUNTERS]
                    totals = session.execute(select(*sums)).one()
                    held = session.scalar(select(func.coalesce(func.sum(TeacherOutput.size_bytes), 0)))
                self._counts, self._at = dict(rows), time.monotonic()
                self._cache = {**dict(zip(CACHE_COUNTERS, map(int, totals), strict=True)), "bytes": int(held or 0)}
            return self._counts, self._cache


_registry = CollectorRegistry()
ProcessCollector(registry=_registry)  # CPU, memory, open files of this API process
_job_counts = JobCounts()


def _holds_metrics_key(request: Request) -> bool:
    expected = get_settings().metrics_key.get_secret_value()
    if not expected:
        return False
    digest = hashlib.sha256
    return hmac.compare_digest(
        digest((presented_key(request) or "").encode()).digest(), digest(expected.encode()).digest()
    )


def _job_registry(counts: tuple[dict[str, int], dict[str, int]]) -> CollectorRegistry:
    jobs, cache = counts
    registry = CollectorRegistry()
    gauge = Gauge("distill_jobs", "Jobs by status (all tenants)", ["status"], registry=registry)
    for s in Status:
        gauge.labels(status=s.value).set(jobs.get(s.value, 0))
    for name in CACHE_COUNTERS:
        counter = Counter(f"distill_teacher_cache_{name}", f"Teacher cache: {name} (all tenants)", registry=registry)
        counter.inc(cache.get(name, 0))
    Gauge("distill_teacher_cache_bytes", "Teacher cache: bytes held (all tenants)", registry=registry).set(
        cache.get("bytes", 0)
    )
    return registry


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    description="The API process's figures; with the metrics key (DISTILL_METRICS_KEY, "
    "as Authorization: Bearer) also the jobs by status.",
)
async def metrics(request: Request) -> Response:
    body = generate_latest(_registry)
    if _holds_metrics_key(request):
        body += generate_latest(_job_registry(await run_in_threadpool(_job_counts.get)))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
