"""The distillation methods: one spec class each (its fields, defaults and documentation)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_serializer

from app.contract.architectures import Arch, CNNArch, MLPArch
from app.contract.base import Strict, without_defaults


class CEMethod(Strict):
    """Cross-entropy on the labels alone: the teacher is not used."""

    name: Literal["ce"] = "ce"


class WarmupSchedule(Strict):
    """A value that rises linearly from `start` to the method's value over the first `epochs`
    epochs (epoch e of the warm-up gets start + (value - start) * e / epochs), then stays."""

    kind: Literal["linear_warmup"] = "linear_warmup"
    epochs: int = Field(ge=1, le=10_000, description="Length of the warm-up in epochs.")
    start: float = Field(0.0, ge=0, le=100, description="Value at epoch 0.")


class KDMethod(Strict):
    """Hinton et al. 2015: alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(y, p_student)."""

    name: Literal["kd"] = "kd"
    temperature: float = Field(
        8.0, gt=0, le=100, description="Softmax temperature T (> 0); 3..10 is typical. The "
        "default was chosen on MNIST-1D validation accuracy (bench/results/quality.md)."
    )
    alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the soft-target term; 1 - alpha weighs the labels. "
        "Default chosen with T on validation (bench/results/quality.md)."
    )
    temperature_schedule: WarmupSchedule | None = Field(
        None, description="None: T is constant. A linear warm-up from `start` (> 0) to T."
    )
    alpha_schedule: WarmupSchedule | None = Field(
        None, description="None: alpha is constant. A linear warm-up from `start` to alpha "
        "(e.g. start 0: labels first, the teacher's weight grows)."
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        # A constant (absent) schedule is left out of the spec as stored and echoed, so a
        # plain KD spec reads exactly as before schedules existed.
        return without_defaults(handler(self), temperature_schedule=None, alpha_schedule=None)

    @field_validator("temperature_schedule")
    @classmethod
    def _positive_start(cls, v):
        if v is not None and v.start <= 0:
            raise ValueError("a temperature warm-up must start above 0")
        return v

    @field_validator("alpha_schedule")
    @classmethod
    def _alpha_start(cls, v):
        if v is not None and v.start > 1:
            raise ValueError("alpha starts within [0, 1]")
        return v


class DKDMethod(Strict):
    """Decoupled KD (Zhao et al. 2022): CE(y, s) + w(epoch) * (alpha * TCKD + beta * NCKD), both at
    temperature T with the T^2 factor; w rises linearly from 1/warmup_epochs to 1 over the first
    warmup_epochs epochs (the paper's warm-up), then stays 1."""

    name: Literal["dkd"] = "dkd"
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature T.")
    alpha: float = Field(1.0, ge=0, le=100, description="Weight of TCKD (target vs non-target).")
    beta: float = Field(0.5, ge=0, le=100, description="Weight of NCKD (among non-target classes). The "
                        "paper's 8 loses 5 points on MNIST-1D validation; 0.5 was best there.")
    ce_weight: float = Field(1.0, ge=0, le=100, description="Weight of the cross-entropy on labels.")
    warmup_epochs: int = Field(
        5, ge=0, le=10_000, description="Epochs of linear warm-up of the KD terms; 0 for none."
    )


class _KDTerms(Strict):
    temperature: float = Field(8.0, gt=0, le=100, description="Softmax temperature T of the KD term.")
    alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the KD term; 1 - alpha weighs CE on the labels."
    )


class FitNetMethod(_KDTerms):
    """FitNets (Romero et al. 2015), trained jointly as common practice does (one stage, not the
    paper's two): KD(alpha, T) + hint_weight * MSE(regressor(student_stage), teacher_stage).
    The regressor is a 1x1 convolution between conv maps (adaptive average pooling first when
    the spatial sizes differ) and a Linear layer otherwise (conv maps flattened); it is trained
    with the student and discarded at export."""

    name: Literal["fitnet"] = "fitnet"
    teacher_stage: str | None = Field(
        None, description="Teacher stage giving the hint; default: the teacher's last stage. "
        "GET /v1/catalog explains stage names (mlp: hidden0.., cnn: conv0.. and dense).",
        examples=["conv1"],
    )
    student_stage: str | None = Field(
        None, description="Student stage guided by the hint; default: the student's last stage.",
        examples=["hidden0"],
    )
    hint_weight: float = Field(1.0, ge=0, le=1e4, description="Weight of the hint (MSE) term.")


