"""The client and the `distill` command without a server: --set parsing, spec files, where the key
comes from, problem+json as typed errors, the result table's width, and that a client install
needs none of the server's packages."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from app.cli.live import epoch_budget
from app.cli.tables import result_table, summary_lines
from app.client import ApiError, AuthError, Report, SpecError, apply_overrides, find_key, load_spec
from app.client.keys import key_file

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DEPS = {"httpx", "pydantic", "typer", "rich", "pyyaml"}
SERVER_MODULES = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "celery",
    "pydantic_settings",
    "torch",
    "numpy",
    "onnxruntime",
    "worker",
)


# --- --set -----------------------------------------------------------------------------------


def test_set_parses_dotted_paths_with_json_values():
    spec = {"training": {"epochs": 5}, "seeds": [0]}
    out = apply_overrides(
        spec,
        [
            "training.epochs=20",
            "seeds=[0,1]",
            "method.temperature=4",
            "method.name=kd",
            "baseline=false",
            "seeds.1=7",
            'name="a=b"',
        ],
    )
    assert out == {
        "training": {"epochs": 20},
        "seeds": [0, 7],
        "baseline": False,
        "name": "a=b",
        "method": {"temperature": 4, "name": "kd"},
    }
    assert spec == {"training": {"epochs": 5}, "seeds": [0]}  # the input is left alone


@pytest.mark.parametrize("assignment", ["training.epochs", "=3", "a..b=1", "seeds.5=1", "name.x=1"])
def test_a_bad_set_says_how_to_write_it(assignment):
    with pytest.raises(SpecError, match="--set"):
        apply_overrides({"seeds": [0], "name": "x"}, [assignment])


def test_specs_load_from_json_and_yaml(tmp_path: Path):
    (tmp_path / "a.json").write_text('{"seeds": [0, 1]}')
    (tmp_path / "a.yaml").write_text("seeds: [0, 1]\n")
    assert load_spec(tmp_path / "a.json") == load_spec(tmp_path / "a.yaml") == {"seeds": [0, 1]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="an object"):
        load_spec(tmp_path / "list.yaml")


def test_the_example_spec_loads():
    assert load_spec(ROOT / "examples" / "mnist1d-kd.json")["dataset"]["name"] == "mnist1d"


# --- the key ---------------------------------------------------------------------------------


def test_the_key_comes_from_flag_then_env_then_file(tmp_path: Path):
    (tmp_path / "api-key").write_text("dk_file\n")
    env = {"DISTILL_HOME": str(tmp_path), "DISTILL_API_KEY": "dk_env"}
    assert find_key("dk_flag", env).source == "--key"
    assert (k := find_key(None, env)).value == "dk_env" and k.source == "$DISTILL_API_KEY"
    k = find_key(None, {"DISTILL_HOME": str(tmp_path)})
    assert k.value == "dk_file" and k.source == str(tmp_path / "api-key")
    missing = find_key(None, {"DISTILL_HOME": str(tmp_path / "none")})
    assert missing.value is None
    assert missing.looked_at == (
        "--key (not given)",
        "$DISTILL_API_KEY (not set)",
        f"{tmp_path / 'none' / 'api-key'} (No such file or directory)",
    )


def test_the_key_file_is_where_the_embedded_service_writes_it(tmp_path: Path, monkeypatch):
    from app.config import Settings

    monkeypatch.delenv("DISTILL_HOME", raising=False)
    assert key_file({}) == Settings().local_key_file
    monkeypatch.setenv("DISTILL_HOME", str(tmp_path))
    assert key_file({"DISTILL_HOME": str(tmp_path)}) == Settings().local_key_file


# --- problems --------------------------------------------------------------------------------


def problem(status: int, body: dict) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/problem+json"}, content=json.dumps(body))


def test_a_problem_becomes_a_typed_error_with_its_fields():
    body = {
        "type": "https://distill.dev/problems/invalid-request",
        "title": "The request is not valid",
        "status": 422,
        "detail": "Fix these fields",
        "instance": "/v1/jobs",
        "errors": [{"pointer": "/method/temperature", "in": "body", "detail": "must be > 0", "type": "gt"}],
    }
    error = ApiError.from_response(problem(422, body), find_key("k"))
    assert (error.status, error.title, error.instance) == (422, "The request is not valid", "/v1/jobs")
    assert error.pointers == ["/method/temperature"]
    assert "/method/temperature: must be > 0" in str(error)


def test_a_401_without_a_key_lists_every_place_tried(tmp_path: Path):
    key = find_key(None, {"DISTILL_HOME": str(tmp_path)})
    error = ApiError.from_response(problem(401, {"title": "API key required", "detail": "Send a key"}), key)
    assert isinstance(error, AuthError)
    assert "$DISTILL_API_KEY (not set)" in str(error) and str(tmp_path / "api-key") in str(error)


def test_a_non_json_error_is_still_an_api_error():
    error = ApiError.from_response(httpx.Response(502, text="<html>bad gateway</html>"), find_key("k"))
    assert error.status == 502 and "bad gateway" in error.detail


# --- what is printed -------------------------------------------------------------------------


def report(seeds: int = 3) -> Report:
    scores = {
        "test_accuracy": 0.63212,
        "train_accuracy": 0.89312,
        "test_ece": 0.2411,
        "parameters": 1_234_567,
        "latency_ms": 12.345,
    }
    runs = {
        "runs": [{"seed": s, **scores} for s in range(seeds)],
        "mean": scores,
        "std": dict.fromkeys(scores, 0.0123),
        "arch": {"name": "teacher_assistant_mlp"},
    }
    return Report.model_validate(
        {
            "dataset": {"test_size": 1000},
            "method": {"name": "teacher_assistant"},
            "seeds": list(range(seeds)),
            "teacher": {**scores, "arch": {"name": "cnn"}},
            "student": runs,
            "baseline": runs,
            "exported": {
                "seed": 1,
                "selected_by": "validation accuracy",
                "test_accuracy": 0.64,
                "files": {"onnx": "student.onnx"},
            },
            "summary": {
                "student_vs_baseline_test_accuracy": -0.0001,
                "student_vs_teacher_test_accuracy": -0.3,
                "compression": 8.3,
                "speedup": 6.8,
            },
        }
    )


def test_the_result_table_fits_100_columns_and_explains_its_columns():
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(result_table(report()))
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 100
    assert "0.632 ± 0.012" in text  # mean ± std, not cut
    assert "mean ± sample std over 3 seeds (0, 1, 2)" in " ".join(text.split())
    assert "1,234,567" in text


def test_one_seed_shows_no_spread():
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(result_table(report(seeds=1)))
    text = " ".join(console.export_text().split())
    assert "±" not in text.split("test acc:")[0] and "one seed (0), so no spread" in text


def test_the_summary_says_what_the_teacher_gave():
    lines = summary_lines(report())
    assert lines[0] == "student vs scratch baseline: +0.0 points of test accuracy"
    assert "8.3x fewer parameters" in lines[2] and "student.onnx" in lines[3]


def test_the_epoch_budget_comes_from_the_spec():
    spec = {"training": {"epochs": 40}, "teacher": {"train": {"epochs": 60}}}
    assert epoch_budget(spec, "student", "seed=0") == epoch_budget(spec, "baseline", "seed=1") == 40
    assert epoch_budget(spec, "teacher", "teacher") == 60
    ensemble = {"teacher": {"ensemble": [{"artifact": {"id": "x"}}, {"train": {"epochs": 7}}]}}
    assert epoch_budget(ensemble, "teacher", "member=2") == 7
    assert epoch_budget(ensemble, "teacher", "member=1") is None and epoch_budget(None, "evaluate", "-") is None


# --- the install -----------------------------------------------------------------------------


def test_the_base_install_is_the_client():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    assert names == CLIENT_DEPS
    assert project["scripts"]["distill"] == "app.cli:main"
    assert {"api", "worker", "dev"} <= set(project["optional-dependencies"])


def test_the_command_imports_none_of_the_server():
    code = f"import sys, app.cli, app.client; print([m for m in {SERVER_MODULES!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in requirements}


def _locked(path: Path) -> dict[str, str]:
    pins = [line.split("==") for line in path.read_text().splitlines() if "==" in line and not line.startswith("#")]
    return {name.strip().lower().replace("_", "-"): version.strip() for name, version in pins}


def test_the_locks_pin_every_dependency():
    """requirements/*.txt are pip-compile's output for pyproject.toml: re-run it (README, Installing)
    after changing a dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client, service = _locked(ROOT / "requirements" / "client.txt"), _locked(ROOT / "requirements" / "service.txt")
    assert _names(project["dependencies"]) <= set(client)
    extras = project["optional-dependencies"]
    assert _names(extras["api"] + extras["worker"] + extras["dev"] + project["dependencies"]) <= set(service)
    for pinned in extras["worker"]:
        if "==" in pinned:
            name, version = pinned.split("==")
            assert service[name.strip()] == version.strip(), pinned
    for name, version in client.items():  # one version of each package, client or service
        assert service[name] == version, name


def test_no_service_is_a_message_not_a_traceback():
    from typer.testing import CliRunner

    from app.cli import app

    result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "--key", "k", "list"])
    assert result.exit_code == 1
    assert "cannot reach the distill API at http://127.0.0.1:9" in " ".join(result.output.split())
    assert "Traceback" not in result.output
