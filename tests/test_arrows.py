"""The arrows of DESIGN.md that a test can see: the API never imports torch or
the worker; the engine imports nothing of app but the contract (pydantic + stdlib, and the
ONNX runner's numpy), and never the DB, Celery or FastAPI."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.support.imports import loaded_after

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path}: {name}"
        for path, names in imported_modules(ROOT / folder).items()
        for name in names
        if name.split(".")[0] in forbidden or any(name.startswith(f + ".") or name == f for f in forbidden)
    ]


def test_importing_the_api_leaves_torch_out():
    assert loaded_after("import app.main", ("torch", "worker")) == []


def test_the_worker_parent_process_does_not_import_torch():
    # CUDA does not survive fork: torch is imported in the child, inside the task.
    assert loaded_after("import worker.celery_app, worker.tasks", ("torch",)) == []


def test_app_never_imports_worker_or_torch():
    assert offenders("app", ("worker", "torch")) == []


def test_engine_imports_only_the_contract_from_app():
    # An allow-list: whatever new module app/ grows, the engine may not reach for it.
    allowed = ("app.contract",)
    bad = [
        f"{path}: {name}"
        for path, names in imported_modules(ROOT / "worker" / "distill").items()
        for name in names
        if name.split(".")[0] == "app" and not any(name == a or name.startswith(a + ".") for a in allowed)
    ]
    assert bad == []


def test_engine_never_imports_db_celery_or_http():
    assert offenders("worker/distill", ("sqlalchemy", "celery", "fastapi", "starlette")) == []


# The ONNX runner both sides use (the API inspects an uploaded teacher, the engine runs it) needs
# numpy, and onnx/onnxruntime when a model is opened; the rest of the contract does not.
CONTRACT_RUNNER = {"app/contract/onnx_classifier.py": {"numpy", "onnx", "onnxruntime"}}


def test_the_contract_is_pydantic_and_the_standard_library():
    allowed = {"pydantic", "app", "__future__"} | set(sys.stdlib_module_names)
    bad = [
        f"{path}: {name}"
        for path, names in imported_modules(ROOT / "app" / "contract").items()
        for name in names
        if name.split(".")[0] not in allowed | CONTRACT_RUNNER.get(path, set())
        or (name.split(".")[0] == "app" and not name.startswith("app.contract"))
    ]
    assert bad == []


def test_importing_the_contract_loads_no_torch_fastapi_or_onnxruntime():
    every_module = (
        "import importlib, pkgutil, app.contract; "
        "[importlib.import_module('app.contract.' + m.name) for m in pkgutil.iter_modules(app.contract.__path__)]"
    )
    assert loaded_after(every_module, ("torch", "fastapi", "sqlalchemy", "onnx", "onnxruntime")) == []


def test_nobody_writes_job_status_outside_the_state_machine():
    hits = []
    for folder in ("app", "worker"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "jobs.py" and path.parent.name == "app":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Assign | ast.AugAssign):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    hits += [
                        f"{path}:{node.lineno}" for t in targets if isinstance(t, ast.Attribute) and t.attr == "status"
                    ]
    assert hits == []
