"""Rich tables of a sweep: progress, and the leaderboard (chosen on validation) when it ended."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from app.client import Sweep


def _acc(value: dict[str, float] | None) -> str:
    return "-" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def progress_line(sweep: Sweep) -> str:
    p = sweep.progress
    best = p.get("best_so_far") or {}
    best_text = f"; best so far: trial {best['trial']} val {_acc(best['val_accuracy'])}" if best else ""
    return (
        f"sweep {sweep.id} ({sweep.status}): {p.get('done', 0)}/{p.get('total', 0)} done, "
        f"{p.get('running', 0)} running, {p.get('queued', 0)} queued, {p.get('pending', 0)} not yet released"
        f"{best_text}"
    )


def leaderboard_table(result: dict[str, Any]) -> Table:
    table = Table(title="Leaderboard (ranked on validation)", title_justify="left", show_edge=False, pad_edge=False)
    for name in ("trial", "config", "val acc", "test acc", "scratch test", "gap closed", "params", "latency ms"):
        table.add_column(name, justify="left" if name == "config" else "right")
    for row in result.get("leaderboard", []):
        config = ", ".join(f"{k}={v}" for k, v in row["config"].items()) + (" (control)" if row["control"] else "")
        table.add_row(
            str(row["trial"]),
            config if row["status"] == "succeeded" else f"{config} [{row['status']}]",
            _acc(row["val_accuracy"]),
            _acc(row["test_accuracy"]),
            _acc(row["scratch_test_accuracy"]),
            _num(row["gap_closed"], ".0%"),
            _num(row["parameters"], ",.0f"),
            _num(row["latency_ms"], ".3f"),
        )
    return table


def result_lines(result: dict[str, Any]) -> list[str]:
    winner, budget = result.get("winner"), result.get("budget")
    lines = []
    if winner:
        lines.append(f"winner (on validation): trial {winner['trial']}, job {winner['job_id']}: {winner['config']}")
        lines.append(f"  its student: distill download {winner['job_id']} out/")
    if budget:
        met = "met" if budget["met"] else "NOT met"
        lines.append(f"budget {budget['key']} <= {budget['limit']:g}: {met}. {budget.get('detail', '')}".rstrip())
    lines.append(f"teacher trainings: {result.get('teacher_trainings')}")
    if result.get("early_stop"):
        lines.append(f"early stopping on (median rule): stopped trials {result['early_stop']['stopped_trials']}")
    if result.get("pareto_png_url"):
        lines.append(f"Pareto figure: {result['pareto_png_url']}")
    return lines


def sweep_view(sweep: Sweep) -> RenderableType:
    parts: list[RenderableType] = [progress_line(sweep)]
    if sweep.result:
        parts += [leaderboard_table(sweep.result), *result_lines(sweep.result)]
    return Group(*parts)
