"""Real processes: a uvicorn server and a Celery worker, started as the README
and the containers start them, on a free port, with their own settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import NO_LIMITS, REDIS_URL, ROOT, migrate

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, every: float = 0.2):
    """Poll until condition() is truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)  # poll interval between checks, not synchronisation


@dataclass
class Service:
    """An API server and a worker over one database and one broker."""

    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def start_api(self) -> None:
        self._spawn("api", [str(BIN / "uvicorn"), "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)])
        wait_for(self._ready, timeout=60, what="the API's /readyz")

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        return self._spawn(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "worker.celery_app",
                "worker",
                "--queues",
                self.env["DISTILL_QUEUE"],
                "--concurrency",
                "1",
                "--hostname",
                f"{name}-{uuid.uuid4().hex[:6]}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "INFO",
            ],
        )

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a worker's whole process group (main process and pool child)."""
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)

    def client(self, key: str | None = None) -> httpx.Client:
        """An HTTP client with an API key: `key`, else the one the first start created."""
        key = key or (Path(self.env["DISTILL_HOME"]) / "api-key").read_text().strip()
        return httpx.Client(base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {key}"})

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def dump_logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}" for p in sorted(self.logs.glob("*.log"))
        )


def service_env(
    tmp_path: Path, database_url: str | None, broker_url: str, *, migrated: bool = True, **settings: str
) -> dict:
    """The environment of the API and worker processes: DISTILL_* from the arguments,
    nothing from the test runner's own DISTILL_* variables. migrated=False leaves the database
    as it is (an embedded API migrates its SQLite file itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    env |= {
        "DISTILL_HOME": str(tmp_path / "home"),
        "DISTILL_BROKER_URL": broker_url,
        "DISTILL_QUEUE": f"train-{uuid.uuid4().hex[:8]}",
        "DISTILL_DATA_CACHE_DIR": str(ROOT / "var" / "test-cache"),
        "DISTILL_HEARTBEAT_SECONDS": "1",
        # A checkpoint at every epoch end (production: every 30 s): the crash tests kill a job
        # seconds in and check that it resumes past its first epoch.
        "DISTILL_CHECKPOINT_SECONDS": "0",
        **NO_LIMITS,
    }
    env |= {f"DISTILL_{k.upper()}": str(v) for k, v in settings.items()}
    if database_url:
        env["DISTILL_DATABASE_URL"] = database_url
    elif migrated:
        (tmp_path / "home").mkdir(exist_ok=True)
        database_url = f"sqlite:///{tmp_path / 'home' / 'distill.db'}"
    if migrated:
        migrate(database_url)
    return env


@pytest.fixture
def make_service(request, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Build a Service (API started, no worker yet); logs are printed if the test fails."""
    made: list[Service] = []

    def make(env: dict) -> Service:
        logs = tmp_path / f"logs-{len(made)}"
        logs.mkdir()
        svc = Service(env=env, logs=logs)
        made.append(svc)
        svc.start_api()
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
        from tests.conftest import _empty_postgres

        env = service_env(tmp_path, _empty_postgres(request.getfixturevalue("postgres_database")), REDIS_URL)
    else:
        env = service_env(tmp_path, None, "filesystem://")
    svc = make_service(env)
    svc.start_worker()
    return svc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
