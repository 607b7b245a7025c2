"""A sweep's life in the database: trials released a few at a time as ordinary jobs, the
median rule, the leaderboard when the last trial ends, cancel.

Fairness: a sweep holds at most `max_parallel` trials queued or running (they count in the
tenant's concurrent-job cap like any job), and releases the next trial only when one ends.
Inside a tenant the worker takes the oldest queued job first (worker/fair_share.py), so a job
the tenant submits while its sweep runs waits behind at most `max_parallel` trials, never
behind the whole sweep; across tenants the fair share applies to trials as to any job.

One teacher: trial 0 runs alone first. When it has succeeded, the other trials are released;
if it left a trained teacher artifact that a spec may name (issue 12's `teacher.artifact.id`)
and the trial specs pass admission with it, they name it; otherwise they keep the base
teacher spec, which the teacher cache (issue 12's reuse by content hash) serves without
training again. `advance` is called by the API (submit, cancel) and by every worker's
sweeper thread; several may run at once: a trial's job is unique per (sweep, trial).
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import jobs, tenants
from app.contract.spec import JobSpec
from app.db import rows_changed
from app.models import Artifact, Job, JobMetric, Sweep, utcnow
from app.sweeps import board
from app.sweeps.spec import SweepSpec

log = logging.getLogger(__name__)

RUNNING = "running"
ENDED = frozenset({"succeeded", "failed", "cancelled"})


def trial_jobs(session: Session, sweep_id: str) -> dict[int, Job]:
    rows = session.scalars(select(Job).where(Job.sweep_id == sweep_id).execution_options(populate_existing=True))
    return {j.sweep_trial: j for j in rows if j.sweep_trial is not None}  # a sweep's jobs all have one


def _teacher_override(session: Session, sweep: Sweep, first: Job) -> dict[str, Any] | None:
    """The trained teacher of trial 0 as a spec's teacher, when that job left one."""
    artifact = session.scalars(
        select(Artifact).where(Artifact.job_id == first.id, Artifact.kind == "teacher").order_by(Artifact.filename)
    ).first()
    if artifact is None:
        return None
    teacher: dict[str, Any] = {"artifact": {"id": artifact.id}}
    train = (first.spec.get("teacher") or {}).get("train") or {}
    if artifact.format == "safetensors" and "arch" in train:
        teacher["artifact"]["arch"] = train["arch"]
    return teacher


def _spec_for(session: Session, sweep: Sweep, trial: dict[str, Any], first: Job | None) -> JobSpec:
    spec = JobSpec.model_validate(trial["spec"])
    if trial["index"] == 0 or first is None or first.status != "succeeded":
        return spec
    override = _teacher_override(session, sweep, first)
    if override is None:
        return spec
    from app.api.jobs import admit_spec  # the same admission as a job's; imported late (api imports us)

    try:
        named = admit_spec(session, JobSpec.model_validate({**trial["spec"], "teacher": override}), sweep.tenant_id)
    except Exception as exc:  # the artifact cannot be named (yet): the base teacher, served by the cache
        log.info("sweep %s: trial teacher not named (%s); using the base teacher spec", sweep.id, exc)
        return spec
    sweep.teacher_job_id = first.id
    return named


def _release(session: Session, sweep: Sweep, trial: dict[str, Any], first: Job | None) -> str | None:
    """Trial -> a queued job (once: a concurrent release of the same trial loses)."""
    spec = _spec_for(session, sweep, trial, first)
    try:
        with session.begin_nested():
            job = jobs.create(session, spec, tenant_id=sweep.tenant_id)
            job.sweep_id, job.sweep_trial = sweep.id, trial["index"]
            jobs.add_event(session, job.id, f"trial {trial['index']} of sweep {sweep.id}: {trial['config']}")
    except IntegrityError:
        return None
    return job.id


def release(session: Session, sweep: Sweep) -> list[str]:
    """Queue the next trials while the sweep holds fewer than max_parallel and the tenant is
    under its cap. Returns the new job ids (to send after commit)."""
    if sweep.cancel_requested or sweep.status != RUNNING:
        return []
    by_trial = trial_jobs(session, sweep.id)
    first = by_trial.get(0)
    if len(by_trial) == len(sweep.trials) or (first is not None and first.status not in ENDED):
        return []  # all released, or the teacher trial runs alone
    tenants.lock_for_submission(session, sweep.tenant_id)  # counts serialised with submissions
    active = sum(1 for j in by_trial.values() if j.status not in ENDED)
    tenant = tenants.of(session, sweep.tenant_id)
    room = min(
        SweepSpec.model_validate(sweep.spec).max_parallel - active,
        tenants.job_cap(tenant) - tenants.active_jobs(session, tenant.id),
    )
    if first is None:
        room = min(room, 1)
    released = []
    for trial in sweep.trials:
        if room <= 0:
            break
        if trial["index"] in by_trial:
            continue
        if (job_id := _release(session, sweep, trial, first)) is not None:
            released.append(job_id)
            room -= 1
    return released


def _student_val_at(session: Session, job: Job, epoch: int) -> float | None:
    """The first seed's student validation accuracy at `epoch` (seeds run one after another)."""
    first_seed = (job.spec.get("seeds") or [0])[0]
    return session.scalar(
        select(JobMetric.value).where(
            JobMetric.job_id == job.id,
            JobMetric.phase == "student",
            JobMetric.run == f"seed={first_seed}",
            JobMetric.name == "val_accuracy",
            JobMetric.epoch == epoch,
        )
    )


