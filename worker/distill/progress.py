"""Overall job progress, 0..1, monotone, ending at 1.0, and the time left beside it.

The fraction counts planned epochs (a finished run counts its whole budget, also when it stopped
early; evaluate and export share the last `tail`), so it is the same on every machine and a
resumed job starts where its checkpoints left it, not at 0. The time left is not derived from it:
an Estimator (worker/distill/eta.py) prices each run by its measured seconds per epoch, and every
report of the fraction is followed by one of the Estimate (reporter.estimate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from worker.distill.eta import Estimator, PlannedRun
from worker.distill.reporting import Reporter
from worker.distill.trainer import EpochCallback


class Progress:
    def __init__(
        self,
        reporter: Reporter,
        planned_epochs: int,
        tail: float = 0.05,
        *,
        runs: Sequence[PlannedRun] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reporter = reporter
        self._planned = max(1, planned_epochs)
        self._tail = tail
        self._done = 0  # epochs of finished runs, counted at their full budget
        self._last = -1.0
        self.estimator = Estimator(runs, clock)

    def _set(self, fraction: float) -> None:
        fraction = min(1.0, max(fraction, self._last))
        if fraction > self._last:
            self._last = fraction
            self._reporter.progress(fraction)

    def _estimate(self) -> None:
        self._reporter.estimate(self.estimator.estimate())

    def _epochs(self, epochs: int) -> float:
        return (1.0 - self._tail) * epochs / self._planned

    def start(self, epochs_done: int = 0) -> None:
        """The first report: 0, or where a resumed job stands (planned epochs that its
        checkpoints account for), so a resumed job never goes back to zero."""
        self._set(self._epochs(min(epochs_done, self._planned)))

    def run(self, budget: int, key: tuple[str, str] | None = None, rows: int | None = None) -> EpochCallback:
        """The trainer's on_epoch callback for one run (`key`: its phase and name) of `budget`
        planned epochs on `rows` training rows."""
        if key is not None:
            self.estimator.start_run(key, rows)
            self._estimate()
        return RunProgress(self, self._done, budget)

    def at(self, epochs: int) -> None:
        """Planned epochs done so far (finished runs at their budget, plus the current run's)."""
        self._set(self._epochs(epochs))

    def run_done(self, budget: int, epochs_run: int | None = None) -> None:
        self._done += budget
        self.estimator.finish_run(budget if epochs_run is None else epochs_run)
        self._set(self._epochs(self._done))
        self._estimate()

    def evaluating(self) -> None:
        """Training is over; evaluate and export begin (the fraction does not move)."""
        self.estimator.evaluating()
        self._estimate()

    def tail(self, share: float) -> None:
        """Past all training: `share` (0..1) of the evaluate/export tail is done."""
        self._set(1.0 - self._tail + self._tail * share)
        if share >= 1.0:
            self.estimator.ended()
            self._reporter.estimate(self.estimator.estimate().done())
        else:
            self._estimate()


class RunProgress:
    """One run's share of the job's progress: its epochs count after the runs before it.
    The trainer also tells it the best epoch so far (`best`) and where a resumed run goes on
    from (`resumed`), for the time left."""

    def __init__(self, progress: Progress, before: int, budget: int) -> None:
        self.progress, self.before, self.budget = progress, before, budget
        self._best: int | None = None

    def best(self, epoch: int) -> None:
        self._best = epoch

    def resumed(self, epoch: int) -> None:
        self.progress.estimator.resumed(epoch)
        self.progress.at(self.before + min(epoch, self.budget))

    def __call__(self, epoch: int) -> None:
        self.progress.estimator.epoch(epoch, self._best)
        self.progress.at(self.before + min(epoch, self.budget))
        self.progress._estimate()
