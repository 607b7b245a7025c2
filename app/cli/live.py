"""`distill watch`: one block that updates in place (rich.live) while events scroll above it."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from app.cli.background import in_background
from app.cli.tables import event_line, status_text
from app.client import Client, Job

TRAINING_PHASES = {"assistant", "generation", "student", "baseline"}  # budget: training.epochs


def epoch_budget(spec: dict[str, Any] | None, phase: str, run: str) -> int | None:
    """The planned epochs of the run the job reports on, from the spec as accepted."""
    spec = spec or {}
    if phase in TRAINING_PHASES:
        return (spec.get("training") or {}).get("epochs")
    if phase == "teacher":
        teacher = spec.get("teacher") or {}
        members = teacher.get("ensemble") or [teacher]
        index = int(run.split("=", 1)[1]) - 1 if run.startswith("member=") else 0
        if 0 <= index < len(members):
            return ((members[index] or {}).get("train") or {}).get("epochs")
    return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _metric(values: dict[str, float | None], key: str, label: str) -> str | None:
    value = values.get(key)
    return None if value is None else f"{label} {value:.3f}"


def _run_line(job: Job, latest) -> str:
    """phase, run and epoch of its budget: the worker's figures, else the spec's budget."""
    run = job.epochs.run if job.epochs is not None else None
    if run is not None and (run.phase, run.name) == (latest.phase, latest.run):
        return f"{job.phase or run.phase}  run {run.name}  epoch {run.epoch} of {run.budget}"
    budget = epoch_budget(job.spec, latest.phase, latest.run)
    epoch = f"epoch {latest.epoch}" + (f" of {budget}" if budget else "")
    return f"{job.phase or latest.phase}  run {latest.run}  {epoch}"


def _epochs_line(job: Job) -> str | None:
    epochs = job.epochs
    if epochs is None:
        return None
    shrunk = f" (planned {epochs.planned}; early stops end runs sooner)" if epochs.budget < epochs.planned else ""
    return f"{epochs.done} of {epochs.budget}{shrunk}"


def progress_view(job: Job, since: float = 0.0) -> Table:
    """The live block; `since`: seconds since the job was read, which the ETA counts down."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("job", Text.assemble(f"{job.id}  ", status_text(job), f"  attempt {job.attempts}"))
    latest = job.latest_metrics
    if latest is not None and not job.ended:
        grid.add_row("phase", _run_line(job, latest))
        scores = [
            _metric(latest.values, "train_loss", "train loss"),
            _metric(latest.values, "val_loss", "val loss"),
            _metric(latest.values, "train_accuracy", "train acc"),
            _metric(latest.values, "val_accuracy", "val acc"),
        ]
        grid.add_row("last epoch", "  ".join(s for s in scores if s))
    elif not job.ended:
        waiting = (job.status_detail or "waiting for a worker") if job.status == "queued" else "-"
        grid.add_row("phase", job.phase or waiting)
    if not job.ended and (epochs := _epochs_line(job)) is not None:
        grid.add_row("epochs", epochs)
    eta = None if job.eta_seconds is None else max(0.0, job.eta_seconds - since)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=1.0, completed=job.progress, width=40),
        f"{100 * job.progress:3.0f}%",
        f"ETA {_duration(eta)}" if not job.ended else "",
    )
    grid.add_row("progress", bar)
    return grid


class LiveView:
    """The block for rich.live, drawn again at each refresh: the ETA counts down between the
    job's messages (a stream sends the job when it changes, not every second)."""

    def __init__(self, job: Job, clock=time.monotonic) -> None:
        self.job, self.clock, self.read_at = job, clock, clock()

    def update(self, job: Job) -> None:
        self.job, self.read_at = job, self.clock()

    def __rich__(self) -> Table:
        return progress_view(self.job, self.clock() - self.read_at)


def watch(client: Client, job_id: str, console: Console, *, every: float = 1.0, poll: bool = False) -> Job:
    """Follow the job until it ends; events print above the live block. Ctrl-C (KeyboardInterrupt)
    leaves the job running and propagates to the caller, which says how to re-attach."""
    job = client.get(job_id)
    view = LiveView(job)
    with Live(view, console=console, refresh_per_second=4, transient=False) as live:
        for update in in_background(client.follow(job_id, every=every, poll=poll)):
            for event in update.events:
                live.console.print(event_line(event))
            job = update.job
            view.update(job)
            live.refresh()
    return job
