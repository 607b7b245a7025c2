"""run_job(job_id): thin. Claims the job under a lease, runs the engine, reports to
the database, and leaves the job in exactly one final state.

Idempotent on our job id: a second delivery of a job that another live worker
holds, or that finished or was cancelled, finds nothing to claim and returns.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import jobs
from app.config import get_settings
from app.db import get_sessionmaker
from app.contract.fit import artifact_refs
from app.models import Artifact, Job, utcnow
from app.queue import RUN_JOB_TASK, enqueue_job
from app.contract.spec import JobSpec
from app.storage import dataset_arrays_key, get_storage
from worker.celery_app import app
from worker.distill.inputs import BroughtTeacher, JobInputs

log = logging.getLogger(__name__)
T = TypeVar("T")


class LeaseLost(Exception):
    """Another worker holds the job now (ours expired) or it ended: write nothing more."""


class ArtifactUnavailable(Exception):
    """An upload the spec names cannot be used by this job: the job fails, saying which."""


def job_inputs(session: Session, job: Job, spec: JobSpec) -> JobInputs:
    """The uploaded files the spec names, as paths in the artifact store. Each must be an
    upload (not a job's output) of the job's own tenant, of the kind the spec uses it as."""
    storage = get_storage()
    dataset_npz, teachers = None, {}
    for _, artifact_id, kind in artifact_refs(spec):
        artifact = session.get(Artifact, artifact_id)
        if (artifact is None or artifact.tenant_id != job.tenant_id or artifact.job_id is not None
                or artifact.kind != kind):
            raise ArtifactUnavailable(f"{kind} artifact {artifact_id!r} is not an upload of this job's "
                                      "tenant (it was deleted, or never was one)")
        if kind == "dataset":
            path = dataset_npz = storage.path(dataset_arrays_key(artifact.storage_key))
        else:
            path = storage.path(artifact.storage_key)
            teachers[artifact_id] = BroughtTeacher(path, artifact.format, dict(artifact.inspection or {}))
        if not path.is_file():
            raise ArtifactUnavailable(f"{kind} artifact {artifact_id!r}: its file is missing from the store")
    return JobInputs(dataset_npz=dataset_npz, teachers=teachers)


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


class JobRunner:
    """One attempt at one job: the lease, its heartbeat, and the engine's Reporter."""

    def __init__(self, job_id: str) -> None:
        settings = get_settings()
        self.job_id = job_id
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = settings.lease_seconds
        self.heartbeat_seconds = settings.heartbeat_seconds
        self.checkpoint_dir = get_storage().path(f"checkpoints/{job_id}")
        self.workdir = settings.home.resolve() / "work" / job_id / uuid.uuid4().hex[:8]
        self.lost = threading.Event()  # the lease is gone
        self.preempted = threading.Event()  # SIGTERM: hand the job back
        self.finished = threading.Event()
        self.deadline = None  # limits.time_limit_seconds, known once claimed
        self._phase: str | None = None
        self._cancel = False
        self._last_cancel_check = 0.0

    # --- lease -------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Renew the lease until the job ends; runs in a thread beside the training."""
        while not self.finished.wait(self.heartbeat_seconds):
            try:
                held = in_transaction(
                    lambda s: jobs.renew_lease(s, self.job_id, self.owner, self.lease_seconds)
                )
            except Exception:  # noqa: BLE001 - keep beating; the lease may still be ours
                log.exception("heartbeat of job %s failed", self.job_id)
                continue
            if not held:
                log.warning("job %s: lease lost; stopping", self.job_id)
                self.lost.set()
                return

    def _write(self, fn: Callable[[Session], None]) -> None:
        """A write by this worker, only while it holds the lease. Renewing it first takes
        the job's row lock until commit, so the reaper cannot requeue the job between
        the check and the write."""
        def guarded(session: Session) -> None:
            if not jobs.renew_lease(session, self.job_id, self.owner, self.lease_seconds):
                raise LeaseLost(self.job_id)
            fn(session)

        try:
            in_transaction(guarded)
        except LeaseLost:
            self.lost.set()
            raise

    # --- the engine's Reporter ---------------------------------------------------
    def phase(self, name: str) -> None:
        self._phase = name

        def write(s: Session) -> None:
            jobs.report_progress(s, self.job_id, self.owner, phase=name)
            jobs.add_event(s, self.job_id, f"phase {name} started", phase=name)

        self._write(write)

    def progress(self, fraction: float) -> None:
        self._write(lambda s: jobs.report_progress(s, self.job_id, self.owner, progress=fraction))

    def metric(self, phase: str, run: str, epoch: int, values: dict[str, float]) -> None:
        self._write(lambda s: jobs.add_metrics(s, self.job_id, phase, run, epoch, values))

    def event(self, message: str, level: str = "info") -> None:
        self._write(
            lambda s: jobs.add_event(s, self.job_id, message, phase=self._phase, level=level)
        )

    def should_stop(self) -> bool:
        # Called at every batch boundary; the cancel flag is read a few times a second.
        now = time.monotonic()
        if now - self._last_cancel_check >= 0.25:
            self._last_cancel_check = now
            self._cancel = in_transaction(lambda s: jobs.cancel_requested(s, self.job_id))
        return (
            self._cancel
            or self.lost.is_set()
            or self.preempted.is_set()
            or self.past_deadline()
        )

    def past_deadline(self) -> bool:
        return self.deadline is not None and utcnow() > self.deadline

    # --- endings -------------------------------------------------------------------
    def store_outputs(self, files) -> None:  # noqa: ANN001 - list of export.OutputFile
        storage = get_storage()
        stored = [(f, storage.put_file(f.path, f"jobs/{self.job_id}/{f.name}")) for f in files]

        def write(s: Session) -> None:
            tenant_id = s.get(Job, self.job_id).tenant_id
            for f, st in stored:
                s.add(Artifact(
                    tenant_id=tenant_id,
                    job_id=self.job_id,
                    kind="report" if f.kind == "report" else "student",
                    format="json" if f.kind == "report" else f.kind,
                    filename=f.name,
                    media_type=f.media_type,
                    storage_key=st.key,
                    size_bytes=st.size_bytes,
                    sha256=st.sha256,
                ))

        self._write(write)

    def end(self, outcome: str, **kwargs) -> bool:  # noqa: ANN003
        """Write the final state; True if this worker's write decided it."""
        enders = {
            "succeeded": lambda s: jobs.succeed(s, self.job_id, self.owner, kwargs["result"]),
            "failed": lambda s: jobs.fail(s, self.job_id, kwargs["error"], owner=self.owner),
            "cancelled": lambda s: jobs.mark_cancelled(s, self.job_id, self.owner),
        }
        return in_transaction(enders[outcome])


def _on_sigterm(runner: JobRunner) -> Callable:
    def handler(signum, frame) -> None:  # noqa: ANN001
        # Warm shutdown: stop at the next batch; the last epoch checkpoint is kept and
        # the job goes back to the queue for another worker.
        runner.preempted.set()

    return handler


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    runner = JobRunner(job_id)
    settings = get_settings()
    if not in_transaction(lambda s: jobs.claim(s, job_id, runner.owner, settings.lease_seconds)):
        log.info("job %s is not queued (duplicate delivery, cancelled or finished): skipped", job_id)
        return

    beat = threading.Thread(target=runner.heartbeat, name=f"heartbeat-{job_id}", daemon=True)
    beat.start()
    previous = signal.signal(signal.SIGTERM, _on_sigterm(runner))
    # torch is imported here, in the child process that runs the job, never at import time.
    from worker.distill.pipeline import run_job as run_pipeline
    from worker.distill.reporting import Cancelled

    try:
        job = in_transaction(lambda s: s.get(Job, job_id))
        spec = JobSpec.model_validate(job.spec)
        runner.deadline = job.deadline_at
        inputs = in_transaction(lambda s: job_inputs(s, job, spec))
        outcome = run_pipeline(spec, runner, runner.workdir, settings.resolved_data_cache_dir, inputs)
        runner.store_outputs(outcome.files)
        runner.end("succeeded", result=outcome.report)
    except (Cancelled, LeaseLost):
        _after_stop(runner)
    except Exception as exc:  # noqa: BLE001 - a job's failure must reach its user
        log.exception("job %s failed", job_id)
        runner.end("failed", error=f"{type(exc).__name__}: {exc}")
        in_transaction(lambda s: jobs.add_event(s, job_id, traceback.format_exc(limit=5), level="debug"))
    finally:
        runner.finished.set()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(runner.workdir, ignore_errors=True)
        # Checkpoints stay while the job may resume (queued again, or held by another).
        status = in_transaction(lambda s: s.get(Job, job_id).status)
        if status in jobs.TERMINAL:
            shutil.rmtree(runner.checkpoint_dir, ignore_errors=True)


def _after_stop(runner: JobRunner) -> None:
    """The engine stopped early: say why in the job's state."""
    job_id = runner.job_id
    if runner.lost.is_set():
        log.warning("job %s: lease lost; the reaper or another worker owns it now", job_id)
    elif runner.preempted.is_set():
        if in_transaction(lambda s: jobs.hand_back(s, job_id, runner.owner, "worker shutting down")):
            try:
                enqueue_job(job_id)
                in_transaction(lambda s: jobs.mark_enqueued(s, job_id))
            except Exception:  # noqa: BLE001 - the sweeper sends it once the broker is back
                log.exception("job %s handed back but not re-sent", job_id)
    elif runner.past_deadline():
        runner.end("failed", error="time limit exceeded (limits.time_limit_seconds)")
    else:
        runner.end("cancelled")
