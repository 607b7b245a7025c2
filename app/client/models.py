"""What the API answers, typed for clients: jobs, events, metrics, artifacts, the report, the catalog.

These mirror the API's response bodies (app/api/schemas.py) without importing the server: a client
install has no FastAPI or SQLAlchemy. Every model ignores fields it does not know, so a newer server
never breaks an older client; a test checks they read what a real server sends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class LatestMetrics(_Wire):
    phase: str
    run: str
    epoch: int
    values: dict[str, float | None] = {}


class RunEpochs(_Wire):
    phase: str
    name: str
    epoch: int
    budget: int


class EpochBudget(_Wire):
    """done of budget (early stops shrink it), of `planned` as the spec planned it."""

    done: int
    budget: int
    planned: int
    run: RunEpochs | None = None


class Scores(BaseModel):
    """One model's measurements (test_accuracy, train_accuracy, test_ece, parameters, latency_ms, ...);
    every field the report carries is kept (extra="allow") and read with .get()."""

    model_config = ConfigDict(extra="allow")

    def get(self, key: str, default: Any = None) -> Any:
        return (self.model_extra or {}).get(key, default)


class SeedRuns(_Wire):
    """A student or baseline: one row per seed, with the mean and sample std over the seeds."""

    runs: list[dict[str, Any]] = []
    mean: Scores = Field(default_factory=Scores)
    std: Scores = Field(default_factory=Scores)
    arch: dict[str, Any] | None = None


class ReportSummary(_Wire):
    student_vs_baseline_test_accuracy: float | None = None
    student_vs_teacher_test_accuracy: float | None = None
    compression: float | None = None
    speedup: float | None = None


class Exported(_Wire):
    seed: int | None = None
    selected_by: str | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    files: dict[str, str] = {}


class Report(_Wire):
    """A succeeded job's result (also its report.json): teacher vs student vs scratch baseline."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    dataset: dict[str, Any] = {}
    method: dict[str, Any] = {}
    seeds: list[int] = []
    teacher: Scores = Field(default_factory=Scores)
    student: SeedRuns = Field(default_factory=SeedRuns)
    baseline: SeedRuns | None = None
    exported: Exported | None = None
    summary: ReportSummary = Field(default_factory=ReportSummary)


class JobError(_Wire):
    """Why a job failed: what kind (code), what happened and what to do (message), and the spec field
    at fault (field, a dotted path) when there is one."""

    code: str = "unknown"
    message: str = ""
    field: str | None = None

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.message} [{self.code}]{where}"


class Job(_Wire):
    id: str
    name: str | None = None
    status: Status
    phase: str | None = None
    progress: float = 0.0
    eta_seconds: float | None = None  # as of when the job was read: counts down from there
    epochs: EpochBudget | None = None
    cancel_requested: bool = False
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    status_detail: str | None = None  # what a queued job waits for
    error: JobError | None = None
    metadata: dict[str, str] = {}
    latest_metrics: LatestMetrics | None = None
    result: Report | None = None  # in a list only when asked for (expand)
    spec: dict[str, Any] | None = None  # in a list only when asked for (expand)

    @field_validator("error", mode="before")
    @classmethod
    def _older_servers(cls, value: Any) -> Any:
        """A server before structured errors sent the message alone."""
        return {"message": value} if isinstance(value, str) else value

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def error_message(self) -> str | None:
        return self.error.message if self.error else None


class JobPage(_Wire):
    items: list[Job]
    next_cursor: str | None = None


class Event(_Wire):
    id: int
    at: datetime
    phase: str | None = None
    level: str = "info"
    message: str


class MetricSeries(_Wire):
    phase: str
    run: str
    name: str
    epochs: list[int]
    values: list[float | None]


class Metrics(_Wire):
    series: list[MetricSeries]


class Artifact(_Wire):
    id: str
    job_id: str | None = None
    kind: str
    format: str
    name: str | None = None
    filename: str
    media_type: str
    size_bytes: int
    sha256: str
    inspection: dict[str, Any] | None = None
    created_at: datetime
    content_url: str


class CatalogEntry(_Wire):
    description: str | None = None
    parameters: dict[str, dict[str, Any]] = {}


class Catalog(_Wire):
    datasets: dict[str, dict[str, Any]] = {}
    architectures: dict[str, CatalogEntry] = {}
    methods: dict[str, CatalogEntry] = {}
    stages: dict[str, str] = {}
    uploads: dict[str, Any] = {}
    phases: list[str] = []
    example_spec: dict[str, Any] | None = None


class Sweep(_Wire):
    """A sweep: its trials (index, config, job_id, status), progress and, once ended, the result
    (leaderboard, winner chosen on validation, budget, pareto fronts)."""

    id: str
    name: str | None = None
    status: str
    cancel_requested: bool = False
    created_at: datetime
    finished_at: datetime | None = None
    progress: dict[str, Any] = {}
    trials: list[dict[str, Any]] = []
    result: dict[str, Any] | None = None
    leaderboard_so_far: list[dict[str, Any]] | None = None

    @property
    def ended(self) -> bool:
        return self.status != "running"

    @property
    def leaderboard(self) -> list[dict[str, Any]]:
        """The final leaderboard once ended, else the standings so far."""
        return (self.result or {}).get("leaderboard") or self.leaderboard_so_far or []
