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
- resumable: at every epoch end the whole run state (model, objective, optimizer,
  step, both RNG streams, best-so-far, history) is written atomically to
  `reporter.checkpoint_dir / "<phase>-<run>.pt"` (see checkpoint.py).  A later
  `train` of the same (phase, run) continues after the last completed epoch and
  ends with exactly the numbers of an uninterrupted run (bit for bit on the CPU);
  a run whose checkpoint says it finished is restored, not retrained.  Epochs
  already done are not reported again, except the one a crash interrupted between
  its metric and its checkpoint: metrics are delivered at least once.
  `checkpoint_dir=None` turns checkpoints off.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.contract.spec import OptimSpec
from worker.distill import checkpoint
from worker.distill.augment import augment_batch
from worker.distill.data import ArraySplit
from worker.distill.inference import autocast, predict_logits
from worker.distill.objectives import Objective
from worker.distill.reporting import Cancelled, Reporter

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
        return torch.optim.SGD(
            params, lr=optim.lr, momentum=0.9, nesterov=True, weight_decay=optim.weight_decay
        )
    raise ValueError(f"unknown optimizer {optim.optimizer!r}")


def lr_at(step: int, total_steps: int, optim: OptimSpec) -> float:
    """Per-step schedule: cosine from the peak lr towards 0 over the whole epoch budget."""
    if optim.lr_schedule == "constant":
        return optim.lr
    return optim.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def _check_cancel(reporter: Reporter) -> None:
    if reporter.should_stop():
        raise Cancelled("cancellation requested")


def _val_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    # Validation loss is plain CE on the labels whatever the objective: it is
    # comparable across methods and needs no teacher outputs on the val split.
    logits = predict_logits(model, x)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).sum().item() / len(y)
    return loss, acc


def _rng_devices(device: torch.device) -> list[int]:
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def _label(phase: str, run: str) -> str:
    return phase if run == phase else f"{phase} {run}"


def _signature(
    model: nn.Module, objective: Objective, optim: OptimSpec, seed: int, n_train: int, n_val: int
) -> str:
    """What a checkpoint must have been written for to be resumed by this call."""
    return json.dumps({
        "seed": seed,
        "optim": optim.model_dump(mode="json"),
        "train_size": n_train,
        "val_size": n_val,
        "objective": type(objective).__name__,
        "model": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "objective_state": [
            [k, list(v.shape) if torch.is_tensor(v) else type(v).__name__]
            for k, v in objective.state_dict().items()
        ],
    }, sort_keys=True)


