"""The one training loop: teacher, student and baseline all go through `train`.

What it guarantees:
- reproducible: batch order comes from a torch.Generator seeded with `seed`, and
  dropout draws from the global RNG re-seeded with `seed` inside a forked RNG
  state (so the caller's RNG is untouched).  Same inputs + same seed => the same
  numbers on the same machine.  Model *initialisation* is the caller's job
  (models.build_model(..., seed=...)).
- the weights of the best validation-accuracy epoch are restored at the end,
  whether or not early stopping fired (ties keep the earlier epoch).
- cancellation is honoured at every batch boundary (raises Cancelled).
- resumable: at an epoch end once `reporter.checkpoint_seconds` have passed since the
  last checkpoint (0: every epoch), and at the run's end, the run state (model, objective,
  optimizer, step, both RNG streams, best-so-far; the history appended) is written
  atomically to `reporter.checkpoint_dir / "<phase>-<run>.pt"` (see checkpoint.py); a
  crash loses at most the epochs since then.  A later
  `train` of the same (phase, run) continues after the last completed epoch and
  ends with exactly the numbers of an uninterrupted run (bit for bit on the CPU);
  a run whose checkpoint says it finished is restored, not retrained.  Epochs
  already done are not reported again, except the one a crash interrupted between
  its metric and its checkpoint: metrics are delivered at least once.
  `checkpoint_dir=None` turns checkpoints off.

In parts: `Loop` is fit / epoch / step; `RunState` (checkpoint.py) is where a run stands,
and saves and reads itself; the learning rate is `lr_at(step)`; the teacher's side of a
step is a `TeacherSignal` (signals.py). Reporting metrics and progress, checking for a
cancel and writing the checkpoint are `Callback`s at step and epoch boundaries.

The schedule is the closed-form cosine of the step, not torch's CosineAnnealingLR (its
recursive form rounds differently, which would change every figure) nor LambdaLR (it
multiplies lr by the factor in another order, same problem); being a function of the
step alone, it needs no scheduler state in the checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from app.contract.spec import AugmentSpec, OptimSpec
from worker.distill import checkpoint, placement, signals
from worker.distill.augment import augment_batch
from worker.distill.checkpoint import Best, RunState
from worker.distill.data import ArraySplit
from worker.distill.inference import as_layout, autocast, predict_logits, use_channels_last
from worker.distill.objectives import Objective
from worker.distill.reporting import Cancelled, Reporter
from worker.distill.signals import NoTeacher, TeacherSignal

if TYPE_CHECKING:
    from worker.distill.models import Model

# Called after each epoch with the number of epochs this run has completed.
EpochCallback = Callable[[int], None]


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int  # 1-based; its weights are the ones left in the model
    epochs_run: int
    best_val_accuracy: float
    best_val_loss: float
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch
    # How many of `epochs_run` came from a checkpoint instead of being trained by this
    # call (== epochs_run: the run had finished before).  Not part of the result's value.
    resumed_epochs: int = field(default=0, compare=False)


def _optimizer(params: list[nn.Parameter], optim: OptimSpec) -> torch.optim.Optimizer:
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.optimizer == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=0.9, nesterov=True, weight_decay=optim.weight_decay)
    raise ValueError(f"unknown optimizer {optim.optimizer!r}")


def lr_at(step: int, total_steps: int, optim: OptimSpec) -> float:
    """Per-step schedule: cosine from the peak lr towards 0 over the whole epoch budget."""
    if optim.lr_schedule == "constant":
        return optim.lr
    return optim.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def _val_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    # Validation loss is plain CE on the labels whatever the objective: it is
    # comparable across methods and needs no teacher outputs on the val split.
    logits = predict_logits(model, x)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).sum().item() / len(y)
    return loss, acc


def rng_devices(device: torch.device) -> list[int]:
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def _label(phase: str, run: str) -> str:
    return phase if run == phase else f"{phase} {run}"


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    # Extra state (an objective's own optimizer) is not a tensor: deep-copied.
    return {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in module.state_dict().items()}


# --- callbacks: what happens at step and epoch boundaries besides training ------------------


class Callback:
    """Hooks of the loop, called in list order."""

    def on_batch(self, loop: Loop) -> None:
        """Before every step, and once after an epoch's last one."""

    def on_epoch_end(self, loop: Loop, values: dict[str, float]) -> None:
        """After an epoch, its state (history, best, finished) already updated."""


class CancelCheck(Callback):
    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_batch(self, loop: Loop) -> None:
        if self.reporter.should_stop():
            raise Cancelled("cancellation requested")


