"""Overall job progress: planned epochs done / planned epochs, monotone, ending at 1.0.

Each run's full epoch budget is planned up front; a run that stops early
jumps to the end of its budget, so the fraction never goes backwards and the
ETA the API derives from it only ever gets better news.  Evaluate and export
share the last `tail` of the bar.
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

    def start(self) -> None:
        self._set(0.0)

    def run(self, budget: int) -> EpochCallback:
        """The trainer's on_epoch callback for one run of `budget` planned epochs."""
        base = self._done

        def on_epoch(epoch: int) -> None:
            self._set(self._epochs(base + min(epoch, budget)))

        return on_epoch

    def run_done(self, budget: int) -> None:
        self._done += budget
        self._set(self._epochs(self._done))

    def tail(self, share: float) -> None:
        """Past all training: `share` (0..1) of the evaluate/export tail is done."""
        self._set(1.0 - self._tail + self._tail * share)
