"""Settings from the environment (prefix DISTILL_), shared by the API and the worker.

The defaults are the embedded mode: a SQLite file, a local artifact folder and a
Celery transport that keeps messages in a folder, so one machine needs no server.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_")

    home: Path = Field(Path("var"), description="Root of the embedded mode's files.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means a SQLite file under home.")
    broker_url: str = Field(
        "filesystem://",
        description="Celery broker: redis://... when distributed; filesystem:// keeps "
        "messages in a folder under home and needs no server.",
    )
    queue: str = Field("train", description="Celery queue the training jobs go to.")
    artifact_dir: Path | None = Field(None, description="Where job outputs are stored.")
    data_cache_dir: Path | None = Field(None, description="Cache of generated datasets.")
    heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a worker renews the lease on its running job, and records that it is "
        "alive with its devices (the workers table).",
    )
    worker_seen_seconds: float = Field(
        30.0,
        gt=0,
        description="A worker not heard from for this long is gone: /readyz says when none is live, "
        "queued jobs say they wait for a worker, and jobs asking for CUDA are refused unless a live "
        "worker has a GPU.",
    )
    worker_status_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="A queued job's status_detail (polls, lists) reads the live workers at most this "
        "often per API process; submissions and /readyz always read them afresh.",
    )
    lease_seconds: float = Field(60.0, gt=0, description="A running job whose lease is this old has lost its worker.")
    sweep_seconds: float = Field(15.0, gt=0, description="How often each worker looks for lost and unsent jobs.")
    resend_after_seconds: float = Field(
        120.0, gt=0, description="A job queued this long without a worker is sent again."
    )
    visibility_timeout_seconds: int = Field(
        3600,
        gt=0,
        description="Redis: an unacknowledged task is delivered again after this long. "
        "Duplicates are harmless (the lease), so this only bounds how late a lost "
        "message is redelivered; the sweeper usually acts first.",
    )
    db_retry_seconds: float = Field(
        120.0, ge=0, description="How long a worker retries its database writes in an outage."
    )
    # --- the job runner (worker/runner.py) ---
    stop_grace_seconds: float = Field(
        15.0,
        gt=0,
        description="A job asked to stop (time limit, cancel, shutdown) has this long "
        "to stop at a batch boundary before its runner process is sent SIGTERM.",
    )
    kill_grace_seconds: float = Field(
        5.0,
        gt=0,
        description="After SIGTERM, the runner process gets this long before SIGKILL.",
    )
    teacher_batch_seconds: float = Field(
        60.0,
        gt=0,
        description="Deadline of one batch of a brought ONNX teacher; a teacher that "
        "exceeds it is stopped (onnxruntime RunOptions.terminate) and the job fails saying so.",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="Threads torch uses in a worker; 0: the CPUs the worker may run on (os.sched_getaffinity).",
    )
    checkpoint_seconds: float = Field(
        30.0,
        ge=0,
        description="At least this long between two checkpoints of a training run (and one at each "
        "run's end); 0: every epoch. A killed worker loses at most this, plus the epoch under way.",
    )
    report_seconds: float = Field(
        0.5,
        gt=0,
        description="A running job's metrics and progress are buffered and written to the database "
        "this often, by one thread, off the training loop.",
    )
    broker_poll_seconds: float = Field(
        0.05,
        gt=0,
        description="filesystem:// broker: how often an idle worker looks for a message.",
    )
    # --- tenants, keys, limits ---
    auth: Literal["keys", "off"] = Field(
        "keys",
        description="keys: every /v1 route needs an API key (Authorization: Bearer <key> or "
        "X-API-Key). off: no keys; every request acts as the tenant 'local' (one trusted user).",
    )
    admin_key: SecretStr = Field(
        SecretStr(""), description="Key of the admin routes (/v1/admin/...); empty disables them."
    )
    max_concurrent_jobs: int = Field(
        8, ge=1, description="Queued + running jobs a tenant may have (a tenant's own cap wins)."
    )
    rate_limit_per_minute: int = Field(
        600,
        ge=0,
        description="Requests per minute per API key (0: no limit); bursts up to "
        "rate_limit_burst. Counted in each API process.",
    )
    rate_limit_burst: int = Field(60, ge=1, description="Requests a key may make at once.")
    max_upload_bytes: int = Field(
        512 << 20, ge=1, description="Largest upload (POST /v1/artifacts), enforced while streaming."
    )

    # --- load and bodies ---
    api_threads: int = Field(
        40,
        ge=4,
        description="Threads that run the API's blocking work; the database pool "
        "holds as many connections (opened lazily), so no thread waits for a connection.",
    )
    async_read_connections: int = Field(
        4,
        ge=1,
        description="Connections of the event loop's pool for the polled job read (PostgreSQL): "
        "each is held for one round trip only.",
    )
    db_pool_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request that cannot get a database connection this long answers 503 instead of waiting.",
    )
    max_json_body_bytes: int = Field(
        1 << 20, ge=1024, description="Largest JSON body (a job spec), enforced while it streams (413)."
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A request body (JSON or upload) that sends nothing for this "
        "long is dropped (408); an upload's partial file is removed.",
    )
    max_concurrent_uploads_per_key: int = Field(
        4, ge=1, description="Uploads one API key may stream at once (429 beyond), per API process."
    )
    auth_failures_per_minute: int = Field(
        30,
        ge=0,
        description="Requests with a wrong API key allowed per client address and "
        "minute (0: no limit), in bursts of auth_failures_burst; then 429.",
    )
    auth_cache_seconds: float = Field(
        0.0,
        ge=0,
        description="How long an API process trusts a key it has checked (0: check "
        "every request). A key revoked through another process (the admin command, another "
        "replica) stops working within this time; revoked over this process's admin route, at once.",
    )
    auth_failures_burst: int = Field(10, ge=1, description="Wrong keys a client address may send at once.")
    inspect_memory_bytes: int = Field(
        2 << 30,
        ge=256 << 20,
        description="Address space of the process that inspects an upload "
        "(runs a teacher on probe inputs, converts a dataset); beyond it the upload is refused (422).",
    )
    inspect_seconds: float = Field(
        60.0,
        gt=0,
        description="Time the inspection of one upload may take; then its process is "
        "killed and the upload refused (422).",
    )
    stale_upload_seconds: float = Field(
        3600.0,
        gt=0,
        description="Partial upload files older than this (their API process died "
        "mid-upload) are removed when an API process starts.",
    )
    # --- admission: what one job may cost (app/admission.py) ---
    default_time_limit_seconds: int = Field(
        6 * 3600,
        ge=1,
        le=7 * 24 * 3600,
        description="limits.time_limit_seconds of a job that names none: every job ends.",
    )
    max_model_parameters: int = Field(
        50_000_000, ge=1, description="Largest model (teacher or student) a job may train, in parameters."
    )
    max_batch_activation_bytes: int = Field(
        8 << 30, ge=1, description="Estimated activation memory of one training batch a job may need."
    )
    max_job_flops: float = Field(
        1e16,
        gt=0,
        description="Estimated floating-point operations of a whole job (6 x parameters x "
        "examples x epochs over every run); a tenant's own max_job_flops wins.",
    )
    stream_poll_seconds: float = Field(
        1.0, gt=0, description="How often an open /stream looks for news (a short read, no session held between)."
    )
    stream_heartbeat_seconds: float = Field(
        15.0, gt=0, description="A comment line on a quiet /stream this often, so proxies keep it open."
    )
    stream_max_seconds: float = Field(
        3600.0, gt=0, description="A /stream ends after this long; the client resumes it with Last-Event-ID."
    )
    max_streams: int = Field(256, ge=1, description="Open /stream connections per API process; more get 503.")
    metrics_key: SecretStr = Field(
        SecretStr(""),
        description="Key of /metrics' job counts (Authorization: Bearer); without "
        "it /metrics shows only the API process's own figures.",
    )
    metrics_cache_seconds: float = Field(
        5.0, ge=0, description="/metrics reads job counts from the database at most this often."
    )
    teacher_cache_bytes: int = Field(
        1 << 30,
        ge=0,
        description="Each tenant's cache of teacher outputs (logits) holds at most this many bytes; "
        "the least recently used files go first. 0 turns the cache off.",
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'distill.db').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.home / "artifacts").resolve()

    @property
    def resolved_data_cache_dir(self) -> Path:
        return (self.data_cache_dir or self.home / "cache").resolve()

    @property
    def broker_dir(self) -> Path:
        return (self.home / "broker").resolve()

    @property
    def local_key_file(self) -> Path:
        """Where the embedded default writes the key it creates on first start (mode 0600)."""
        return (self.home / "api-key").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
