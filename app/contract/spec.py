"""JobSpec: the contract between a client, the API and the worker.

Pydantic only (no torch), so the API can refuse a spec that cannot run at
submission time. Field checks (types, ranges, unknown names, one of two sources)
live on the models below; checks that need the catalog or an uploaded artifact's
inspection (does this architecture fit the data? does the brought teacher?) live
in app/contract/fit.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from app.contract.architectures import Arch
from app.contract.base import Strict, without_defaults
from app.contract.methods import KDMethod, Method

# --- data --------------------------------------------------------------------


class TransferSpec(Strict):
    """Extra unlabeled inputs for the student (Hinton 2015's transfer set): give one source."""

    extra_generated: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="mnist1d only: generate this many extra examples with mnist1d's own "
        "generator and another seed (deterministic, cached); their labels are discarded. "
        "The student learns there from the teacher alone (alpha = 1 on those examples).",
    )
    unlabeled: bool = Field(
        False,
        description="An uploaded dataset only: use its unlabeled rows (x_unlabeled in an "
        "NPZ, rows with an empty label in CSV/Parquet, an unlabeled/ folder in a ZIP).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TransferSpec:
        if (self.extra_generated is None) == (not self.unlabeled):
            raise ValueError("give exactly one of extra_generated or unlabeled: true")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        return without_defaults(handler(self), extra_generated=None, unlabeled=False)


class DatasetSpec(Strict):
    """A built-in dataset (`name`) or an uploaded one (`artifact`): give exactly one."""

    name: Literal["digits", "mnist1d", "fashion_mnist"] | None = Field(
        None,
        description="A built-in dataset; GET /v1/catalog lists them with their shapes.",
        examples=["mnist1d"],
    )
    artifact: str | None = Field(
        None,
        max_length=36,
        description="Id of an uploaded dataset (POST /v1/artifacts, kind "
        "dataset). Without a test split of its own, a stratified test_fraction is held out.",
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="Uploaded datasets without x_test: share held out for the "
        "final report (stratified, seeded by split_seed).",
    )
    split_seed: int = Field(0, ge=0, description="Seed of the train/validation (and, for digits, test) split.")
    val_fraction: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Share of the training set held out for early stopping and model "
        "selection. The test split is never used for either.",
    )
    transfer: TransferSpec | None = Field(
        None, description="Extra unlabeled inputs for the student (methods kd and pseudo_label)."
    )
    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the (post-validation-split) training set the student and the "
        "baseline learn from, stratified and seeded by split_seed; the teacher learns from all "
        "of it (Hinton 2015's 3% experiment). Validation and test are unchanged.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.name is None) == (self.artifact is None):
            raise ValueError("give exactly one of dataset.name (built-in) or dataset.artifact (uploaded)")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        # Stored and echoed specs of built-in datasets read as they did before uploads existed.
        data = handler(self)
        if isinstance(data, dict) and data.get("artifact") is None:
            data = without_defaults(data, artifact=None, test_fraction=0.2)
        return without_defaults(data, name=None)

    @property
    def label(self) -> str:
        return self.name or f"artifact {self.artifact}"


# --- training ------------------------------------------------------------------


