"""Response bodies of the HTTP API (requests use app.contract.spec.JobSpec)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    computed_field,
    field_validator,
)

from app.contract.report import Report
from app.contract.spec import JobSpec
from app.jobs import Status

log = logging.getLogger(__name__)

JOB_ID_EXAMPLE = "0b7c6a52-3f0e-4a55-9d0c-2b1f7d2d8a11"

# Labels like OpenAI's fine-tuning `metadata`: at most 16, keys of at most 64 characters that a
# query string carries as they are, values of at most 512.
MAX_LABELS = 16
LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,63}$"
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=64)]
LabelValue = Annotated[str, StringConstraints(max_length=512)]
METADATA_EXAMPLE = {"team": "vision", "ticket": "ML-142"}


class JobSubmission(JobSpec):
    """A job spec, and the client's labels for it (kept with the job, not given to the engine)."""

    metadata: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description=f"Up to {MAX_LABELS} string labels of your own (keys: letters, digits and _ . - /, "
        "at most 64 characters, starting with a letter or digit; values: at most 512 characters). "
        "Filter on them with GET /v1/jobs?metadata=KEY:VALUE.",
        examples=[METADATA_EXAMPLE],
    )


class JobError(BaseModel):
    code: str = Field(
        description="What kind of failure: time_limit_exceeded, teacher_deadline_exceeded, worker_lost, "
        "spec_not_runnable, artifact_unavailable, teacher_unusable, out_of_memory, out_of_space, "
        "internal_error...",
        examples=["time_limit_exceeded"],
    )
    message: str = Field(
        description="What happened and what to do, in one line; never a server path or a traceback.",
        examples=["time limit exceeded (limits.time_limit_seconds)"],
    )
    field: str | None = Field(
        description="The spec field at fault (a dotted path), when there is one.",
        examples=["limits.time_limit_seconds"],
    )


class RunEpochs(BaseModel):
    phase: str = Field(description="The run's phase.", examples=["teacher"])
    name: str = Field(description="The run's name in its phase.", examples=["teacher"])
    epoch: int = Field(description="Epochs of this run done.", examples=[14])
    budget: int = Field(description="This run's epoch budget (it may stop earlier: patience).", examples=[60])


class EpochBudget(BaseModel):
    done: int = Field(description="Epochs trained (or restored) so far, over every run.", examples=[74])
    budget: int = Field(
        description="Where `done` ends: finished runs at the epochs they ran (an early stop shrinks it), "
        "the others at their budget.",
        examples=[384],
    )
    planned: int = Field(description="Every trained run's epoch budget, as the spec planned it.", examples=[420])
    run: RunEpochs | None = Field(None, description="The run under way; null between runs.")


class JobOut(BaseModel):
    id: str = Field(description="The job's id.", examples=[JOB_ID_EXAMPLE])
    name: str | None = Field(description="The spec's label.", examples=["mnist1d cnn -> mlp"])
    status: Status = Field(description="queued, running, succeeded, failed or cancelled.", examples=["running"])
    phase: str | None = Field(
        description="What a running job does now: teacher, soft_targets, student, baseline, evaluate, export.",
        examples=["student"],
    )
    progress: float = Field(description="Share of the job done, 0..1.", examples=[0.42])
    eta_seconds: float | None = Field(
        None,
        description="Estimated seconds left while running: each run priced at its measured seconds per "
        "epoch (early stopping expected), counting down between the worker's reports; null until "
        "an epoch of this attempt was measured.",
        examples=[95.0],
    )
    epochs: EpochBudget | None = Field(None, description="The job's epoch budget and how much of it is done.")
    cancel_requested: bool = Field(
        description="A cancel was asked for; the worker stops at the next batch.", examples=[False]
    )
    attempts: int = Field(description="How many times a worker started the job.", examples=[1])
    created_at: datetime = Field(description="When the job was submitted (UTC).")
    started_at: datetime | None = Field(description="When a worker first started it.")
    finished_at: datetime | None = Field(description="When it reached a final status.")
    heartbeat_at: datetime | None = Field(description="Last sign of life from the worker running the job.")
    status_detail: str | None = Field(
        None,
        description="What a queued job waits for: a worker (none has been seen lately, see /readyz), "
        "a worker with a GPU, or a free worker. Null in the other states.",
        examples=["waiting for a worker: none has been seen in the last 30 s"],
    )
    error: JobError | None = Field(None, description="Why the job failed (null unless it failed).")
    error_code: str | None = Field(
        None, deprecated=True, description="The same as error.code (kept for older clients).", examples=[None]
    )
    error_field: str | None = Field(
        None, deprecated=True, description="The same as error.field (kept for older clients).", examples=[None]
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="The labels the job was submitted with.", examples=[METADATA_EXAMPLE]
    )
    latest_metrics: dict[str, Any] | None = Field(
        None,
        description="The last epoch reported: phase, run, epoch and its values.",
        examples=[{"phase": "student", "run": "seed=0", "epoch": 7, "values": {"val_accuracy": 0.71}}],
    )
    result: Report | None = Field(
        None,
        description="When succeeded: the report (teacher vs student vs scratch baseline, "
        "mean and std over seeds, size, latency, the verdict). Also downloadable as report.json. "
        "In GET /v1/jobs only with ?expand=result.",
        examples=[None],
    )
    spec: dict[str, Any] | None = Field(
        None,
        description="The job spec as accepted, defaults filled in. In GET /v1/jobs only with ?expand=spec.",
    )

    @field_validator("result", mode="wrap")
    @classmethod
    def _stored_report(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Report | None:
        # A stored report the model no longer describes (an older worker's) is still shown, as it is.
        try:
            return handler(value)
        except ValidationError as exc:
            if not isinstance(value, dict):
                raise
            log.warning("a job's report does not match app/contract/report.py, shown unchecked: %s", exc)
            return Report.unchecked(value)


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page.",
        examples=["MjAyNi0xMS0yN1QyMToxMDowMCswMDowMHwwYjdj"],
    )


