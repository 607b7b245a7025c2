"""What one training step of an architecture costs here, timed on random data before the job
trains: the ETA's price for runs of an architecture nothing has measured yet (worker/distill/eta.py).

Scaling a measured teacher's pace by multiply-adds priced the demo's MLP students at a tenth of
what they cost (-60..-90% early in the job): a small model's step is mostly fixed cost (autograd,
the optimizer, kernel launches), which multiply-adds do not see. Timing a few steps sees it.

The probe leaves no trace on the job: its model, data and optimizer are its own, and the global
RNG is forked around it (the job's figures are bit for bit the same; tests/distill/test_golden.py).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from app.contract.architectures import Arch
from worker.distill.eta import PlannedRun, StepProbe
from worker.distill.models import build_model
from worker.distill.plan import Run
from worker.distill.trainer import rng_devices

# Timed after one warm-up step: a median of 3 steps of ~1 ms moved 2.7x between two bench runs
# of one job while its epochs moved 1.2x.
STEPS = 10
MAX_SECONDS = 2.0  # a large model on a CPU stops timing early (one timed step at least)


def probe(
    arch: Arch, input_shape: tuple[int, ...], num_classes: int, batch_size: int, val_rows: int, device: torch.device
) -> StepProbe:
    with torch.random.fork_rng(devices=rng_devices(device)):
        model = build_model(arch, input_shape, num_classes, seed=0).to(device)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((batch_size, *input_shape), generator=generator).to(device)
        y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        steps = _timed(device, lambda: _step(model, optimizer, x, y))
        model.eval()
        with torch.no_grad():
            forwards = _timed(device, lambda: model(x))
    return StepProbe(statistics.median(steps), statistics.median(forwards), batch_size, val_rows)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _timed(device: torch.device, work) -> list[float]:
    """Seconds of each call of `work` after a warm-up one, until STEPS or MAX_SECONDS."""
    seconds: list[float] = []
    started = time.perf_counter()
    for i in range(STEPS + 1):
        t = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            seconds.append(time.perf_counter() - t)
        if time.perf_counter() - started > MAX_SECONDS and i:
            break
    return seconds


def with_probes(
    planned: list[PlannedRun],
    runs: list[Run],
    input_shape: tuple[int, ...],
    num_classes: int,
    val_rows: int,
    device: torch.device,
) -> list[PlannedRun]:
    """The trained runs as planned (`runs`, and `planned`, the estimator's view of them) with a
    probe of each architecture where there are several (one: each run is priced by its own
    architecture's measured pace; nothing to compare)."""
    if len({p.arch for p in planned}) < 2:
        return planned
    probes: dict[tuple[str, int], StepProbe] = {}
    for p, run in zip(planned, runs, strict=True):
        key = (p.arch, run.optim.batch_size)
        if key not in probes:
            assert run.arch is not None  # a trained run is one of ours
            probes[key] = probe(run.arch, input_shape, num_classes, run.optim.batch_size, val_rows, device)
    return [replace(p, probe=probes[(p.arch, run.optim.batch_size)]) for p, run in zip(planned, runs, strict=True)]