class OptimSpec(Strict):
    """How one model is trained. Shared by the teacher, the student and the baseline."""

    epochs: int = Field(30, ge=1, le=10_000, description="Epoch budget.")
    batch_size: int = Field(128, ge=1, le=65_536, description="Examples per step.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with Nesterov momentum 0.9.")
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
    reuse: bool = Field(
        True,
        description="Reuse a teacher this tenant already trained with the same training config, "
        "data and seed (a content hash) instead of training it again; false forces a new one.",
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        return without_defaults(handler(self), reuse=True)

    def training_config(self) -> dict:
        """What the trained weights depend on (everything but whether to reuse them)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k != "reuse"}


class PreprocessSpec(Strict):
    """What a brought ONNX teacher expects, applied by the worker to every batch (as the dataset
    stores it: (N, H, W) or (N, C, H, W)) before onnxruntime runs it, in this order: x * scale,
    (x - mean) / std per channel, RGB -> BGR, resize to input_size, NCHW -> NHWC. The student
    never sees this: it takes the raw data (its own normalisation is inside its graph)."""

    scale: float = Field(
        1.0, gt=0, le=1e6, description="Multiply the raw values first (1/255 for 0..1 images from uint8 data)."
    )
    mean: list[float] = Field(
        default_factory=lambda: [0.0],
        min_length=1,
        max_length=4,
        description="Subtracted after scaling: one value, or one per channel.",
    )
    std: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        max_length=4,
        description="Divided by after the mean: one value or one per channel.",
    )
    channel_order: Literal["RGB", "BGR"] = Field(
        "RGB", description="BGR reverses the 3 channels (OpenCV/Caffe-trained models)."
    )
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="The teacher's input layout.")
    input_size: int | None = Field(
        None, ge=1, le=4096, description="Resize (bilinear) to this square side; default: the data's size."
    )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-example shape the teacher receives for data examples of `input_shape`."""
        if len(input_shape) not in (2, 3):
            return tuple(input_shape)  # not an image: scale, mean and std only
        c, h, w = (1, *input_shape) if len(input_shape) == 2 else input_shape
        if self.input_size is not None:
            h = w = self.input_size
        return (h, w, c) if self.layout == "NHWC" else (c, h, w)

    def problem(self, input_shape: tuple[int, ...]) -> str | None:
        """Why this preprocessing cannot apply to data of `input_shape`, or None."""
        image = len(input_shape) in (2, 3)
        channels = (1 if len(input_shape) == 2 else input_shape[0]) if image else 1
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                return f"{name} has {len(values)} values; the data has {channels} channel(s): give 1 or {channels}."
        if self.channel_order == "BGR" and channels != 3:
            return f"channel_order BGR needs 3 channels; the data has {channels}."
        if not image and (self.layout != "NCHW" or self.input_size is not None):
            return "layout and input_size apply to images ((H, W) or (C, H, W) data)."
        return None


class TeacherArtifact(Strict):
    """A teacher the client brought: an uploaded ONNX model (run with onnxruntime) or safetensors
    weights of one of our architectures (then `arch` says which)."""

    id: str = Field(max_length=36, description="Id of an uploaded teacher (POST /v1/artifacts, kind teacher).")
    output: str | None = Field(
        None,
        max_length=200,
        description="ONNX: the output to use; default: the one inspection found (the artifact's inspection.output).",
    )
    output_kind: Literal["auto", "logits", "probabilities"] = Field(
        "auto",
        description="ONNX: what the output holds; auto takes inspection's finding. "
        "Probabilities are turned into log-probabilities before the temperature applies.",
    )
    arch: Arch | None = Field(
        None,
        description="safetensors: the architecture the weights belong to (its keys, shapes "
        "and dtypes are checked against it at submission). Not for ONNX.",
    )
    preprocess: PreprocessSpec | None = Field(
        None,
        description="ONNX: the preprocessing the model was trained with (scale, mean, std, "
        "channel order, layout, input size), applied to each batch before it runs; the report "
        "records it. The artifact's inspection shows what the file declares.",
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        return without_defaults(handler(self), output=None, output_kind="auto", arch=None, preprocess=None)


EnsembleMember = TeacherTrain | TeacherArtifact


class TeacherSpec(Strict):
    """Train a teacher (`train`), bring one (`artifact`), or use an ensemble (`ensemble`) of
    teachers trained in the job and/or brought: give exactly one.

    An ensemble's output is the log of its members' MEAN PROBABILITIES (at T = 1); the
    temperature is applied to that, so soft targets are softmax(log(mean p) / T) (Hinton
    2015's headline experiment: many models distilled into one)."""

    train: TeacherTrain | None = Field(None, description="Train the teacher in the job.")
    artifact: TeacherArtifact | None = Field(None, description="Use an uploaded teacher.")
    ensemble: list[EnsembleMember] | None = Field(
        None,
        min_length=2,
        max_length=8,
        description="Several teachers, each trained in the job (arch, ...) or uploaded (id, ...); "
        "the students learn from their averaged probabilities.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> TeacherSpec:
        if sum(x is not None for x in (self.train, self.artifact, self.ensemble)) != 1:
            raise ValueError("give exactly one of teacher.train, teacher.artifact or teacher.ensemble")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        return without_defaults(handler(self), train=None, artifact=None, ensemble=None)

    @property
    def members(self) -> list[TeacherTrain | TeacherArtifact]:
        """Every teacher of the job, in order: one, or the ensemble's members."""
        if self.ensemble is not None:
            return list(self.ensemble)
        single = self.train or self.artifact
        return [single] if single is not None else []  # _one_kind leaves exactly one

    @property
    def arch(self) -> Arch | None:
        """The single teacher's architecture, when it is known (trained, or brought as weights)."""
        single = self.train or self.artifact
        return single.arch if single is not None else None


class StudentInit(Strict):
    """The student's starting point: an uploaded safetensors file of its own architecture."""

    artifact: str = Field(
        max_length=36,
        description="Id of uploaded safetensors weights (POST /v1/artifacts, kind teacher: the kind of "
        "every model upload) of the student's arch: a timm/torchvision state dict, or one of ours "
        "(a job's student.safetensors included). Keys, shapes and dtypes are checked at submission.",
    )


class StudentSpec(Strict):
    arch: Arch = Field(description="The student's architecture (the baseline uses it too).")
    init: StudentInit | None = Field(
        None,
        description="Start every student run from these weights instead of a seeded random "
        "initialisation; the baseline starts from them too, so the comparison stays 'the same "
        "student with and without a teacher'. Without it, each seed initialises the student afresh.",
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        return without_defaults(handler(self), init=None)


class AugmentSpec(Strict):
    """Random changes to each training batch of the student and the baseline, drawn from the
    run's seeded RNG. The teacher sees the augmented batch the student sees, so its outputs
    are recomputed on every batch (never cached)."""

    noise_std: float = Field(0.0, ge=0, le=100, description="Gaussian noise added to the raw inputs.")
    shift: int = Field(
        0,
        ge=0,
        le=64,
        description="Circular shift of up to this many samples along "
        "each spatial axis (independently per example and axis).",
    )
    scale: float = Field(0.0, ge=0, lt=1, description="Multiply each example by 1 + U(-scale, scale).")
    # Images ((H, W) or (C, H, W)): worker/distill/image_augment.py, each example its own draw.
    crop: Literal["none", "resized", "pad"] = Field(
        "none",
        description="Images: 'resized' takes a random box (area share crop_scale..1, aspect "
        "3/4..4/3) resized back to the image's size; 'pad' a random window of the image reflect-padded "
        "by crop_padding.",
    )
    crop_padding: int = Field(4, ge=1, le=64, description="Images, crop 'pad': padding in pixels.")
    crop_scale: float = Field(0.35, gt=0, le=1, description="Images, crop 'resized': smallest area share.")
    flip: bool = Field(False, description="Images: horizontal flip with probability 1/2.")
    color_jitter: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Images stored as uint8: brightness, contrast and saturation factors U(1 - j, 1 + j) per example.",
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        return without_defaults(
            handler(self), crop="none", crop_padding=4, crop_scale=0.35, flip=False, color_jitter=0.0
        )

    def image_active(self) -> bool:
        return self.crop != "none" or self.flip or self.color_jitter > 0

    def active(self) -> bool:
        return self.noise_std > 0 or self.shift > 0 or self.scale > 0 or self.image_active()


class TrainingSpec(OptimSpec):
    """Budget of the student and of the scratch baseline: the same for both."""

    augment: AugmentSpec | None = Field(
        None, description="Augmentation of the student's (and baseline's) training batches."
    )

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto takes CUDA when the worker has a GPU, else the CPU."
    )
    soft_targets: Literal["auto", "cached", "recomputed"] = Field(
        "auto",
        description="cached: the teacher's logits on the training set are computed once "
        "and reused every epoch (valid when no augmentation changes the inputs); "
        "recomputed: the teacher runs on every batch. auto picks cached.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the student's (and a live teacher's) training forward pass: "
        "pays on a GPU and for larger conv nets, after a compile of tens of seconds per run; "
        "figures agree with an eager run to float rounding, not bit for bit.",
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        # Left out when off: stored specs and checkpoint signatures read as before the option.
        return without_defaults(handler(self), compile=False)


# --- export --------------------------------------------------------------------


ExportFormat = Literal["safetensors", "onnx"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("safetensors", "onnx")


class ExportSpec(Strict):
    formats: list[ExportFormat] = Field(
        default_factory=lambda: list(EXPORT_FORMATS),
        min_length=1,
        description="Files of the student to produce. report.json is always written.",
    )
    onnx_opset: int = Field(17, ge=13, le=20)


# --- limits --------------------------------------------------------------------


class LimitsSpec(Strict):
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

EXAMPLE_SPEC: dict[str, Any] = {
    "name": "mnist1d cnn -> mlp",
    "dataset": {"name": "mnist1d"},
    "teacher": {"train": {"arch": {"name": "cnn", "channels": [32, 64, 64]}, "epochs": 60}},
    "student": {"arch": {"name": "mlp", "hidden": [64, 64]}},
    "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
    "training": {"epochs": 40},
    "seeds": [0, 1, 2],
    "baseline": True,
}


class JobSpec(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [EXAMPLE_SPEC]})

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
