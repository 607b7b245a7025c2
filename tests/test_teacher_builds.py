"""Who trains a teacher the tenant needs (worker/teacher_builds.py), on real databases: the first
job claims it, a second waits while the first runs, and takes the claim over once the first was
handed back or lost its worker; a job resumed after publishing its own teacher restores it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from app import jobs
from app.contract.spec import EXAMPLE_SPEC, JobSpec
from app.db import make_engine
from app.models import Artifact, Job, TeacherBuild, Tenant, utcnow
from app.storage import get_storage
from worker.teacher_builds import READY, _claim_or_find, publish

KEY = "k" * 64


@pytest.fixture
def session(database_url: str, in_process_env):
    engine = make_engine(database_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def running_job(session: Session, tenant_id: str, lease_left: float = 30.0) -> Job:
    job = jobs.create(session, JobSpec.model_validate(EXAMPLE_SPEC), tenant_id=tenant_id)
    job.status, job.lease_owner = jobs.Status.RUNNING, f"w:{job.id}"
    job.lease_expires_at = utcnow() + timedelta(seconds=lease_left)
    session.commit()
    return job


def kept_teacher(session: Session, job: Job) -> str:
    key = f"jobs/{job.id}/teacher.safetensors"
    path = get_storage().path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    artifact = Artifact(
        tenant_id=job.tenant_id,
        job_id=job.id,
        kind="teacher",
        format="safetensors",
        filename="teacher.safetensors",
        media_type="application/octet-stream",
        storage_key=key,
        size_bytes=7,
        sha256="0" * 64,
    )
    session.add(artifact)
    session.flush()
    publish(session, job.tenant_id, job.id, KEY, artifact.id)
    session.commit()
    return artifact.id


@pytest.fixture
def tenant_id(session: Session) -> str:
    t = Tenant(name="t")
    session.add(t)
    session.commit()
    return t.id


def claim(session: Session, job: Job):
    decided = _claim_or_find(session, job, KEY)
    session.commit()
    session.expire_all()  # read the rows as the database has them now
    return decided


def test_the_first_job_trains_and_a_second_waits_while_it_runs(session, tenant_id):
    first, second = running_job(session, tenant_id), running_job(session, tenant_id)
    assert claim(session, first).action == "train"
    waiting = claim(session, second)
    assert (waiting.action, waiting.holder) == ("wait", first.id)


@pytest.mark.parametrize(
    ("what_became_of_it", "why"),
    [
        ("handed back", "was handed back"),
        ("lease expired", "lost its worker (its lease expired)"),
        ("failed", "ended (failed) without it"),
    ],
)
def test_a_waiter_takes_over_a_claim_no_one_is_training(session, tenant_id, what_became_of_it, why):
    first, second = running_job(session, tenant_id), running_job(session, tenant_id)
    assert claim(session, first).action == "train"
    if what_became_of_it == "handed back":
        first.status, first.lease_owner, first.lease_expires_at = jobs.Status.QUEUED, None, None
    elif what_became_of_it == "lease expired":
        first.lease_expires_at = utcnow() - timedelta(seconds=1)
    else:
        first.status = jobs.Status.FAILED
    session.commit()

    taken = claim(session, second)
    assert (taken.action, taken.holder, taken.why) == ("train", first.id, why)
    assert session.get(TeacherBuild, (tenant_id, KEY)).job_id == second.id
    # The first job, run again, now waits for the second instead of training it too.
    first.status, first.lease_expires_at = jobs.Status.RUNNING, utcnow() + timedelta(seconds=30)
    session.commit()
    assert (claim(session, first).action, claim(session, first).holder) == ("wait", second.id)


def test_a_published_teacher_is_reused_by_others_and_restored_by_its_own_job(session, tenant_id):
    builder, later = running_job(session, tenant_id), running_job(session, tenant_id)
    assert claim(session, builder).action == "train"
    artifact_id = kept_teacher(session, builder)
    reused = claim(session, later)
    assert (reused.action, reused.artifact_id) == ("reuse", artifact_id)
    # The builder resumed after its teacher phase: its own teacher, not "reused" from itself.
    resumed = claim(session, builder)
    assert (resumed.action, resumed.why) == ("train", None)
    build = session.get(TeacherBuild, (tenant_id, KEY))
    assert (build.status, build.artifact_id) == (READY, artifact_id)