def early_stop(session: Session, sweep: Sweep) -> list[int]:
    """The median rule (off unless the sweep asks): cancel running trials below the median."""
    rule = SweepSpec.model_validate(sweep.spec).early_stop
    if rule is None or sweep.cancel_requested:
        return []
    by_trial = trial_jobs(session, sweep.id)
    control = {t["index"] for t in sweep.trials if t["control"]}
    seen: dict[int, float] = {}
    for index, job in by_trial.items():
        epochs = int(job.spec.get("training", {}).get("epochs", 1))
        value = _student_val_at(session, job, max(1, math.ceil(rule.fraction * epochs)))
        if value is not None and index not in control:
            seen[index] = value
    stopped = []
    for index, value in seen.items():
        others = [v for i, v in seen.items() if i != index]
        job = by_trial[index]
        if job.status != RUNNING or index in sweep.stopped or len(others) < rule.min_trials:
            continue
        if value < statistics.median(others):
            jobs.request_cancel(session, job.id)
            jobs.add_event(
                session,
                job.id,
                f"stopped early by the sweep's median rule: validation accuracy {value:.4f} at "
                f"{rule.fraction:.0%} of the epochs is below the median {statistics.median(others):.4f}",
                level="warning",
            )
            stopped.append(index)
    if stopped:
        sweep.stopped = [*sweep.stopped, *stopped]
    return stopped


def teacher_trainings(session: Session, sweep_id: str) -> int:
    """Trials that trained a teacher: those with teacher-phase metrics."""
    return (
        session.scalar(
            select(func.count(func.distinct(JobMetric.job_id)))
            .join(Job, Job.id == JobMetric.job_id)
            .where(Job.sweep_id == sweep_id, JobMetric.phase == "teacher")
        )
        or 0
    )


def job_view(job: Job, stopped: bool) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "result": job.result, "stopped_early": stopped}


def result_of(session: Session, sweep: Sweep) -> dict[str, Any]:
    spec = SweepSpec.model_validate(sweep.spec)
    by_trial = trial_jobs(session, sweep.id)
    views = _views(sweep, by_trial)
    early = None
    if spec.early_stop is not None:
        early = {**spec.early_stop.model_dump(), "stopped_trials": list(sweep.stopped)}
    result = board.leaderboard(sweep.trials, views, spec.budget, early)
    result["teacher_trainings"] = teacher_trainings(session, sweep.id)
    result["teacher_job_id"] = sweep.teacher_job_id
    return result


def _maybe_finish(session: Session, sweep: Sweep) -> bool:
    by_trial = trial_jobs(session, sweep.id)
    if any(j.status not in ENDED for j in by_trial.values()):
        return False
    if not sweep.cancel_requested and len(by_trial) < len(sweep.trials):
        return False
    result = result_of(session, sweep)
    if sweep.cancel_requested:
        status = "cancelled"
    else:
        status = "succeeded" if any(j.status == "succeeded" for j in by_trial.values()) else "failed"
    done = rows_changed(
        session,
        update(Sweep)
        .where(Sweep.id == sweep.id, Sweep.status == RUNNING)
        .values(status=status, result=result, finished_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    return done == 1


def advance(session: Session, sweep: Sweep) -> tuple[list[str], bool]:
    """One step: stop bad trials, release the next, finish when all ended. (new job ids,
    finished now). The caller commits, then sends the new jobs."""
    if sweep.status != RUNNING:
        return [], False
    early_stop(session, sweep)
    released = release(session, sweep)
    session.flush()
    finished = not released and _maybe_finish(session, sweep)
    return released, finished


def running_sweep_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Sweep.id).where(Sweep.status == RUNNING)))


def cancel(session: Session, sweep: Sweep) -> None:
    """No more trials; the queued ones cancelled at once, the running ones at their next batch."""
    sweep.cancel_requested = True
    sweep.updated_at = utcnow()
    for job in trial_jobs(session, sweep.id).values():
        if job.status not in ENDED:
            jobs.request_cancel(session, job.id)


def _views(sweep: Sweep, by_trial: dict[int, Job]) -> dict[int, dict[str, Any]]:
    return {i: job_view(j, i in sweep.stopped) for i, j in by_trial.items()}


def progress(session: Session, sweep: Sweep, by_trial: dict[int, Job] | None = None) -> dict[str, Any]:
    """Trials done / running / queued / not yet released, and the best so far (on validation,
    among those that fit the budget when the sweep has one: the winner if it ended now)."""
    by_trial = trial_jobs(session, sweep.id) if by_trial is None else by_trial
    counts = dict.fromkeys(("succeeded", "failed", "cancelled", "running", "queued"), 0)
    for job in by_trial.values():
        counts[job.status] = counts.get(job.status, 0) + 1
    budget = SweepSpec.model_validate(sweep.spec).budget
    best, _ = board.budget_answer(board.rows_of(sweep.trials, _views(sweep, by_trial)), budget)
    return {
        "total": len(sweep.trials),
        "done": counts["succeeded"] + counts["failed"] + counts["cancelled"],
        **counts,
        "pending": len(sweep.trials) - len(by_trial),
        "stopped_early": len(sweep.stopped),
        "best_so_far": best,
    }


def standings(sweep: Sweep, by_trial: dict[int, Job]) -> list[dict[str, Any]]:
    """The leaderboard so far, while the sweep runs: the ended trials ranked on validation (the
    best so far marked `winner`), then the others with their state."""
    spec = SweepSpec.model_validate(sweep.spec)
    return board.leaderboard(sweep.trials, _views(sweep, by_trial), spec.budget, None)["leaderboard"]