def _resume_from(
    path: Path, signature: str, model: nn.Module, objective: Objective, opt: torch.optim.Optimizer,
    shuffle: torch.Generator, device: torch.device, reporter: Reporter, label: str,
) -> dict | None:
    """Load the run's checkpoint into model, objective, optimizer and shuffle generator;
    returns it (its best record's weights on `device`), or None when there is none or it
    is not to be trusted (said in a warning event; everything is left as it was)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write that a crash cut short
        stale.unlink(missing_ok=True)
    if not path.is_file():
        return None
    try:
        ck = checkpoint.load(path)
        if ck["signature"] != signature:
            raise checkpoint.CheckpointError("it was written for a different run configuration")
    except checkpoint.CheckpointError as exc:
        reporter.event(f"checkpoint of {label} not used: {exc}; restarting {label} from scratch", "warning")
        return None

    initial = (_clone_state(model), _clone_state(objective), opt.state_dict(), shuffle.get_state())
    try:
        model.load_state_dict(ck["best"]["state"])  # the best weights must fit too ...
        model.load_state_dict(ck["model"])  # ... but training goes on from the last epoch's
        objective.load_state_dict(ck["objective"])
        opt.load_state_dict(ck["optimizer"])  # checks the groups, not the tensors' shapes:
        for param, state in opt.state.items():
            if any(torch.is_tensor(v) and v.ndim > 0 and v.shape != param.shape for v in state.values()):
                raise ValueError("optimizer state does not fit the parameters")
        shuffle.set_state(ck["shuffle_rng"])
        torch.Generator().set_state(ck["cpu_rng"])  # checks its size and type before use
    except Exception as exc:  # noqa: BLE001 - ours, readable, but not this run's shapes
        model.load_state_dict(initial[0])
        objective.load_state_dict(initial[1])
        opt.load_state_dict(initial[2])
        shuffle.set_state(initial[3])
        reporter.event(
            f"checkpoint of {label} not used: it does not fit this run ({type(exc).__name__}); "
            f"restarting {label} from scratch", "warning",
        )
        return None
    ck["best"]["state"] = {k: v.to(device) for k, v in ck["best"]["state"].items()}
    return ck


def train(
    model: nn.Module,
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
    teacher: nn.Module | None = None,
    teacher_logits: torch.Tensor | np.ndarray | None = None,
    on_epoch: EpochCallback | None = None,
    augment=None,
) -> TrainResult:
    """Train `model` in place on `train_split`, select on `val_split`.

    Teacher outputs, when the objective needs them, come from exactly one of:
    `teacher_logits` (cached; row i belongs to train_split row i) or `teacher`
    (run frozen, in eval mode, on every batch: "recomputed").

    `augment` (an app.contract.spec.AugmentSpec) changes every training batch before the student
    AND the teacher see it, drawing from the run's forked RNG (checkpointed, so a resumed
    run draws what an uninterrupted one would); it rules out cached teacher logits.
    """
    n = len(train_split)
    model.to(device)
    objective.to(device)
    x = torch.as_tensor(train_split.x).to(device)
    y = torch.as_tensor(train_split.y).to(device)
    xv = torch.as_tensor(val_split.x).to(device)
    yv = torch.as_tensor(val_split.y).to(device)

    if augment is not None and not augment.active():
        augment = None
    if augment is not None and teacher_logits is not None:
        raise ValueError("augmented batches need the teacher itself: cached logits would not match")
    cached = None
    if objective.needs_features and teacher is None:
        raise ValueError("a feature objective needs the teacher itself (features are not cached)")
    if objective.needs_teacher:
        if (teacher is None) == (teacher_logits is None):
            raise ValueError("the objective needs exactly one of teacher or teacher_logits")
        if teacher_logits is not None:
            cached = torch.as_tensor(teacher_logits).to(device=device, dtype=torch.float32)
            if len(cached) != n:
                raise ValueError(f"teacher_logits has {len(cached)} rows, train has {n}")
        else:
            teacher.to(device).eval()

    params = list(model.parameters()) + list(objective.student_parameters())
    opt = _optimizer(params, optim)
    steps_per_epoch = math.ceil(n / optim.batch_size)
    total_steps = optim.epochs * steps_per_epoch
    shuffle = torch.Generator().manual_seed(seed)

    history: list[dict[str, float]] = []
    best = {"acc": -1.0, "loss": math.inf, "epoch": 0, "state": None}
    stopped_early = finished = False
    step = 0
    start = 0  # epochs completed before this call
    rng_states = None  # (cpu, cuda) to restore inside the forked RNG

    label = _label(phase, run)
    ck_path = None
    if reporter.checkpoint_dir is not None:
        ck_path = checkpoint.checkpoint_path(reporter.checkpoint_dir, phase, run)
        signature = _signature(model, objective, optim, seed, n, len(val_split))
        ck = _resume_from(ck_path, signature, model, objective, opt, shuffle, device, reporter, label)
        if ck is not None:
            start, step = ck["epoch"], ck["step"]
            history = [dict(h) for h in ck["history"]]
            best = dict(ck["best"])
            stopped_early, finished = ck["stopped_early"], ck["finished"]
            rng_states = (ck["cpu_rng"], ck["cuda_rng"])
            reporter.event(
                f"resumed {label} from epoch {start} checkpoint"
                + (": the run had finished, not retrained" if finished else
                   f", continuing at epoch {start + 1} of {optim.epochs}")
            )
            if on_epoch is not None:
                on_epoch(start)

    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)  # dropout masks
        if rng_states is not None:
            torch.set_rng_state(rng_states[0])
            if device.type == "cuda" and rng_states[1] is not None:
                torch.cuda.set_rng_state(rng_states[1], device)
        last = start if finished else optim.epochs
        for epoch in range(start + 1, last + 1):
            model.train()
            objective.train()
            objective.set_epoch(epoch)
            perm = torch.randperm(n, generator=shuffle).to(device)
            epoch_lr = lr_at(step, total_steps, optim)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i in range(0, n, optim.batch_size):
                _check_cancel(reporter)
                idx = perm[i : i + optim.batch_size]
                xb, yb = x[idx], y[idx]
                if augment is not None:
                    xb = augment_batch(xb, augment)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total_steps, optim)
                extra = {}
                with autocast(device):
                    if objective.needs_features:
                        logits, s_feats = model.forward_features(xb)
                        with torch.no_grad():
                            t, t_feats = teacher.forward_features(xb)
                        extra["features"] = (
                            dict(zip(model.stage_names, s_feats)), dict(zip(teacher.stage_names, t_feats))
                        )
                    else:
                        logits = model(xb)
                        t = None
                        if cached is not None:
                            t = cached[idx]
                        elif objective.needs_teacher:
                            with torch.no_grad():
                                t = teacher(xb)
                loss = objective(logits, t, yb, **extra)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                objective.auxiliary_step(logits.detach(), t)
                step += 1
                loss_sum += loss.detach() * len(idx)
                correct += (logits.detach().argmax(1) == yb).sum()
            _check_cancel(reporter)

            val_loss, val_acc = _val_metrics(model, xv, yv)
            values = {
                "train_loss": loss_sum.item() / n,
                "train_accuracy": correct.item() / n,  # running, in train mode
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": epoch_lr,  # at the epoch's first step
            }
            history.append({"epoch": epoch, **values})
            reporter.metric(phase, run, epoch, values)

            if val_acc > best["acc"]:
                best = {
                    "acc": val_acc, "loss": val_loss, "epoch": epoch,
                    "state": _clone_state(model),
                }
            stop = optim.patience is not None and epoch - best["epoch"] >= optim.patience
            stopped_early = stop and epoch < optim.epochs
            if ck_path is not None:
                # After the metric: a crash between the two re-runs and re-reports this
                # epoch (at least once) rather than leaving a hole in the series.
                checkpoint.save({
                    "format": checkpoint.FORMAT, "version": checkpoint.VERSION,
                    "phase": phase, "run": run, "signature": signature,
                    "epoch": epoch, "step": step,
                    "finished": stop or epoch == optim.epochs, "stopped_early": stopped_early,
                    "model": model.state_dict(), "objective": objective.state_dict(),
                    "optimizer": opt.state_dict(),
                    "shuffle_rng": shuffle.get_state(), "cpu_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "best": {
                        "acc": float(best["acc"]), "loss": float(best["loss"]),
                        "epoch": int(best["epoch"]), "state": best["state"],
                    },
                    "history": history,
                }, ck_path)
            if on_epoch is not None:
                on_epoch(epoch)
            if stop:
                break

    model.load_state_dict(best["state"])
    model.eval()
    return TrainResult(
        best_epoch=best["epoch"],
        epochs_run=len(history),
        best_val_accuracy=best["acc"],
        best_val_loss=best["loss"],
        stopped_early=stopped_early,
        history=history,
        resumed_epochs=start,
    )


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    # Extra state (an objective's own optimizer) is not a tensor: deep-copied.
    return {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)
            for k, v in module.state_dict().items()}
