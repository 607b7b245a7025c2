"""Where a run's teacher outputs come from, as one type the trainer asks per batch.

- NoTeacher: labels only (a teacher's own run, a baseline, method ce);
- CachedLogits: the frozen teacher's logits on the training set, computed once (row i is
  training row i), reused every epoch: valid when no augmentation changes the inputs;
- LiveTeacher: the frozen teacher runs on every batch, in eval mode ("recomputed"): it sees
  the augmented batch the student sees;
- LiveFeatures: like LiveTeacher, and its stage features too (FitNets, attention transfer);
- CachedFeatures: the logits and stage features computed once, when the job's teacher-output
  cache is on, no augmentation changes the inputs and they fit the cache's cap.

`choose` picks one for a run from what its objective needs and the spec says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from app.contract.spec import TrainingSpec
from worker.distill.objectives import Objective
from worker.distill.teachers import OnnxTeacher

if TYPE_CHECKING:
    from worker.distill.models import Model

Features = dict[str, torch.Tensor]


class TeacherSignal:
    """The teacher's side of a training step."""

    mode: str | None = None  # as the report says it: None, "cached" or "recomputed"
    features = False  # whether outputs() gives stage features

    def prepare(self, device: torch.device, n_train: int, augmented: bool) -> None:
        """Before the first step: move to `device`, check it fits the training set."""

    def outputs(self, xb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor | None, Features | None]:
        """(teacher logits, teacher stage features) for the batch xb = x[idx]."""
        return None, None

    def compile(self) -> None:
        """torch.compile what runs per batch (training.compile); nothing does but a live teacher."""


class NoTeacher(TeacherSignal):
    pass


class CachedLogits(TeacherSignal):
    mode = "cached"

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def prepare(self, device: torch.device, n_train: int, augmented: bool) -> None:
        if augmented:
            raise ValueError("augmented batches need the teacher itself: cached logits would not match")
        self.logits = torch.as_tensor(self.logits).to(device=device, dtype=torch.float32)
        if len(self.logits) != n_train:
            raise ValueError(f"teacher_logits has {len(self.logits)} rows, train has {n_train}")

    def outputs(self, xb, idx):
        return self.logits[idx], None


class LiveTeacher(TeacherSignal):
    mode = "recomputed"

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher
        self.forward: Callable[[torch.Tensor], torch.Tensor] = teacher  # torch.compile'd by compile()

    def prepare(self, device: torch.device, n_train: int, augmented: bool) -> None:
        self.teacher.to(device).eval()

    def outputs(self, xb, idx):
        with torch.no_grad():
            return self.forward(xb), None

    def compile(self) -> None:
        # A teacher of torch modules only: an ONNX one runs in onnxruntime, out of dynamo's sight.
        if compilable(self.teacher):
            self.forward = torch.compile(self.teacher)


class LiveFeatures(LiveTeacher):
    features = True
    teacher: Model  # one of ours: it has stages

    def outputs(self, xb, idx):
        with torch.no_grad():
            logits, feats = self.teacher.forward_features(xb)
        return logits, dict(zip(self.teacher.stage_names, feats, strict=True))


class CachedFeatures(TeacherSignal):
    """The frozen teacher's logits and stage features over the training set, computed once (in
    eval mode, as LiveFeatures gives them): row i is training row i. Valid without augmentation."""

    mode = "cached"
    features = True

    def __init__(self, logits: torch.Tensor, features: Features) -> None:
        self.logits, self.stage_features = logits, features

    def prepare(self, device: torch.device, n_train: int, augmented: bool) -> None:
        if augmented:
            raise ValueError("augmented batches need the teacher itself: cached features would not match")
        self.logits = self.logits.to(device=device, dtype=torch.float32)
        self.stage_features = {k: v.to(device=device, dtype=torch.float32) for k, v in self.stage_features.items()}
        if len(self.logits) != n_train:
            raise ValueError(f"cached features have {len(self.logits)} rows, train has {n_train}")

    def outputs(self, xb, idx):
        return self.logits[idx], {k: v[idx] for k, v in self.stage_features.items()}


def compilable(model: nn.Module) -> bool:
    """Has parameters and no ONNX part (worker/distill/teachers.py OnnxTeacher)."""
    has_onnx = any(isinstance(m, OnnxTeacher) for m in model.modules())
    return not has_onnx and any(True for _ in model.parameters())


def check(signal: TeacherSignal, objective: Objective) -> None:
    """The signal gives what the objective needs."""
    if objective.needs_features and not signal.features:
        raise ValueError("a feature objective needs the teacher's stage features (live or cached)")
    if objective.needs_teacher and isinstance(signal, NoTeacher):
        raise ValueError("the objective needs the teacher's outputs: give a teacher signal")


def choose(objective: Objective, teacher: nn.Module, training: TrainingSpec, cached) -> TeacherSignal:
    """A run's signal: the live teacher when the spec asks for it or augmentation changes the
    inputs, else cached logits, and for a feature objective cached features when `cached` (the
    job's TeacherOutputs, worker/distill/cache.py) has them (the cache is on and they fit its cap),
    else the live teacher's features."""
    augmented = training.augment is not None and training.augment.active()
    live = training.soft_targets == "recomputed" or augmented
    if objective.needs_features:
        found = None if live else cached.features(teacher)
        return LiveFeatures(teacher) if found is None else CachedFeatures(*found)
    if not objective.needs_teacher:
        return NoTeacher()
    if live:
        return LiveTeacher(teacher)
    return CachedLogits(cached(teacher))
