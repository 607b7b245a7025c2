"""Running the engine in process: a run-a-job helper, reporters that die on cue, reports without
wall-clock (the specs: tests/support/specs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.contract.spec import JobSpec
from worker.distill.inputs import JobInputs
from worker.distill.pipeline import JobResult, run_job
from worker.distill.reporting import MemoryReporter

# wall-clock: the only report numbers that may differ (and the ONNX latency's thread count and
# batch size beside it)
TIMING = {
    "latency_ms",
    "latency_onnx_ms",
    "latency_onnx_batch_ms",
    "latency_onnx_batch_size",
    "latency_onnx_threads",
    "speedup",
}


def run_tiny_job(
    spec: JobSpec,
    tmp_path: Path,
    data_cache: Path,
    inputs: JobInputs | None = None,
    reporter: MemoryReporter | None = None,
) -> tuple[JobResult, MemoryReporter]:
    """Run `spec` in tmp_path (checkpoints in tmp_path/"ck", output in tmp_path/"work")."""
    reporter = reporter or MemoryReporter(checkpoint_dir=Path(tmp_path) / "ck")
    return run_job(spec, reporter, Path(tmp_path) / "work", data_cache, inputs), reporter


def without_timing(obj: Any) -> Any:
    """A report with its wall-clock figures removed, for comparing runs."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


class Killed(BaseException):
    """The process died here (BaseException: nothing in the engine may swallow it)."""


class DiesAt(MemoryReporter):
    """A reporter whose worker dies at one point `at` of the job:

    ("metric", phase, run, epoch): right after that epoch's metric was delivered;
    ("batch", phase, run, epoch):  at the 5th batch boundary of the epoch after it;
    ("phase", name):               as that phase starts.
    """

    def __init__(self, checkpoint_dir: Path, at: tuple) -> None:
        super().__init__(checkpoint_dir=checkpoint_dir)
        self.at = at
        self._batches: int | None = None

    def phase(self, name):
        if self.at == ("phase", name):
            raise Killed(self.at)
        super().phase(name)

    def metric(self, phase, run, epoch, values):
        super().metric(phase, run, epoch, values)
        if self.at == ("metric", phase, run, epoch):
            raise Killed(self.at)
        if self.at == ("batch", phase, run, epoch):
            self._batches = 0

    def should_stop(self):
        if self._batches is not None:
            self._batches += 1
            if self._batches == 5:
                raise Killed(self.at)
        return super().should_stop()
