"""Shared fixtures: real databases (a throwaway PostgreSQL database and SQLite
files), migrated with Alembic exactly as production is."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("DISTILL_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DISTILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Tests drive the API harder than a client would; tests/api/test_tenants.py sets the limits.
NO_LIMITS = {"DISTILL_RATE_LIMIT_PER_MINUTE": "0", "DISTILL_MAX_CONCURRENT_JOBS": "1000"}
TABLES = (
    "workers",
    "teacher_cache_stats",
    "teacher_outputs",
    "teacher_builds",
    "artifacts",
    "job_metrics",
    "job_events",
    "jobs",
    "api_keys",
    "tenants",
)


def migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


def clear_caches() -> None:
    """Settings, engines and the Celery client are cached per process: reset them
    after the environment changes."""
    from app import config, db, queue

    config.get_settings.cache_clear()
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    db.get_engine.cache_clear()
    if db.get_read_engine.cache_info().currsize:
        db.get_read_engine().dispose()
    db.get_sessionmaker.cache_clear()
    db.get_read_engine.cache_clear()
    queue.reset_client()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    name = f"distill_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _empty_postgres(url: str) -> str:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'distill.db'}"
        migrate(url)
        return url
    return _empty_postgres(request.getfixturevalue("postgres_database"))


def fresh_settings(home: Path, broker_url: str = "filesystem://") -> dict[str, str]:
    """The DISTILL_* of one test's own service: its home, its broker and a queue of its own, the
    shared data cache, no rate or concurrency limits."""
    return {
        "DISTILL_HOME": str(home),
        "DISTILL_BROKER_URL": broker_url,
        "DISTILL_QUEUE": f"train-{uuid.uuid4().hex[:8]}",
        "DISTILL_DATA_CACHE_DIR": str(ROOT / "var" / "test-cache"),
        **NO_LIMITS,
    }


@pytest.fixture
def in_process_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """fresh_settings in this process's os.environ (and as a dict), for app code that runs in the
    test process; the caches that read them are reset. The broker is a filesystem folder nobody
    consumes. (API and worker processes get theirs from tests.support.services.subprocess_env.)"""
    env = fresh_settings(tmp_path / "home")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    clear_caches()
    yield env
    clear_caches()
