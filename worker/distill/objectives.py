"""Distillation objectives: a loss over student outputs, teacher outputs and labels.

An objective is an nn.Module so that methods can own trainable parts (a FitNets
hint regressor, an adversarial discriminator).  The interface the trainer uses:

- `loss = objective(student_logits, teacher_logits, labels)`, plus
  `features=(student_features, teacher_features)` (dicts stage name -> output)
  when `needs_features`: the trainer then gets the frozen teacher's eval-mode
  `forward_features`, cached or run on every batch (worker/distill/signals.py);
- `student_parameters()`: what the student's optimizer trains with the model
  (default: all of the objective's parameters, e.g. a hint regressor);
- `set_epoch(epoch)`: called before every epoch (1-based), for warm-ups and
  schedules; derived from the epoch number only, so resume gives the same numbers;
- `auxiliary_step(student_logits, teacher_logits)`: called after each student
  step, for parts with their own optimizer (the discriminator).  Such state goes
  into `state_dict()` through nn.Module's extra-state hook, so the checkpoint
  carries it.

Objective-owned parts never reach the export: only the student is exported.
Adding a method = its spec class in app/contract/methods.py + one class here, registered
for the method's name with @objective_of (a test checks that both registries agree).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from app.contract.stages import is_conv, stage_shapes


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective may need besides its method spec (feature methods: the stages)."""

    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    teacher_arch: Any = None
    student_arch: Any = None

    def shape(self) -> tuple[int, ...]:
        """The input shape, which feature methods need for their stages' shapes."""
        if self.input_shape is None:
            raise ValueError("this method needs the input shape: build_objective(..., input_shape=...)")
        return self.input_shape

    def classes(self) -> int:
        """The number of classes, which the discriminator needs."""
        if self.num_classes is None:
            raise ValueError("this method needs the number of classes: build_objective(..., num_classes=...)")
        return self.num_classes


# method name (app.contract.methods.METHODS) -> the objective class its runs train with
OBJECTIVES: dict[str, type[Objective]] = {}


