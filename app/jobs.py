"""The job state machine. Every status change in the project happens here.

    queued -> running -> succeeded | failed | cancelled
    queued -> cancelled | failed
    running -> queued            (handed back: the worker stopped, the job resumes)

Each transition is one conditional UPDATE (`WHERE status IN (allowed sources)`),
so two actors racing (a cancel and a worker finishing, two deliveries of one
task) cannot both win: the loser sees rowcount 0. Functions here do not commit;
the caller owns the transaction.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import Job, JobEvent, JobMetric, utcnow
from app.spec import JobSpec


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED}
    ),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def sources_of(target: Status) -> list[str]:
    return [s.value for s, targets in ALLOWED.items() if target in targets]


def _transition(
    session: Session, job_id: str, target: Status, *, only_from: Status | None = None, **values: Any
) -> bool:
    """Move the job to `target` if its current status allows it (and is `only_from`,
    when given). True if it moved."""
    sources = sources_of(target)
    if only_from is not None:
        sources = [s for s in sources if s == only_from.value]
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources))
        .values(status=target.value, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def add_event(
    session: Session, job_id: str, message: str, *, phase: str | None = None, level: str = "info"
) -> None:
    session.add(JobEvent(job_id=job_id, message=message, phase=phase, level=level))


def create(
    session: Session,
    spec: JobSpec,
    *,
    idempotency_key: str | None = None,
    request_sha256: str | None = None,
) -> Job:
    job = Job(
        name=spec.name,
        status=Status.QUEUED.value,
        spec=spec.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        request_sha256=request_sha256,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "job submitted")
    return job


def claim(session: Session, job_id: str) -> bool:
    """queued -> running, for the worker that will run it. False: someone else has it,
    or it was cancelled or finished meanwhile (a duplicate delivery does nothing)."""
    now = utcnow()
    claimed = _transition(
        session,
        job_id,
        Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=Job.attempts + 1,
    )
    if claimed:
        add_event(session, job_id, "worker started the job")
    return claimed


def report_progress(
    session: Session, job_id: str, *, phase: str | None = None, progress: float | None = None
) -> None:
    """Phase, progress and heartbeat of a running job; ignored once it is no longer running."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if phase is not None:
        values["phase"] = phase
    if progress is not None:
        values["progress"] = min(max(progress, 0.0), 1.0)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == Status.RUNNING.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def add_metrics(
    session: Session, job_id: str, phase: str, run: str, epoch: int, values: dict[str, float]
) -> None:
    session.add_all(
        JobMetric(job_id=job_id, phase=phase, run=run, epoch=epoch, name=name, value=float(v))
        for name, v in values.items()
    )


def succeed(session: Session, job_id: str, result: dict[str, Any]) -> bool:
    done = _transition(
        session, job_id, Status.SUCCEEDED, result=result, progress=1.0, finished_at=utcnow()
    )
    if done:
        add_event(session, job_id, "job succeeded")
    return done


def fail(session: Session, job_id: str, error: str) -> bool:
    done = _transition(session, job_id, Status.FAILED, error=error, finished_at=utcnow())
    if done:
        add_event(session, job_id, f"job failed: {error}", level="error")
    return done


def mark_cancelled(session: Session, job_id: str) -> bool:
    """The worker honoured a cancel request (running -> cancelled)."""
    done = _transition(
        session, job_id, Status.CANCELLED, only_from=Status.RUNNING, finished_at=utcnow()
    )
    if done:
        add_event(session, job_id, "job cancelled; metrics so far are kept")
    return done


def request_cancel(session: Session, job_id: str) -> Job | None:
    """A queued job is cancelled at once; a running one is flagged and the worker stops
    at the next batch boundary; a finished one is left as it is. None: no such job."""
    if _transition(
        session, job_id, Status.CANCELLED, only_from=Status.QUEUED, finished_at=utcnow()
    ):
        add_event(session, job_id, "job cancelled before it started")
    else:
        flagged = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == Status.RUNNING.value)
            .values(cancel_requested=True, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if flagged.rowcount == 1:
            add_event(session, job_id, "cancellation requested; stopping at the next batch")
    session.flush()
    return session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
