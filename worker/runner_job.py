"""One attempt at one claimed job, inside the runner process (worker/runner_child.py):
the engine's Reporter on the database, the job's inputs, and its one final state.

The supervisor (worker/runner.py) claimed the job and holds its lease (it renews it);
every write here names the same owner, so once the lease has passed on, they match
no row. torch is imported by the runner process, never by the supervisor.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import jobs
from app.config import get_settings
from app.contract.fit import artifact_refs
from app.contract.spec import JobSpec
from app.models import Artifact, Job, utcnow
from app.storage import dataset_arrays_key, get_storage
from app.uploads.safetensors_header import read_header
from worker.distill.eta import Estimate
from worker.distill.inputs import BroughtTeacher, JobInputs, TeacherFormat
from worker.distill.report import json_safe
from worker.output_store import OutputStore
from worker.runner_db import StopReason, end_stopped, in_transaction
from worker.runner_errors import ArtifactUnavailable, describe_failure, without_paths
from worker.teacher_builds import publish, resolve_teachers

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker holds the job now (ours expired) or it ended: write nothing more."""


def job_inputs(session: Session, job: Job, spec: JobSpec) -> JobInputs:
    """The uploaded files the spec names, as paths in the artifact store. Each must be an
    upload (not a job's output) of the job's own tenant, of the kind the spec uses it as."""
    storage = get_storage()
    dataset_npz, dataset_sha256, teachers = None, None, {}
    for _, artifact_id, kind in artifact_refs(spec):
        artifact = session.get(Artifact, artifact_id)
        if (
            artifact is None
            or artifact.tenant_id != job.tenant_id
            or (artifact.job_id is not None and kind != "teacher")  # a job's kept teacher may teach again
            or artifact.kind != kind
        ):
            raise ArtifactUnavailable(
                f"{kind} artifact {artifact_id!r} is not an upload of this job's "
                "tenant (it was deleted, or never was one)",
                kind,
            )
        if kind == "dataset":
            path = dataset_npz = storage.path(dataset_arrays_key(artifact.storage_key))
            dataset_sha256 = f"{artifact.sha256}:{artifact.options_sha256}"
        else:
            path = storage.path(artifact.storage_key)
            teachers[artifact_id] = BroughtTeacher(
                path, cast(TeacherFormat, artifact.format), dict(artifact.inspection or {})
            )
        if not path.is_file():
            raise ArtifactUnavailable(f"{kind} artifact {artifact_id!r}: its file is missing from the store", kind)
    return JobInputs(dataset_npz=dataset_npz, teachers=teachers, dataset_sha256=dataset_sha256)


def _get_job(s: Session, job_id: str) -> Job:
    job = s.get(Job, job_id)
    assert job is not None, job_id  # the runner holds the job's lease: its row exists
    return job


def kept_teacher(session: Session, artifact_id: str) -> BroughtTeacher:
    artifact = session.get(Artifact, artifact_id)
    assert artifact is not None, artifact_id  # just published or read by this job
    return BroughtTeacher(get_storage().path(artifact.storage_key), "safetensors", dict(artifact.inspection or {}))


def with_teachers(job: Job, spec: JobSpec, inputs: JobInputs, reporter: JobReporter) -> JobInputs:
    """The inputs, with the tenant's earlier teachers this job reuses (waiting for one that another
    job trains now) and its cache of teacher outputs."""
    found = resolve_teachers(job, spec, inputs.dataset_sha256, reporter.should_stop, reporter.event)
    reporter.claimed = found.claimed
    reused = in_transaction(lambda s: {i: kept_teacher(s, a) for i, a in found.reused.items()})
    teachers = {**inputs.teachers, **{found.reused[i]: t for i, t in reused.items()}}
    cap = get_settings().teacher_cache_bytes
    outputs = OutputStore(job.tenant_id, cap) if cap > 0 else None
    return replace(inputs, teachers=teachers, reused=found.reused, teacher_keys=found.claimed, outputs=outputs)


