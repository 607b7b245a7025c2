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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.spec import OptimSpec
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
) -> TrainResult:
    """Train `model` in place on `train_split`, select on `val_split`.

    Teacher outputs, when the objective needs them, come from exactly one of:
    `teacher_logits` (cached; row i belongs to train_split row i) or `teacher`
    (run frozen, in eval mode, on every batch: "recomputed").
    """
    n = len(train_split)
    model.to(device)
    objective.to(device)
    x = torch.as_tensor(train_split.x).to(device)
    y = torch.as_tensor(train_split.y).to(device)
    xv = torch.as_tensor(val_split.x).to(device)
    yv = torch.as_tensor(val_split.y).to(device)

    cached = None
    if objective.needs_teacher:
        if (teacher is None) == (teacher_logits is None):
            raise ValueError("the objective needs exactly one of teacher or teacher_logits")
        if teacher_logits is not None:
            cached = torch.as_tensor(teacher_logits).to(device=device, dtype=torch.float32)
            if len(cached) != n:
                raise ValueError(f"teacher_logits has {len(cached)} rows, train has {n}")
        else:
            teacher.to(device).eval()

    params = list(model.parameters()) + list(objective.parameters())
    opt = _optimizer(params, optim)
    steps_per_epoch = math.ceil(n / optim.batch_size)
    total_steps = optim.epochs * steps_per_epoch
    shuffle = torch.Generator().manual_seed(seed)

    history: list[dict[str, float]] = []
    best = {"acc": -1.0, "loss": math.inf, "epoch": 0, "state": None}
    stopped_early = False
    step = 0
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)  # dropout masks
        for epoch in range(1, optim.epochs + 1):
            model.train()
            objective.train()
            perm = torch.randperm(n, generator=shuffle).to(device)
            epoch_lr = lr_at(step, total_steps, optim)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i in range(0, n, optim.batch_size):
                _check_cancel(reporter)
                idx = perm[i : i + optim.batch_size]
                xb, yb = x[idx], y[idx]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total_steps, optim)
                with autocast(device):
                    logits = model(xb)
                    t = None
                    if cached is not None:
                        t = cached[idx]
                    elif objective.needs_teacher:
                        with torch.no_grad():
                            t = teacher(xb)
                loss = objective(logits, t, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
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
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
                }
            # Checkpoint hook (resume, a later issue): write model + optimizer + `step`
            # + both RNG states to reporter.checkpoint_dir / f"{phase}-{run}.pt" here.
            if on_epoch is not None:
                on_epoch(epoch)
            if optim.patience is not None and epoch - best["epoch"] >= optim.patience:
                stopped_early = epoch < optim.epochs
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
    )
