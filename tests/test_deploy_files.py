"""Static checks of the deployment files: docker-compose.yml, Dockerfile, .dockerignore.

No Docker engine is needed: the files are parsed and the properties the service
relies on are asserted (migrations before the API serves, one job per GPU worker,
healthchecks, durable volumes, DISTILL_ settings, a pinned torch, a non-root user),
together with the repository paths those files name.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("api", "worker")
REQUIRED_ENV = (
    "DISTILL_DATABASE_URL",
    "DISTILL_BROKER_URL",
    "DISTILL_ARTIFACT_DIR",
    "DISTILL_DATA_CACHE_DIR",
)
TORCH_PIN = "torch==2.14.1"
TORCHVISION_PIN = "torchvision==0.29.1"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command_tokens(service: dict) -> list[str]:
    cmd = service.get("command")
    assert cmd, "service has no command"
    return list(cmd) if isinstance(cmd, list) else shlex.split(cmd)


def shell_script(service: dict) -> str:
    """The script run by `sh -c SCRIPT`, or the command itself as one string."""
    tokens = command_tokens(service)
    if len(tokens) >= 3 and tokens[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and tokens[1] == "-c":
        return tokens[2]
    return shlex.join(tokens)


def option_value(tokens: list[str], *names: str) -> str | None:
    for i, tok in enumerate(tokens):
        for name in names:
            if tok == name and i + 1 < len(tokens):
                return tokens[i + 1]
            if name.startswith("--") and tok.startswith(name + "="):
                return tok.split("=", 1)[1]
    return None


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def named_mounts(service: dict) -> dict[str, str]:
    """{container path: named volume} for the service's named-volume mounts."""
    mounts = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type", "volume") == "volume" and vol.get("source"):
                mounts[vol["target"]] = vol["source"]
            continue
        source, _, rest = vol.partition(":")
        target = rest.split(":")[0]
        if target and not source.startswith((".", "/", "~", "$")):
            mounts[target] = source
    return mounts


def duration_seconds(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(value))
    assert parts, f"unparseable duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with line continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    buf = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    return instructions


def pip_installs_project(run_args: str) -> bool:
    """True when a RUN installs the project itself (`pip install .` / `.[extra]`)."""
    return bool(re.search(r"pip3?\s+install\b[^&;|]*\s['\"]?\.(\[[^\]]*\])?['\"]?(\s|$)", run_args))


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            excluded = not negate
    return excluded


# --------------------------------------------------------------------------- compose


def test_services_exist(services):
    assert {"api", "worker", "postgres", "redis"} <= set(services)


def test_api_and_worker_share_one_image(services):
    api, worker = services["api"], services["worker"]
    assert api.get("build") and api.get("build") == worker.get("build")
    assert api.get("image") == worker.get("image")


def test_api_runs_migrations_then_uvicorn(services):
    script = shell_script(services["api"])
    assert "alembic upgrade head" in script
    assert re.search(r"uvicorn\s+app\.main:app\b", script)
    migrate, serve = script.index("alembic upgrade head"), script.index("uvicorn")
    assert migrate < serve
    # `&&`: the API never serves on a schema whose migration failed
    assert "&&" in script[migrate:serve]
    assert "--host 0.0.0.0" in script and "--port 8000" in script


def test_api_publishes_port_8000(services):
    ports = [str(p if not isinstance(p, dict) else p.get("target")) for p in services["api"].get("ports", [])]
    assert any(p.endswith(":8000") or p == "8000" for p in ports)