class ReportMetrics(Callback):
    def __init__(self, reporter: Reporter, phase: str, run: str) -> None:
        self.reporter, self.phase, self.run = reporter, phase, run

    def on_epoch_end(self, loop: Loop, values: dict[str, float]) -> None:
        self.reporter.metric(self.phase, self.run, loop.state.epoch, values)


class SaveCheckpoint(Callback):
    """Every `every_seconds` (at an epoch end) and at the run's end. After the metrics, which
    the reporter flushes first: a crash between the two re-runs and re-reports the epochs since
    the last checkpoint (at least once) rather than leaving a hole in the series."""

    def __init__(self, path: Path, reporter: Reporter, every_seconds: float) -> None:
        self.path, self.reporter, self.every = path, reporter, every_seconds
        self.last = time.monotonic()

    def on_epoch_end(self, loop: Loop, values: dict[str, float]) -> None:
        now = time.monotonic()
        if loop.state.finished or now - self.last >= self.every:
            self.reporter.flush()
            loop.capture().save(self.path)
            self.last = time.monotonic()


class ReportProgress(Callback):
    def __init__(self, on_epoch: EpochCallback) -> None:
        self.on_epoch = on_epoch

    def on_epoch_end(self, loop: Loop, values: dict[str, float]) -> None:
        best = getattr(self.on_epoch, "best", None)  # a progress callback wants it (early stopping)
        if best is not None:
            best(loop.state.best.epoch)
        self.on_epoch(loop.state.epoch)

    def resumed(self, epoch: int) -> None:
        """The run goes on from its checkpoint at `epoch` (a callback that times epochs must not time it)."""
        getattr(self.on_epoch, "resumed", self.on_epoch)(epoch)


# --- the loop --------------------------------------------------------------------------------


