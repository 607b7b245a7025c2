"""The sweep's result, from its trials' reports: a leaderboard, the winner chosen on
validation accuracy only (test accuracy is reported, never used to choose), the budget's
answer and the Pareto fronts of accuracy against latency and against size.

Latency is the student's in onnxruntime on the CPU (the runtime its exported file is deployed
with), as the trial's job measured it: `latency_ms` for one example (what a latency budget is
held to), `latency_batch_ms` for a batch of `latency_batch_size`, on `latency_threads` threads.
"""

from __future__ import annotations

from typing import Any

from app.sweeps.spec import Budget

FRONT_AXES = ("latency_ms", "latency_batch_ms", "parameters", "bytes")
# The figures of pareto.png, the same points in JSON: (cost, axis label).
FIGURES = (
    ("latency_ms", "latency (ms, onnxruntime, CPU, batch 1)"),
    ("latency_batch_ms", "latency (ms per batch, onnxruntime, CPU)"),
    ("parameters", "parameters"),
)


def _mean_std(section: dict[str, Any] | None, key: str) -> dict[str, float] | None:
    if not section or key not in section.get("mean", {}):
        return None
    return {"mean": section["mean"][key], "std": section.get("std", {}).get(key, 0.0)}


def _gap_closed(teacher: float | None, student: float | None, scratch: float | None) -> float | None:
    if teacher is None or student is None or scratch is None or teacher <= scratch:
        return None
    return (student - scratch) / (teacher - scratch)


def _latency(student: dict[str, Any] | None) -> dict[str, Any]:
    """The student's latencies (None where its report has none: a job before onnxruntime was timed)."""
    mean = (student or {}).get("mean", {})
    return {
        "latency_ms": mean.get("latency_onnx_ms"),
        "latency_batch_ms": mean.get("latency_onnx_batch_ms"),
        "latency_batch_size": _whole(mean.get("latency_onnx_batch_size")),
        "latency_threads": _whole(mean.get("latency_onnx_threads")),
        "latency_torch_ms": mean.get("latency_ms"),
    }


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)


