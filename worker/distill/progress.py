"""Overall job progress: planned epochs done / planned epochs, monotone, ending at 1.0.

Each run's full epoch budget is planned up front; a run that stops early
jumps to the end of its budget, so the fraction never goes backwards and the
ETA the API derives from it only ever gets better news.  Evaluate and export
share the last `tail` of the bar.  A resumed job starts where its checkpoints
left it, not at 0.
"""

from __future__ import annotations

from worker.distill.reporting import Reporter
from worker.distill.trainer import EpochCallback


class Progress:
    def __init__(self, reporter: Reporter, planned_epochs: int, tail: float = 0.05) -> None:
        self._reporter = reporter
        self._planned = max(1, planned_epochs)
        self._tail = tail
        self._done = 0  # epochs of finished runs, counted at their full budget
        self._last = -1.0

    def _set(self, fraction: float) -> None:
        fraction = min(1.0, max(fraction, self._last))
        if fraction > self._last:
            self._last = fraction
            self._reporter.progress(fraction)

    def _epochs(self, epochs: int) -> float:
        return (1.0 - self._tail) * epochs / self._planned

    def start(self, epochs_done: int = 0) -> None:
        """The first report: 0, or where a resumed job stands (planned epochs that its
        checkpoints account for), so a resumed job never goes back to zero."""
        self._set(self._epochs(min(epochs_done, self._planned)))

    def run(self, budget: int) -> EpochCallback:
        """The trainer's on_epoch callback for one run of `budget` planned epochs."""
        return RunProgress(self, self._done, budget)

    def at(self, epochs: int) -> None:
        """Planned epochs done so far (finished runs at their budget, plus the current run's)."""
        self._set(self._epochs(epochs))

    def run_done(self, budget: int) -> None:
        self._done += budget
        self._set(self._epochs(self._done))

    def tail(self, share: float) -> None:
        """Past all training: `share` (0..1) of the evaluate/export tail is done."""
        self._set(1.0 - self._tail + self._tail * share)


class RunProgress:
    """One run's share of the job's progress: its epochs count after the runs before it."""

    def __init__(self, progress: Progress, before: int, budget: int) -> None:
        self.progress, self.before, self.budget = progress, before, budget

    def __call__(self, epoch: int) -> None:
        self.progress.at(self.before + min(epoch, self.budget))
