"""Rich tables of a sweep: progress, and the leaderboard (chosen on validation) when it ended."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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


COLUMNS = (
    "trial",
    "config",
    "val acc",
    "test acc",
    "scratch test",
    "pseudo-label test",
    "gap closed",
    "params",
    "bytes",
    "ms (batch 1)",
    "ms (batch)",
)


def _config_text(row: dict[str, Any]) -> str:
    config = ", ".join(f"{k}={v}" for k, v in row["config"].items()) + (" (control)" if row["control"] else "")
    if row["status"] != "succeeded":
        config += f" [{row['status']}{', stopped early' if row.get('stopped_early') else ''}]"
    return config


def leaderboard_table(rows: list[dict[str, Any]], title: str = "Leaderboard (ranked on validation)") -> Table:
    """Rows of the leaderboard; the winner (or the best so far) marked with *."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in COLUMNS:
        table.add_column(name, justify="left" if name == "config" else "right")
    for row in rows:
        table.add_row(
            f"{row['trial']}{' *' if row.get('winner') else ''}",
            escape(_config_text(row)),  # values such as seeds=[0, 1] are text, not rich markup
            _acc(row["val_accuracy"]),
            _acc(row["test_accuracy"]),
            _acc(row["scratch_test_accuracy"]),
            _acc(row.get("pseudo_label_test_accuracy")),
            _num(row["gap_closed"], ".0%"),
            _num(row["parameters"], ",.0f"),
            _num(row.get("bytes"), ",.0f"),
            _num(row["latency_ms"], ".3g"),
            _num(row.get("latency_batch_ms"), ".3g"),
        )
    return table


def latency_line(rows: list[dict[str, Any]]) -> str | None:
    """How the latency columns were measured, from the rows' own figures."""
    measured = [r for r in rows if r.get("latency_ms") is not None]
    if not measured:
        return None
    threads = sorted({r["latency_threads"] for r in measured if r.get("latency_threads")})
    batch = sorted({r["latency_batch_size"] for r in measured if r.get("latency_batch_size")})
    return (
        f"latency: onnxruntime on the CPU, {'/'.join(map(str, threads)) or '?'} intra-op thread(s); "
        f"ms (batch 1) is one example (what a latency budget is held to), "
        f"ms (batch) one whole batch of {'/'.join(map(str, batch)) or '?'}"
    )


def result_lines(result: dict[str, Any]) -> list[str]:
    winner, budget = result.get("winner"), result.get("budget")
    lines = []
    if winner:
        lines.append(f"winner (on validation): trial {winner['trial']}, job {winner['job_id']}: {winner['config']}")
        lines.append(f"  its student: distill download {winner['job_id']} out/")
    if budget:
        met = "met" if budget["met"] else "NOT met"
        measured = f" ({budget['measured']})" if budget.get("measured") else ""
        detail = budget.get("detail", "")
        lines.append(f"budget {budget['key']} <= {budget['limit']:g}{measured}: {met}. {detail}".rstrip())
    lines.append(f"teacher trainings: {result.get('teacher_trainings')}")
    if early := result.get("early_stop"):
        lines.append(
            f"early stopping on ({early['rule']} rule at {early['fraction']:.0%} of the epochs): "
            f"stopped trials {early['stopped_trials']}"
        )
    if result.get("pareto_png_url"):
        lines.append(f"Pareto figure: {result['pareto_png_url']}")
    return lines


def sweep_view(sweep: Sweep) -> RenderableType:
    """Progress; then the leaderboard once ended, else the standings so far (* the best so far).
    Lines are plain Text: a config's value is never read as rich markup."""
    parts: list[RenderableType] = [Text(progress_line(sweep))]
    rows = sweep.leaderboard
    if sweep.result:
        parts.append(leaderboard_table(rows))
    elif rows:
        parts.append(leaderboard_table(rows, "Standings so far (ranked on validation; * best so far)"))
    if rows and (line := latency_line(rows)):
        parts.append(Text(line))
    if sweep.result:
        parts += [Text(line) for line in result_lines(sweep.result)]
    return Group(*parts)
