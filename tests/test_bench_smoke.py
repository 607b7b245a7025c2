"""bench/quality.py --smoke: real jobs through the HTTP API of an embedded service (one seed,
one epoch, the digits configuration), so the bench cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quality_bench_smoke(tmp_path):
    out = tmp_path / "quality.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quality.py"), "--smoke", "--out", str(out),
         "--home", str(tmp_path / "home"), "--data-cache", str(tmp_path / "data"), "--poll", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "| digits: tiny MLP [32] (2410 params), KD |" in text
    assert "| digits: tiny MLP [32] from scratch |" in text
    rows = [line for line in text.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2 and all("n/a" not in r and "failed" not in r for r in rows)
    assert "## Tuning" in text
