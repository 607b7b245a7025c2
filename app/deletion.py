"""Deleting an artifact or an ended job: its rows, then its files in the artifact store.

Nothing still needed goes: an artifact that a queued or running job (or a running sweep) names, or
that an unfinished job is making, is refused (409), and so is a job that has not ended or that is
a trial of a running sweep. The tenant's submission lock is taken first (app/tenants.py), so a
submission does not count its jobs between the check and the delete; a job admitted just before
that names the deleted upload fails when it starts, saying the artifact is gone
(worker/runner_job.job_inputs). Files go after the commit: a failed removal leaves a file without
a row, never a row without its file.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app import jobs, tenants
from app.models import Artifact, Job, Sweep
from app.problems import Problem
from app.storage import get_storage

log = logging.getLogger(__name__)
ACTIVE = [s.value for s in jobs.ACTIVE]


def _who_names(session: Session, tenant_id: str, artifact_id: str) -> str | None:
    """An active job or running sweep of the tenant whose spec names the artifact (ids are UUIDs:
    one found in a spec's JSON is a reference to it)."""
    active = session.execute(
        select(Job.id, Job.status, Job.spec).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))
    )
    for job_id, status, spec in active:
        if artifact_id in json.dumps(spec):
            return f"the {status} job {job_id} uses it"
    sweeps = session.execute(
        select(Sweep.id, Sweep.spec).where(Sweep.tenant_id == tenant_id, Sweep.status == "running")
    )
    for sweep_id, spec in sweeps:
        if artifact_id in json.dumps(spec):
            return f"the running sweep {sweep_id} uses it"
    return None


def _in_use(session: Session, artifact: Artifact) -> str | None:
    if artifact.job_id is not None:
        maker = session.get(Job, artifact.job_id)
        if maker is not None and maker.status in ACTIVE:
            return f"the job {maker.id} that makes it is {maker.status}"
    return _who_names(session, artifact.tenant_id, artifact.id)


def _in_use_problem(what: str, why: str) -> Problem:
    return Problem(
        409,
        f"{what} in use",
        f"{why}: wait until it has ended (or cancel it), then delete again.",
        type_="in-use",
    )


def _artifact_files(session: Session, artifact: Artifact) -> list[Path]:
    """What to remove: an upload's folder (the file, its canonical arrays, its tensor list) unless
    another row shares it; a job's output file."""
    path = get_storage().path(artifact.storage_key)
    if artifact.job_id is not None:
        return [path]
    folder = artifact.storage_key.rsplit("/", 1)[0] + "/"
    shared = session.scalar(
        select(func.count())
        .select_from(Artifact)
        .where(Artifact.id != artifact.id, Artifact.storage_key.startswith(folder, autoescape=True))
    )
    return [] if shared else [path.parent]


def remove_paths(paths: list[Path]) -> None:
    for path in paths:
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:  # the row is gone; the file is an orphan, logged
            log.warning("could not remove %s: %s", path, exc)


def delete_artifact(session: Session, artifact: Artifact) -> list[Path]:
    """Delete the row (committed); returns the paths to remove."""
    tenants.lock_for_submission(session, artifact.tenant_id)
    if why := _in_use(session, artifact):
        session.rollback()
        raise _in_use_problem("Artifact", why)
    paths = _artifact_files(session, artifact)
    session.execute(delete(Artifact).where(Artifact.id == artifact.id))
    session.commit()
    return paths


def delete_job(session: Session, job: Job) -> list[Path]:
    """Delete an ended job with its events, metrics and files (committed); returns the paths to remove."""
    if job.status not in jobs.TERMINAL:
        raise Problem(
            409,
            "Job not ended",
            f"The job is {job.status}: cancel it (POST /v1/jobs/{job.id}/cancel), then delete it once it has ended.",
            type_="job-not-ended",
        )
    tenants.lock_for_submission(session, job.tenant_id)
    if job.sweep_id is not None and session.scalar(select(Sweep.status).where(Sweep.id == job.sweep_id)) == "running":
        session.rollback()
        raise _in_use_problem("Job", f"it is a trial of the running sweep {job.sweep_id}")
    for artifact_id in session.scalars(
        select(Artifact.id).where(Artifact.job_id == job.id, Artifact.kind == "teacher")
    ):
        if why := _who_names(session, job.tenant_id, artifact_id):
            session.rollback()
            raise _in_use_problem("Job", f"its teacher {artifact_id} is named by another job: {why}")
    session.execute(delete(Job).where(Job.id == job.id))  # events, metrics, artifacts: ON DELETE CASCADE
    session.commit()
    storage = get_storage()
    return [storage.path(f"jobs/{job.id}"), storage.path(f"checkpoints/{job.id}")]