class JobReporter:
    """The engine's Reporter for one attempt: writes under the supervisor's lease, and
    stops when the supervisor says so (a shared flag: no database read per batch).

    Metrics and progress are buffered and written by one thread every `report_seconds`
    (one transaction for all of them), never by the training loop; phases, events, a
    checkpoint (`flush`) and the ending deliver what is buffered first, so the order holds.
    A write that fails in the thread puts its rows back and is raised in the loop at its
    next report."""

    def __init__(self, job_id: str, owner: str, stop_flag: Any) -> None:  # stop_flag: mp.Value
        settings = get_settings()
        self.job_id = job_id
        self.owner = owner
        self.stop_flag = stop_flag
        self.lease_seconds = settings.lease_seconds
        self.checkpoint_dir = get_storage().path(f"checkpoints/{job_id}")
        self.checkpoint_seconds = settings.checkpoint_seconds
        self.workdir = settings.home.resolve() / "work" / job_id / uuid.uuid4().hex[:8]
        self.deadline: datetime | None = None  # limits.time_limit_seconds, known once the job is read
        self.claimed: dict[int, str] = {}  # teachers this job trains for the tenant (member -> key)
        self._phase: str | None = None
        self._lock = threading.Lock()  # guards the buffer
        self._flushing = threading.Lock()  # one flush at a time: rows reach the DB in order
        self._metrics: list[tuple[str, str, int, dict[str, float]]] = []
        self._progress: float | None = None
        self._estimate: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(settings.report_seconds,), name=f"report-{job_id}", daemon=True
        )
        self._flusher.start()

    @property
    def stop_reason(self) -> StopReason:
        return StopReason(self.stop_flag.value)

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
            self.stop_flag.value = StopReason.LOST
            raise

    # --- the buffer ----------------------------------------------------------------
    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Write what is buffered, in one transaction; on failure the rows go back."""
        with self._flushing:
            with self._lock:
                rows, fraction, estimate = self._metrics, self._progress, self._estimate
                self._metrics, self._progress, self._estimate = [], None, None
            if not rows and fraction is None and estimate is None:
                return
            try:
                self._write(lambda s: self._write_buffered(s, rows, fraction, estimate))
            except BaseException:
                with self._lock:
                    self._metrics[:0] = rows
                    self._progress = self._progress if self._progress is not None else fraction
                    self._estimate = self._estimate if self._estimate is not None else estimate
                raise

    def _write_buffered(self, session: Session, rows, fraction: float | None, estimate: dict | None) -> None:
        for phase, run, epoch, values in rows:
            jobs.add_metrics(session, self.job_id, phase, run, epoch, values)
        if fraction is not None or estimate is not None:
            jobs.report_progress(session, self.job_id, self.owner, progress=fraction, estimate=estimate)

    def _flush_every(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            try:
                self.flush()
            except LeaseLost:
                return  # the stop flag says so; the loop stops at its next batch
            except BaseException as exc:
                self._error = exc
                return

    def close(self, *, flush: bool) -> None:
        """Stop the writer thread; with `flush`, deliver what is left (unless the lease is lost)."""
        self._stopped.set()
        self._flusher.join()
        if flush and self.stop_reason != StopReason.LOST:
            self.flush()

    # --- the engine's Reporter ---------------------------------------------------
    def phase(self, name: str) -> None:
        self.flush()
        self._phase = name

        def write(s: Session) -> None:
            jobs.report_progress(s, self.job_id, self.owner, phase=name)
            jobs.add_event(s, self.job_id, f"phase {name} started", phase=name)

        self._write(write)

    def progress(self, fraction: float) -> None:
        self._raise_error()
        with self._lock:
            self._progress = fraction

    def estimate(self, estimate: Estimate) -> None:
        # The end time is fixed now, not when the buffer is written: the API counts down from it.
        left = estimate.seconds_left
        ends_at = None if left is None else (utcnow() + timedelta(seconds=left)).isoformat()
        with self._lock:
            self._estimate = {"ends_at": ends_at, "epochs": estimate.epochs()}

    def metric(self, phase: str, run: str, epoch: int, values: dict[str, float]) -> None:
        self._raise_error()
        with self._lock:
            self._metrics.append((phase, run, epoch, dict(values)))

    def event(self, message: str, level: str = "info") -> None:
        self.flush()
        # The engine's messages may quote an exception (a checkpoint not used...): no paths.
        text = without_paths(message)
        self._write(lambda s: jobs.add_event(s, self.job_id, text, phase=self._phase, level=level))

    def should_stop(self) -> bool:
        # Called at every batch boundary: a memory read and a clock read.
        if self.stop_flag.value == StopReason.NONE and self.deadline is not None and utcnow() > self.deadline:
            self.stop_flag.value = StopReason.DEADLINE
        return self.stop_flag.value != StopReason.NONE

    def keep_teacher(self, files, facts: dict, key: str | None) -> None:
        """A trained teacher (or assistant): stored now as the job's artifacts, and, when this job
        claimed its key, published for the tenant's later jobs. A file an earlier attempt of this
        job kept (it was resumed after the teacher phase) is not kept twice: its artifact stands."""
        recorded = in_transaction(lambda s: self._kept_teachers(s, [f.name for f in files]))
        storage = get_storage()
        new = [(f, storage.put_file(f.path, f"jobs/{self.job_id}/{f.name}")) for f in files if f.name not in recorded]

        def write(s: Session) -> None:
            tenant_id = _get_job(s, self.job_id).tenant_id
            ids = dict(recorded)
            for f, stored in new:
                ids[f.name] = self._add_teacher_artifact(s, tenant_id, f, stored, facts, key)
            weights = next((f.name for f in files if f.kind == "safetensors"), None)
            if key is not None and weights in ids:
                publish(s, tenant_id, self.job_id, key, ids[weights])

        self._write(write)

    def _kept_teachers(self, session: Session, names: list[str]) -> dict[str, str]:
        """filename -> artifact id of the teacher files this job already kept, among `names`."""
        rows = session.execute(
            select(Artifact.filename, Artifact.id).where(
                Artifact.job_id == self.job_id, Artifact.kind == "teacher", Artifact.filename.in_(names)
            )
        )
        return dict(rows.tuples().all())

    def _add_teacher_artifact(self, s: Session, tenant_id: str, f, stored, facts: dict, key: str | None) -> str:
        inspection = {**facts, "trained_by": {"job": self.job_id, "key": key}}
        if f.kind == "safetensors":
            inspection |= read_header(f.path)
        artifact = Artifact(
            tenant_id=tenant_id,
            job_id=self.job_id,
            kind="teacher",
            format=f.kind,
            filename=f.name,
            media_type=f.media_type,
            storage_key=stored.key,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            inspection=json_safe(inspection),
        )
        s.add(artifact)
        s.flush()
        return artifact.id

    # --- endings -------------------------------------------------------------------
    def succeed(self, files, report: dict) -> None:
        """The job's outputs recorded and the job succeeded, in one transaction: a worker killed
        between two (after the outputs, before the ending) left a job whose next attempt stored
        its outputs a second time (tests/integration/test_resilience.py saw it)."""
        storage = get_storage()
        stored = [(f, storage.put_file(f.path, f"jobs/{self.job_id}/{f.name}")) for f in files]

        def write(s: Session) -> None:
            tenant_id = _get_job(s, self.job_id).tenant_id
            for f, st in stored:
                s.add(
                    Artifact(
                        tenant_id=tenant_id,
                        job_id=self.job_id,
                        kind="report" if f.kind == "report" else "student",
                        format=f.name.rsplit(".", 1)[-1] if f.kind == "report" else f.kind,
                        filename=f.name,
                        media_type=f.media_type,
                        storage_key=st.key,
                        size_bytes=st.size_bytes,
                        sha256=st.sha256,
                    )
                )
            jobs.succeed(s, self.job_id, self.owner, report)

        self._write(write)


def run_attempt(job_id: str, owner: str, stop_flag: Any) -> None:
    """Run a job the supervisor claimed for `owner`, to exactly one ending: succeeded,
    failed (a structured, path-free error; the traceback goes to this log only),
    cancelled, handed back, or nothing at all once the lease is lost."""
    from worker.distill.pipeline import run_job as run_pipeline
    from worker.distill.reporting import Cancelled

    settings = get_settings()
    reporter = JobReporter(job_id, owner, stop_flag)
    try:
        job = in_transaction(lambda s: _get_job(s, job_id))
        spec = JobSpec.model_validate(job.spec)
        reporter.deadline = job.deadline_at
        inputs = in_transaction(lambda s: job_inputs(s, job, spec))
        inputs = with_teachers(job, spec, inputs, reporter)
        if reporter.should_stop():
            raise Cancelled("stopped while waiting for another job's teacher")
        outcome = run_pipeline(spec, reporter, reporter.workdir, settings.resolved_data_cache_dir, inputs)
        reporter.close(flush=True)
        reporter.succeed(outcome.files, outcome.report)
    except (Cancelled, LeaseLost):
        _close_quietly(reporter)  # a cancelled job keeps its metrics so far
        end_stopped(job_id, owner, reporter.stop_reason)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _close_quietly(reporter)
        failure = describe_failure(exc)
        in_transaction(
            lambda s: jobs.fail(s, job_id, failure.message, owner=owner, code=failure.code, field=failure.field)
        )
    finally:
        reporter.close(flush=False)  # the writer thread never outlives its attempt
        shutil.rmtree(reporter.workdir, ignore_errors=True)
        forget_finished_checkpoints(job_id)


def _close_quietly(reporter: JobReporter) -> None:
    """The buffered metrics of a job that is ending anyway: delivered if they can be."""
    try:
        reporter.close(flush=True)
    except Exception:
        log.warning("job %s: its last buffered metrics could not be written", reporter.job_id, exc_info=True)


def forget_finished_checkpoints(job_id: str) -> None:
    """Checkpoints stay while the job may resume (queued again, or held by another)."""
    status = in_transaction(lambda s: _get_job(s, job_id).status)
    if status in jobs.TERMINAL:
        shutil.rmtree(get_storage().path(f"checkpoints/{job_id}"), ignore_errors=True)