class Loop:
    """One run's training: fit (epochs until the budget or patience ends), epoch, step."""

    def __init__(
        self,
        model: Model,
        objective: Objective,
        train_split: ArraySplit,
        val_split: ArraySplit,
        optim: OptimSpec,
        *,
        seed: int,
        device: torch.device,
        signal: TeacherSignal,
        augment: AugmentSpec | None,
        callbacks: list[Callback] | None = None,
        bf16: bool | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        data_placement: str | None = None,
    ) -> None:
        self.model, self.objective, self.optim = model.to(device), objective.to(device), optim
        # GPU speed (inference.py): bf16 autocast and channels-last conv nets on CUDA by default;
        # either may be asked for on the CPU (tests of those paths).
        self.bf16 = bf16
        self.channels_last = use_channels_last(self.model, device, channels_last)
        self.seed, self.device, self.callbacks = seed, device, list(callbacks or [])
        self.n = len(train_split)
        # The inputs as stored (uint8 images stay uint8: the model converts them), on the device
        # once when they fit, else batch by batch from pinned host memory (placement.py).
        where = data_placement or placement.choose(placement.nbytes(train_split.x, val_split.x), device)
        self.x = placement.rows(train_split.x, device, optim.batch_size, where)
        self.y = torch.as_tensor(train_split.y).to(device)
        xv = torch.as_tensor(val_split.x)
        self.xv = xv.to(device) if where == placement.ON_DEVICE else xv  # else predict_logits moves it by batch
        self.yv = torch.as_tensor(val_split.y).to(device)
        self.n_val = len(val_split)
        # torch.compile (imported only when asked for): the training forward pass alone; the
        # model itself stays eager for validation, checkpoints and export (same parameters).
        self.forward = torch.compile(self.model) if compile else self.model
        self.augment = augment if augment is not None and augment.active() else None
        self.signal = signal
        signals.check(signal, objective)
        signal.prepare(device, self.n, augmented=self.augment is not None)
        if compile:
            signal.compile()
        self.opt = _optimizer(list(model.parameters()) + list(objective.student_parameters()), optim)
        self.total_steps = optim.epochs * math.ceil(self.n / optim.batch_size)
        self.shuffle = torch.Generator().manual_seed(seed)
        self._state: RunState | None = None

    @property
    def state(self) -> RunState:
        """The run state of the run under way (fit sets it)."""
        if self._state is None:
            raise RuntimeError("the loop has no run state yet: fit(state) gives it one")
        return self._state

    @state.setter
    def state(self, state: RunState) -> None:
        self._state = state

    def signature(self) -> str:
        """What a checkpoint must have been written for to be resumed by this run."""
        return json.dumps(
            {
                "seed": self.seed,
                "optim": self.optim.model_dump(mode="json"),
                "train_size": self.n,
                "val_size": self.n_val,
                "objective": type(self.objective).__name__,
                "model": [[k, list(v.shape)] for k, v in self.model.state_dict().items()],
                "objective_state": [
                    [k, list(v.shape) if torch.is_tensor(v) else type(v).__name__]
                    for k, v in self.objective.state_dict().items()
                ],
            },
            sort_keys=True,
        )

    def capture(self) -> RunState:
        """The run state with the live objects' states in it, ready to save."""
        s = self.state
        s.model, s.objective, s.optimizer = self.model.state_dict(), self.objective.state_dict(), self.opt.state_dict()
        s.shuffle_rng, s.cpu_rng = self.shuffle.get_state(), torch.get_rng_state()
        s.cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return s

    def fit(self, state: RunState) -> TrainResult:
        """Train from `state` (fresh, or restored from a checkpoint) to the end of the run; leaves
        the best validation epoch's weights in the model."""
        self.state, start = state, state.epoch
        with torch.random.fork_rng(devices=rng_devices(self.device)):
            torch.manual_seed(self.seed)  # dropout masks
            if state.cpu_rng is not None:  # resumed: the stream goes on where it was
                torch.set_rng_state(state.cpu_rng)
                if self.device.type == "cuda" and state.cuda_rng is not None:
                    torch.cuda.set_rng_state(state.cuda_rng, self.device)
            last = state.epoch if state.finished else self.optim.epochs
            for epoch in range(state.epoch + 1, last + 1):
                values = self.epoch(epoch)
                stop = self.end_epoch(epoch, values)
                for callback in self.callbacks:
                    callback.on_epoch_end(self, values)
                if stop:
                    break
        assert state.best.state is not None  # set by the first epoch (a run has at least one)
        self.model.load_state_dict(state.best.state)
        self.model.eval()
        return TrainResult(
            best_epoch=state.best.epoch,
            epochs_run=len(state.history),
            best_val_accuracy=state.best.acc,
            best_val_loss=state.best.loss,
            stopped_early=state.stopped_early,
            history=state.history,
            resumed_epochs=start,
        )

    def _boundary(self) -> None:
        for callback in self.callbacks:
            callback.on_batch(self)

    def epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.objective.train()
        self.objective.set_epoch(epoch)
        host_perm = torch.randperm(self.n, generator=self.shuffle)
        perm = host_perm.to(self.device)
        epoch_lr = lr_at(self.state.step, self.total_steps, self.optim)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, self.n, self.optim.batch_size):
            self._boundary()
            idx = perm[i : i + self.optim.batch_size]
            loss, logits, yb = self.step(idx, host_perm[i : i + self.optim.batch_size])
            loss_sum += loss * len(idx)
            correct += (logits.argmax(1) == yb).sum()
        self._boundary()
        val_loss, val_acc = _val_metrics(self.model, self.xv, self.yv)
        return {
            "train_loss": loss_sum.item() / self.n,
            "train_accuracy": correct.item() / self.n,  # running, in train mode
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": epoch_lr,  # at the epoch's first step
        }

    def step(
        self, idx: torch.Tensor, host_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step on the batch x[idx] (`idx` on the device; `host_idx`, the same
        rows on the host, saves inputs kept there a sync); (loss, student logits, labels), detached."""
        xb, yb = self.x.take(idx, host_idx), self.y[idx]
        if self.augment is not None:
            xb = augment_batch(xb, self.augment)
        xb = as_layout(xb, self.channels_last)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.state.step, self.total_steps, self.optim)
        extra = {}
        with autocast(self.device, self.bf16):
            if self.objective.needs_features:
                logits, s_feats = self.model.forward_features(xb)
                t, t_feats = self.signal.outputs(xb, idx)
                extra["features"] = (dict(zip(self.model.stage_names, s_feats, strict=False)), t_feats)
            else:
                logits = self.forward(xb)
                t, _ = self.signal.outputs(xb, idx)
        loss = self.objective(logits, t, yb, **extra)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.objective.auxiliary_step(logits.detach(), t)
        self.state.step += 1
        return loss.detach(), logits.detach(), yb

    def end_epoch(self, epoch: int, values: dict[str, float]) -> bool:
        """Record the epoch in the run state; True when the run ends here (patience)."""
        s = self.state
        s.history.append({"epoch": epoch, **values})
        if values["val_accuracy"] > s.best.acc:
            s.best = Best(values["val_accuracy"], values["val_loss"], epoch, _clone_state(self.model))
        stop = self.optim.patience is not None and epoch - s.best.epoch >= self.optim.patience
        s.stopped_early = stop and epoch < self.optim.epochs
        s.epoch, s.finished = epoch, stop or epoch == self.optim.epochs
        return stop


# --- resume ----------------------------------------------------------------------------------


def _trusted(path: Path, signature: str, reporter: Reporter, label: str) -> RunState | None:
    """The run's checkpoint, or None when there is none or it is not to be trusted (said in a
    warning event)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write that a crash cut short
        stale.unlink(missing_ok=True)
    if not path.is_file():
        return None
    try:
        state = RunState.read(path, signature)
    except checkpoint.CheckpointError as exc:
        reporter.event(f"checkpoint of {label} not used: {exc}; restarting {label} from scratch", "warning")
        return None
    return state


