"""The sweep's result, from its trials' reports: a leaderboard, the winner chosen on
validation accuracy only (test accuracy is reported, never used to choose), the budget's
answer and the Pareto fronts of accuracy against latency and against size."""

from __future__ import annotations

from typing import Any

from app.sweeps.spec import Budget

FRONT_AXES = ("latency_ms", "parameters", "bytes")


def _mean_std(section: dict[str, Any] | None, key: str) -> dict[str, float] | None:
    if not section or key not in section.get("mean", {}):
        return None
    return {"mean": section["mean"][key], "std": section.get("std", {}).get(key, 0.0)}


def _gap_closed(teacher: float | None, student: float | None, scratch: float | None) -> float | None:
    if teacher is None or student is None or scratch is None or teacher <= scratch:
        return None
    return (student - scratch) / (teacher - scratch)


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
        "scratch_test_accuracy": scratch_test,
        "teacher_test_accuracy": teacher_test,
        "gap_closed": _gap_closed(teacher_test, test and test["mean"], scratch_test and scratch_test["mean"]),
        "student_arch": (student or {}).get("arch") or trial["spec"].get("student", {}).get("arch"),
        "parameters": (student or {}).get("mean", {}).get("parameters"),
        "bytes": (student or {}).get("mean", {}).get("bytes"),
        "latency_ms": (student or {}).get("mean", {}).get("latency_ms"),
        "artifacts_url": f"/v1/jobs/{job['id']}/artifacts",
    }


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished configurations, best validation accuracy first (then fewer parameters)."""
    done = [r for r in rows if r["val_accuracy"] is not None and not r["control"]]
    return sorted(done, key=lambda r: (-r["val_accuracy"]["mean"], r["parameters"] or 0, r["trial"]))


def pareto_front(rows: list[dict[str, Any]], cost: str) -> list[int]:
    """Trials not dominated in (higher validation accuracy, lower `cost`), cheapest first."""
    points = [r for r in _ranked(rows) if r[cost] is not None]
    front = []
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
    if not fitting:
        smallest = min(measured) if measured else None
        answer["detail"] = (
            f"no finished candidate has {key} <= {limit:g}"
            + (f"; the smallest has {smallest:g}" if smallest is not None else "")
            + ": widen the budget or add smaller students"
        )
    return (fitting[0] if fitting else None), answer


def leaderboard(trials: list[dict[str, Any]], jobs: dict[int, dict[str, Any]], budget: Budget | None, early) -> dict:
    rows = [row(t, jobs[t["index"]]) for t in trials if t["index"] in jobs]
    winner, budget_found = budget_answer(rows, budget)
    ranked = _ranked(rows)
    return {
        "selected_by": "val_accuracy (mean over seeds); test accuracy is reported, never used to choose",
        "leaderboard": ranked + [r for r in rows if r not in ranked],
        "winner": winner,
        "budget": budget_found,
        "pareto": {cost: pareto_front(rows, cost) for cost in FRONT_AXES},
        "early_stop": early,
    }
