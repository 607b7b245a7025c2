"""The job's time left, from the seconds per epoch measured while it runs (issue 14 item 7).

Counting planned epochs alike was 6-9x too high for the first third of the demo job: a CNN teacher
epoch costs ~30x an MLP student epoch there, and the teacher stops early at about a third of its
budget. So each run is priced on its own:

- the run under way: its epochs left at its measured pace (the median of its epochs, leaving out
  its first once there are others: the first pays warm-up);
- a run not started yet, from what is known, best first: a run of the same phase and architecture
  already measured (a student seed after the first), else the same architecture in another phase
  (the baseline after the students), else its probed epoch (`probe`: ten optimizer steps of
  each architecture, timed on random data before the job trains, worker/distill/step_probe.py; a
  small model's step is mostly fixed cost, which multiply-adds do not see) plus what the trainer
  adds to it in the latest measured run, else by forward multiply-adds per example and training rows
  (`work`), else the last measured pace as it is (a brought model: nothing to compare);
- early stopping: a run with `patience` is expected to stop `patience` epochs after its best one,
  plus the share of the budget beyond that which its last `patience` epochs improved in;
- the work between runs and at the end, in epochs of the runs it is about (KEEP_EPOCHS,
  EVAL_SHARE): keeping a trained teacher, evaluating the other models, exporting.

Nothing here reads a clock but `clock` (tests inject one). Before any epoch was measured the time
left is unknown (None), also on a resumed attempt: its restored epochs cost nothing measurable.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from app.contract.phases import ASSISTANT, TEACHER
from app.contract.stages import state_shapes

# Work that is not epochs, priced in epochs of the runs it is about (fitted on bench/eta.py's
# traces of session 7: a Fashion-MNIST CNN teacher of 11 s epochs took 14 s to keep, its tail 10.5 s):
# - keeping a trained teacher or assistant (its metrics on every split, its ONNX export checked on
#   the test split, its files stored) and getting the next run ready: KEEP_EPOCHS of its epochs
#   (measured 1.2-2.2) until this job has kept one, then what that one took;
# - evaluate and export: every trained model but the teachers (their figures are those taken when
#   they were kept) evaluated on every split again, EVAL_SHARE of a keeping per model (measured
#   0.4-0.7), plus TAIL_SECONDS (the student's export, the report's files, storing them).
KEEP_EPOCHS = 1.5
EVAL_SHARE = 0.55
TAIL_SECONDS = 1.0
KEPT = (TEACHER, ASSISTANT)  # the phases whose models are kept (worker/distill/pipeline.py)
# A file where every Estimator appends each call it gets (JSON lines, the clock's time first):
# bench/eta.py records real jobs' calls once and replays them against this module as it changes.
TRACE_FILE = "DISTILL_ETA_TRACE"


@dataclass(frozen=True)
class StepProbe:
    step_seconds: float  # one optimizer step on a batch
    forward_seconds: float  # one eval-mode forward pass of a batch (the per-epoch validation)
    batch_size: int
    val_rows: int

    def steps(self, rows: int) -> int:
        return math.ceil(rows / self.batch_size)

    def epoch_seconds(self, rows: int) -> float:
        """An epoch of `rows` training rows: its steps, then validation."""
        return self.steps(rows) * self.step_seconds + self.val_rows / self.batch_size * self.forward_seconds


@dataclass(frozen=True)
class PlannedRun:
    phase: str
    name: str
    arch: str  # the architecture as JSON: runs of one architecture cost alike per epoch
    budget: int
    patience: int | None = None
    work: float | None = None  # forward multiply-adds per example; None: unknown
    rows: int | None = None  # training rows; None: as the first run's
    probe: StepProbe | None = None  # its step timed before the job trained (worker/distill/step_probe.py)

    @property
    def key(self) -> tuple[str, str]:
        return (self.phase, self.name)


@dataclass(frozen=True)
class Estimate:
    """What the job reports beside its progress: the time left and its epoch budget."""

    seconds_left: float | None  # None: nothing measured yet
    epochs_done: int  # trained or restored so far; an early-stopped run counts what it ran
    epochs_budget: int  # epochs_done's end: finished runs at what they ran, the others at their budget
    epochs_planned: int  # every trained run's budget, as the spec planned it
    run: dict[str, Any] | None = None  # the run under way: phase, name, epoch, budget

    def done(self) -> Estimate:
        return replace(self, seconds_left=0.0)

    def epochs(self) -> dict[str, Any]:
        return {"done": self.epochs_done, "budget": self.epochs_budget, "planned": self.epochs_planned, "run": self.run}


@dataclass
class _Run:
    plan: PlannedRun
    rows: int | None
    durations: list[float] = field(default_factory=list)  # seconds of each epoch measured here
    epoch: int = 0
    best: int | None = None
    improved: list[int] = field(default_factory=list)  # the epochs with a new best
    finished: int | None = None  # epochs it ran, once finished
    last_at: float | None = None  # the clock at its last epoch end (or its start)
    after: float | None = None  # seconds from its end to the next run's start (a kept run: its keeping)

    def pace(self) -> float | None:
        """The median of its epochs after the first (the warm-up): one slow epoch (a checkpoint,
        the machine busy for a moment) must not multiply the time left of every run priced from
        this one. Over all of them, not the last few: the last 5 epochs of a student of 0.04 s
        epochs span 0.2 s, where one flush moved the demo's ETA by +46%."""
        if not self.durations:
            return None
        return statistics.median(self.durations[1:] if len(self.durations) > 1 else self.durations)


