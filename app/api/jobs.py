"""/v1/jobs: submit, list, read, cancel; a job's events, metrics and artifacts."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from sqlalchemy import Connection, and_, bindparam, delete, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import admission, deletion, jobs, tenants
from app.api.examples import job_examples
from app.api.schemas import (
    LABEL_KEY,
    ArtifactOut,
    EpochBudget,
    EventOut,
    JobError,
    JobOut,
    JobPage,
    JobSubmission,
    MetricSeries,
    MetricsOut,
    problems,
)
from app.async_reads import AsyncConnectionPool, key_and_job_statement
from app.auth import API_KEY_SCHEME, Caller, CallerDep, rate_limited, read_as_caller, required_key, unknown_key
from app.contract.fit import ArtifactFacts, artifact_refs, fit_errors
from app.contract.spec import JobSpec
from app.db import read_retrying, session_scope
from app.models import Artifact, Job, JobEvent, JobMetric, utcnow
from app.problems import Problem, invalid_spec, pointer
from app.queue import enqueue_job
from app.storage import TENSORS_FILE, get_storage
from app.tenants import key_sha256
from app.workers import LiveWorkers, cached_workers, gpu_refusal, live_workers, recent_workers, waiting_detail

S = TypeVar("S", bound=JobSpec)  # a JobSpec, or a JobSubmission (a spec with the client's labels)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["jobs"], responses=problems(400, 401, 422, 429, 503))
# The route that clients poll checks the key itself, in the unit of work that reads the job
# (app/auth.read_as_caller): one thread hop and one connection per poll, not two of each.
# app/main.py includes this router without the `authenticate` dependency.
polled = APIRouter(prefix="/v1", tags=["jobs"], responses=problems(400, 401, 422, 429, 503))


def not_found(kind: str, id_: str) -> Problem:
    # Another tenant's id gets exactly this answer too: ids of others are not even confirmed.
    return Problem(404, f"{kind} not found", f"No {kind.lower()} has the id {id_!r}.")


def get_job_or_404(session: Session, caller: Caller, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != caller.tenant_id:
        raise not_found("Job", job_id)
    return job


def _eta_seconds(job: Job | Row[Any]) -> float | None:
    """The worker's estimated end (worker/distill/eta.py) counted down to now: it moves between
    the worker's reports, which come at epoch ends. Not elapsed * (1 - progress) / progress:
    progress counts planned epochs alike, and a teacher epoch is not a student epoch."""
    ends_at = (job.estimate or {}).get("ends_at")
    if job.status != jobs.Status.RUNNING or not ends_at:
        return None
    return round(max(0.0, (datetime.fromisoformat(ends_at) - utcnow()).total_seconds()), 1)


EXPANDABLE = frozenset({"spec", "result"})
# JobOut's fields that are columns of the job's row as they are.
_PLAIN = [
    n for n in JobOut.model_fields if n in Job.__table__.columns and n not in EXPANDABLE | {"error", "latest_metrics"}
]


def _error(job: Job | Row[Any]) -> JobError | None:
    if job.status != jobs.Status.FAILED or not job.error:
        return None
    return JobError(code=job.error_code or "unknown", message=job.error, field=job.error_field)


def job_out(
    job: Job | Row[Any],
    *,
    with_metrics: bool = True,
    workers: LiveWorkers | None = None,
    expand: frozenset[str] = EXPANDABLE,
) -> JobOut:
    """The job as the API shows it; its latest metrics are a column of its row (written
    with each epoch's metrics, app/jobs.add_metrics), so a poll costs one row read. A queued
    job says what it waits for when the live `workers` are given."""
    values = {name: getattr(job, name) for name in _PLAIN}
    estimate = getattr(job, "estimate", None)
    return JobOut(
        **values,
        **{name: getattr(job, name) for name in expand},
        eta_seconds=_eta_seconds(job),
        epochs=EpochBudget.model_validate(estimate["epochs"]) if estimate else None,
        latest_metrics=job.latest_metrics if with_metrics else None,
        status_detail=(
            waiting_detail(workers, getattr(job, "spec", None))
            if job.status == jobs.Status.QUEUED and workers is not None
            else None
        ),
        error=_error(job),
        metadata=job.labels or {},
    )


def _spec_sha256(spec: JobSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _artifacts_named(session: Session, caller: Caller, spec: JobSpec) -> dict[str, ArtifactFacts]:
    """The caller's uploads that the spec names (another tenant's ids are simply not found)."""
    ids = {id_ for _, id_, _ in artifact_refs(spec)}
    if not ids:
        return {}
    rows = session.scalars(
        select(Artifact).where(
            Artifact.id.in_(ids),
            Artifact.tenant_id == caller.tenant_id,
            # uploads, and the teachers jobs trained and kept (issue 12)
            or_(Artifact.job_id.is_(None), Artifact.kind == "teacher"),
        )
    )
    return {a.id: ArtifactFacts(a.kind, a.format, _inspection(a)) for a in rows}


def _inspection(artifact: Artifact) -> dict[str, Any]:
    """What the fit checks read: the row's summary, and a safetensors teacher's tensor list
    from the file beside it (the row keeps counts only, app/api/upload_limits.py)."""
    inspection = dict(artifact.inspection or {})
    if artifact.format == "safetensors" and "tensors" not in inspection:
        sidecar = get_storage().path(artifact.storage_key).with_name(TENSORS_FILE)
        inspection["tensors"] = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return inspection


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Submit a distillation job",
    responses=problems(413, 415),
)
def submit_job(
    spec: Annotated[JobSubmission, Body(openapi_examples=job_examples())],
    response: Response,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Retry-safe submission: the same key and body "
            "return the same job; the same key with another body is refused.",
        ),
    ] = None,
) -> JobOut:
    """Submit a job spec: the teacher (trained in the job, uploaded, or an ensemble), the
    student's architecture, the method and its parameters, the training budget and the seeds.
    The spec is checked completely before anything is stored (types and ranges, then whether
    teacher, data and student fit together, then what the job will cost): a spec that cannot
    run gets a 422 naming each wrong field. 202 with the job, queued, and `Location`; poll
    GET /v1/jobs/{id} or follow GET /v1/jobs/{id}/stream. The examples show each method and
    each way to bring a teacher or data; GET /v1/catalog lists what a spec may name.
    """
    with session_scope() as session:
        return _submit(session, spec, response, caller, idempotency_key)


def device_errors(session: Session, spec: JobSpec) -> list[dict[str, Any]]:
    """training.device "cuda" needs a live worker with a GPU (their heartbeats say, app/workers.py)."""
    if spec.training.device != "cuda" or not (why := gpu_refusal(live_workers(session))):
        return []
    return [{"pointer": "/training/device", "in": "body", "detail": why, "type": "no_gpu_worker"}]


def _admit(session: Session, spec: S, caller: Caller, *, check_devices: bool = True) -> S:
    """Everything a submission must pass (app/admission.py); the spec as it will run (of the
    class it came as: a submission keeps its metadata)."""
    if errors := admission.value_errors(spec.model_dump(mode="json")):
        raise invalid_spec(errors)
    if check_devices and (errors := device_errors(session, spec)):
        raise invalid_spec(errors)
    artifacts = _artifacts_named(session, caller, spec)
    if misfits := fit_errors(spec, artifacts):
        raise invalid_spec(
            [{"pointer": pointer(e.loc), "in": "body", "detail": e.msg, "type": "does_not_fit"} for e in misfits]
        )
    if errors := admission.cost_errors(spec, artifacts, tenants.of(session, caller.tenant_id)):
        raise invalid_spec(errors)
    return admission.with_default_time_limit(spec)


def admit_spec(session: Session, spec: JobSpec, tenant_id: str, *, check_devices: bool = False) -> JobSpec:
    """A job's admission for a spec that does not come in a request (a sweep's trial). The devices
    are checked when a request submits it, not when a running sweep releases it later."""
    return _admit(session, spec, Caller(tenant_id=tenant_id, key_id=None), check_devices=check_devices)


def _submit(
    session: Session, spec: JobSubmission, response: Response, caller: Caller, idempotency_key: str | None
) -> JobOut:
    spec = _admit(session, spec, caller)
    digest = _spec_sha256(spec)
    # Before anything is counted: serialises this tenant's submissions (see tenants.py).
    tenants.lock_for_submission(session, caller.tenant_id)
    if idempotency_key is not None:
        existing = session.scalars(
            select(Job).where(Job.tenant_id == caller.tenant_id, Job.idempotency_key == idempotency_key)
        ).first()
        if existing is not None:
            if existing.request_sha256 != digest:
                raise Problem(
                    422,
                    "Idempotency key reused",
                    "This Idempotency-Key was used for another job spec; use a new key.",
                    type_="idempotency-key-reused",
                )
            response.headers["Location"] = f"/v1/jobs/{existing.id}"
            return job_out(existing)

    tenant = tenants.of(session, caller.tenant_id)
    if (active := tenants.active_jobs(session, tenant.id)) >= (cap := tenants.job_cap(tenant)):
        session.rollback()
        raise Problem(
            429,
            "Too many jobs at once",
            f"This tenant has {active} queued or running jobs, its cap is {cap}: wait for one to "
            "finish (or cancel one), then submit again.",
            type_="concurrent-job-cap",
            headers={"Retry-After": "30"},
        )
    job = jobs.create(
        session,
        spec,
        tenant_id=tenant.id,
        idempotency_key=idempotency_key,
        request_sha256=digest,
        labels=spec.metadata,
    )
    session.commit()  # the row exists before any worker can be told about it
    try:
        enqueue_job(job.id)
    except Exception as exc:
        log.warning("enqueue of job %s failed: %s", job.id, exc)
        session.execute(delete(Job).where(Job.id == job.id))
        session.commit()
        raise Problem(
            503,
            "Queue unavailable",
            "The job queue cannot be reached, so the job was not stored. Try again shortly.",
            type_="queue-unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    jobs.mark_enqueued(session, job.id)
    session.commit()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job, with_metrics=False, workers=live_workers(session))


def _encode_cursor(job: Job | Row[Any]) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except Exception as exc:
        raise invalid_spec(
            [{"pointer": "/cursor", "in": "query", "detail": "not a cursor this API returned", "type": "value_error"}]
        ) from exc


def _query_error(name: str, detail: str) -> Problem:
    return invalid_spec([{"pointer": f"/{name}", "in": "query", "detail": detail, "type": "value_error"}])


def parse_expand(values: list[str] | None) -> frozenset[str]:
    asked = frozenset(v.strip() for value in values or [] for v in value.split(",") if v.strip())
    if unknown := sorted(asked - EXPANDABLE):
        raise _query_error("expand", f"cannot expand {', '.join(unknown)}; the list can expand: spec, result")
    return asked


def parse_labels(values: list[str] | None) -> dict[str, str]:
    """?metadata=KEY:VALUE (repeatable) -> {KEY: VALUE}; the value may hold more colons."""
    wanted = {}
    for value in values or []:
        key, colon, label = value.partition(":")
        if not colon or not re.match(LABEL_KEY, key):
            raise _query_error("metadata", f"{value!r} is not KEY:VALUE with a label key, e.g. metadata=team:vision")
        wanted[key] = label
    return wanted


# The list's columns: never the result unless asked (a report per job); the spec is read (a queued
# job's wait may depend on its device) but shown only when asked.
_LIST_COLUMNS = [c for c in Job.__table__.columns if c.name != "result"]


@router.get(
    "/jobs",
    response_model=JobPage,
    summary="List jobs, newest first",
    description="Each job without its spec and result (null) unless `expand` asks for them; "
    "`metadata=KEY:VALUE` (repeatable: every one must match) keeps the jobs submitted with those labels.",
)
def list_jobs(
    caller: CallerDep,
    status_: Annotated[
        list[jobs.Status] | None, Query(alias="status", description="Only jobs in these states.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    metadata: Annotated[
        list[str] | None,
        Query(
            description="KEY:VALUE: only jobs with this label; repeatable, all must match.", examples=["team:vision"]
        ),
    ] = None,
    expand: Annotated[
        list[str] | None,
        Query(description="spec, result (comma-separated or repeated): embed them in each job.", examples=["spec"]),
    ] = None,
) -> JobPage:
    """The tenant's jobs, newest first, a page at a time: pass `next_cursor` as `cursor`
    for the next page. `status` may be given several times.
    """
    shown, wanted = parse_expand(expand), parse_labels(metadata)
    columns = _LIST_COLUMNS + ([Job.result] if "result" in shown else [])
    query = select(*columns).where(Job.tenant_id == caller.tenant_id)
    if status_:
        query = query.where(Job.status.in_([s.value for s in status_]))
    for key, value in wanted.items():
        query = query.where(Job.labels[key].as_string() == value)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))
    with session_scope(readonly=True) as session:
        page = session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).all()
        workers = recent_workers(session) if any(j.status == jobs.Status.QUEUED for j in page) else None
    more = len(page) > limit
    page = page[:limit]
    return JobPage(
        items=[job_out(j, with_metrics=False, workers=workers, expand=shown) for j in page],
        next_cursor=_encode_cursor(page[-1]) if more else None,
    )


@polled.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="A job's state, progress and result",
    responses=problems(404),
    # The key is checked in the route's own unit of work (see `polled`), as `authenticate` does.
    openapi_extra={"security": [{API_KEY_SCHEME: []}]},
)
async def get_job(job_id: str, request: Request) -> Response:
    """The job's status (queued, running, succeeded, failed, cancelled), phase, progress and
    ETA, its latest epoch's metrics while it trains; `result`, the report (teacher vs KD student
    vs scratch baseline, mean and std over seeds, the verdict), once it succeeded; `error`,
    `error_code` and `error_field` when it failed.
    """
    # The JSON of JobOut, made once here: a returned Response is not validated again.
    pool = request.app.state.async_reads
    if pool is None:  # SQLite, or auth off: the threaded path
        body = await run_in_threadpool(read_as_caller, request, _job_json, job_id)
    else:
        body = await _job_json_async(pool, request, job_id)
    return Response(body, media_type="application/json")


# Built once, and a row rather than an ORM object: the columns JobOut shows, nothing more.
# `estimate` too: the worker's end time and epoch budget, which eta_seconds and epochs are made of;
# the labels (JobOut.metadata), which are not a field of that name.
_JOB_COLUMNS = [c for c in Job.__table__.columns if c.name in JobOut.model_fields or c.name in ("estimate", "labels")]
_JOB_ROW = select(Job.tenant_id, *_JOB_COLUMNS).where(Job.id == bindparam("job_id"))
KEY_AND_JOB = key_and_job_statement(_JOB_COLUMNS)


async def _job_json_async(pool: AsyncConnectionPool, request: Request, job_id: str) -> str:
    """The key and the job in one round trip, in the event loop (app/async_reads.py)."""
    key = required_key(request)
    read = request.app.state.key_and_job
    values = await pool.fetch_one(read, {"sha256": key_sha256(key), "job_id": job_id})
    if values is None:
        raise unknown_key(request)
    row = read.row(values)
    rate_limited(request, Caller(row.key_tenant_id, row.key_id))
    if row.id is None:
        raise not_found("Job", job_id)
    workers = None
    if row.status == jobs.Status.QUEUED:  # what it waits for: usually read within the last second
        workers = cached_workers() or await run_in_threadpool(read_retrying, recent_workers)
    # JobOut is a function of the row, the ETA's countdown and the live workers: equal inputs, equal JSON.
    made_from, bodies = (values, _eta_seconds(row), workers), request.app.state.job_bodies
    if (body := bodies.get(row.id, made_from)) is None:
        body = job_out(row, workers=workers).model_dump_json()
        bodies.put(row.id, made_from, body)
    return body


def _job_json(connection: Connection, caller: Caller, job_id: str) -> str:
    job = connection.execute(_JOB_ROW, {"job_id": job_id}).first()
    if job is None or job.tenant_id != caller.tenant_id:
        raise not_found("Job", job_id)
    workers = recent_workers(connection) if job.status == jobs.Status.QUEUED else None
    return job_out(job, workers=workers).model_dump_json()


def read_job(caller: Caller, job_id: str) -> JobOut:
    """The job as GET /v1/jobs/{id} shows it, for a caller known already (the dashboard)."""
    with session_scope(readonly=True) as session:
        return job_out_now(session, get_job_or_404(session, caller, job_id))


def job_out_now(session: Session, job: Job) -> JobOut:
    """job_out with what a queued job waits for (one more read, for queued jobs only)."""
    return job_out(job, workers=recent_workers(session) if job.status == jobs.Status.QUEUED else None)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job",
    description="A queued job is cancelled at once. A running job is flagged (202) and stops "
    "at the next batch boundary, keeping its metrics so far. A job that already succeeded "
    "or failed cannot be cancelled (409).",
    responses={
        202: {"description": "Cancellation requested; the worker will stop.", "model": JobOut},
        **problems(404, 409),
    },
)
def cancel_job(job_id: str, response: Response, caller: CallerDep) -> JobOut:
    with session_scope() as session:
        get_job_or_404(session, caller, job_id)
        job = jobs.request_cancel(session, job_id)
        if job is None:
            raise not_found("Job", job_id)
        session.commit()
    if job.status in (jobs.Status.SUCCEEDED, jobs.Status.FAILED):
        raise Problem(409, "Job already ended", f"The job {job.status}; there is nothing to cancel.")
    if job.status == jobs.Status.RUNNING:
        response.status_code = status.HTTP_202_ACCEPTED
    return job_out(job)


@router.delete(
    "/jobs/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an ended job",
    description="A succeeded, failed or cancelled job goes with its events, metrics and files (the "
    "student, the report, a kept teacher, checkpoints). A queued or running job cannot be deleted "
    "(409: cancel it first), nor a trial of a running sweep, nor a job whose kept teacher another "
    "active job names.",
    responses=problems(404, 409),
)
def delete_job(job_id: str, caller: CallerDep) -> Response:
    with session_scope() as session:
        paths = deletion.delete_job(session, get_job_or_404(session, caller, job_id))
    deletion.remove_paths(paths)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/jobs/{job_id}/events",
    response_model=list[EventOut],
    summary="A job's events",
    responses=problems(404),
)
def job_events(
    job_id: str,
    caller: CallerDep,
    after: Annotated[int | None, Query(description="Only events with a larger id.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[EventOut]:
    """What happened, in order: phases started and ended, early stops, warnings, the verdict.
    Pass the last event's id as `after` to get only newer ones.
    """
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    with session_scope(readonly=True) as session:
        get_job_or_404(session, caller, job_id)
        rows = session.scalars(query.order_by(JobEvent.id).limit(limit))
        return [EventOut(id=e.id, at=e.at, phase=e.phase, level=e.level, message=e.message) for e in rows]


@router.get(
    "/jobs/{job_id}/metrics",
    response_model=MetricsOut,
    summary="Per-epoch metric series",
    responses=problems(404),
)
def job_metrics(
    job_id: str,
    caller: CallerDep,
    phase: Annotated[str | None, Query(examples=["student"])] = None,
    name: Annotated[str | None, Query(examples=["val_accuracy"])] = None,
) -> MetricsOut:
    """Per-epoch series (train/val loss and accuracy, learning rate) for each phase and run
    (teacher, each student seed, each baseline seed); filter with `phase` and `name`.
    """
    query = select(JobMetric.phase, JobMetric.run, JobMetric.name, JobMetric.epoch, JobMetric.value).where(
        JobMetric.job_id == job_id
    )
    if phase:
        query = query.where(JobMetric.phase == phase)
    if name:
        query = query.where(JobMetric.name == name)
    series: dict[tuple[str, str, str], MetricSeries] = {}
    with session_scope(readonly=True) as session:
        get_job_or_404(session, caller, job_id)
        rows = session.execute(query.order_by(JobMetric.id)).all()
    for m in rows:
        s = series.setdefault(
            (m.phase, m.run, m.name),
            MetricSeries(phase=m.phase, run=m.run, name=m.name, epochs=[], values=[]),
        )
        s.epochs.append(m.epoch)
        s.values.append(m.value)
    return MetricsOut(series=list(series.values()))


def artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut.model_validate(artifact)


@router.get(
    "/jobs/{job_id}/artifacts",
    response_model=list[ArtifactOut],
    summary="A job's output files",
    responses=problems(404),
)
def job_artifacts(job_id: str, caller: CallerDep) -> list[ArtifactOut]:
    """The job's files once it succeeded: the student (student.onnx, student.safetensors), the
    report (report.json, report.html, curves.png). Download each from its `content_url`; its
    sha256 is given to check the download.
    """
    with session_scope(readonly=True) as session:
        get_job_or_404(session, caller, job_id)
        rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.filename))
        return [artifact_out(a) for a in rows]
