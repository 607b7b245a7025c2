"""JobSpec: the contract between a client, the API and the worker.

Pydantic only (no torch), so the API can refuse a spec that cannot run at
submission time. Two layers of checks:

- field checks (types, ranges, unknown names) live on the models below;
- cross-field checks that need the catalog (does this architecture fit the
  dataset's input shape?) live in `fit_errors`, which names the field.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.catalog import DATASETS


class _Strict(BaseModel):
    # A typo in a field name is an error, not a silently ignored option; and a value
    # of the wrong type ("baseline": 0, "epochs": "5") is refused, not coerced.
    model_config = ConfigDict(extra="forbid", strict=True)


# --- data --------------------------------------------------------------------


class DatasetSpec(_Strict):
    name: Literal["digits", "mnist1d"] = Field(
        description="A built-in dataset; GET /v1/catalog lists them with their shapes.",
        examples=["mnist1d"],
    )
    split_seed: int = Field(
        0, ge=0, description="Seed of the train/validation (and, for digits, test) split."
    )
    val_fraction: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Share of the training set held out for early stopping and model "
        "selection. The test split is never used for either.",
    )


# --- architectures -------------------------------------------------------------


class MLPArch(_Strict):
    name: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default_factory=lambda: [256, 256],
        max_length=16,
        description="Width of each hidden layer; [] is logistic regression.",
        examples=[[64, 64]],
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")


class CNNArch(_Strict):
    name: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32, 64],
        min_length=1,
        max_length=8,
        description="Channels of each conv stage. A stage is conv -> batch norm -> ReLU -> "
        "2x max-pool, 1-D or 2-D as the input shape says, so every stage halves each "
        "spatial size: the input must have at least 2**len(channels) along each axis.",
        examples=[[32, 64, 64]],
    )
    kernel_size: int = Field(3, ge=1, le=15, description="Odd convolution kernel size.")
    hidden: int = Field(
        128, ge=0, le=8192, description="Width of the dense layer before the head; 0 for none."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head.")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("kernel_size must be odd so that 'same' padding keeps the length")
        return v


Arch = Annotated[Union[MLPArch, CNNArch], Field(discriminator="name")]


# --- training ------------------------------------------------------------------


class OptimSpec(_Strict):
    """How one model is trained. Shared by the teacher, the student and the baseline."""

    epochs: int = Field(30, ge=1, le=10_000, description="Epoch budget.")
    batch_size: int = Field(128, ge=1, le=65_536, description="Examples per step.")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw, or sgd with Nesterov momentum 0.9."
    )
    lr: float = Field(3e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Decoupled weight decay.")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine decays to 0 over the epoch budget."
    )
    patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many epochs without a better validation accuracy. "
        "Whatever it says, the weights of the best validation epoch are kept.",
    )


class TeacherTrain(OptimSpec):
    arch: Arch = Field(description="The teacher's architecture.")
    seed: int = Field(0, ge=0, description="Seed of the teacher's initialisation and batches.")
    patience: int | None = Field(
        10,
        ge=1,
        description="Early stopping on validation accuracy (the teacher is trained to "
        "convergence); the best validation epoch's weights are kept.",
    )
    epochs: int = Field(100, ge=1, le=10_000, description="Upper bound on epochs.")


class TeacherSpec(_Strict):
    train: TeacherTrain = Field(description="Train the teacher in the job.")


class StudentSpec(_Strict):
    arch: Arch = Field(description="The student's architecture (the baseline uses it too).")


class TrainingSpec(OptimSpec):
    """Budget of the student and of the scratch baseline: the same for both."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto takes CUDA when the worker has a GPU, else the CPU."
    )
    soft_targets: Literal["auto", "cached", "recomputed"] = Field(
        "auto",
        description="cached: the teacher's logits on the training set are computed once "
        "and reused every epoch (valid when no augmentation changes the inputs); "
        "recomputed: the teacher runs on every batch. auto picks cached.",
    )