class AttentionMethod(_KDTerms):
    """Attention transfer (Zagoruyko & Komodakis 2017), their reference code's normalisation:
    Q = l2-normalise(mean over channels of A^2) per example, and per stage pair
    mean over batch and positions of (Q_s - Q_t)^2; loss = (1 - alpha) * CE + alpha * T^2 * KL
    + beta / 2 * sum over pairs. alpha = 0 (the default) is the paper's AT alone with CE.
    Both stages of a pair must be conv maps; a finer map is average-pooled to the coarser."""

    name: Literal["attention"] = "attention"
    teacher_stages: list[str] | None = Field(
        None, min_length=1, max_length=8,
        description="Teacher conv stages; default: as many of the teacher's conv stages as the "
        "student has, the last ones, in order.", examples=[["conv0", "conv1"]],
    )
    student_stages: list[str] | None = Field(
        None, min_length=1, max_length=8,
        description="Student conv stages paired with teacher_stages one to one; default: all "
        "of the student's conv stages (up to the teacher's count, the last ones).",
    )
    beta: float = Field(10.0, ge=0, le=1e6, description="Weight of the attention term (beta / 2 per pair). "
                        "The paper's 1000 loses ~14 points on MNIST-1D's short maps; 10 was best on validation.")
    alpha: float = Field(0.0, ge=0, le=1, description="Weight of an optional KD term; 0: CE + AT only.")


class AdversarialMethod(_KDTerms):
    """KD plus an adversarial term: a discriminator (MLP on softmax probabilities) learns to tell
    teacher outputs from student outputs with its own Adam optimizer, one step after each
    student step; the student adds adv_weight * BCE(D(p_student), 'teacher') to fool it."""

    name: Literal["adversarial"] = "adversarial"
    adv_weight: float = Field(0.1, ge=0, le=100, description="Weight of the student's fooling term.")
    disc_hidden: int = Field(64, ge=1, le=4096, description="Width of the discriminator's hidden layer.")
    disc_lr: float = Field(1e-3, gt=0, le=1, description="Learning rate of the discriminator (Adam).")


class PseudoLabelMethod(Strict):
    """Control for soft targets: CE on the teacher's argmax as a hard label (labels ignored)."""

    name: Literal["pseudo_label"] = "pseudo_label"


class BornAgainMethod(_KDTerms):
    """Born-again networks (Furlanello et al. 2018): the teacher has the student's architecture;
    generation k+1 learns by KD from generation k (generation 0 is the teacher), for
    `generations` generations, each one reported; the last generation is the student."""

    name: Literal["born_again"] = "born_again"
    generations: int = Field(3, ge=1, le=10, description="Student generations after the teacher.")


class TeacherAssistantMethod(_KDTerms):
    """Teacher assistant (Mirzadeh et al. 2019): teacher -> assistant(s) -> student, each link a
    KD run with this temperature and alpha; every assistant is reported."""

    name: Literal["teacher_assistant"] = "teacher_assistant"
    assistants: list[Arch] = Field(
        min_length=1, max_length=4,
        description="Architectures of the assistants, largest first.",
        examples=[[{"name": "mlp", "hidden": [256, 256]}]],
    )


Method = Annotated[
    Union[
        CEMethod, KDMethod, DKDMethod, FitNetMethod, AttentionMethod, AdversarialMethod,
        PseudoLabelMethod, BornAgainMethod, TeacherAssistantMethod,
    ],
    Field(discriminator="name"),
]
METHODS = {
    m.model_fields["name"].default: m
    for m in (CEMethod, KDMethod, DKDMethod, FitNetMethod, AttentionMethod, AdversarialMethod,
              PseudoLabelMethod, BornAgainMethod, TeacherAssistantMethod)
}
