"""Real processes for the tests: the API and Celery workers of a Service (uvicorn and celery,
started as the README and the containers start them, on a free port, with settings of their own),
and throwaway Redis and PostgreSQL servers for the tests that restart them (the machine's shared
servers are never touched)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import ROOT, fresh_settings, migrate
from tests.support.polling import poll_until

BIN = Path(sys.executable).parent
# Lost workers are noticed within seconds, not the production minute.
FAST_RECOVERY = {"lease_seconds": 3, "heartbeat_seconds": 0.5, "sweep_seconds": 1, "resend_after_seconds": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(
    tmp_path: Path, database_url: str | None, broker_url: str, *, migrated: bool = True, **settings: object
) -> dict[str, str]:
    """The environment of a Service's API and worker processes: this process's environment without
    its DISTILL_* variables, then fresh_settings under tmp_path/"home", then `settings` as
    DISTILL_<NAME>. database_url None: a SQLite file in that home. migrated=False leaves the database
    as it is (an embedded API migrates its SQLite file itself).

    (The `in_process_env` fixture of tests/conftest.py sets this process's own environment, for app
    code that runs in the test process.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    env |= fresh_settings(tmp_path / "home", broker_url)
    env |= {
        "DISTILL_HEARTBEAT_SECONDS": "1",
        # A checkpoint at every epoch end (production: every 30 s): the crash tests kill a job
        # seconds in and check that it resumes past its first epoch.
        "DISTILL_CHECKPOINT_SECONDS": "0",
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


@dataclass
class Service:
    """An API server and its workers over one database and one broker."""

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

    def start_api(self, *, workers: int = 0) -> None:
        """The API, and `workers` workers spawned while it starts (a worker needs no API, and
        both starts cost seconds of CPU: on two cores they overlap); returns once /readyz answers."""
        self._spawn("api", [str(BIN / "uvicorn"), "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)])
        for _ in range(workers):
            self.start_worker()
        poll_until(self._ready, timeout=60, what="the API's /readyz")

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
        """The tail of each process's log, to print when a test fails."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}" for p in sorted(self.logs.glob("*.log"))
        )

    def full_logs(self) -> str:
        """Every line the service's processes logged (dump_logs keeps only the tails)."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


@contextlib.contextmanager
def running_service(env: dict[str, str], logs: Path, *, workers: int = 0) -> Iterator[Service]:
    """A Service with its API and `workers` workers started, stopped when the block ends; its logs
    are printed if the block (or a start) raised."""
    service = Service(env=env, logs=logs)
    try:
        service.start_api(workers=workers)
        yield service
    except GeneratorExit:
        raise
    except BaseException:
        print(service.dump_logs())
        raise
    finally:
        service.stop()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found[-1]


class RedisServer:
    """A redis-server of its own on a free port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(self.ping, timeout=20, what="redis to start")

    def ping(self) -> bool:
        out = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return out.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


class PostgresServer:
    """A cluster of its own: initdb as the postgres user (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="distill-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, cwd="/tmp")

    def start(self) -> None:
        if not self.data.exists():
            self._as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self._as_postgres(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
