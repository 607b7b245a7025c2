"""The report (a succeeded job's `result`, also report.json) and the catalog, typed: for the
OpenAPI document, so that a generated client gets types, and for reading them in Python.

The worker writes the report as plain JSON (worker/distill/report.py, verdict.py) and GET
/v1/catalog builds the catalog from the contract. These models validate that JSON, keep every
key they do not name (extra="allow": a newer worker's additions pass through), and serialise it
back exactly as it was written: the same keys in the same order, ints still ints. So typing the
document changes no body (the golden reports stay bit for bit what they were).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_serializer, model_validator

from app.contract.spec import JobSpec


class AsWritten(BaseModel):
    """A JSON object typed by its fields and serialised back exactly as it was validated."""

    model_config = ConfigDict(extra="allow")
    _written: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_written(cls, data, handler):
        model = handler(data)
        if isinstance(data, dict):
            model._written = data
        return model

    @model_serializer(mode="wrap")
    def _as_written(self, handler):
        # No return annotation: the document's schema stays the model's own.
        return self._written if self._written is not None else handler(self)

    @classmethod
    def unchecked(cls, data: dict[str, Any]):
        """The object as it is, not validated (a stored report an older worker wrote)."""
        model = cls.model_construct()
        model._written = data
        return model


# --------------------------------------------------------------------------- the report


class ModelScores(AsWritten):
    """One trained model's figures on the job's splits (accuracy, calibration, size, speed)."""

    arch: dict[str, Any] | None = Field(None, description="The architecture, as in the spec.")
    test_accuracy: float | None = Field(None, description="On the test split.", examples=[0.8712])
    val_accuracy: float | None = Field(None, description="On the validation split (model selection).")
    train_accuracy: float | None = None
    test_nll: float | None = Field(None, description="Negative log-likelihood on the test split.")
    test_ece: float | None = Field(None, description="Expected calibration error on the test split (15 bins).")
    test_agreement: float | None = Field(None, description="Share of test examples where its argmax is the teacher's.")
    generalization_gap: float | None = Field(None, description="train_accuracy - test_accuracy.")
    parameters: int | None = Field(None, examples=[8906])
    bytes: int | None = Field(None, description="Size of its weights.")
    latency_ms: float | None = Field(None, description="One example on the CPU, torch (median).")
    latency_onnx_ms: float | None = Field(None, description="One example on the CPU, onnxruntime (median).")
    latency_onnx_threads: int | None = None
    best_epoch: int | None = Field(None, description="The epoch whose weights were kept (best validation).")
    epochs_run: int | None = None
    stopped_early: bool | None = None


class RunScores(ModelScores):
    """One seed's run of the student or the baseline."""

    seed: int | None = None


class Aggregate(AsWritten):
    """The mean (or the sample std) over the seeds of each numeric figure of the runs."""

    test_accuracy: float | None = None
    val_accuracy: float | None = None
    train_accuracy: float | None = None
    test_nll: float | None = None
    test_ece: float | None = None
    test_agreement: float | None = None
    generalization_gap: float | None = None
    parameters: float | None = None
    bytes: float | None = None
    latency_ms: float | None = None
    latency_onnx_ms: float | None = None
    best_epoch: float | None = None
    epochs_run: float | None = None


class SeedRuns(AsWritten):
    """The student (or its scratch baseline): one row per seed, their mean and std."""

    arch: dict[str, Any] | None = None
    runs: list[RunScores] = Field(default_factory=list)
    mean: Aggregate | None = None
    std: Aggregate | None = None
    init: dict[str, Any] | None = Field(None, description="The weights every run started from (student.init).")


class Generation(SeedRuns):
    """Born-again networks: one student generation."""

    generation: int | None = None


class Assistant(ModelScores):
    """Teacher assistant: one assistant of the chain."""

    link: int | None = Field(None, description="Its place in the chain teacher -> assistants -> student.")


class EnsembleMember(ModelScores):
    member: int | None = None
    source: str | None = Field(None, description="trained (in the job), artifact (uploaded) or reused.")


class TeacherScores(ModelScores):
    """The teacher: trained in the job, reused, brought (uploaded), or an ensemble (`members`)."""

    source: str | None = Field(
        None, description="trained (in the job), artifact (uploaded) or reused.", examples=["trained"]
    )
    artifact: str | None = Field(None, description="A brought teacher's upload id.")
    format: str | None = Field(None, description="A brought teacher's format: onnx or safetensors.")
    output: str | None = Field(None, description="A brought ONNX teacher's output used.")
    output_kind: str | None = Field(None, description="logits or probabilities (of a brought ONNX teacher).")
    members: list[EnsembleMember] | None = Field(None, description="An ensemble's members.")


class DatasetFacts(AsWritten):
    name: str | None = Field(None, examples=["mnist1d"])
    input_shape: list[int] | None = Field(None, examples=[[40]])
    num_classes: int | None = Field(None, examples=[10])
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    teacher_train_size: int | None = None
    transfer_size: int | None = None


class OnnxCheck(AsWritten):
    """The exported ONNX file run by onnxruntime on the test split against the trained model."""

    examples: int | None = None
    max_abs_logit_diff: float | None = None
    argmax_agreement: float | None = None


