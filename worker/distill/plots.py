"""The job's curves as a picture (matplotlib, Agg): curves.png, loss and accuracy per epoch of every run.

One column per training phase (teacher, assistant, generation, student, baseline, in the order
they ran), loss on top and accuracy below; one colour per run (the same seed has the same colour
in the student and the baseline columns), validation solid and training dashed. The accuracy row
shares its y axis, so the student and its baseline read against each other; the loss row does
not (each phase trains on its own objective).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import cast

import matplotlib
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from app.contract.phases import PHASES

# (phase, run) -> one dict per epoch: epoch, train_loss, train_accuracy, val_loss, val_accuracy, ...
Histories = Mapping[tuple[str, str], Sequence[Mapping[str, float]]]

COLUMN_INCHES, HEIGHT_INCHES, DPI = 4.2, 6.4, 100
CAPTION = (
    "solid: validation (loss = cross-entropy on the labels, comparable across phases)    "
    "dashed: training (loss = the phase's own objective, e.g. the distillation loss for the student)"
)
TITLES = {
    "teacher": "Teacher",
    "assistant": "Teacher assistants",
    "generation": "Born-again generations",
    "student": "Distilled student",
    "baseline": "Scratch baseline (no teacher)",
}


def phases_of(histories: Histories) -> list[str]:
    """The phases that have curves, in the order a job runs them."""
    present = {phase for (phase, _), epochs in histories.items() if epochs}
    return [p for p in PHASES if p in present] + sorted(present - set(PHASES))


def figure_size(n_phases: int) -> tuple[int, int]:
    """(width, height) of curves.png in pixels."""
    return round(max(n_phases, 2) * COLUMN_INCHES * DPI), round(HEIGHT_INCHES * DPI)  # 2: room for the caption


def _draw_run(ax_loss, ax_acc, epochs: Sequence[Mapping[str, float]], colour) -> None:
    x = [e["epoch"] for e in epochs]
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for split, style in (("val", "-"), ("train", "--")):
            key = f"{split}_{metric}"
            if all(key in e for e in epochs):
                ax.plot(
                    x,
                    [e[key] for e in epochs],
                    style,
                    color=colour,
                    linewidth=1.6,
                    marker="o" if len(x) <= 12 else None,
                    markersize=3,
                )


def _run_colours(histories: Histories) -> dict[str, tuple]:
    """One colour per run name, first seen first: seed=0 is the same colour in every phase."""
    names = list(dict.fromkeys(run for _, run in histories))
    tab10 = matplotlib.colormaps["tab10"]
    assert isinstance(tab10, ListedColormap)  # a list of ten colours
    palette = cast(Sequence[tuple[float, float, float]], tab10.colors)  # tab10's: RGB triples
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def draw_curves(histories: Histories) -> bytes:
    """curves.png's bytes."""
    phases = phases_of(histories)
    width, height = figure_size(len(phases))
    # A bare Figure, not pyplot: no global figure registry, and savefig renders PNG with Agg
    # whatever backend the process has (a worker has no display).
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, max(len(phases), 1), squeeze=False)
    colours = _run_colours(histories)
    for col, phase in enumerate(phases):
        ax_loss, ax_acc = axes[0][col], axes[1][col]
        if col:  # accuracy is comparable across phases; the losses are different objectives
            ax_acc.sharey(axes[1][0])
        runs = [(run, epochs) for (p, run), epochs in histories.items() if p == phase and epochs]
        for run, epochs in runs:
            _draw_run(ax_loss, ax_acc, epochs, colours[run])
        ax_loss.set_title(TITLES.get(phase, phase), fontsize=11)
        ax_acc.set_xlabel("epoch")
        for ax in (ax_loss, ax_acc):
            ax.grid(True, alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        handles = [Line2D([], [], color=colours[run], linewidth=2, label=run) for run, _ in runs]
        handles += [
            Line2D([], [], color="0.3", linestyle="-", label="validation"),
            Line2D([], [], color="0.3", linestyle="--", label="training"),
        ]
        ax_acc.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.85)
    if not phases:
        axes[0][0].text(0.5, 0.5, "no training runs", ha="center", va="center", transform=axes[0][0].transAxes)
    axes[0][0].set_ylabel("loss")
    fig.supxlabel(CAPTION, fontsize=9, color="0.25")
    axes[1][0].set_ylabel("accuracy")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