class EventOut(BaseModel):
    id: int = Field(description="Increasing; pass the last one as ?after= to get only newer events.")
    at: datetime
    phase: str | None = Field(examples=["teacher"])
    level: str = Field(examples=["info"])
    message: str = Field(examples=["teacher stopped early at epoch 31 (best epoch 21)"])


class MetricSeries(BaseModel):
    phase: str = Field(examples=["student"])
    run: str = Field(description="Which run of the phase, e.g. one seed.", examples=["seed=0"])
    name: str = Field(examples=["val_accuracy"])
    epochs: list[int] = Field(examples=[[1, 2, 3]])
    values: list[float] = Field(examples=[[0.41, 0.55, 0.61]])


class MetricsOut(BaseModel):
    series: list[MetricSeries]


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(examples=["5d41a0c1-77a3-4a8e-b38c-0e3f4cf2b8f7"])
    job_id: str | None = Field(examples=[JOB_ID_EXAMPLE])
    kind: str = Field(
        description="A job's output: student or report. An upload: teacher or dataset.", examples=["student"]
    )
    format: str = Field(description="onnx, safetensors, json; uploads also npz, csv, parquet, zip.", examples=["onnx"])
    name: str | None = Field(None, description="An upload's label, as given.", examples=["resnet teacher"])
    filename: str = Field(examples=["student.onnx"])
    media_type: str = Field(examples=["application/onnx"])
    size_bytes: int = Field(examples=[21873])
    sha256: str = Field(examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
    inspection: dict[str, Any] | None = Field(
        None,
        description="Uploads: what inspection found (teacher: input shape, outputs, classes; "
        "dataset: rows, columns, input shape, classes). Jobs are checked against it.",
        examples=[
            {
                "format": "onnx",
                "input_shape": [64],
                "num_classes": 10,
                "output": "probabilities",
                "output_kind": "probabilities",
            }
        ],
    )
    created_at: datetime

    @computed_field(examples=["/v1/artifacts/5d41a0c1-77a3-4a8e-b38c-0e3f4cf2b8f7/content"])  # type: ignore[prop-decorator]  # mypy does not see through it (pydantic's docs)
    @property
    def content_url(self) -> str:
        return f"/v1/artifacts/{self.id}/content"


class ProblemFieldError(BaseModel):
    pointer: str = Field(description="JSON pointer to the wrong field.", examples=["/method/temperature"])
    detail: str = Field(examples=["Input should be greater than 0"])
    type: str = Field(examples=["greater_than"])
    in_: str = Field(alias="in", description="body, query, path or header.", examples=["body"])
    line: int | None = Field(None, description="Malformed JSON (400): the line where parsing stopped.")
    column: int | None = Field(None, description="Malformed JSON (400): the column where parsing stopped.")


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["https://distill.dev/problems/invalid-request"])
    title: str = Field(examples=["The request is not valid"])
    status: int = Field(examples=[422])
    detail: str = Field(description="What went wrong and what to do.")
    instance: str = Field(description="The request path.", examples=["/v1/jobs"])
    errors: list[ProblemFieldError] | None = Field(None, description="Each wrong field.")


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is not a number of jobs

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", examples=["acme"])
    max_concurrent_jobs: int | None = Field(
        None, ge=1, le=10_000, description="Queued + running jobs at once; null: the service default."
    )


class TenantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    max_concurrent_jobs: int | None
    created_at: datetime


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # a name is a string, not coerced

    name: str | None = Field(None, max_length=100, description="A label: who or what uses the key.", examples=["ci"])


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    name: str | None
    prefix: str = Field(description="The key's first characters, to tell keys apart.", examples=["dk_Q2x9aB1c"])
    created_at: datetime
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


_WHY = {
    400: "The body cannot be parsed (not UTF-8 JSON); `errors` gives the line and column.",
    401: "No API key, or an unknown or revoked one.",
    403: "Not allowed (admin routes disabled).",
    404: "No such resource (or another tenant's).",
    408: "The body stopped arriving (DISTILL_BODY_TIMEOUT_SECONDS); nothing was kept.",
    409: "The request conflicts with the resource's state.",
    413: "The body (an upload, a JSON spec) is larger than the service accepts.",
    415: "The body is not of a media type this route takes (a JSON body needs Content-Type: application/json).",
    422: "The request is not valid; `errors` names each wrong field.",
    429: "Too many requests for this key, or the tenant's concurrent-job cap; see Retry-After.",
    507: "The artifact store is full; nothing was kept.",
    503: "A dependency (database, queue) is unavailable; retry after Retry-After seconds.",
}


def problems(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the problem responses a route can give."""
    return {
        code: {
            "model": ProblemOut,
            "description": _WHY[code],
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}},
        }
        for code in codes
    }
