"""Assembling the job report: per-seed runs -> mean/std, the headline summary, JSON safety.

The report is what the API shows as the job's `result` and what a CLI prints
as a table, so it is plain JSON: no NaN, no numpy scalars.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from app.contract.files import atomic_write

# Keys of a run that are identifiers or flags, not quantities to average.
_NOT_AVERAGED = {"seed", "stopped_early"}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{"runs": [...], "mean": {...}, "std": {...}} over the numeric fields of the runs.

    std is the sample standard deviation (ddof=1), 0.0 for a single run.
    """
    keys = [
        k
        for k, v in runs[0].items()
        if k not in _NOT_AVERAGED and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    mean = {k: statistics.fmean(r[k] for r in runs) for k in keys}
    std = {k: (statistics.stdev([r[k] for r in runs]) if len(runs) > 1 else 0.0) for k in keys}
    return {"runs": runs, "mean": mean, "std": std}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def summary(teacher: dict, student: dict, baseline: dict | None) -> dict[str, float | None]:
    """The headline: did the teacher help, what was lost, what was gained."""
    s = student["mean"]
    return {
        "student_vs_baseline_test_accuracy": (
            s["test_accuracy"] - baseline["mean"]["test_accuracy"] if baseline else None
        ),
        "student_vs_teacher_test_accuracy": s["test_accuracy"] - teacher["test_accuracy"],
        "compression": _ratio(teacher["parameters"], s["parameters"]),
        "speedup": _ratio(teacher["latency_ms"], s["latency_ms"]),
    }


def json_safe(obj: Any) -> Any:
    """Plain JSON types only; non-finite floats become null."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "dtype") and obj.dtype.kind == "b":
        return bool(obj)
    if isinstance(obj, int) or (hasattr(obj, "dtype") and obj.dtype.kind in "iu"):
        return int(obj)
    if isinstance(obj, float) or hasattr(obj, "dtype"):
        f = float(obj)
        return f if math.isfinite(f) else None
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def write_json(obj: Any, path: Path) -> Path:
    """Write atomically: a reader never sees half a report."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))