# --- methods -------------------------------------------------------------------


class CEMethod(_Strict):
    """Cross-entropy on the labels alone: the teacher is not used."""

    name: Literal["ce"] = "ce"


class KDMethod(_Strict):
    """Hinton et al. 2015: alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(y, p_student)."""

    name: Literal["kd"] = "kd"
    temperature: float = Field(
        4.0, gt=0, le=100, description="Softmax temperature T (> 0); 3..10 is typical."
    )
    alpha: float = Field(
        0.9, ge=0, le=1, description="Weight of the soft-target term; 1 - alpha weighs the labels."
    )


Method = Annotated[Union[CEMethod, KDMethod], Field(discriminator="name")]


# --- export --------------------------------------------------------------------


class ExportSpec(_Strict):
    formats: list[Literal["safetensors", "onnx"]] = Field(
        default_factory=lambda: ["safetensors", "onnx"],
        min_length=1,
        description="Files of the student to produce. report.json is always written.",
    )
    onnx_opset: int = Field(17, ge=13, le=20)


# --- limits --------------------------------------------------------------------


class LimitsSpec(_Strict):
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="How many times a worker may start the job. A worker that dies hands "
        "the job to another, which resumes from the last checkpoint; a job that kills its "
        "worker every time fails after this many attempts instead of looping.",
    )
    time_limit_seconds: int | None = Field(
        None,
        ge=1,
        le=7 * 24 * 3600,
        description="Wall-clock limit from the first start; the job fails when it is exceeded.",
        examples=[3600],
    )


# --- the job -------------------------------------------------------------------

EXAMPLE_SPEC = {
    "name": "mnist1d cnn -> mlp",
    "dataset": {"name": "mnist1d"},
    "teacher": {"train": {"arch": {"name": "cnn", "channels": [32, 64, 64]}, "epochs": 60}},
    "student": {"arch": {"name": "mlp", "hidden": [64, 64]}},
    "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
    "training": {"epochs": 40},
    "seeds": [0, 1, 2],
    "baseline": True,
}


class JobSpec(_Strict):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [EXAMPLE_SPEC]}
    )

    name: str | None = Field(None, max_length=200, description="A label for people.")
    dataset: DatasetSpec
    teacher: TeacherSpec
    student: StudentSpec
    method: Method = Field(default_factory=KDMethod, description="The distillation method.")
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        max_length=10,
        description="The student (and baseline) is trained once per seed; the report gives "
        "mean and standard deviation over them.",
    )
    baseline: bool = Field(
        True,
        description="Also train the student architecture from scratch on labels with the "
        "same budget, so the report answers 'did the teacher help?'.",
    )
    export: ExportSpec = Field(default_factory=ExportSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


# --- cross-field checks ----------------------------------------------------------


class FieldError(BaseModel):
    loc: tuple[str | int, ...]
    msg: str


def _arch_fit(arch: MLPArch | CNNArch, input_shape: tuple[int, ...], loc: tuple) -> list[FieldError]:
    if isinstance(arch, CNNArch):
        spatial = input_shape[-2:] if len(input_shape) >= 2 else input_shape
        need = 2 ** len(arch.channels)
        if min(spatial) < need:
            deepest = max(0, min(spatial).bit_length() - 1)
            return [
                FieldError(
                    loc=(*loc, "channels"),
                    msg=f"{len(arch.channels)} conv stages halve the input {len(arch.channels)} "
                    f"times, but the input is {'x'.join(map(str, input_shape))}; "
                    f"use at most {deepest} stages.",
                )
            ]
    return []


def fit_errors(spec: JobSpec) -> list[FieldError]:
    """Checks that need the dataset's shape: each model must fit its input."""
    shape = DATASETS[spec.dataset.name].input_shape
    errors = _arch_fit(spec.student.arch, shape, ("student", "arch"))
    errors += _arch_fit(spec.teacher.train.arch, shape, ("teacher", "train", "arch"))
    return errors