def row(trial: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One configuration: its trial's job, state and figures (None until it succeeded)."""
    report = job.get("result") or {}
    student, scratch = report.get("student"), report.get("baseline")
    test = _mean_std(student, "test_accuracy")
    scratch_test = _mean_std(scratch, "test_accuracy")
    teacher_test = (report.get("teacher") or {}).get("test_accuracy")
    return {
        "trial": trial["index"],
        "config": trial["config"],
        "control": trial["control"],
        "job_id": job["id"],
        "status": job["status"],
        "stopped_early": job.get("stopped_early", False),
        "val_accuracy": _mean_std(student, "val_accuracy"),
        "test_accuracy": test,
        "scratch_val_accuracy": _mean_std(scratch, "val_accuracy"),
        "scratch_test_accuracy": scratch_test,
        "teacher_test_accuracy": teacher_test,
        "pseudo_label_test_accuracy": None,  # filled in from the control trial of the same student
        "gap_closed": _gap_closed(
            teacher_test,
            None if test is None else test["mean"],
            None if scratch_test is None else scratch_test["mean"],
        ),
        "student_arch": (student or {}).get("arch") or _spec_arch(trial),
        "parameters": _whole((student or {}).get("mean", {}).get("parameters")),
        "bytes": _whole((student or {}).get("mean", {}).get("bytes")),
        **_latency(student),
        "artifacts_url": f"/v1/jobs/{job['id']}/artifacts",
    }


def _spec_arch(trial: dict[str, Any]) -> Any:
    return trial["spec"].get("student", {}).get("arch")


def _with_controls(trials: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Each configuration beside its pseudo-label control: the same student on the teacher's
    hard labels (what the soft targets add beyond them)."""
    arch_of = {t["index"]: _spec_arch(t) for t in trials}
    controls = [r for r in rows if r["control"] and r["test_accuracy"] is not None]
    for r in rows:
        if r["control"]:
            continue
        same = [c for c in controls if arch_of.get(c["trial"]) == arch_of.get(r["trial"])]
        r["pseudo_label_test_accuracy"] = same[0]["test_accuracy"] if same else None


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished configurations, best validation accuracy first (then fewer parameters)."""
    done = [r for r in rows if r["val_accuracy"] is not None and not r["control"]]
    return sorted(done, key=lambda r: (-r["val_accuracy"]["mean"], r["parameters"] or 0, r["trial"]))


def pareto_front(rows: list[dict[str, Any]], cost: str) -> list[int]:
    """Trials not dominated in (higher validation accuracy, lower `cost`), cheapest first."""
    points = [r for r in _ranked(rows) if r[cost] is not None]
    front: list[dict[str, Any]] = []
    for r in sorted(points, key=lambda r: (r[cost], -r["val_accuracy"]["mean"])):
        if not front or r["val_accuracy"]["mean"] > front[-1]["val_accuracy"]["mean"]:
            front.append(r)
    return [r["trial"] for r in front]


def budget_answer(rows: list[dict[str, Any]], budget: Budget | None) -> tuple[dict[str, Any] | None, dict | None]:
    """(the winner, what the budget found): the most accurate on validation that fits."""
    ranked = _ranked(rows)
    if budget is None:
        return (ranked[0] if ranked else None), None
    key, limit = budget.limit()
    fitting = [r for r in ranked if r[key] is not None and r[key] <= limit]
    measured = [r[key] for r in ranked if r[key] is not None]
    answer = {"key": key, "limit": limit, "met": bool(fitting), "candidates": len(ranked), "fitting": len(fitting)}
    if key == "latency_ms":
        threads = sorted({r["latency_threads"] for r in ranked if r["latency_threads"]})
        answer["measured"] = f"onnxruntime, CPU, batch 1, {'/'.join(map(str, threads)) or '?'} thread(s)"
    if not fitting:
        smallest = min(measured) if measured else None
        answer["detail"] = (
            f"no finished candidate has {key} <= {limit:g}"
            + (f"; the smallest has {smallest:g}" if smallest is not None else "")
            + ": widen the budget or add smaller students"
        )
    return (fitting[0] if fitting else None), answer


def rows_of(trials: list[dict[str, Any]], jobs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [row(t, jobs[t["index"]]) for t in trials if t["index"] in jobs]
    _with_controls(trials, rows)
    return rows


def figures(rows: list[dict[str, Any]], winner: int | None, budget: dict | None) -> list[dict[str, Any]]:
    """pareto.png's panels as data: validation accuracy against each cost, the front marked."""
    out = []
    for cost, label in FIGURES:
        front = pareto_front(rows, cost)
        points = [
            {
                "trial": r["trial"],
                "x": r[cost],
                "y": r["val_accuracy"]["mean"],
                "on_front": r["trial"] in front,
                "winner": r["trial"] == winner,
            }
            for r in _ranked(rows)
            if r[cost] is not None
        ]
        limit = budget["limit"] if budget and budget["key"] == cost else None
        out.append({"x": cost, "x_label": label, "y": "val_accuracy", "budget": limit, "points": points})
    return out


def latency_note(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the latencies were measured (from the reports: their batch size and threads)."""
    measured = [r for r in rows if r["latency_ms"] is not None]
    return {
        "runtime": "onnxruntime, CPUExecutionProvider",
        "latency_ms": "one example (batch 1): the figure a latency_ms budget is held to",
        "latency_batch_ms": "one whole batch of latency_batch_size examples",
        "batch_size": sorted({r["latency_batch_size"] for r in measured if r["latency_batch_size"]}),
        "intra_op_threads": sorted({r["latency_threads"] for r in measured if r["latency_threads"]}),
        "statistic": "median of timed runs within a small budget, mean over the trial's seeds",
    }


def leaderboard(trials: list[dict[str, Any]], jobs: dict[int, dict[str, Any]], budget: Budget | None, early) -> dict:
    rows = rows_of(trials, jobs)
    winner, budget_found = budget_answer(rows, budget)
    winner_trial = winner["trial"] if winner else None
    for r in rows:
        r["winner"] = r["trial"] == winner_trial
    ranked = _ranked(rows)
    return {
        "selected_by": "val_accuracy (mean over seeds); test accuracy is reported, never used to choose",
        "leaderboard": ranked + [r for r in rows if r not in ranked],
        "winner": winner,
        "budget": budget_found,
        "pareto": {cost: pareto_front(rows, cost) for cost in FRONT_AXES},
        "figures": figures(rows, winner_trial, budget_found),
        "latency": latency_note(rows),
        "early_stop": early,
    }