class Exported(AsWritten):
    """The student handed back: the run chosen on validation accuracy, and its files."""

    seed: int | None = None
    selected_by: str | None = Field(None, examples=["validation accuracy"])
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    files: dict[str, str] = Field(default_factory=dict, examples=[{"onnx": "student.onnx"}])
    onnx_opset: int | None = None
    onnx_check: OnnxCheck | None = None


class Summary(AsWritten):
    """The headline figures (means over seeds)."""

    student_vs_baseline_test_accuracy: float | None = Field(None, description="KD student - scratch baseline.")
    student_vs_teacher_test_accuracy: float | None = Field(None, description="KD student - teacher.")
    compression: float | None = Field(None, description="Teacher parameters / student parameters.")
    speedup: float | None = Field(None, description="Teacher latency / student latency.")


class MeanStd(AsWritten):
    mean: float | None = None
    std: float | None = None


class PairedDifference(AsWritten):
    """KD student - scratch baseline, seed by seed, with a paired t-test."""

    mean: float | None = None
    std: float | None = None
    n: int | None = Field(None, description="Seeds compared.")
    per_seed: list[dict[str, Any]] = Field(default_factory=list, examples=[[{"seed": 0, "difference": 0.012}]])
    p_value: float | None = None
    beyond_noise: bool | None = Field(None, description="p_value below the significance level; null with one seed.")


class Finding(AsWritten):
    """A warning about the job (also an event): what, in words, and its figures."""

    code: str = Field(examples=["teacher_underfit"])
    message: str
    figures: dict[str, Any] = Field(default_factory=dict)


class Verdict(AsWritten):
    """Did distillation help, by how much, how sure, and what to look at."""

    helped: bool | None = Field(None, description="true: helped, false: hurt, null: within noise or undetermined.")
    outcome: str | None = Field(None, description="helped, hurt, within_noise or undetermined.", examples=["helped"])
    summary: str | None = Field(None, description="The verdict in words.")
    kd_minus_scratch: PairedDifference | None = None
    student_test_accuracy: MeanStd | None = None
    baseline_test_accuracy: MeanStd | None = None
    teacher_test_accuracy: float | None = None
    gap_closed: float | None = Field(
        None, description="(student - baseline) / (teacher - baseline); null when the teacher is no better."
    )
    calibration: dict[str, Any] | None = Field(None, description="ECE and NLL, student vs baseline.")
    duplicates: dict[str, Any] | None = Field(None, description="Test rows that are also training rows.")
    significance: float | None = None
    warnings: list[Finding] = Field(default_factory=list)


class Reproducibility(AsWritten):
    """What it takes to run the job again and get the same figures."""

    job_id: str | None = None
    spec: dict[str, Any] | None = Field(None, description="The spec as it ran, defaults filled in.")
    seeds: list[int] | None = None
    device: str | None = None
    software: dict[str, str | None] | None = Field(None, description="Python, torch, numpy, onnxruntime... versions.")
    dataset: dict[str, Any] | None = Field(None, description="The dataset's sha256 and each split's rows and sha256.")


class Report(AsWritten):
    """A succeeded job's result: teacher vs KD student vs scratch baseline (mean and std over
    seeds), size and latency, the verdict, and what it takes to reproduce it."""

    name: str | None = None
    dataset: DatasetFacts | None = None
    method: dict[str, Any] | None = Field(None, description="The method and its parameters, as it ran.")
    seeds: list[int] | None = None
    device: str | None = Field(None, examples=["cpu"])
    soft_targets: str | None = Field(None, description="How the teacher's outputs were used: cached or recomputed.")
    teacher: TeacherScores | None = None
    student: SeedRuns | None = None
    baseline: SeedRuns | None = Field(None, description="The student trained from scratch; null when not asked.")
    generations: list[Generation] | None = Field(None, description="born_again: each generation.")
    assistants: list[Assistant] | None = Field(None, description="teacher_assistant: each assistant.")
    exported: Exported | None = None
    summary: Summary | None = None
    verdict: Verdict | None = None
    reproducibility: Reproducibility | None = None


# --------------------------------------------------------------------------- the catalog


class DatasetEntry(AsWritten):
    name: str
    description: str
    input_shape: list[int] = Field(examples=[[40]])
    num_classes: int
    train_size: int = Field(description="Before the validation split is carved out of it.")
    test_size: int
    source: str


class CatalogEntry(AsWritten):
    """An architecture or a method: its documentation and each parameter's JSON schema."""

    description: str | None = None
    parameters: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ArchitectureEntry(CatalogEntry):
    version: str | None = Field(None, description="timm and torchvision: the library's version.")
    models: list[str] | None = Field(None, description="timm and torchvision: the model names accepted.")


class UploadFormats(AsWritten):
    teacher: list[str] = Field(examples=[["onnx", "safetensors"]])
    dataset: list[str] = Field(examples=[["npz", "csv", "parquet", "zip"]])
    refused: str
    max_bytes: int


class Catalog(AsWritten):
    """What a job spec may name."""

    datasets: dict[str, DatasetEntry]
    architectures: dict[str, ArchitectureEntry]
    methods: dict[str, CatalogEntry]
    stages: dict[str, str] = Field(description="What the feature methods' stage names mean, per architecture.")
    uploads: UploadFormats
    phases: list[str] = Field(examples=[["teacher", "soft_targets", "student", "baseline", "evaluate", "export"]])
    example_spec: JobSpec
