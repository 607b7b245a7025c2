"""bench/quality.py --smoke: real jobs through the HTTP API of an embedded service (one seed,
one epoch, the digits configuration), so the bench cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_http_call_carries_the_api_key_when_there_is_one(monkeypatch):
    bench = _bench()
    monkeypatch.setenv("DISTILL_API_KEY", "k-123")
    with bench.api_client("http://127.0.0.1:1") as client:
        assert client.headers["Authorization"] == "Bearer k-123"
    monkeypatch.delenv("DISTILL_API_KEY")
    with bench.api_client("http://127.0.0.1:1") as client:
        assert "Authorization" not in client.headers


def test_the_embedded_service_runs_this_tree_with_auth_off(tmp_path, monkeypatch):
    bench = _bench()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(ROOT)]))
    svc = bench.EmbeddedService(tmp_path / "home", tmp_path / "data")
    assert svc.env["DISTILL_AUTH"] == "off"
    assert svc.env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere"]


def test_quality_bench_smoke(tmp_path):
    out = tmp_path / "quality.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "quality.py"),
            "--smoke",
            "--out",
            str(out),
            "--home",
            str(tmp_path / "home"),
            "--data-cache",
            str(tmp_path / "data"),
            "--poll",
            "0.5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2, text
    kd, scratch = rows
    # Every row states the values it uses.
    assert kd.startswith("| digits: tiny MLP [32] (2410 params), KD (T=") and "alpha=" in kd
    assert scratch.startswith("| digits: tiny MLP [32] from scratch |")
    assert all("n/a" not in r and "failed" not in r for r in rows)
    assert "## Tuning" in text
    per_seed = json.loads(out.with_suffix(".json").read_text())
    assert [len(r["runs"]) for r in per_seed] == [1, 1]
