"""The distillation methods, registered once: one spec class each.

A method's class holds everything the API knows of it: its fields (defaults, ranges,
documentation: the catalog entry is derived from them), what it asks of the job (a
teacher, a teacher's stages, whether a transfer set suits it, the recipe that plans its
runs) and its own checks at submission (`fit_errors`). `Method` (the spec's union) and
`METHODS` (the catalog's list) are derived from the registry. The engine registers one
objective per method name (worker/distill/objectives.py; a test checks both lists agree).

Adding a method: a class here decorated with @register, an objective class there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_serializer

from app.contract.architectures import Arch
from app.contract.base import FieldError, Strict, without_defaults
from app.contract.stages import is_conv, stage_error, stage_shapes

if TYPE_CHECKING:  # spec.py imports this module
    from app.contract.spec import JobSpec

METHODS: dict[str, type[MethodSpec]] = {}


class MethodSpec(Strict):
    """The base of every method's spec."""

    name: str
    # What the method asks of the job (checked at submission by app/contract/fit.py).
    uses_teacher: ClassVar[bool] = True  # False: labels alone (the teacher is not asked)
    takes_transfer_set: ClassVar[bool] = False  # it learns from unlabeled inputs (teacher alone)
    needs_teacher_arch: ClassVar[bool] = False  # one teacher whose architecture (stages) is known
    # The recipe that plans the method's runs (worker/distill/recipes.py); None: one
    # student per seed, learning from the teacher.
    recipe: ClassVar[str | None] = None
    # The method's example job in the API docs (POST /v1/jobs): the spec keys it sets over the
    # docs' base job (app/api/examples.py), `method` always, teacher or student when it needs
    # its own. Every example passes the submission checks (tests/api/test_openapi_docs.py).
    example: ClassVar[dict[str, Any]] = {}

    def extra_archs(self) -> list[tuple[tuple[str | int, ...], Arch]]:
        """Architectures the method trains besides teacher and student, with their place in the spec."""
        return []

    def fit_errors(self, spec: JobSpec, input_shape: tuple[int, ...]) -> list[FieldError]:
        """The method's own checks against the job's models and data shape."""
        return []


def register(cls: type[MethodSpec]) -> type[MethodSpec]:
    METHODS[cls.model_fields["name"].default] = cls
    return cls


@register
class CEMethod(MethodSpec):
    """Cross-entropy on the labels alone: the teacher is not used."""

    name: Literal["ce"] = "ce"
    example: ClassVar[dict[str, Any]] = {"method": {"name": "ce"}}
    uses_teacher: ClassVar[bool] = False


class WarmupSchedule(Strict):
    """A value that rises linearly from `start` to the method's value over the first `epochs`
    epochs (epoch e of the warm-up gets start + (value - start) * e / epochs), then stays."""

    kind: Literal["linear_warmup"] = "linear_warmup"
    epochs: int = Field(ge=1, le=10_000, description="Length of the warm-up in epochs.")
    start: float = Field(0.0, ge=0, le=100, description="Value at epoch 0.")


