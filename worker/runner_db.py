"""Database helpers shared by the supervisor (worker/runner.py) and the runner process
(worker/runner_child.py). No torch here: the supervisor imports this module."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import IntEnum
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import jobs
from app.config import get_settings
from app.db import get_sessionmaker
from app.models import Job
from app.queue import enqueue_job

log = logging.getLogger(__name__)
T = TypeVar("T")


class StopReason(IntEnum):
    """Why the supervisor asks the runner process to stop; shared through a
    multiprocessing.Value, so the training loop reads it without a system call."""

    NONE = 0
    HAND_BACK = 1  # the worker shuts down: the job goes back to the queue
    CANCEL = 2  # the client cancelled
    DEADLINE = 3  # limits.time_limit_seconds
    LOST = 4  # the lease passed to another worker (or the job ended): write nothing


def in_transaction(fn: Callable[[Session], T]) -> T:
    """Run fn in a committed transaction, retrying with backoff while the database is
    unreachable (a PostgreSQL restart must not fail a job that has run for hours)."""
    deadline = time.monotonic() + get_settings().db_retry_seconds
    pause = 0.2
    while True:
        try:
            with get_sessionmaker()() as session:
                result = fn(session)
                session.commit()
                return result
        except DBAPIError as exc:
            transient = exc.connection_invalidated or "OperationalError" in type(exc).__name__
            if not transient or time.monotonic() > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1fs", exc.orig, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def hand_back(job_id: str, owner: str, reason: str) -> None:
    """running -> queued by its own worker, and a message to wake another worker."""
    if in_transaction(lambda s: jobs.hand_back(s, job_id, owner, reason)):
        try:
            enqueue_job(job_id)
            in_transaction(lambda s: jobs.mark_enqueued(s, job_id))
        except Exception:
            log.exception("job %s handed back but not re-sent", job_id)


def end_stopped(job_id: str, owner: str, reason: StopReason) -> None:
    """A job stopped because it was asked to: say why in its state (a no-op once the
    lease is gone: every write names the owner)."""
    if reason == StopReason.HAND_BACK:
        hand_back(job_id, owner, "worker shutting down")
    elif reason == StopReason.CANCEL:
        in_transaction(lambda s: jobs.mark_cancelled(s, job_id, owner))
    elif reason == StopReason.DEADLINE:
        in_transaction(
            lambda s: jobs.fail(
                s,
                job_id,
                jobs.TIME_LIMIT_EXCEEDED,
                owner=owner,
                code="time_limit_exceeded",
                field="limits.time_limit_seconds",
            )
        )
    else:
        log.warning("job %s: lease lost; the reaper or another worker owns it now", job_id)


def end_crashed(job_id: str, owner: str, exitcode: int | None) -> None:
    """The runner process died under a job (killed for memory, a crash in native code):
    the job goes back to the queue, or fails once its attempts are used up."""
    how = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exit code {exitcode}"

    def decide(s: Session) -> bool:
        job = s.get(Job, job_id)
        if job is None or job.lease_owner != owner:
            return False
        if job.attempts >= job.max_attempts:
            jobs.fail(
                s,
                job_id,
                f"the process running the job died ({how}, e.g. out of memory) "
                f"{job.attempts} times (max_attempts {job.max_attempts}); giving up",
                owner=owner,
                code="worker_lost",
                field="limits.max_attempts",
            )
            return False
        return True

    if in_transaction(decide):
        hand_back(job_id, owner, f"the process running the job died ({how}); it resumes from its last checkpoint")