def expected_epochs(
    budget: int, patience: int | None, epoch: int, best: int | None, improved: Sequence[int] = ()
) -> float:
    """Where a run is expected to end, early stopping included. A run whose best epoch is b stops at
    b + patience at the earliest; beyond that it is expected to use the share of its budget that its
    last `patience` epochs improved in (`improved`: the epochs with a new best). A run improving at
    every epoch goes on; one that improved once in them is near its stop, and at b + patience the
    share is 0. The demo's CNN teacher (budget 60, patience 10) improved at 1, 2, 3, 5, 13, 14 and
    stopped at 24; the Fashion-MNIST one of bench/eta.py (budget 8, patience 2) at every epoch. A
    constant share instead (0.15 or 0.4 of the budget beyond b + patience, fading) fitted one of
    them or the other, not both (bench/eta.py --replay)."""
    if patience is None:
        return float(budget)
    earliest = (best or 0) + patience
    if earliest >= budget:
        return float(budget)
    improving = sum(1 for e in improved if e > epoch - patience) / patience
    return max(float(epoch), min(float(budget), earliest + improving * (budget - earliest)))


class Estimator:
    def __init__(
        self,
        runs: Sequence[PlannedRun],
        clock: Callable[[], float] = time.monotonic,
        trace: Path | None = None,
    ) -> None:
        self._clock = clock
        first_rows = next((r.rows for r in runs if r.rows), None)
        self._runs = {r.key: _Run(r, r.rows or first_rows) for r in runs}
        self._current: _Run | None = None
        self._measured: list[_Run] = []  # runs with a measured pace, the latest last
        self._tail_started: float | None = None
        self._ended: tuple[_Run, float] | None = None  # the run that finished last, and when
        traced = os.environ.get(TRACE_FILE)
        self._trace = trace or (Path(traced) if traced else None)
        if self._trace is not None:
            self._record("runs", [asdict(r) for r in runs])

    def _record(self, call: str, *args: Any) -> None:
        if self._trace is not None:
            with self._trace.open("a") as f:
                f.write(json.dumps({"at": self._clock(), "call": call, "args": args}) + "\n")

    # --- what the pipeline says ----------------------------------------------------
    def start_run(self, key: tuple[str, str], rows: int | None = None) -> None:
        self._record("start_run", key, rows)
        run = self._runs.get(key)
        if run is None:
            return
        self._between_runs()
        run.rows = rows or run.rows
        run.last_at = self._clock()
        self._current = run

    def _between_runs(self) -> None:
        """The previous run's `after`: from its end to now (the next run's start, or evaluate's)."""
        if self._ended is not None:
            ended, at = self._ended
            ended.after, self._ended = self._clock() - at, None

    def rows_of(self, phase: str, rows: int) -> None:
        """The training rows of a phase's runs, once known (the students' data is made after the teacher)."""
        self._record("rows_of", phase, rows)
        for run in self._runs.values():
            if run.plan.phase == phase and run.last_at is None:
                run.rows = rows

    def resumed(self, epoch: int) -> None:
        """The current run goes on from its checkpoint's `epoch`: counted, not timed."""
        self._record("resumed", epoch)
        if self._current is not None:
            self._current.epoch = epoch
            self._current.last_at = self._clock()

    def epoch(self, epoch: int, best: int | None = None) -> None:
        self._record("epoch", epoch, best)
        run = self._current
        if run is None:
            return
        now = self._clock()
        if run.last_at is not None and epoch > run.epoch:
            run.durations.append((now - run.last_at) / (epoch - run.epoch))
            if run not in self._measured:
                self._measured.append(run)
        if best is not None and best == epoch and best != run.best:
            run.improved.append(epoch)
        run.epoch, run.best, run.last_at = epoch, best, now

    def finish_run(self, epochs_run: int) -> None:
        self._record("finish_run", epochs_run)
        if self._current is not None:
            self._current.finished = epochs_run
            self._current.epoch = epochs_run
            self._ended = (self._current, self._clock())
            self._current = None

    def evaluating(self) -> None:
        self._record("evaluating")
        self._between_runs()
        self._tail_started = self._clock()

    def ended(self) -> None:
        self._record("ended")

    # --- what it answers ---------------------------------------------------------------
    def estimate(self) -> Estimate:
        runs = list(self._runs.values())
        current = self._current
        return Estimate(
            seconds_left=self.seconds_left(),
            epochs_done=sum(r.finished if r.finished is not None else r.epoch for r in runs),
            epochs_budget=sum(r.finished if r.finished is not None else r.plan.budget for r in runs),
            epochs_planned=sum(r.plan.budget for r in runs),
            run=None
            if current is None
            else {
                "phase": current.plan.phase,
                "name": current.plan.name,
                "epoch": current.epoch,
                "budget": current.plan.budget,
            },
        )

    def seconds_left(self) -> float | None:
        if not self._measured:
            return None
        runs = list(self._runs.values())
        paces = {r.plan.key: pace for r in runs if (pace := self._expected_pace(r)) is not None}
        if len(paces) < len(runs):
            return None
        keeping = self._keep_epochs()
        left = sum(self._run_seconds(r, paces[r.plan.key], keeping) for r in runs if r.finished is None)
        if self._ended is not None and self._ended[0].plan.phase in KEPT:  # keeping it now
            ended, at = self._ended
            left += max(0.0, keeping * paces[ended.plan.key] - (self._clock() - at))
        evaluated_again = sum(pace for key, pace in paces.items() if key[0] != TEACHER)  # a teacher's figures are kept
        tail = TAIL_SECONDS + EVAL_SHARE * keeping * evaluated_again
        if self._tail_started is not None:
            tail = max(0.0, tail - (self._clock() - self._tail_started))
        return left + tail

    def _expected_pace(self, run: _Run) -> float | None:
        # A run's first epoch pays its warm-up: until it has a second, a run of the same kind
        # measured longer says more.
        return run.pace() if len(run.durations) > 1 else (self._pace_of(run) or run.pace())

    @staticmethod
    def _run_seconds(run: _Run, pace: float, keeping: float) -> float:
        """A run's seconds left: its expected epochs left at its pace, and its keeping."""
        epochs = expected_epochs(run.plan.budget, run.plan.patience, run.epoch, run.best, run.improved) - run.epoch
        kept = keeping if run.plan.phase in KEPT else 0.0
        return (max(0.0, epochs) + kept) * pace

    def _keep_epochs(self) -> float:
        """A kept run's keeping in its own epochs: as this job's last kept run took, else KEEP_EPOCHS."""
        for run in reversed(self._measured):
            pace = run.pace()
            if run.plan.phase in KEPT and run.after is not None and pace:
                return run.after / pace
        return KEEP_EPOCHS

    def _pace_of(self, run: _Run) -> float | None:
        """The seconds per epoch of a run not measured yet, from the runs that were."""
        same_phase = [m for m in self._measured if (m.plan.phase, m.plan.arch) == (run.plan.phase, run.plan.arch)]
        same_arch = [m for m in self._measured if m.plan.arch == run.plan.arch]
        for found in (same_phase, same_arch):
            if found:  # the one measured longest (ties: the latest)
                best = max(reversed(found), key=lambda m: len(m.durations))
                best_pace = best.pace()
                assert best_pace is not None  # a measured run has an epoch
                return best_pace * _ratio(run.rows, best.rows)
        latest = self._measured[-1]
        latest_pace = latest.pace()
        assert latest_pace is not None  # a measured run has an epoch
        if run.plan.probe and latest.plan.probe and run.rows and latest.rows:
            return _probed_pace(run.plan.probe, run.rows, latest.plan.probe, latest.rows, latest_pace)
        work = _ratio(run.plan.work, latest.plan.work)
        return latest_pace * work * _ratio(run.rows, latest.rows)