@register
class KDMethod(MethodSpec):
    """Hinton et al. 2015: alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(y, p_student)."""

    name: Literal["kd"] = "kd"
    example: ClassVar[dict[str, Any]] = {
        "method": {
            "name": "kd",
            "temperature": 4.0,
            "alpha": 0.9,
            "temperature_schedule": {"kind": "linear_warmup", "epochs": 5, "start": 1.0},
        }
    }
    takes_transfer_set: ClassVar[bool] = True
    temperature: float = Field(
        8.0,
        gt=0,
        le=100,
        description="Softmax temperature T (> 0); 3..10 is typical. The "
        "default was chosen on MNIST-1D validation accuracy (bench/results/quality.md).",
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of the soft-target term; 1 - alpha weighs the labels. "
        "Default chosen with T on validation (bench/results/quality.md).",
    )
    temperature_schedule: WarmupSchedule | None = Field(
        None, description="None: T is constant. A linear warm-up from `start` (> 0) to T."
    )
    alpha_schedule: WarmupSchedule | None = Field(
        None,
        description="None: alpha is constant. A linear warm-up from `start` to alpha "
        "(e.g. start 0: labels first, the teacher's weight grows).",
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


@register
class DKDMethod(MethodSpec):
    """Decoupled KD (Zhao et al. 2022): CE(y, s) + w(epoch) * (alpha * TCKD + beta * NCKD), both at
    temperature T with the T^2 factor; w rises linearly from 1/warmup_epochs to 1 over the first
    warmup_epochs epochs (the paper's warm-up), then stays 1."""

    name: Literal["dkd"] = "dkd"
    example: ClassVar[dict[str, Any]] = {
        "method": {"name": "dkd", "temperature": 4.0, "alpha": 1.0, "beta": 0.5, "warmup_epochs": 5}
    }
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature T.")
    alpha: float = Field(1.0, ge=0, le=100, description="Weight of TCKD (target vs non-target).")
    beta: float = Field(
        0.5,
        ge=0,
        le=100,
        description="Weight of NCKD (among non-target classes). The "
        "paper's 8 loses 5 points on MNIST-1D validation; 0.5 was best there.",
    )
    ce_weight: float = Field(1.0, ge=0, le=100, description="Weight of the cross-entropy on labels.")
    warmup_epochs: int = Field(5, ge=0, le=10_000, description="Epochs of linear warm-up of the KD terms; 0 for none.")


class _KDTerms(MethodSpec):
    temperature: float = Field(8.0, gt=0, le=100, description="Softmax temperature T of the KD term.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KD term; 1 - alpha weighs CE on the labels.")


@register
class FitNetMethod(_KDTerms):
    """FitNets (Romero et al. 2015), trained jointly as common practice does (one stage, not the
    paper's two): KD(alpha, T) + hint_weight * MSE(regressor(student_stage), teacher_stage).
    The regressor is a 1x1 convolution between conv maps (adaptive average pooling first when
    the spatial sizes differ) and a Linear layer otherwise (conv maps flattened); it is trained
    with the student and discarded at export."""

    name: Literal["fitnet"] = "fitnet"
    example: ClassVar[dict[str, Any]] = {
        "method": {"name": "fitnet", "teacher_stage": "conv1", "student_stage": "hidden0", "hint_weight": 1.0}
    }
    teacher_stage: str | None = Field(
        None,
        description="Teacher stage giving the hint; default: the teacher's last stage. "
        "GET /v1/catalog explains stage names (mlp: hidden0.., cnn: conv0.. and dense).",
        examples=["conv1"],
    )
    student_stage: str | None = Field(
        None,
        description="Student stage guided by the hint; default: the student's last stage.",
        examples=["hidden0"],
    )
    hint_weight: float = Field(1.0, ge=0, le=1e4, description="Weight of the hint (MSE) term.")
    needs_teacher_arch: ClassVar[bool] = True

    def stages(self, t_shapes: dict, s_shapes: dict) -> tuple[list[str], list[str]]:
        """The (teacher, student) stages, defaults resolved; the engine uses the same."""
        t = self.teacher_stage or (list(t_shapes)[-1] if t_shapes else "")
        st = self.student_stage or (list(s_shapes)[-1] if s_shapes else "")
        return [t], [st]

    def fit_errors(self, spec: JobSpec, input_shape: tuple[int, ...]) -> list[FieldError]:
        if spec.teacher.arch is None:  # app/contract/fit.py has refused the job already
            return []
        t_shapes = stage_shapes(spec.teacher.arch, input_shape)
        s_shapes = stage_shapes(spec.student.arch, input_shape)
        ts, ss = self.stages(t_shapes, s_shapes)
        errors: list[FieldError] = []
        for loc, which, stage, shapes in (
            ("teacher_stage", "teacher", ts[0], t_shapes),
            ("student_stage", "student", ss[0], s_shapes),
        ):
            if not shapes:
                errors.append(
                    FieldError(
                        loc=("method", loc), msg=f"the {which} has no stages (an mlp with hidden []): a hint needs one."
                    )
                )
            elif e := stage_error(("method", loc), which, stage, shapes, need_conv=False):
                errors.append(e)
        return errors


@register
class AttentionMethod(_KDTerms):
    """Attention transfer (Zagoruyko & Komodakis 2017), their reference code's normalisation:
    Q = l2-normalise(mean over channels of A^2) per example, and per stage pair
    mean over batch and positions of (Q_s - Q_t)^2; loss = (1 - alpha) * CE + alpha * T^2 * KL
    + beta / 2 * sum over pairs. alpha = 0 (the default) is the paper's AT alone with CE.
    Both stages of a pair must be conv maps; a finer map is average-pooled to the coarser."""

    name: Literal["attention"] = "attention"
    example: ClassVar[dict[str, Any]] = {
        "student": {"arch": {"name": "cnn", "channels": [16, 32], "hidden": 32}},
        "method": {"name": "attention", "teacher_stages": ["conv1", "conv2"], "student_stages": ["conv0", "conv1"]},
    }
    teacher_stages: list[str] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Teacher conv stages; default: as many of the teacher's conv stages as the "
        "student has, the last ones, in order.",
        examples=[["conv0", "conv1"]],
    )
    student_stages: list[str] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Student conv stages paired with teacher_stages one to one; default: all "
        "of the student's conv stages (up to the teacher's count, the last ones).",
    )
    beta: float = Field(
        10.0,
        ge=0,
        le=1e6,
        description="Weight of the attention term (beta / 2 per pair). "
        "The paper's 1000 loses ~14 points on MNIST-1D's short maps; 10 was best on validation.",
    )
    alpha: float = Field(0.0, ge=0, le=1, description="Weight of an optional KD term; 0: CE + AT only.")
    needs_teacher_arch: ClassVar[bool] = True

    def stages(self, t_shapes: dict, s_shapes: dict) -> tuple[list[str], list[str]]:
        """The paired (teacher, student) conv stages, defaults resolved; the engine uses the same."""
        t_conv = [k for k, v in t_shapes.items() if is_conv(v)]
        s_conv = [k for k, v in s_shapes.items() if is_conv(v)]
        n = min(len(t_conv), len(s_conv))
        ts = self.teacher_stages or (t_conv[len(t_conv) - n :] if n else t_conv[-1:])
        ss = self.student_stages or (s_conv[len(s_conv) - n :] if n else s_conv[-1:])
        return list(ts), list(ss)

    def fit_errors(self, spec: JobSpec, input_shape: tuple[int, ...]) -> list[FieldError]:
        if spec.teacher.arch is None:  # app/contract/fit.py has refused the job already
            return []
        t_shapes = stage_shapes(spec.teacher.arch, input_shape)
        s_shapes = stage_shapes(spec.student.arch, input_shape)
        ts, ss = self.stages(t_shapes, s_shapes)
        if not ts or not ss:
            return [
                FieldError(
                    loc=("method", loc),
                    msg=f"attention transfer needs conv stages, and the "
                    f"{which} has none (its stages: {', '.join(shapes) or 'none'}); use a cnn {which}.",
                )
                for loc, which, shapes, given in (
                    ("teacher_stages", "teacher", t_shapes, ts),
                    ("student_stages", "student", s_shapes, ss),
                )
                if not given
            ]
        if len(ts) != len(ss):
            return [
                FieldError(
                    loc=("method", "student_stages"),
                    msg=f"{len(ts)} teacher stages but {len(ss)} student stages: they are paired one to one.",
                )
            ]
        errors = []
        for i, (t, st) in enumerate(zip(ts, ss, strict=True)):  # lengths checked above
            if e := stage_error(("method", "teacher_stages", i), "teacher", t, t_shapes, True):
                errors.append(e)
            if e := stage_error(("method", "student_stages", i), "student", st, s_shapes, True):
                errors.append(e)
        return errors


