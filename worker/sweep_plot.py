"""A finished sweep's pareto.png: validation accuracy against latency (onnxruntime, CPU, batch 1
and a batch) and against size, the front drawn as a line, the winner circled, a budget dashed.
It draws the result's `figures` (app/sweeps/board.py), the same points the JSON gives.
matplotlib's Agg backend through Figure (no pyplot state); drawn in the worker's main process,
which never imports torch."""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator


def _panel(ax, figure: dict[str, Any], title: str | None) -> None:
    points = figure["points"]
    ax.scatter([p["x"] for p in points], [p["y"] for p in points], color="#999", s=18)
    front = sorted((p for p in points if p["on_front"]), key=lambda p: p["x"])
    ax.plot([p["x"] for p in front], [p["y"] for p in front], "o-", color="#1f77b4")
    for p in points:
        if p["winner"]:
            ax.scatter([p["x"]], [p["y"]], s=140, facecolors="none", edgecolors="#d62728")
    if figure["budget"] is not None:
        ax.axvline(figure["budget"], color="#d62728", linestyle="--", linewidth=1)
    if not points:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="#999")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    if figure["x"].startswith("latency"):  # similar students differ in the 4th digit: no offset notation
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.4g"))
    ax.set_xlabel(figure["x_label"])
    ax.set_ylabel("validation accuracy (mean over seeds)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def draw_pareto(result: dict[str, Any]) -> bytes:
    figures = result["figures"]
    canvas = Figure(figsize=(5 * len(figures), 4), dpi=100)
    note = result.get("latency") or {}
    threads = "/".join(map(str, note.get("intra_op_threads") or [])) or "?"
    batch = "/".join(map(str, note.get("batch_size") or [])) or "?"
    for i, figure in enumerate(figures):
        ax = canvas.add_subplot(1, len(figures), i + 1)
        title = None
        if figure["x"] == "latency_ms":
            title = f"{threads} intra-op thread(s)"
        elif figure["x"] == "latency_batch_ms":
            title = f"batch of {batch}, {threads} intra-op thread(s)"
        _panel(ax, figure, title)
    canvas.tight_layout()
    out = io.BytesIO()
    canvas.savefig(out, format="png")
    return out.getvalue()
