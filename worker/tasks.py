"""run_job(job_id): thin. Claims the job, runs the engine, reports to the database.

Idempotent on our job id: a second delivery of a job that is running, finished
or cancelled finds nothing to claim and returns.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from pathlib import Path

from app import jobs
from app.config import get_settings
from app.db import get_sessionmaker
from app.models import Artifact, Job
from app.queue import RUN_JOB_TASK
from app.spec import JobSpec
from app.storage import get_storage
from worker.celery_app import app

log = logging.getLogger(__name__)


class DbReporter:
    """The engine's Reporter, written to the database in short transactions."""

    def __init__(self, job_id: str, checkpoint_dir: Path) -> None:
        self.job_id = job_id
        self.checkpoint_dir = checkpoint_dir
        self._sessions = get_sessionmaker()
        self._phase: str | None = None
        self._heartbeat_every = get_settings().heartbeat_seconds
        self._last_beat = 0.0
        self._last_stop_check = 0.0
        self._stop = False

    def phase(self, name: str) -> None:
        self._phase = name
        with self._sessions() as s:
            jobs.report_progress(s, self.job_id, phase=name)
            jobs.add_event(s, self.job_id, f"phase {name} started", phase=name)
            s.commit()

    def progress(self, fraction: float) -> None:
        with self._sessions() as s:
            jobs.report_progress(s, self.job_id, progress=fraction)
            s.commit()
        self._last_beat = time.monotonic()

    def metric(self, phase: str, run: str, epoch: int, values: dict[str, float]) -> None:
        with self._sessions() as s:
            jobs.add_metrics(s, self.job_id, phase, run, epoch, values)
            s.commit()

    def event(self, message: str, level: str = "info") -> None:
        with self._sessions() as s:
            jobs.add_event(s, self.job_id, message, phase=self._phase, level=level)
            s.commit()

    def should_stop(self) -> bool:
        # Called at every batch boundary: read the flag (and beat) a few times a second,
        # not once per batch, so tiny batches do not hammer the database.
        now = time.monotonic()
        if now - self._last_stop_check >= 0.25:
            self._last_stop_check = now
            with self._sessions() as s:
                self._stop = jobs.cancel_requested(s, self.job_id)
                if now - self._last_beat >= self._heartbeat_every:
                    jobs.report_progress(s, self.job_id)
                    s.commit()
                    self._last_beat = now
        return self._stop


def _store_outputs(job_id: str, files) -> None:  # noqa: ANN001 - list of export.OutputFile
    storage = get_storage()
    with get_sessionmaker()() as s:
        for f in files:
            stored = storage.put_file(f.path, f"jobs/{job_id}/{f.name}")
            s.add(
                Artifact(
                    job_id=job_id,
                    kind="report" if f.kind == "report" else "student",
                    format="json" if f.kind == "report" else f.kind,
                    filename=f.name,
                    media_type=f.media_type,
                    storage_key=stored.key,
                    size_bytes=stored.size_bytes,
                    sha256=stored.sha256,
                )
            )
        s.commit()


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    sessions = get_sessionmaker()
    with sessions() as s:
        claimed = jobs.claim(s, job_id)
        s.commit()
    if not claimed:
        log.info("job %s is not queued (duplicate delivery, cancelled or finished): skipped", job_id)
        return

    settings = get_settings()
    workdir = settings.home.resolve() / "work" / job_id
    reporter = DbReporter(job_id, workdir / "checkpoints")
    # torch is imported here, in the child process that runs the job, never at import time.
    from worker.distill.pipeline import run_job as run_pipeline
    from worker.distill.reporting import Cancelled

    try:
        with sessions() as s:
            spec = JobSpec.model_validate(s.get(Job, job_id).spec)
        outcome = run_pipeline(spec, reporter, workdir, settings.resolved_data_cache_dir)
        _store_outputs(job_id, outcome.files)
        with sessions() as s:
            jobs.succeed(s, job_id, outcome.report)
            s.commit()
    except Cancelled:
        with sessions() as s:
            jobs.mark_cancelled(s, job_id)
            s.commit()
    except Exception as exc:  # noqa: BLE001 - a job's failure must reach its user
        log.exception("job %s failed", job_id)
        with sessions() as s:
            jobs.fail(s, job_id, f"{type(exc).__name__}: {exc}")
            jobs.add_event(s, job_id, traceback.format_exc(limit=5), level="debug")
            s.commit()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
