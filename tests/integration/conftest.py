"""Fixtures over real processes (tests/support/services.py): a uvicorn server and Celery workers,
embedded (SQLite + filesystem broker) or distributed (PostgreSQL + Redis)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, _empty_postgres
from tests.support.services import FAST_RECOVERY, Service, subprocess_env


@pytest.fixture
def make_service(request, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """make_service(env, workers=0): a Service with its API started and `workers` workers (more
    with start_worker); stopped after the test, its logs printed if the test failed."""
    made: list[Service] = []

    def make(env: dict, *, workers: int = 0) -> Service:
        logs = tmp_path / f"logs-{len(made)}"
        logs.mkdir()
        svc = Service(env=env, logs=logs)
        made.append(svc)
        svc.start_api(workers=workers)
        return svc

    yield make
    for svc in made:
        svc.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(svc.dump_logs())


@pytest.fixture(params=["embedded", "distributed"])
def service(request, tmp_path: Path, make_service) -> Service:
    """embedded: SQLite + filesystem broker (the README default).
    distributed: PostgreSQL + Redis, as docker-compose runs it."""
    if request.param == "distributed":
        env = subprocess_env(tmp_path, _empty_postgres(request.getfixturevalue("postgres_database")), REDIS_URL)
    else:
        env = subprocess_env(tmp_path, None, "filesystem://")
    return make_service(env, workers=1)


@pytest.fixture
def distributed_env(tmp_path: Path, postgres_database: str) -> Callable[..., dict[str, str]]:
    """distributed_env(**settings): the environment of a Service on an emptied PostgreSQL database
    and Redis, whose lost workers are noticed within seconds (FAST_RECOVERY, then `settings`)."""

    def make(**settings) -> dict[str, str]:
        return subprocess_env(tmp_path, _empty_postgres(postgres_database), REDIS_URL, **(FAST_RECOVERY | settings))

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
