"""The job state machine. Every status change in the project happens here.

    queued -> running -> succeeded | failed | cancelled
    queued -> cancelled | failed
    running -> queued            (handed back: the worker stopped, the job resumes)

Each transition is one conditional UPDATE (`WHERE status IN (allowed sources)`),
so two actors racing (a cancel and a worker finishing, two deliveries of one
task) cannot both win: the loser sees rowcount 0. Functions here do not commit;
the caller owns the transaction.

A running job is held by one worker through a lease (owner, expiry). The worker
renews it while it works, and every write it makes names itself as the owner:
once the lease has passed to another worker, the old one's writes match no row.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, select, update
from sqlalchemy.orm import Session

from app.contract.spec import JobSpec
from app.db import rows_changed
from app.models import Job, JobEvent, JobMetric, utcnow
from app.redact import scrub


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TIME_LIMIT_EXCEEDED = "time limit exceeded (limits.time_limit_seconds)"
TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})  # what a tenant's concurrent-job cap counts

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def sources_of(target: Status) -> list[str]:
    return [s.value for s, targets in ALLOWED.items() if target in targets]


def _held_by(owner: str) -> ColumnElement[bool]:
    return and_(Job.status == Status.RUNNING.value, Job.lease_owner == owner)


def _transition(
    session: Session,
    job_id: str,
    target: Status,
    *,
    only_from: Status | None = None,
    owner: str | None = None,
    **values: Any,
) -> bool:
    """Move the job to `target` if its current status allows it (and is `only_from`,
    when given; and the job is running under `owner`'s lease, when given). True if it moved."""
    sources = sources_of(target)
    if only_from is not None:
        sources = [s for s in sources if s == only_from.value]
    condition: ColumnElement[bool] = Job.status.in_(sources)
    if owner is not None:
        condition = and_(condition, _held_by(owner))
    if target in TERMINAL or target == Status.QUEUED:
        values |= {"lease_owner": None, "lease_expires_at": None}
    now = utcnow()
    changed = rows_changed(
        session,
        update(Job)
        .where(Job.id == job_id, condition)
        .values(status=target.value, updated_at=now, **values)
        .execution_options(synchronize_session=False),
    )
    return changed == 1


def get(session: Session, job_id: str) -> Job:
    """A job that exists (one a worker claimed or runs); LookupError if it was deleted."""
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    return job


def add_event(session: Session, job_id: str, message: str, *, phase: str | None = None, level: str = "info") -> None:
    session.add(JobEvent(job_id=job_id, message=message, phase=phase, level=level))


def create(
    session: Session,
    spec: JobSpec,
    *,
    tenant_id: str,
    idempotency_key: str | None = None,
    request_sha256: str | None = None,
    labels: dict[str, str] | None = None,
) -> Job:
    job = Job(
        tenant_id=tenant_id,
        name=spec.name,
        status=Status.QUEUED.value,
        max_attempts=spec.limits.max_attempts,
        # The engine's spec: a submission's labels are the job's, kept beside it (Job.labels).
        spec=spec.model_dump(mode="json", exclude={"metadata"}),
        labels=labels or None,
        idempotency_key=idempotency_key,
        request_sha256=request_sha256,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "job submitted")
    return job


def claim(session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """queued -> running under `owner`'s lease. False: someone else holds it, or it
    was cancelled or finished meanwhile (a duplicate delivery does nothing)."""
    job = session.get(Job, job_id)
    if job is None:
        return False
    now = utcnow()
    time_limit = job.spec.get("limits", {}).get("time_limit_seconds")
    deadline = job.deadline_at
    if deadline is None and time_limit:
        deadline = now + timedelta(seconds=time_limit)
    claimed = _transition(
        session,
        job_id,
        Status.RUNNING,
        only_from=Status.QUEUED,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        started_at=job.started_at or now,
        deadline_at=deadline,
        heartbeat_at=now,
        attempts=Job.attempts + 1,
        # A new attempt has measured nothing yet: no end time, until its first epoch (its epochs stay).
        estimate={**job.estimate, "ends_at": None} if job.estimate else None,
    )
    if claimed:
        add_event(session, job_id, f"worker {owner} started the job (attempt {job.attempts + 1} of {job.max_attempts})")
    return claimed


def renew_lease(session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """The worker's heartbeat. False: the lease is lost (expired and handed on, or the
    job ended): the worker must stop and write nothing more."""
    now = utcnow()
    changed = rows_changed(
        session,
        update(Job)
        .where(Job.id == job_id, _held_by(owner))
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False),
    )
    return changed == 1


def report_progress(
    session: Session,
    job_id: str,
    owner: str,
    *,
    phase: str | None = None,
    progress: float | None = None,
    estimate: dict[str, Any] | None = None,
) -> bool:
    """Phase, progress and estimate (when it should end, its epoch budget) of a running job,
    by the lease holder only."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if phase is not None:
        values["phase"] = phase
    if estimate is not None:
        values["estimate"] = estimate
    if progress is not None:
        # Never backwards, even when a resumed attempt recounts from its last checkpoint.
        new = min(max(progress, 0.0), 1.0)
        values["progress"] = case((Job.progress > new, Job.progress), else_=new)
    changed = rows_changed(
        session,
        update(Job)
        .where(Job.id == job_id, _held_by(owner))
        .values(**values)
        .execution_options(synchronize_session=False),
    )
    return changed == 1


def add_metrics(session: Session, job_id: str, phase: str, run: str, epoch: int, values: dict[str, float]) -> None:
    """One epoch's metrics. A resumed run may report an epoch again: the new values
    replace the old, so a series never holds an epoch twice."""
    session.execute(
        delete(JobMetric).where(
            JobMetric.job_id == job_id,
            JobMetric.phase == phase,
            JobMetric.run == run,
            JobMetric.epoch == epoch,
        )
    )
    session.add_all(
        JobMetric(job_id=job_id, phase=phase, run=run, epoch=epoch, name=name, value=float(v))
        for name, v in values.items()
    )
    latest = {
        "phase": phase,
        "run": run,
        "epoch": epoch,
        "values": {name: float(v) if math.isfinite(v) else None for name, v in values.items()},
    }
    session.execute(
        update(Job).where(Job.id == job_id).values(latest_metrics=latest).execution_options(synchronize_session=False)
    )


def succeed(session: Session, job_id: str, owner: str, result: dict[str, Any]) -> bool:
    done = _transition(
        session,
        job_id,
        Status.SUCCEEDED,
        owner=owner,
        result=result,
        progress=1.0,
        finished_at=utcnow(),
    )
    if done:
        add_event(session, job_id, "job succeeded")
    return done


def fail(
    session: Session,
    job_id: str,
    error: str,
    *,
    owner: str | None = None,
    code: str | None = None,
    field: str | None = None,
) -> bool:
    """Any non-terminal job -> failed; a worker passes its lease as `owner`. `error` is a
    message for the client (made one bounded line without server paths here, whoever wrote it);
    `code` and `field` say what kind and where."""
    error = scrub(error)
    done = _transition(
        session,
        job_id,
        Status.FAILED,
        owner=owner,
        error=error,
        error_code=code,
        error_field=field,
        finished_at=utcnow(),
    )
    if done:
        add_event(session, job_id, f"job failed: {error}", level="error")
    return done


def mark_cancelled(session: Session, job_id: str, owner: str) -> bool:
    """The worker honoured a cancel request (running -> cancelled)."""
    done = _transition(session, job_id, Status.CANCELLED, owner=owner, finished_at=utcnow())
    if done:
        add_event(session, job_id, "job cancelled; metrics so far are kept")
    return done


def request_cancel(session: Session, job_id: str) -> Job | None:
    """A queued job is cancelled at once; a running one is flagged and the worker stops
    at the next batch boundary; a finished one is left as it is. None: no such job."""
    if _transition(session, job_id, Status.CANCELLED, only_from=Status.QUEUED, finished_at=utcnow()):
        add_event(session, job_id, "job cancelled before it started")
    else:
        flagged = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == Status.RUNNING.value)
            .values(cancel_requested=True, updated_at=utcnow())
            .execution_options(synchronize_session=False),
        )
        if flagged == 1:
            add_event(session, job_id, "cancellation requested; stopping at the next batch")
    session.flush()
    return session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def hand_back(session: Session, job_id: str, owner: str, reason: str) -> bool:
    """running -> queued by its own worker (warm shutdown): another resumes it."""
    done = _transition(session, job_id, Status.QUEUED, owner=owner, enqueued_at=utcnow())
    if done:
        add_event(session, job_id, f"worker handed the job back: {reason}", level="warning")
    return done


def mark_enqueued(session: Session, job_id: str) -> None:
    session.execute(
        update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()).execution_options(synchronize_session=False)
    )


def reap_expired(session: Session, now: datetime | None = None) -> list[str]:
    """Running jobs whose lease expired lost their worker: back to the queue, or failed
    when their attempts are used up. Returns the ids to send to the broker again."""
    now = now or utcnow()
    requeued = []
    expired = session.execute(
        select(Job.id, Job.attempts, Job.max_attempts, Job.lease_owner).where(
            Job.status == Status.RUNNING.value, Job.lease_expires_at < now
        )
    ).all()
    for job_id, attempts, max_attempts, owner in expired:
        # Guarded by the owner seen above: a worker that renewed meanwhile keeps its job.
        if attempts >= max_attempts:
            fail(
                session,
                job_id,
                f"the worker running the job was lost {attempts} times (max_attempts {max_attempts}); giving up",
                owner=owner,
                code="worker_lost",
                field="limits.max_attempts",
            )
        elif _transition(session, job_id, Status.QUEUED, owner=owner, enqueued_at=now):
            add_event(
                session,
                job_id,
                f"worker {owner} stopped renewing its lease; the job "
                f"goes back to the queue (attempt {attempts} of {max_attempts} used)",
                level="warning",
            )
            requeued.append(job_id)
    return requeued


def expire_deadlines(session: Session, now: datetime | None = None) -> int:
    """Jobs past their time limit fail, whoever holds them (their worker stops at its
    next lease renewal)."""
    now = now or utcnow()
    overdue = session.scalars(
        select(Job.id).where(Job.status.in_([Status.QUEUED.value, Status.RUNNING.value]), Job.deadline_at < now)
    ).all()
    return sum(
        fail(session, job_id, TIME_LIMIT_EXCEEDED, code="time_limit_exceeded", field="limits.time_limit_seconds")
        for job_id in overdue
    )


def unsent_queued(session: Session, older_than: timedelta, now: datetime | None = None) -> list[str]:
    """Queued jobs that no worker has taken for a while: their message may be lost
    (committed, then the enqueue failed or the broker lost it). Sending again is
    harmless: a duplicate delivery claims nothing."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(Job.id).where(
                Job.status == Status.QUEUED.value,
                (Job.enqueued_at.is_(None) & (Job.created_at < now - older_than))
                | (Job.enqueued_at < now - older_than),
            )
        )
    )