@register
class AdversarialMethod(_KDTerms):
    """KD plus an adversarial term: a discriminator (MLP on softmax probabilities) learns to tell
    teacher outputs from student outputs with its own Adam optimizer, one step after each
    student step; the student adds adv_weight * BCE(D(p_student), 'teacher') to fool it."""

    name: Literal["adversarial"] = "adversarial"
    example: ClassVar[dict[str, Any]] = {"method": {"name": "adversarial", "adv_weight": 0.1}}
    adv_weight: float = Field(0.1, ge=0, le=100, description="Weight of the student's fooling term.")
    disc_hidden: int = Field(64, ge=1, le=4096, description="Width of the discriminator's hidden layer.")
    disc_lr: float = Field(1e-3, gt=0, le=1, description="Learning rate of the discriminator (Adam).")


@register
class PseudoLabelMethod(MethodSpec):
    """Control for soft targets: CE on the teacher's argmax as a hard label (labels ignored)."""

    name: Literal["pseudo_label"] = "pseudo_label"
    example: ClassVar[dict[str, Any]] = {"method": {"name": "pseudo_label"}}
    takes_transfer_set: ClassVar[bool] = True


@register
class BornAgainMethod(_KDTerms):
    """Born-again networks (Furlanello et al. 2018): the teacher has the student's architecture;
    generation k+1 learns by KD from generation k (generation 0 is the teacher), for
    `generations` generations, each one reported; the last generation is the student."""

    name: Literal["born_again"] = "born_again"
    example: ClassVar[dict[str, Any]] = {
        "teacher": {"train": {"arch": {"name": "mlp", "hidden": [64, 64]}, "epochs": 60}},
        "method": {"name": "born_again", "generations": 2},
    }
    needs_teacher_arch: ClassVar[bool] = True
    recipe: ClassVar[str | None] = "born_again"
    generations: int = Field(3, ge=1, le=10, description="Student generations after the teacher.")

    def fit_errors(self, spec: JobSpec, input_shape: tuple[int, ...]) -> list[FieldError]:
        if spec.teacher.arch == spec.student.arch:
            return []
        loc = ("teacher", "train" if spec.teacher.train else "artifact", "arch")
        return [
            FieldError(
                loc=loc,
                msg="born_again distils a model into its own architecture: "
                "the teacher's arch must equal the student's.",
            )
        ]


@register
class TeacherAssistantMethod(_KDTerms):
    """Teacher assistant (Mirzadeh et al. 2019): teacher -> assistant(s) -> student, each link a
    KD run with this temperature and alpha; every assistant is reported."""

    name: Literal["teacher_assistant"] = "teacher_assistant"
    example: ClassVar[dict[str, Any]] = {
        "method": {"name": "teacher_assistant", "assistants": [{"name": "mlp", "hidden": [256, 256]}]}
    }
    recipe: ClassVar[str | None] = "teacher_assistant"
    assistants: list[Arch] = Field(
        min_length=1,
        max_length=4,
        description="Architectures of the assistants, largest first.",
        examples=[[{"name": "mlp", "hidden": [256, 256]}]],
    )

    def extra_archs(self) -> list[tuple[tuple[str | int, ...], Arch]]:
        return [(("method", "assistants", i), arch) for i, arch in enumerate(self.assistants)]


# The spec's union, in registration order (the order of this file).
if TYPE_CHECKING:  # a union built at run time is no static type: the checker sees the base
    Method = MethodSpec
else:  # Union of the registered classes: a runtime tuple, which only typing.Union takes.
    Method = Annotated[Union[tuple(METHODS.values())], Field(discriminator="name")]  # noqa: UP007