def test_api_healthcheck_hits_readyz_without_curl(services):
    test = services["api"]["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else test
    assert "/readyz" in text and "127.0.0.1:8000" in text
    assert "urllib" in text
    assert "curl" not in text and "wget" not in text  # neither exists in python:slim


def test_worker_command(services):
    tokens = command_tokens(services["worker"])
    assert tokens[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert option_value(tokens, "--concurrency", "-c") == "1"
    queues = option_value(tokens, "--queues", "-Q")
    assert queues is not None and "train" in queues.split(",")
    # The task's thread supervises the worker's runner process (worker/runner.py): no fork.
    assert option_value(tokens, "--pool", "-P") == "threads"
    assert option_value(tokens, "--max-tasks-per-child") is None


def test_worker_reserves_one_gpu(services):
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert len(gpu) == 1
    assert gpu[0].get("count") == 1


def test_worker_is_scalable(services):
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")


def test_worker_stops_gracefully(services):
    assert duration_seconds(services["worker"].get("stop_grace_period", "10s")) >= 60


@pytest.mark.parametrize(
    ("service", "needs"),
    [("api", {"postgres", "redis"}), ("worker", {"api", "postgres", "redis"})],
)
def test_depends_on_healthy(services, service, needs):
    depends = services[service].get("depends_on")
    assert isinstance(depends, dict), "depends_on must be the long form with conditions"
    assert needs <= set(depends)
    for dep in depends:
        assert depends[dep].get("condition") == "service_healthy", dep


def test_every_service_has_a_healthcheck_and_restart_policy(services):
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), name
        assert hc["test"] != ["NONE"], name
        assert svc.get("restart") == "unless-stopped", name


def test_worker_healthcheck_pings_its_own_node(services):
    test = services["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"  # the shell must expand $HOSTNAME
    assert "celery -A worker.celery_app inspect ping" in test[1]
    assert "celery@$$HOSTNAME" in test[1]  # $$: escaped from compose interpolation


def test_postgres(services):
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:16")
    env = environment(pg)
    assert env["POSTGRES_USER"] == env["POSTGRES_PASSWORD"] == env["POSTGRES_DB"] == "distill"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_redis_persists(services):
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    assert "--appendonly yes" in shell_script(redis)
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert "/data" in named_mounts(redis)


def test_named_volumes(compose, services):
    declared = set(compose.get("volumes") or {})
    pg_mounts = named_mounts(services["postgres"])
    assert pg_mounts.get("/var/lib/postgresql/data") in declared
    assert named_mounts(services["redis"])["/data"] in declared

    # artifacts: one named volume, mounted where DISTILL_ARTIFACT_DIR points, in api and worker
    artifact_volumes = set()
    for name in APP_SERVICES:
        artifact_dir = environment(services[name])["DISTILL_ARTIFACT_DIR"]
        volume = named_mounts(services[name]).get(artifact_dir)
        assert volume in declared, f"{name}: {artifact_dir} is not a declared named volume"
        artifact_volumes.add(volume)
    assert len(artifact_volumes) == 1


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_env_is_distill_prefixed(services, service):
    env = environment(services[service])
    assert env, "no environment"
    assert all(key.startswith("DISTILL_") for key in env), sorted(env)
    assert set(REQUIRED_ENV) <= set(env)


API_ONLY_ENV = {"DISTILL_ADMIN_KEY", "DISTILL_MAX_UPLOAD_BYTES"}  # keys and uploads: the api's business


def test_app_env_points_at_the_compose_services(services):
    env = environment(services["api"])
    worker = environment(services["worker"])
    assert {k: v for k, v in env.items() if k not in API_ONLY_ENV} == worker
    assert set(env) - set(worker) == API_ONLY_ENV
    # psycopg (v3) is the driver pyproject.toml installs; plain postgresql:// would want psycopg2
    assert env["DISTILL_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/distill" in env["DISTILL_DATABASE_URL"]
    assert env["DISTILL_BROKER_URL"].startswith("redis://redis:6379/")


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_and_env():
    instructions = dockerfile_instructions()
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    env_text = " ".join(args for kw, args in instructions if kw == "ENV")
    assert re.search(r"PYTHONDONTWRITEBYTECODE[= ]1", env_text)
    assert re.search(r"PYTHONUNBUFFERED[= ]1", env_text)


def test_dockerfile_installs_pinned_torch_before_the_project():
    runs = [args for kw, args in dockerfile_instructions() if kw == "RUN"]
    torch_at = [i for i, args in enumerate(runs) if re.search(r"pip3?\s+install\s+.*" + re.escape(TORCH_PIN), args)]
    assert torch_at and TORCHVISION_PIN in runs[torch_at[0]], "torch and torchvision are installed together"
    project_at = [i for i, args in enumerate(runs) if pip_installs_project(args)]
    assert torch_at, f"no RUN pip install {TORCH_PIN}"
    assert project_at, "no RUN pip install of the project"
    assert torch_at[0] < project_at[0]
    assert any(re.search(r"\.\[api,worker\]", runs[i]) for i in project_at)
    for args in runs:  # no unpinned torch anywhere
        for spec in re.findall(r"\btorch(?:vision)?\S*", args):
            assert spec in (TORCH_PIN, TORCHVISION_PIN), spec


def test_dockerfile_torch_pin_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    worker_deps = pyproject["project"]["optional-dependencies"]["worker"]
    torch_reqs = [d.replace(" ", "") for d in worker_deps if re.match(r"torch\b", d)]
    assert torch_reqs == [TORCH_PIN]
    assert TORCHVISION_PIN in [d.replace(" ", "") for d in worker_deps]


def test_dockerfile_has_no_dev_extras():
    text = " ".join(args for kw, args in dockerfile_instructions() if kw == "RUN")
    assert not re.search(r"\[[^\]]*\bdev\b[^\]]*\]", text)
    assert "pytest" not in text


def test_dockerfile_copies_what_the_commands_need():
    copied = set()
    for kw, args in dockerfile_instructions():
        if kw in ("COPY", "ADD"):
            srcs = [a for a in args.split() if not a.startswith("--")][:-1]
            copied.update(s.rstrip("/") for s in srcs)
    assert {"pyproject.toml", "app", "worker", "migrations", "alembic.ini"} <= copied
    assert "tests" not in copied and "." not in copied


def test_dockerfile_runs_as_non_root():
    users = [args.split()[0] for kw, args in dockerfile_instructions() if kw == "USER"]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerignore_keeps_code_and_drops_local_state():
    for path in (
        "pyproject.toml",
        "alembic.ini",
        "app/main.py",
        "worker/celery_app.py",
        "migrations/env.py",
        "requirements/service.txt",
    ):
        assert not dockerignore_excludes(path), path
    for path in (".git/HEAD", ".venv/bin/python", "app/__pycache__/main.cpython-311.pyc"):
        assert dockerignore_excludes(path), path


# --------------------------------------------------------------------------- the repo paths the files name


@pytest.mark.parametrize("path", ["app/main.py", "worker/celery_app.py", "alembic.ini", "migrations/env.py"])
def test_paths_named_by_the_commands_exist(path):
    assert (ROOT / path).is_file(), f"{path} is named by docker-compose.yml/Dockerfile but missing"


def _module_level_names(path: Path) -> tuple[set[str], bool]:
    """Names bound at module level, and whether any of them is bound to Celery(...)."""
    tree = ast.parse(path.read_text())
    names, celery_call = set(), False
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Name):
                names.add(t.id)
        value = getattr(node, "value", None)
        if isinstance(value, ast.Call):
            func = value.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            celery_call |= called == "Celery"
    return names, celery_call


def test_uvicorn_target_is_a_module_level_app():
    path = ROOT / "app/main.py"
    if not path.is_file():
        pytest.fail("app/main.py missing")
    names, _ = _module_level_names(path)
    assert "app" in names, "`uvicorn app.main:app` needs `app = create_app()` at module level"


def test_celery_target_exposes_an_app():
    path = ROOT / "worker/celery_app.py"
    if not path.is_file():
        pytest.fail("worker/celery_app.py missing")
    names, celery_call = _module_level_names(path)
    # `celery -A worker.celery_app` finds module.app, module.celery, or a Celery instance
    assert {"app", "celery"} & names or celery_call


def test_alembic_ini_points_at_migrations():
    path = ROOT / "alembic.ini"
    if not path.is_file():
        pytest.fail("alembic.ini missing")
    config = configparser.ConfigParser(interpolation=None)
    config.read(path)
    location = config["alembic"]["script_location"].replace("%(here)s/", "").strip().rstrip("/")
    assert location == "migrations"


def test_readyz_route_exists():
    sources = [p.read_text() for p in (ROOT / "app").rglob("*.py")]
    assert any("readyz" in s for s in sources), "the api healthcheck polls /readyz"