def objective_of(*names: str):
    """Register an objective class for the methods `names`; it builds itself with from_spec."""

    def register(cls: type[Objective]) -> type[Objective]:
        for name in names:
            OBJECTIVES[name] = cls
        return cls

    return register


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
    unlabeled = labels < 0
    if bool(unlabeled.any()):
        # Transfer-set rows (label -1): the teacher alone, alpha = 1 on those rows.
        # Per row: w * T^2 * KL_i + (1 - alpha) * CE_i (CE_i = 0, w = 1 when unlabeled); batch mean.
        kl = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True, reduction="none").sum(
            1
        )
        ce = F.cross_entropy(s, labels.clamp_min(0), reduction="none").masked_fill(unlabeled, 0.0)
        w = torch.where(unlabeled, torch.ones_like(kl), torch.full_like(kl, alpha))
        return (w * T * T * kl + (1.0 - alpha) * ce).mean()
    soft = F.kl_div(
        F.log_softmax(s / T, dim=1),
        F.log_softmax(t / T, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    hard = F.cross_entropy(s, labels)
    return alpha * T * T * soft + (1.0 - alpha) * hard


class Objective(nn.Module):
    """loss = objective(student_logits, teacher_logits, labels[, features=...]).

    `needs_teacher` tells the trainer whether to provide teacher logits (cached
    or recomputed); when False it passes None.  See the module docstring.
    """

    needs_teacher: bool = False
    needs_features: bool = False

    @classmethod
    def from_spec(cls, method: Any, ctx: ObjectiveContext) -> Objective:
        """The objective of a method spec (each registered class builds itself)."""
        raise NotImplementedError

    def forward(self, student_logits, teacher_logits, labels, features=None) -> torch.Tensor:
        raise NotImplementedError

    def student_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def auxiliary_step(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None) -> None:
        return None


def schedule(value: float, warmup_epochs: int, epoch: int, start: float = 0.0) -> float:
    """Linear warm-up from `start` towards `value` over the first `warmup_epochs` epochs
    (epoch is 1-based: epoch e gets start + (value - start) * e / warmup), then `value`.
    warmup_epochs = 0 is a constant."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return float(value)
    return float(start + (value - start) * max(epoch, 0) / warmup_epochs)


@objective_of("ce")
class CE(Objective):
    """Cross-entropy on the labels: the scratch baseline, and method "ce"."""

    needs_teacher = False

    @classmethod
    def from_spec(cls, method, ctx: ObjectiveContext) -> CE:
        return cls()

    def forward(self, student_logits, teacher_logits, labels, features=None):
        return F.cross_entropy(_at_least_fp32(student_logits), labels)


@objective_of("kd", "born_again", "teacher_assistant")
class KD(Objective):
    needs_teacher = True

    @classmethod
    def from_spec(cls, method, ctx: ObjectiveContext) -> KD:
        # born_again and teacher_assistant: every link of the chain is a KD run (no schedules).
        return cls(
            method.temperature,
            method.alpha,
            getattr(method, "temperature_schedule", None),
            getattr(method, "alpha_schedule", None),
        )

    def __init__(self, temperature: float, alpha: float, temperature_schedule=None, alpha_schedule=None) -> None:
        super().__init__()
        self.base_temperature, self.base_alpha = float(temperature), float(alpha)
        self.temperature_schedule, self.alpha_schedule = temperature_schedule, alpha_schedule
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        ts, als = self.temperature_schedule, self.alpha_schedule
        self.temperature = schedule(self.base_temperature, ts.epochs, epoch, ts.start) if ts else self.base_temperature
        self.alpha = schedule(self.base_alpha, als.epochs, epoch, als.start) if als else self.base_alpha

    def forward(self, student_logits, teacher_logits, labels, features=None):
        if teacher_logits is None:
            raise ValueError("KD needs teacher logits")
        return kd_loss(student_logits, teacher_logits, labels, self.temperature, self.alpha)


@objective_of("pseudo_label")
class PseudoLabel(Objective):
    """CE on the teacher's argmax: the hard-label control for soft targets."""

    needs_teacher = True

    @classmethod
    def from_spec(cls, method, ctx: ObjectiveContext) -> PseudoLabel:
        return cls()

    def forward(self, student_logits, teacher_logits, labels, features=None):
        return F.cross_entropy(_at_least_fp32(student_logits), teacher_logits.detach().argmax(1))


def dkd_terms(student_logits, teacher_logits, labels, temperature):
    """(TCKD, NCKD) of Zhao et al. 2022, each T^2 * KL summed over classes, batch-averaged.

    TCKD: KL between the binary (target, all non-targets) distributions of teacher and student.
    NCKD: KL between their distributions over the non-target classes alone (the target
    renormalised away; implemented by pushing the target logit to -1e4/T before softmax)."""
    s = _at_least_fp32(student_logits)
    t = _at_least_fp32(teacher_logits).detach()
    T = float(temperature)
    gt = F.one_hot(labels, s.shape[1]).to(s.dtype)
    p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], 1).clamp_min(1e-12)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean() * T * T
    ls_nt = F.log_softmax(s / T - 1e4 * gt, dim=1)
    lt_nt = F.log_softmax(t / T - 1e4 * gt, dim=1)
    nckd = F.kl_div(ls_nt, lt_nt, log_target=True, reduction="batchmean") * T * T
    return tckd, nckd


