"""Overall job progress, 0..1, monotone, ending at 1.0, in units of time, so that the ETA the API
derives from it (elapsed * (1 - p) / p) is the time left.

Each run's epochs are weighted by their measured seconds per epoch: a run that has not started yet
costs its budget times the seconds per epoch measured in its own phase (a student seed after the
first), else in the run measured last (a CNN teacher epoch is not an MLP student epoch; once the
first student epoch is measured the estimate corrects). A run that stops early costs only the time
it took; the runs after it are estimated afresh. With no plan of runs (or before any epoch was
measured) every planned epoch counts the same. Evaluate and export share the last `tail`. A
resumed job starts where its checkpoints left it, not at 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from worker.distill.reporting import Reporter
from worker.distill.trainer import EpochCallback


class Progress:
    def __init__(
        self,
        reporter: Reporter,
        planned_epochs: int,
        tail: float = 0.05,
        *,
        runs: Sequence[tuple[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reporter = reporter
        self._planned = max(1, planned_epochs)
        self._tail = tail
        self._runs = list(runs or [])  # (phase, epoch budget) of each run, in order
        self._clock = clock
        self._done = 0  # epochs of finished runs, counted at their full budget
        self._finished = 0  # runs finished
        self._last = -1.0
        self._started = clock()
        self._per_epoch: dict[str, float] = {}  # phase -> seconds per epoch, last measured
        self._latest: float | None = None  # seconds per epoch of the run measured last

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
        self._started = self._clock()
        self._set(self._epochs(min(epochs_done, self._planned)))

    def run(self, budget: int) -> EpochCallback:
        """The trainer's on_epoch callback for one run of `budget` planned epochs."""
        return RunProgress(self, self._done, budget)

    def at(self, epochs: int) -> None:
        """Planned epochs done so far (finished runs at their budget, plus the current run's)."""
        self._set(self._epochs(epochs))

    def epoch(self, run: RunProgress, epoch: int) -> None:
        """One more epoch of the current run: measure it, then report the share of time spent."""
        if run.first is None:  # a resumed run's first epoch here is not its first epoch
            run.first = epoch - 1
        seconds = (self._clock() - run.started) / max(1, epoch - run.first)
        self._latest = seconds
        if self._finished < len(self._runs):
            self._per_epoch[self._runs[self._finished][0]] = seconds
        spent = self._clock() - self._started
        left = self._seconds_left(max(0, run.budget - epoch) * seconds, self._finished + 1)
        if left is None or spent <= 0:
            self.at(run.before + min(epoch, run.budget))
        else:
            self._set((1.0 - self._tail) * spent / (spent + left))

    def _seconds_left(self, current: float, later_from: int) -> float | None:
        """The current run's seconds left, plus each later run's budget at its estimated pace;
        None before any epoch was measured or without a plan."""
        if not self._runs or self._latest is None:
            return None
        return current + sum(
            budget * self._per_epoch.get(phase, self._latest) for phase, budget in self._runs[later_from:]
        )

    def run_done(self, budget: int) -> None:
        self._done += budget
        self._finished += 1
        spent = self._clock() - self._started
        left = self._seconds_left(0.0, self._finished)
        if left is None or spent <= 0:
            self._set(self._epochs(self._done))
        else:
            self._set((1.0 - self._tail) * spent / (spent + left))

    def tail(self, share: float) -> None:
        """Past all training: `share` (0..1) of the evaluate/export tail is done."""
        self._set(1.0 - self._tail + self._tail * share)


class RunProgress:
    """One run's share of the job's progress: its epochs count after the runs before it."""

    def __init__(self, progress: Progress, before: int, budget: int) -> None:
        self.progress, self.before, self.budget = progress, before, budget
        self.started = progress._clock()
        self.first: int | None = None  # the epoch before the first one reported here

    def __call__(self, epoch: int) -> None:
        self.progress.epoch(self, epoch)
