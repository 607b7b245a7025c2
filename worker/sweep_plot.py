"""A finished sweep's pareto.png: validation accuracy against latency and against size, the
front drawn as a line, the winner circled. matplotlib's Agg backend through Figure (no
pyplot state); drawn in the worker's main process, which never imports torch."""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure

PANELS = (("latency_ms", "latency (ms, batch 1, CPU)"), ("parameters", "parameters"))


def _panel(ax, rows: list[dict[str, Any]], front: list[int], cost: str, label: str, winner: int | None) -> None:
    points = [r for r in rows if r["val_accuracy"] is not None and r[cost] is not None]
    ax.scatter([r[cost] for r in points], [r["val_accuracy"]["mean"] for r in points], color="#999", s=18)
    on_front = sorted((r for r in points if r["trial"] in front), key=lambda r: r[cost])
    ax.plot([r[cost] for r in on_front], [r["val_accuracy"]["mean"] for r in on_front], "o-", color="#1f77b4")
    for r in points:
        if r["trial"] == winner:
            ax.scatter([r[cost]], [r["val_accuracy"]["mean"]], s=140, facecolors="none", edgecolors="#d62728")
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.grid(alpha=0.3)


def draw_pareto(result: dict[str, Any], budget: dict[str, Any] | None) -> bytes:
    figure = Figure(figsize=(10, 4), dpi=100)
    winner = (result.get("winner") or {}).get("trial")
    rows = result["leaderboard"]
    for i, (cost, label) in enumerate(PANELS):
        ax = figure.add_subplot(1, len(PANELS), i + 1)
        _panel(ax, rows, result["pareto"][cost], cost, label, winner)
        if budget and budget["key"] == cost:
            ax.axvline(budget["limit"], color="#d62728", linestyle="--", linewidth=1)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