def _restore(loop: Loop, state: RunState, reporter: Reporter, label: str) -> bool:
    """Load `state` into the loop's model, objective, optimizer and shuffle generator; False
    (everything left as it was, said in a warning event) when it does not fit them."""
    model, objective, opt, shuffle = loop.model, loop.objective, loop.opt, loop.shuffle
    initial = (_clone_state(model), _clone_state(objective), opt.state_dict(), shuffle.get_state())
    try:
        # A saved checkpoint holds every part (a missing one fails here, as a misfit would).
        assert state.best.state is not None and state.model is not None and state.objective is not None
        assert state.optimizer is not None and state.shuffle_rng is not None and state.cpu_rng is not None
        model.load_state_dict(state.best.state)  # the best weights must fit too ...
        model.load_state_dict(state.model)  # ... but training goes on from the last epoch's
        objective.load_state_dict(state.objective)
        opt.load_state_dict(state.optimizer)  # checks the groups, not the tensors' shapes:
        for param, saved in opt.state.items():
            if any(torch.is_tensor(v) and v.ndim > 0 and v.shape != param.shape for v in saved.values()):
                raise ValueError("optimizer state does not fit the parameters")
        shuffle.set_state(state.shuffle_rng)
        torch.Generator().set_state(state.cpu_rng)  # checks its size and type before use
    except Exception as exc:
        model.load_state_dict(initial[0])
        objective.load_state_dict(initial[1])
        opt.load_state_dict(initial[2])
        shuffle.set_state(initial[3])
        reporter.event(
            f"checkpoint of {label} not used: it does not fit this run ({type(exc).__name__}); "
            f"restarting {label} from scratch",
            "warning",
        )
        return False
    state.best.state = {k: v.to(loop.device) for k, v in state.best.state.items()}
    return True


def resume(loop: Loop, path: Path, phase: str, run: str, reporter: Reporter) -> RunState | None:
    """The state a run goes on from: its checkpoint, loaded into the loop, or None (start afresh)."""
    label = _label(phase, run)
    state = _trusted(path, loop.signature(), reporter, label)
    if state is None or not _restore(loop, state, reporter, label):
        return None
    state.history = [dict(h) for h in state.history]
    reporter.event(
        f"resumed {label} from epoch {state.epoch} checkpoint"
        + (
            ": the run had finished, not retrained"
            if state.finished
            else f", continuing at epoch {state.epoch + 1} of {loop.optim.epochs}"
        )
    )
    return state


def train(
    model: Model,
    objective: Objective,
    train_split: ArraySplit,
    val_split: ArraySplit,
    optim: OptimSpec,
    *,
    seed: int,
    device: torch.device,
    reporter: Reporter,
    phase: str,
    run: str,
    signal: TeacherSignal | None = None,
    on_epoch: EpochCallback | None = None,
    augment: AugmentSpec | None = None,
    bf16: bool | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    data_placement: str | None = None,
) -> TrainResult:
    """Train `model` in place on `train_split`, select on `val_split`.

    Teacher outputs, when the objective needs them, come from `signal` (signals.py: cached
    logits, or the frozen teacher on every batch, with its features for feature objectives).

    `augment` changes every training batch before the student AND the teacher see it,
    drawing from the run's forked RNG (checkpointed, so a resumed run draws what an
    uninterrupted one would); it rules out cached teacher logits.

    `bf16` / `channels_last`: None is the device's default (both on CUDA, neither on the CPU).
    `compile`: torch.compile the training forward pass (and a live teacher's).
    `data_placement`: placement.ON_DEVICE or PINNED; None decides by whether the inputs fit.
    """
    loop = Loop(
        model,
        objective,
        train_split,
        val_split,
        optim,
        seed=seed,
        device=device,
        signal=signal or NoTeacher(),
        augment=augment,
        callbacks=[CancelCheck(reporter), ReportMetrics(reporter, phase, run)],
        bf16=bf16,
        channels_last=channels_last,
        compile=compile,
        data_placement=data_placement,
    )
    state = None
    if reporter.checkpoint_dir is not None:
        path = checkpoint.checkpoint_path(reporter.checkpoint_dir, phase, run)
        state = resume(loop, path, phase, run, reporter)
        loop.callbacks.append(SaveCheckpoint(path, reporter, reporter.checkpoint_seconds))
    if on_epoch is not None:
        loop.callbacks.append(report := ReportProgress(on_epoch))
        if state is not None:
            report.resumed(state.epoch)
    return loop.fit(state or RunState(phase, run, loop.signature()))
