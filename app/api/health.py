"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select, text

from app.api.jobs import SessionDep
from app.api.schemas import problems
from app.jobs import Status
from app.models import Job
from app.problems import Problem
from app.queue import broker_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database and the broker answer", responses=problems(503))
def readyz(session: SessionDep) -> dict[str, str]:
    checks = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = "ok" if broker_reachable() else "unreachable"
    if any(v != "ok" for v in checks.values()):
        raise Problem(503, "Not ready", "; ".join(f"{k}: {v}" for k, v in checks.items()),
                      headers={"Retry-After": "5"})
    return checks


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(session: SessionDep) -> Response:
    # Job counts are read from the database at scrape time, so every API replica agrees.
    registry = CollectorRegistry()
    gauge = Gauge("distill_jobs", "Jobs by status", ["status"], registry=registry)
    counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    for s in Status:
        gauge.labels(status=s.value).set(counts.get(s.value, 0))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
