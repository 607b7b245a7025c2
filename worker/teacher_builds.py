"""Trained teachers by content hash, per tenant: a job reuses a teacher the tenant already has,
or claims the right to train it (one conditional insert: two jobs at once never both train it;
the second waits for the first, or takes the claim over once the first has ended without it).

A claim whose job was handed back or lost its worker (its lease expired) is taken over by
the next job that finds it, so a waiter never waits for a build that no one is running. A
resumed job finds its own published teacher and restores it from its checkpoint instead.

Runs in the runner process, before the engine plans the job (worker/runner_job.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app import jobs
from app.contract.spec import JobSpec, TeacherTrain
from app.models import Artifact, Job, TeacherBuild, TeacherCacheStats, utcnow
from app.storage import get_storage
from worker.distill.cache import teacher_key
from worker.runner_db import in_transaction

POLL_SECONDS = 0.5
READY, TRAINING = "ready", "training"


@dataclass
class TeacherPlan:
    reused: dict[int, str] = field(default_factory=dict)  # member index -> kept safetensors artifact id
    claimed: dict[int, str] = field(default_factory=dict)  # member index -> key this job publishes


def insert_ignoring_conflict(session: Session, table, **values) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when this call inserted the row."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # An INSERT's result is a CursorResult (Session.execute is typed for any statement).
    result = cast(CursorResult[Any], session.execute(insert(table).values(**values).on_conflict_do_nothing()))
    return result.rowcount == 1


def _usable(session: Session, tenant_id: str, artifact_id: str | None) -> bool:
    artifact = session.get(Artifact, artifact_id) if artifact_id else None
    return (
        artifact is not None
        and artifact.tenant_id == tenant_id
        and artifact.kind == "teacher"
        and get_storage().path(artifact.storage_key).is_file()
    )


@dataclass(frozen=True)
class Claim:
    """What a job does about one teacher key: reuse an artifact, train it, or wait for a holder."""

    action: str  # "reuse" | "train" | "wait"
    artifact_id: str | None = None  # reuse: the kept safetensors weights
    holder: str | None = None  # wait: the job training it; train: the job whose claim was taken over
    why: str | None = None  # train after a takeover: what became of that job


def _stale(holder: Job | None) -> str | None:
    """Why a claim holder will not finish its build (None: it is training it now). A job holds a
    claim only while it runs; handed back or requeued (its worker stopped or died), no one
    trains the teacher until it runs again, which may be never on a busy or single worker."""
    if holder is None:
        return "is gone"
    if holder.status in jobs.TERMINAL:
        return f"ended ({holder.status}) without it"
    if holder.status != jobs.Status.RUNNING:
        return "was handed back"
    expires = holder.lease_expires_at
    if expires is None or expires < utcnow():
        return "lost its worker (its lease expired)"
    return None


def _claim_or_find(session: Session, job: Job, key: str) -> Claim:
    tenant = job.tenant_id
    if insert_ignoring_conflict(
        session, TeacherBuild, tenant_id=tenant, key=key, status=TRAINING, job_id=job.id, updated_at=utcnow()
    ):
        return Claim("train")
    row = session.scalars(select(TeacherBuild).where(TeacherBuild.tenant_id == tenant, TeacherBuild.key == key)).one()
    usable = row.status == READY and _usable(session, tenant, row.artifact_id)
    if usable and row.job_id == job.id:
        # An earlier attempt of this job trained and published it: this attempt restores it
        # from its checkpoint like an uninterrupted run, and keeps the artifact recorded.
        return Claim("train")
    if usable:
        return Claim("reuse", artifact_id=row.artifact_id)
    holder, why = row.job_id, None  # read before the UPDATE below refreshes `row`
    if holder != job.id and row.status != READY:
        why = _stale(session.get(Job, holder) if holder else None)
        if why is None:
            return Claim("wait", holder=holder)
    taken = cast(  # an UPDATE's result is a CursorResult (Session.execute is typed for any statement)
        CursorResult[Any],
        session.execute(
            update(TeacherBuild)
            .where(TeacherBuild.tenant_id == tenant, TeacherBuild.key == key, TeacherBuild.job_id == holder)
            .where(TeacherBuild.status == row.status)
            .values(status=TRAINING, job_id=job.id, artifact_id=None, updated_at=utcnow())
        ),
    )
    if taken.rowcount != 1:  # another job took it first: wait for that one
        return Claim("wait", holder=holder)
    return Claim("train", holder=holder if why else None, why=why)


def resolve_teachers(
    job: Job, spec: JobSpec, dataset_sha256: str | None, should_stop: Callable[[], bool], say: Callable[[str], None]
) -> TeacherPlan:
    """Which trained teachers of the spec this tenant already has, and which this job trains."""
    found = TeacherPlan()
    for i, member in enumerate(spec.teacher.members):
        if not isinstance(member, TeacherTrain) or not member.reuse:
            continue
        key = teacher_key(member, spec.dataset, dataset_sha256)
        waiting_for = None
        while not should_stop():
            claim = in_transaction(partial(_claim_or_find, job=job, key=key))
            if claim.action == "reuse":
                assert claim.artifact_id is not None  # a "reuse" claim names the artifact
                found.reused[i] = claim.artifact_id
                in_transaction(lambda s: count(s, job.tenant_id, teachers_reused=1))
                break
            if claim.action == "train":
                found.claimed[i] = key
                if claim.why:
                    say(
                        f"teacher: job {claim.holder}, which was training the same teacher, {claim.why}: "
                        "this job trains it instead"
                    )
                break
            if claim.holder != waiting_for:
                say(
                    f"teacher: job {claim.holder} is training the same teacher; waiting for it instead of "
                    "training it twice"
                )
                waiting_for = claim.holder
            time.sleep(POLL_SECONDS)  # another job's training: nothing to wake us but its row
    return found


def publish(session: Session, tenant_id: str, job_id: str, key: str, artifact_id: str) -> None:
    """The teacher this job claimed is trained: later jobs of the tenant reuse it."""
    session.execute(
        update(TeacherBuild)
        .where(TeacherBuild.tenant_id == tenant_id, TeacherBuild.key == key, TeacherBuild.job_id == job_id)
        .values(status=READY, artifact_id=artifact_id, updated_at=utcnow())
    )


def count(session: Session, tenant_id: str, **increments: int) -> None:
    """Add to the tenant's cache counters (teacher_cache_stats), creating the row once."""
    zero = {"hits": 0, "misses": 0, "corrupt": 0, "evictions": 0, "bypassed": 0, "teachers_reused": 0}
    insert_ignoring_conflict(session, TeacherCacheStats, tenant_id=tenant_id, **zero)
    values = {name: getattr(TeacherCacheStats, name) + n for name, n in increments.items()}
    session.execute(update(TeacherCacheStats).where(TeacherCacheStats.tenant_id == tenant_id).values(**values))
