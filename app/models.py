"""SQLAlchemy tables. Events and metrics are rows, not a JSON blob on the job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """Who owns jobs and artifacts. Another tenant's ids answer 404, like ids that do not exist."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # None: the service default (DISTILL_MAX_CONCURRENT_JOBS).
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    # The estimated cost one job of this tenant may have (None: DISTILL_MAX_JOB_FLOPS).
    max_job_flops: Mapped[float | None] = mapped_column(Float)
    # Bumped by every submission as its first statement: that write locks this row (PostgreSQL)
    # or the database (SQLite) until commit, so a tenant's submissions are serialised and the
    # concurrent-job cap cannot be overrun by two requests counting at the same time.
    submissions: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """A tenant's API key. Only its SHA-256 is stored (keys are 256-bit random, so no salt or
    slow hash is needed); the prefix is what people see to tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    # Written only by app/jobs.py: the state machine.
    status: Mapped[str] = mapped_column(String(16), index=True)
    phase: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)  # a message a person can act on
    # What kind of failure (e.g. time_limit_exceeded) and the spec field at fault, if any.
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_field: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # unique per tenant
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Lease: the worker that holds a running job, until when. Every write of that
    # worker checks it still holds it; an expired lease means the worker is gone.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the job was last handed to the broker (the sweeper re-sends lost ones).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last epoch's metrics ({"phase", "run", "epoch", "values"}), written with them.
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The worker's estimate, written with the progress: {"ends_at": ISO time or null (nothing
    # measured yet), "epochs": {"done", "budget", "planned", "run"}} (worker/distill/eta.py).
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A sweep's trial: which sweep, which of its trials (each trial becomes one job, once).
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    sweep_trial: Mapped[int | None] = mapped_column(Integer)
    # The client's labels (the API's `metadata`: string keys and values), filtered on by GET /v1/jobs.
    labels: Mapped[dict[str, str] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        UniqueConstraint("sweep_id", "sweep_trial", name="uq_jobs_sweep_trial"),
    )


class Sweep(Base):
    """Many trials from one request (app/sweeps/): its trials are ordinary jobs, released a
    few at a time; the leaderboard is computed from their reports when the last one ends."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)  # running | succeeded | failed | cancelled
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the request as admitted
    # [{"index", "config", "spec"}]: every trial, expanded and admitted at submission.
    trials: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Trial indexes stopped by the early-stopping rule, and the trial whose teacher the others name.
    stopped: Mapped[list[int]] = mapped_column(JSON, default=list)
    teacher_job_id: Mapped[str | None] = mapped_column(String(36))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Worker(Base):
    """A worker process's heartbeat (worker/heartbeat.py): what it is, which devices its runner
    has, when it was last heard from. One not seen for `worker_seen_seconds` counts as gone."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the Celery node name
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(200))  # jobs of this queue are the ones it takes
    # [{"type": "cpu", "name": ..., "count": n}, {"type": "cuda", "index": 0, "name": "NVIDIA H200"}]
    devices: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    phase: Mapped[str | None] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)


class JobMetric(Base):
    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(32))
    run: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_job_metrics_job_phase_run", "job_id", "phase", "run", "epoch"),
        Index("ix_job_metrics_job_id_id", "job_id", "id"),
    )


class Artifact(Base):
    """A stored file: a job's output (job_id set) or a client's upload (job_id None)."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # student, report | teacher, dataset (uploads)
    format: Mapped[str] = mapped_column(String(32))  # onnx, safetensors, json | npz, csv, parquet, zip
    name: Mapped[str | None] = mapped_column(String(200))  # uploads: the client's label
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    storage_key: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Uploads: what inspection found (shapes, classes, rows...); jobs check against it.
    inspection: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Uploads: sha256 of the options it was inspected with (format, label_column, output).
    options_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # The same content uploaded twice by one tenant is stored once.
        Index(
            "uq_artifacts_upload_content",
            "tenant_id",
            "kind",
            "sha256",
            "options_sha256",
            unique=True,
            sqlite_where=text("job_id IS NULL"),
            postgresql_where=text("job_id IS NULL"),
        ),
    )


class TeacherBuild(Base):
    """A teacher trained for a tenant, by the content hash of its training config and data
    (worker/distill/cache.py teacher_key): claimed by the job that trains it (a conditional
    insert, so two jobs never both train it), then `ready` with its weights as an artifact."""

    __tablename__ = "teacher_builds"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # training | ready
    job_id: Mapped[str | None] = mapped_column(String(36))  # the job training it, or that trained it
    artifact_id: Mapped[str | None] = mapped_column(String(36))  # the safetensors weights, once ready
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TeacherOutput(Base):
    """A cached teacher output file (logits or stage features over one split), per tenant,
    keyed by (teacher sha256, data sha256, preprocessing, split); least recently used first out."""

    __tablename__ = "teacher_outputs"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    storage_key: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class TeacherCacheStats(Base):
    """Counters of the teacher-output cache per tenant, for /metrics."""

    __tablename__ = "teacher_cache_stats"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    hits: Mapped[int] = mapped_column(BigInteger, default=0)
    misses: Mapped[int] = mapped_column(BigInteger, default=0)
    corrupt: Mapped[int] = mapped_column(BigInteger, default=0)
    evictions: Mapped[int] = mapped_column(BigInteger, default=0)
    bypassed: Mapped[int] = mapped_column(BigInteger, default=0)  # runs that augmentation kept off the cache
    teachers_reused: Mapped[int] = mapped_column(BigInteger, default=0)
