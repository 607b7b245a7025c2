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
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means a SQLite file under home."
    )
    broker_url: str = Field(
        "filesystem://",
        description="Celery broker: redis://... when distributed; filesystem:// keeps "
        "messages in a folder under home and needs no server.",
    )
    queue: str = Field("train", description="Celery queue the training jobs go to.")
    artifact_dir: Path | None = Field(None, description="Where job outputs are stored.")
    data_cache_dir: Path | None = Field(None, description="Cache of generated datasets.")
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often a worker renews the lease on its running job."
    )
    lease_seconds: float = Field(
        60.0, gt=0, description="A running job whose lease is this old has lost its worker."
    )
    sweep_seconds: float = Field(
        15.0, gt=0, description="How often each worker looks for lost and unsent jobs."
    )
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
        15.0, gt=0, description="A job asked to stop (time limit, cancel, shutdown) has this long "
        "to stop at a batch boundary before its runner process is sent SIGTERM.",
    )
    kill_grace_seconds: float = Field(
        5.0, gt=0, description="After SIGTERM, the runner process gets this long before SIGKILL.",
    )
    teacher_batch_seconds: float = Field(
        60.0, gt=0, description="Deadline of one batch of a brought ONNX teacher; a teacher that "
        "exceeds it is stopped (onnxruntime RunOptions.terminate) and the job fails saying so.",
    )
    torch_threads: int = Field(
        0, ge=0, description="Threads torch uses in a worker; 0: the CPUs the worker may run on "
        "(os.sched_getaffinity).",
    )
    broker_poll_seconds: float = Field(
        0.05, gt=0, description="filesystem:// broker: how often an idle worker looks for a message.",
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
        600, ge=0, description="Requests per minute per API key (0: no limit); bursts up to "
        "rate_limit_burst. Counted in each API process."
    )
    rate_limit_burst: int = Field(60, ge=1, description="Requests a key may make at once.")
    max_upload_bytes: int = Field(
        512 << 20, ge=1, description="Largest upload (POST /v1/artifacts), enforced while streaming."
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
