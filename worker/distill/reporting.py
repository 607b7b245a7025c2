"""How the engine talks to the outside world.

The engine knows nothing of HTTP, Celery or the database: it reports through
this protocol. worker/tasks.py implements it on the database; tests and bench
scripts use MemoryReporter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from worker.distill.eta import Estimate


class Cancelled(Exception):
    """Raised inside the engine when the reporter asks it to stop."""


class Reporter(Protocol):
    # Where the trainer keeps one checkpoint per run ("<phase>-<run>.pt"), created if
    # missing.  The same folder on a later attempt resumes the job; the caller owns it
    # (deletes it once the job has ended).  None turns checkpoints off (tests, bench).
    checkpoint_dir: Path
    # At least this long between two checkpoints of a run (each run's end is always one);
    # 0: one at every epoch end.  A crash loses at most this (plus the epoch under way).
    checkpoint_seconds: float

    # The job's id where there is one (the report's provenance names it); None in tests and bench.
    @property
    def job_id(self) -> str | None: ...

    def phase(self, name: str) -> None:
        """A new phase starts (one of app.contract.phases.PHASES)."""

    def progress(self, fraction: float) -> None:
        """Overall progress of the job, 0..1, monotone."""

    def estimate(self, estimate: Estimate) -> None:
        """The time left and the epoch budget (worker/distill/eta.py), after each progress report;
        wall-clock derived, so never part of a comparison of outcomes."""

    def metric(self, phase: str, run: str, epoch: int, values: dict[str, float]) -> None:
        """Per-epoch metrics of one run (e.g. run='seed=0') of a phase."""

    def event(self, message: str, level: str = "info") -> None:
        """Something a person watching the job should read."""

    def should_stop(self) -> bool:
        """True once cancellation was requested; checked at batch boundaries (keep it cheap)."""

    def flush(self) -> None:
        """Deliver what metric/progress buffered: called before every checkpoint, so the
        epochs a checkpoint accounts for are never lost to a crash."""


@dataclass
class MemoryReporter:
    checkpoint_dir: Path | None
    job_id: str | None = None
    checkpoint_seconds: float = 0.0
    phases: list[str] = field(default_factory=list)
    progresses: list[float] = field(default_factory=list)
    metrics: list[tuple[str, str, int, dict[str, float]]] = field(default_factory=list)
    estimates: list[Estimate] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    stop_requested: bool = False

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def progress(self, fraction: float) -> None:
        self.progresses.append(fraction)

    def estimate(self, estimate: Estimate) -> None:
        self.estimates.append(estimate)

    def metric(self, phase: str, run: str, epoch: int, values: dict[str, float]) -> None:
        self.metrics.append((phase, run, epoch, dict(values)))

    def event(self, message: str, level: str = "info") -> None:
        self.events.append((level, message))

    def should_stop(self) -> bool:
        return self.stop_requested

    def flush(self) -> None:
        """Nothing is buffered."""