def _probed_pace(probe: StepProbe, rows: int, measured: StepProbe, measured_rows: int, measured_pace: float) -> float:
    """An epoch of a run not measured yet: its probe, plus what the trainer adds to the bare step
    (indexing and moving the batch, the teacher signal, the metrics) as a measured run shows it.
    Whether that is a fixed cost per step (the measured pace's excess over its probe) or a share
    of the step (their ratio) differs between runs of one job: on bench/eta.py's recorded jobs the
    excess priced the demo's students at 1.5x what they cost in one run, the ratio the teacher
    assistant's at 0.5x in another: the mean of the two (replays: bench/results/eta.md)."""
    own, measured_probe = probe.epoch_seconds(rows), measured.epoch_seconds(measured_rows)
    per_step = max(0.0, measured_pace - measured_probe) / measured.steps(measured_rows)
    fixed = own + per_step * probe.steps(rows)
    proportional = own * measured_pace / measured_probe
    return (fixed + proportional) / 2


def _ratio(new: float | None, old: float | None) -> float:
    return new / old if new and old else 1.0


def forward_work(arch, input_shape: tuple[int, ...], num_classes: int) -> float | None:
    """Multiply-adds of one example's forward pass, for comparing runs' costs: a dense layer's
    weights count once, a conv's once per output position (stage i runs at the input's size
    halved i times). By parameter count alone the demo's CNN teacher would look 3x an MLP student
    while its epochs cost 30x. Standard (timm/torchvision) models: None (their shapes are not here)."""
    if arch is None or getattr(arch, "name", None) not in ("mlp", "cnn"):
        return None
    total = 0.0
    for key, (shape, _dtype) in state_shapes(arch, tuple(input_shape), num_classes).items():
        if not key.endswith("weight") or len(shape) < 2:
            continue
        positions = 1
        if arch.name == "cnn" and len(shape) > 2:  # a conv kernel: (out, in, *kernel)
            stage = int(key.split(".")[1])
            positions = math.prod(max(1, s >> stage) for s in input_shape)
        total += math.prod(shape) * positions
    return total or None


def planned_run(run, input_shape: tuple[int, ...], num_classes: int, rows: int | None) -> PlannedRun:
    """A plan's Run (worker/distill/plan.py) as the estimator sees it."""
    arch = json.dumps(run.arch.model_dump(mode="json"), sort_keys=True) if run.arch is not None else "brought"
    return PlannedRun(
        phase=run.phase,
        name=run.name,
        arch=arch,
        budget=run.epochs,
        patience=run.optim.patience,
        work=forward_work(run.arch, input_shape, num_classes),
        rows=rows,
    )
