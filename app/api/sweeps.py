"""/v1/sweeps: one request, many trials (ordinary jobs); progress, leaderboard, cancel."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import admission, jobs
from app.api.jobs import admit_spec, not_found
from app.api.schemas import problems
from app.auth import CallerDep
from app.contract.spec import JobSpec
from app.db import session_scope
from app.models import Sweep
from app.problems import Problem, document_pointer, error_detail, invalid_spec
from app.queue import enqueue_job
from app.storage import get_storage
from app.sweeps import expand, state
from app.sweeps.spec import SweepSpec

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["sweeps"], responses=problems(400, 401, 422, 429, 503))


class SweepOut(BaseModel):
    id: str
    name: str | None
    status: str = Field(description="running, succeeded, failed or cancelled.")
    cancel_requested: bool
    created_at: datetime
    finished_at: datetime | None
    progress: dict[str, Any] = Field(
        description="total, done, succeeded, failed, cancelled, running, queued, pending (not yet released), "
        "stopped_early, best_so_far (chosen on validation)."
    )
    trials: list[dict[str, Any]] = Field(description="index, config, control, job_id (once released), status.")
    result: dict[str, Any] | None = Field(
        description="When ended: leaderboard, winner (on validation), budget, pareto fronts and figures "
        "(the points of pareto.png), latency (how it was measured: onnxruntime, CPU, batch sizes, threads), "
        "early_stop, teacher_trainings."
    )
    leaderboard_so_far: list[dict[str, Any]] | None = Field(
        None,
        description="While the sweep runs: the ended trials ranked on validation (the best so far marked "
        "`winner`), then the others with their state; null once it ended (see result.leaderboard).",
    )


def _axis_pointer(trial: dict[str, Any], sweep: SweepSpec, field: str) -> str:
    """The axis (and the value's index in it) that set `field` of this trial, else /base/..."""
    dotted = field.strip("/").replace("/", ".")
    for path, value in trial["config"].items():
        if dotted == path or dotted.startswith(path + "."):
            if path in sweep.axes and value in sweep.axes[path]:
                return f"/axes/{path}/{sweep.axes[path].index(value)}"
            return "/controls"
    return "/base" + field


def _trial_errors(session: Session, sweep: SweepSpec, trial: dict[str, Any], tenant_id: str) -> list[dict]:
    """The trial's spec through the same validation and admission as POST /v1/jobs; on success
    the trial keeps the spec as admitted (with the default time limit)."""
    try:
        admitted = admit_spec(session, JobSpec.model_validate(trial["spec"]), tenant_id, check_devices=True)
        trial["spec"] = admitted.model_dump(mode="json")
        return []
    except ValidationError as exc:
        found = [
            {
                "pointer": document_pointer(e["loc"], trial["spec"]),
                "detail": error_detail(e, JobSpec, trial["spec"]),
                "type": e["type"],
            }
            for e in exc.errors()
        ]
    except Problem as problem:
        found = [{"pointer": e["pointer"], "detail": e["detail"], "type": e["type"]} for e in problem.errors or []]
    return [
        {
            "pointer": _axis_pointer(trial, sweep, e["pointer"]),
            "in": "body",
            "detail": f"trial {trial['index']} ({trial['config']}): {e['pointer']}: {e['detail']}",
            "type": e["type"],
        }
        for e in found
    ]


def _admit_sweep(session: Session, sweep: SweepSpec, tenant_id: str) -> list[dict[str, Any]]:
    if errors := admission.value_errors(sweep.model_dump(mode="json")) or expand.count_errors(sweep):
        raise invalid_spec(errors)
    trials = expand.trials(sweep)
    errors = []
    for trial in trials:
        errors += [e for e in _trial_errors(session, sweep, trial, tenant_id) if e not in errors]
    if errors:
        raise invalid_spec(errors[:50])
    return trials


def get_sweep_or_404(session: Session, tenant_id: str, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.tenant_id != tenant_id:
        raise not_found("Sweep", sweep_id)
    return sweep


def sweep_out(session: Session, sweep: Sweep, with_standings: bool = True) -> SweepOut:
    by_trial = state.trial_jobs(session, sweep.id)
    trials = [
        {
            "index": t["index"],
            "config": t["config"],
            "control": t["control"],
            "job_id": by_trial[t["index"]].id if t["index"] in by_trial else None,
            "status": by_trial[t["index"]].status if t["index"] in by_trial else "pending",
            "stopped_early": t["index"] in sweep.stopped,
        }
        for t in sweep.trials
    ]
    return SweepOut(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        cancel_requested=sweep.cancel_requested,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        progress=state.progress(session, sweep, by_trial),
        trials=trials,
        result=sweep.result,
        leaderboard_so_far=state.standings(sweep, by_trial) if with_standings and sweep.status == "running" else None,
    )


def _send(job_ids: list[str]) -> None:
    """A lost message is not lost work: the worker's sweeper sends unsent queued jobs again."""
    for job_id in job_ids:
        try:
            enqueue_job(job_id)
        except Exception as exc:
            log.warning("enqueue of sweep trial %s failed (the sweeper resends it): %s", job_id, exc)
            continue
        with session_scope() as session:
            jobs.mark_enqueued(session, job_id)
            session.commit()


@router.post("/sweeps", status_code=status.HTTP_202_ACCEPTED, response_model=SweepOut, summary="Submit a sweep")
def submit_sweep(spec: SweepSpec, response: Response, caller: CallerDep) -> SweepOut:
    """A set of jobs from one base spec and the axes to vary (a grid, or random samples),
    each trial checked as POST /v1/jobs checks a spec before any is stored. Trials that fall
    behind may be stopped early (`early_stop`); the sweep's result ranks them on validation
    accuracy and gives the Pareto fronts (validation accuracy against the student's size and
    latency).
    """
    with session_scope() as session:
        trials = _admit_sweep(session, spec, caller.tenant_id)
        sweep = Sweep(
            tenant_id=caller.tenant_id,
            name=spec.name,
            status=state.RUNNING,
            spec=spec.model_dump(mode="json"),
            trials=trials,
            stopped=[],
        )
        session.add(sweep)
        session.flush()
        released, _ = state.advance(session, sweep)
        session.commit()
        _send(released)
        response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
        return sweep_out(session, sweep)


@router.get("/sweeps", response_model=list[SweepOut], summary="The tenant's sweeps, newest first")
def list_sweeps(caller: CallerDep, limit: int = 20) -> list[SweepOut]:
    """The tenant's sweeps, newest first, with their progress."""
    with session_scope(readonly=True) as session:
        rows = session.scalars(
            select(Sweep)
            .where(Sweep.tenant_id == caller.tenant_id)
            .order_by(Sweep.created_at.desc())
            .limit(max(1, min(limit, 100)))
        )
        return [sweep_out(session, s, with_standings=False) for s in rows]


@router.get(
    "/sweeps/{sweep_id}", response_model=SweepOut, summary="A sweep's progress and leaderboard", responses=problems(404)
)
def get_sweep(sweep_id: str, caller: CallerDep) -> SweepOut:
    """The sweep's trials (configuration, job, status), its progress and, once it ended, the
    leaderboard, the winner chosen on validation accuracy and the Pareto fronts.
    """
    with session_scope(readonly=True) as session:
        return sweep_out(session, get_sweep_or_404(session, caller.tenant_id, sweep_id))


@router.post(
    "/sweeps/{sweep_id}/cancel",
    response_model=SweepOut,
    summary="Cancel a sweep and its trials",
    responses=problems(404, 409),
)
def cancel_sweep(sweep_id: str, caller: CallerDep) -> SweepOut:
    """Cancels every trial not ended yet (as POST /v1/jobs/{id}/cancel does); the finished
    ones keep their results.
    """
    with session_scope() as session:
        sweep = get_sweep_or_404(session, caller.tenant_id, sweep_id)
        if sweep.status != state.RUNNING:
            raise Problem(409, "Sweep already ended", f"The sweep {sweep.status}; there is nothing to cancel.")
        state.cancel(session, sweep)
        state.advance(session, sweep)
        session.commit()
        session.refresh(sweep)
        return sweep_out(session, sweep)


@router.get(
    "/sweeps/{sweep_id}/pareto.png",
    summary="The Pareto fronts as a figure",
    responses=problems(404),
    response_class=FileResponse,
)
def sweep_pareto(sweep_id: str, caller: CallerDep) -> FileResponse:
    """A PNG of the Pareto fronts (validation accuracy, mean over seeds, against each cost the
    sweep measured), once the sweep has ended.
    """
    with session_scope(readonly=True) as session:
        sweep = get_sweep_or_404(session, caller.tenant_id, sweep_id)
        key = (sweep.result or {}).get("pareto_png_key")
    if not key or not get_storage().path(key).is_file():
        raise Problem(404, "No figure yet", "The figure is drawn by a worker when the sweep ends.")
    return FileResponse(get_storage().path(key), media_type="image/png", filename="pareto.png")
