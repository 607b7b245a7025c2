"""Distillation objectives: a loss over student outputs, teacher outputs and labels.

An objective is an nn.Module so that later methods can own trainable parts
(a FitNets hint regressor, an adversarial discriminator): the trainer
optimises `objective.parameters()` together with the student's.  CE and KD
own none.  Adding a method = one class here + one entry in OBJECTIVES.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from app.spec import CEMethod, KDMethod


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # Losses in fp32 even when the forward ran under bf16 autocast (fp64 stays fp64).
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton, Vinyals & Dean 2015, with one fixed convention:

        alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(y, s)

    KL is summed over classes and averaged over the batch ("batchmean"); CE is
    the mean cross-entropy at T = 1.  The T^2 factor keeps the gradient of the
    soft term on the same scale whatever T is (its gradient shrinks as 1/T^2
    otherwise), so alpha means the same thing at T = 2 and T = 20.
    """
    s = _at_least_fp32(student_logits)
    t = _at_least_fp32(teacher_logits).detach()
    T = float(temperature)
    soft = F.kl_div(
        F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True,
        reduction="batchmean",
    )
    hard = F.cross_entropy(s, labels)
    return alpha * T * T * soft + (1.0 - alpha) * hard


class Objective(nn.Module):
    """loss = objective(student_logits, teacher_logits, labels).

    `needs_teacher` tells the trainer whether to provide teacher logits (cached
    or recomputed); when False it passes None.
    """

    needs_teacher: bool = False

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError


class CE(Objective):
    """Cross-entropy on the labels: the scratch baseline, and method "ce"."""

    needs_teacher = False

    def forward(self, student_logits, teacher_logits, labels):
        return F.cross_entropy(_at_least_fp32(student_logits), labels)


class KD(Objective):
    needs_teacher = True

    def __init__(self, temperature: float, alpha: float) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(self, student_logits, teacher_logits, labels):
        if teacher_logits is None:
            raise ValueError("KD needs teacher logits")
        return kd_loss(student_logits, teacher_logits, labels, self.temperature, self.alpha)


# method name -> factory from that method's spec
OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "ce": lambda m: CE(),
    "kd": lambda m: KD(temperature=m.temperature, alpha=m.alpha),
}


def build_objective(method: CEMethod | KDMethod) -> Objective:
    try:
        factory = OBJECTIVES[method.name]
    except KeyError:
        raise ValueError(f"unknown method {method.name!r}") from None
    return factory(method)
