"""Which queued job a free worker takes: the fairest one, not the one its message named.

A message only wakes a worker (the database is the source of truth), so each message
claims at most one job, and which one is the worker's choice:

1. the tenant with the fewest running jobs (on N workers, tenants share them evenly);
2. among those, the tenant served least recently (the latest start of any of its jobs;
   never served first): on one worker, tenants take turns, so a tenant with 8 long jobs
   queued delays another tenant's small job by at most one of them;
3. then the tenant's oldest job (handed-back and requeued jobs keep their place).

The claim is the usual conditional UPDATE (app.jobs.claim): two workers that pick the same
job race on it, the loser takes the next candidate. Counts of messages and queued jobs
stay equal: a message whose job someone else took claims another, and a message that
finds nothing queued (a duplicate) does nothing.
"""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app import jobs
from app.models import Job

CANDIDATES = 8  # enough to get past a few workers racing for the same jobs


def fairest_queued(session: Session, limit: int = CANDIDATES) -> list[str]:
    """Queued job ids, fairest first."""
    running = (
        select(Job.tenant_id, func.count().label("n"))
        .where(Job.status == jobs.Status.RUNNING.value)
        .group_by(Job.tenant_id)
        .subquery()
    )
    served = select(Job.tenant_id, func.max(Job.started_at).label("at")).group_by(Job.tenant_id).subquery()
    query = (
        select(Job.id)
        .where(Job.status == jobs.Status.QUEUED.value)
        .outerjoin(running, running.c.tenant_id == Job.tenant_id)
        .outerjoin(served, served.c.tenant_id == Job.tenant_id)
        .order_by(
            func.coalesce(running.c.n, 0),
            case((served.c.at.is_(None), 0), else_=1),
            served.c.at,
            Job.created_at,
            Job.id,
        )
        .limit(limit)
    )
    return list(session.scalars(query))


def claim_fairest(session: Session, owner: str, lease_seconds: float) -> str | None:
    """Claim the fairest queued job for `owner`; None when nothing is left to claim."""
    for job_id in fairest_queued(session):
        if jobs.claim(session, job_id, owner, lease_seconds):
            return job_id
    return None