@objective_of("dkd")
class DKD(Objective):
    needs_teacher = True

    @classmethod
    def from_spec(cls, method, ctx: ObjectiveContext) -> DKD:
        return cls(method.temperature, method.alpha, method.beta, method.ce_weight, method.warmup_epochs)

    def __init__(self, temperature, alpha, beta, ce_weight, warmup_epochs) -> None:
        super().__init__()
        self.temperature, self.alpha, self.beta = float(temperature), float(alpha), float(beta)
        self.ce_weight, self.warmup_epochs = float(ce_weight), int(warmup_epochs)
        self.epoch = 1

    def kd_weight(self) -> float:
        return schedule(1.0, self.warmup_epochs, self.epoch)

    def forward(self, student_logits, teacher_logits, labels, features=None):
        tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, self.temperature)
        ce = F.cross_entropy(_at_least_fp32(student_logits), labels)
        return self.ce_weight * ce + self.kd_weight() * (self.alpha * tckd + self.beta * nckd)


def _pool_to(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if len(size) == 1:
        return F.adaptive_avg_pool1d(x, size)
    height, width = size
    return F.adaptive_avg_pool2d(x, (height, width))


@objective_of("fitnet")
class FitNet(Objective):
    needs_teacher = True
    needs_features = True

    @classmethod
    def from_spec(cls, method, ctx: ObjectiveContext) -> FitNet:
        t_shapes = stage_shapes(ctx.teacher_arch, ctx.shape())
        s_shapes = stage_shapes(ctx.student_arch, ctx.shape())
        (ts,), (ss,) = method.stages(t_shapes, s_shapes)
        return cls(method.temperature, method.alpha, method.hint_weight, ts, ss, t_shapes[ts], s_shapes[ss])

    def __init__(
        self,
        temperature,
        alpha,
        hint_weight,
        teacher_stage: str,
        student_stage: str,
        teacher_shape: tuple[int, ...],
        student_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.temperature, self.alpha, self.hint_weight = float(temperature), float(alpha), float(hint_weight)
        self.teacher_stage, self.student_stage = teacher_stage, student_stage
        self.conv = is_conv(teacher_shape) and is_conv(student_shape) and len(teacher_shape) == len(student_shape)
        if self.conv:
            # 1x1 conv between the maps, at the coarser of the two spatial sizes.
            self.size: tuple[int, ...] | None = tuple(
                min(a, b) for a, b in zip(teacher_shape[1:], student_shape[1:], strict=False)
            )
            conv = nn.Conv1d if len(self.size) == 1 else nn.Conv2d
            self.regressor: nn.Module = conv(student_shape[0], teacher_shape[0], kernel_size=1)
        else:
            self.size = None
            self.regressor = nn.Linear(math.prod(student_shape), math.prod(teacher_shape))

    def hint(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        s, t = _at_least_fp32(student_feature), _at_least_fp32(teacher_feature).detach()
        if self.size is not None:  # set exactly when self.conv
            s, t = _pool_to(s, self.size), _pool_to(t, self.size)
        else:
            s, t = s.flatten(1), t.flatten(1)
        return F.mse_loss(self.regressor(s), t)

    def forward(self, student_logits, teacher_logits, labels, features=None):
        sf, tf = features
        hint = self.hint(sf[self.student_stage], tf[self.teacher_stage])
        kd = kd_loss(student_logits, teacher_logits, labels, self.temperature, self.alpha)
        return kd + self.hint_weight * hint


def attention_map(a: torch.Tensor, size: tuple[int, ...] | None = None) -> torch.Tensor:
    """Zagoruyko & Komodakis: mean over channels of A^2 (p = 2), pooled to `size` when given,
    flattened and l2-normalised per example."""
    q = _at_least_fp32(a).pow(2).mean(1, keepdim=True)
    if size is not None:
        q = _pool_to(q, size)
    return F.normalize(q.flatten(1), dim=1)


@objective_of("attention")
class Attention(Objective):
    needs_teacher = True
    needs_features = True

    @classmethod
    def from_spec(cls, method, ctx: ObjectiveContext) -> Attention:
        t_shapes = stage_shapes(ctx.teacher_arch, ctx.shape())
        s_shapes = stage_shapes(ctx.student_arch, ctx.shape())
        ts, ss = method.stages(t_shapes, s_shapes)
        pairs = [
            (t, s, tuple(min(a, b) for a, b in zip(t_shapes[t][1:], s_shapes[s][1:], strict=False)))
            for t, s in zip(ts, ss, strict=False)
        ]
        return cls(method.temperature, method.alpha, method.beta, pairs)

    def __init__(self, temperature, alpha, beta, pairs: list[tuple[str, str, tuple[int, ...]]]) -> None:
        super().__init__()
        self.temperature, self.alpha, self.beta = float(temperature), float(alpha), float(beta)
        self.pairs = pairs  # (teacher stage, student stage, common spatial size)

    def at_loss(self, sf: dict, tf: dict) -> torch.Tensor | float:
        total: torch.Tensor | float = 0.0  # a tensor once a pair is added
        for t_name, s_name, size in self.pairs:
            qs, qt = attention_map(sf[s_name], size), attention_map(tf[t_name].detach(), size)
            total = total + (qs - qt).pow(2).mean()
        return total

    def forward(self, student_logits, teacher_logits, labels, features=None):
        sf, tf = features
        kd = kd_loss(student_logits, teacher_logits, labels, self.temperature, self.alpha)
        return kd + self.beta / 2 * self.at_loss(sf, tf)


@objective_of("adversarial")
class Adversarial(Objective):
    needs_teacher = True

    @classmethod
    def from_spec(cls, method, ctx: ObjectiveContext) -> Adversarial:
        return cls(
            method.temperature, method.alpha, method.adv_weight, ctx.classes(), method.disc_hidden, method.disc_lr
        )

    def __init__(self, temperature, alpha, adv_weight, num_classes: int, hidden: int, lr: float) -> None:
        super().__init__()
        self.temperature, self.alpha, self.adv_weight = float(temperature), float(alpha), float(adv_weight)
        self.discriminator = nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))

    def student_parameters(self) -> list[nn.Parameter]:
        return []  # the discriminator has its own optimizer

    def d(self, logits: torch.Tensor) -> torch.Tensor:
        return self.discriminator(F.softmax(_at_least_fp32(logits), dim=1)).squeeze(1)

    def fool_loss(self, student_logits):
        out = self.d(student_logits)
        return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))

    def disc_loss(self, student_logits, teacher_logits):
        real, fake = self.d(teacher_logits.detach()), self.d(student_logits.detach())
        return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)
        )

    def forward(self, student_logits, teacher_logits, labels, features=None):
        kd = kd_loss(student_logits, teacher_logits, labels, self.temperature, self.alpha)
        return kd + self.adv_weight * self.fool_loss(student_logits)

    def auxiliary_step(self, student_logits, teacher_logits):
        self.disc_opt.zero_grad(set_to_none=True)
        with torch.autocast(student_logits.device.type, enabled=False):
            loss = self.disc_loss(student_logits.float(), teacher_logits.float())
        loss.backward()
        self.disc_opt.step()

    def get_extra_state(self):
        # Copies: an optimizer's state_dict holds its live tensors, and load_state_dict may keep
        # the very tensors it is given, so two objectives would otherwise share moments.
        return {"disc_opt": copy.deepcopy(self.disc_opt.state_dict())}

    def set_extra_state(self, state):
        self.disc_opt.load_state_dict(copy.deepcopy(state["disc_opt"]))


def build_objective(
    method, *, seed: int = 0, input_shape=None, num_classes=None, teacher_arch=None, student_arch=None
) -> Objective:
    """A fresh objective for one run; its trainable parts (if any) initialised from `seed`
    alone.  Feature methods and the discriminator need the shapes in the keyword arguments."""
    try:
        objective = OBJECTIVES[method.name]
    except KeyError:
        raise ValueError(f"unknown method {method.name!r}") from None
    ctx = ObjectiveContext(input_shape, num_classes, teacher_arch, student_arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return objective.from_spec(method, ctx)
