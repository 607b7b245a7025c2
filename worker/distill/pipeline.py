"""One job, phase by phase: teacher -> soft_targets -> student -> baseline -> evaluate -> export.

The pipeline only orchestrates: data.py loads, models.py builds, trainer.py
trains, metrics.py measures, export.py writes, report.py assembles.  It talks
to the outside through the Reporter alone.  Cancelled (raised by the trainer,
or here when a cancel is noticed between phases) goes up untouched for the
caller to handle.

Selection rule: the exported student is the seed with the best *validation*
accuracy.  The test split is only ever measured, never chosen on.

Resume: every run checkpoints into reporter.checkpoint_dir (see trainer.py).
Running the same spec again with the same checkpoint_dir (a worker died, the job
was handed to another) restores finished runs without training them, continues
the interrupted run from its last epoch, recomputes the cached soft targets from
the restored teacher, and ends with the report of an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.contract.spec import JobSpec, TeacherArtifact, TeacherTrain
from worker.distill import checkpoint, metrics
from worker.distill.data import (
    Splits,
    input_stats,
    load_dataset,
    load_unlabeled,
    load_uploaded,
    mnist1d_transfer,
    student_train,
    with_transfer,
)
from worker.distill.export import OutputFile, export_model
from worker.distill.inference import predict_logits, resolve_device
from worker.distill.inputs import JobInputs
from worker.distill.models import Classifier, build_model, count_parameters
from worker.distill.objectives import CE, build_objective
from worker.distill.progress import Progress
from worker.distill.report import aggregate, json_safe, summary, write_json
from worker.distill.reporting import Cancelled, Reporter
from worker.distill.teachers import EnsembleTeacher, load_brought_teacher
from worker.distill.trainer import TrainResult, train

STUDENT_STEM = "student"
REPORT_NAME = "report.json"


@dataclass(frozen=True)
class JobResult:
    report: dict[str, Any]  # JSON-serialisable; also written to out/report.json
    files: list[OutputFile]  # everything under workdir/"out", report.json last


@dataclass
class _Run:
    seed: int
    model: Classifier
    result: TrainResult


def _phase(reporter: Reporter, name: str) -> None:
    # Phases without batches (soft targets, evaluate, export) honour a cancel here.
    if reporter.should_stop():
        raise Cancelled(f"cancellation requested before phase {name}")
    reporter.phase(name)


def _run_fields(r: TrainResult) -> dict[str, Any]:
    return {"epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "stopped_early": r.stopped_early}


def _restored_finished(r: TrainResult) -> bool:
    """The run had finished in an earlier attempt: restored from its checkpoint, not trained."""
    return r.resumed_epochs == r.epochs_run


def _train_runs(
    spec: JobSpec, splits: Splits, stats: tuple[float, float], *, phase: str, objective_for,
    reporter: Reporter, device: torch.device, progress: Progress, teacher_kwargs,
    run_name=lambda seed: f"seed={seed}",
) -> list[_Run]:
    """One run per seed.  `teacher_kwargs` is a dict, or a function seed -> dict (born-again:
    each seed's generation learns from that seed's previous generation)."""
    runs = []
    for seed in spec.seeds:
        run = run_name(seed)
        # The student and the baseline of one seed start from identical weights and
        # see batches in the same order: the comparison is paired.
        model = build_model(spec.student.arch, splits.input_shape, splits.num_classes, *stats, seed=seed)
        kwargs = teacher_kwargs(seed) if callable(teacher_kwargs) else teacher_kwargs
        result = train(
            model, objective_for(seed), splits.train, splits.val, spec.training,
            seed=seed, device=device, reporter=reporter, phase=phase, run=run,
            on_epoch=progress.run(spec.training.epochs), augment=spec.training.augment, **kwargs,
        )
        progress.run_done(spec.training.epochs)
        if not _restored_finished(result):  # else an earlier attempt said so already
            reporter.event(
                f"{phase} {run}: best validation accuracy {result.best_val_accuracy:.4f} "
                f"at epoch {result.best_epoch} of {result.epochs_run}"
            )
        runs.append(_Run(seed, model, result))
    return runs


def _uploaded_npz(spec: JobSpec, inputs: JobInputs) -> Path:
    if inputs.dataset_npz is None:
        raise ValueError(f"dataset artifact {spec.dataset.artifact!r}: the job was given no file for it")
    return Path(inputs.dataset_npz)


def run_job(
    spec: JobSpec, reporter: Reporter, workdir: Path, data_cache: Path, inputs: JobInputs | None = None
) -> JobResult:
    """Run one job. `inputs` carries the uploaded files the spec names (dataset.artifact, brought
    teachers), resolved by the caller; built-in datasets and trained teachers need none."""
    inputs = inputs or JobInputs()
    out_dir = Path(workdir) / "out"
    device = resolve_device(spec.training.device)
    if spec.dataset.artifact is not None:
        splits = load_uploaded(_uploaded_npz(spec, inputs), spec.dataset)
    else:
        splits = load_dataset(spec.dataset, Path(data_cache))
    stats = input_stats(splits.train.x)
    method = spec.method
    reporter.event(
        f"dataset {spec.dataset.label}: {len(splits.train)} train / {len(splits.val)} validation / "
        f"{len(splits.test)} test examples; device {device.type}"
    )
    assistants = list(method.assistants) if method.name == "teacher_assistant" else []
    generations = method.generations if method.name == "born_again" else 0
    student_runs = (
        [("generation", f"gen={g} seed={seed}") for g in range(1, generations + 1) for seed in spec.seeds]
        if generations else [("student", f"seed={seed}") for seed in spec.seeds]
    )
    # Every training run of the job: (phase, run, planned epochs).
    members = spec.teacher.members

    def member_name(i: int) -> str:
        return "teacher" if len(members) == 1 else f"member={i}"

    plan = (
        # Brought teachers are not trained: they have no run.
        [("teacher", member_name(i), m.epochs) for i, m in enumerate(members, 1) if isinstance(m, TeacherTrain)]
        + [("assistant", f"link={i}", spec.training.epochs) for i in range(1, len(assistants) + 1)]
        + [(p, r, spec.training.epochs) for p, r in student_runs]
        + ([("baseline", f"seed={seed}", spec.training.epochs) for seed in spec.seeds] if spec.baseline else [])
    )
    if reporter.checkpoint_dir is not None:
        Path(reporter.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    progress = Progress(reporter, sum(budget for *_, budget in plan))
    progress.start(sum(checkpoint.epochs_done(reporter.checkpoint_dir, *p) for p in plan))

    # --- teacher(s) (on the same device as the students: training.device) ----------
    _phase(reporter, "teacher")
    # What the pipeline takes from "the" teacher: the first member's seed and arch (a brought
    # teacher has no seed: the first student seed; an ONNX one has no arch).
    first = members[0]
    t_seed = first.seed if isinstance(first, TeacherTrain) else spec.seeds[0]
    t_arch = first.arch
    member_runs: list[tuple[Any, Any, TrainResult | None]] = []
    brought_facts: dict[int, dict[str, Any]] = {}  # member index -> report facts
    for i, m_spec in enumerate(members, 1):
        name = member_name(i)
        if isinstance(m_spec, TeacherArtifact):
            brought = inputs.teachers.get(m_spec.id)
            if brought is None:
                raise ValueError(f"teacher artifact {m_spec.id!r}: the job was given no file for it")
            loaded = load_brought_teacher(m_spec, brought, splits.input_shape, splits.num_classes)
            reporter.event(("teacher: " if name == "teacher" else f"teacher {name}: ") + loaded.description)
            brought_facts[i] = loaded.facts
            member_runs.append((m_spec, loaded.model.to(device), None))
            continue
        model = build_model(m_spec.arch, splits.input_shape, splits.num_classes, *stats, seed=m_spec.seed)
        result = train(
            model, CE(), splits.train, splits.val, m_spec,
            seed=m_spec.seed, device=device, reporter=reporter, phase="teacher", run=name,
            on_epoch=progress.run(m_spec.epochs),
        )
        progress.run_done(m_spec.epochs)
        model.requires_grad_(False)
        if not _restored_finished(result):
            reporter.event(
                f"{'teacher' if name == 'teacher' else f'teacher {name}'}: best validation accuracy "
                f"{result.best_val_accuracy:.4f} at epoch {result.best_epoch} of {result.epochs_run}"
                + (" (stopped early)" if result.stopped_early else "")
            )
        member_runs.append((m_spec, model, result))
    if len(members) == 1:
        teacher = member_runs[0][1]
    else:
        teacher = EnsembleTeacher([m for _, m, _ in member_runs]).eval()
        reporter.event(f"teacher: an ensemble of {len(members)}; its output is the log of the members' "
                       "mean probabilities, and the temperature applies to that")

    def objective_for(seed: int = 0, teacher_arch=t_arch):  # a fresh one per run
        return build_objective(
            method, seed=seed, input_shape=splits.input_shape, num_classes=splits.num_classes,
            teacher_arch=teacher_arch, student_arch=spec.student.arch,
        )

    augmented = spec.training.augment is not None and spec.training.augment.active()

    def soft_kwargs(source: Classifier, objective) -> tuple[dict, str | None]:
        """How a run gets its teacher's outputs: cached logits, or the teacher itself."""
        if objective.needs_features:
            return {"teacher": source}, "recomputed"
        if not objective.needs_teacher:
            return {}, None
        if spec.training.soft_targets == "recomputed" or augmented:
            return {"teacher": source}, "recomputed"
        return {"teacher_logits": predict_logits(source, splits.train.x)}, "cached"

    # The students (assistants, generations, baseline) learn from a share of the teacher's
    # training set when dataset.train_fraction < 1.
    teacher_splits = splits
    if spec.dataset.train_fraction < 1.0:
        splits = dataclasses.replace(splits, train=student_train(splits, spec.dataset))
        reporter.event(
            f"students learn from {len(splits.train)} training examples "
            f"({spec.dataset.train_fraction:g} of the teacher's, stratified)"
        )

    labeled_splits = splits  # the baseline's: labels only
    transfer_size = 0
    if spec.dataset.transfer is not None:
        if spec.dataset.transfer.unlabeled:
            extra = load_unlabeled(_uploaded_npz(spec, inputs))
            what = "unlabeled rows of the uploaded dataset"
        else:
            extra = mnist1d_transfer(spec.dataset.transfer.extra_generated, Path(data_cache))
            what = "extra generated mnist1d inputs (labels discarded)"
        transfer_size = len(extra)
        splits = dataclasses.replace(splits, train=with_transfer(splits.train, extra))
        reporter.event(
            f"transfer set: {transfer_size} {what}; the "
            "student learns there from the teacher alone, the baseline never sees them"
        )

    # --- teacher assistants: teacher -> assistant 1 -> ... -> student ------------
    source = teacher
    assistant_runs: list[tuple[Any, Classifier, TrainResult]] = []
    if assistants:
        _phase(reporter, "assistant")
        for i, arch in enumerate(assistants, 1):
            model = build_model(arch, splits.input_shape, splits.num_classes, *stats, seed=t_seed)
            objective = objective_for(t_seed)
            kwargs, _ = soft_kwargs(source, objective)
            result = train(
                model, objective, splits.train, splits.val, spec.training,
                seed=t_seed, device=device, reporter=reporter, phase="assistant", run=f"link={i}",
                on_epoch=progress.run(spec.training.epochs), augment=spec.training.augment, **kwargs,
            )
            progress.run_done(spec.training.epochs)
            model.requires_grad_(False)
            if not _restored_finished(result):
                reporter.event(
                    f"assistant link={i} ({arch.name}, {count_parameters(model)} parameters) learned "
                    f"from the {'teacher' if i == 1 else f'assistant link={i - 1}'}: best validation "
                    f"accuracy {result.best_val_accuracy:.4f} at epoch {result.best_epoch}"
                )
            assistant_runs.append((arch, model, result))
            source = model

    # --- soft targets -------------------------------------------------------
    _phase(reporter, "soft_targets")
    teacher_kwargs, soft_mode = soft_kwargs(source, objective_for())
    if soft_mode == "cached":
        reporter.event(
            f"soft targets: cached ({'teacher' if source is teacher else 'last assistant'} logits on "
            f"{len(splits.train)} training examples computed once, reused every epoch)"
            + (" for generation 1; each later generation's are computed from the one before"
               if generations else "")
        )
    elif soft_mode == "recomputed":
        reporter.event(
            "soft targets: recomputed (the frozen teacher runs on every batch"
            + (" because augmentation changes the inputs: it sees the augmented batch the student sees"
               if augmented else "")
            + (", in eval mode, giving the stage features the method needs)" if objective_for().needs_features
               else ")")
        )
    else:
        reporter.event(f"method {method.name}: the student does not use the teacher")

    # --- student (or born-again generations) and baseline ------------------------
    common = dict(reporter=reporter, device=device, progress=progress)
    generation_runs: list[list[_Run]] = []
    if generations:
        _phase(reporter, "generation")
        previous = {seed: teacher for seed in spec.seeds}  # generation 0 is the teacher
        for g in range(1, generations + 1):
            def kwargs_for(seed, prev=dict(previous)):
                return soft_kwargs(prev[seed], objective_for(seed))[0]

            runs = _train_runs(
                spec, splits, stats, phase="generation", objective_for=objective_for,
                teacher_kwargs=kwargs_for, run_name=lambda seed, g=g: f"gen={g} seed={seed}", **common,
            )
            for r in runs:
                r.model.requires_grad_(False)
                previous[r.seed] = r.model
            generation_runs.append(runs)
        students = generation_runs[-1]
    else:
        _phase(reporter, "student")
        students = _train_runs(
            spec, splits, stats, phase="student", objective_for=objective_for,
            teacher_kwargs=teacher_kwargs, **common,
        )
    baselines = None
    if spec.baseline:
        _phase(reporter, "baseline")
        baselines = _train_runs(
            spec, labeled_splits, stats, phase="baseline", objective_for=lambda seed: CE(), teacher_kwargs={}, **common,
        )

    # --- evaluate -------------------------------------------------------------
    _phase(reporter, "evaluate")
    teacher_test_logits = predict_logits(_cpu(teacher), splits.test.x)
    teacher_report = {**metrics.evaluate(teacher, teacher_splits)}

    def member_facts(i: int, m_spec, result: TrainResult | None) -> dict[str, Any]:
        if result is None:
            return dict(brought_facts[i])
        return {"source": "trained", "arch": m_spec.arch.model_dump(), **_run_fields(result)}

    if len(members) == 1:
        m_spec, _, result = member_runs[0]
        teacher_report.update(member_facts(1, m_spec, result))
    else:
        teacher_report["members"] = [
            {"member": i, **metrics.evaluate(model, teacher_splits), **member_facts(i, m_spec, result)}
            for i, (m_spec, model, result) in enumerate(member_runs, 1)
        ]

    def runs_report(runs: list[_Run]) -> dict:
        rows = [
            {"seed": r.seed, **metrics.evaluate(r.model, labeled_splits, teacher_test_logits), **_run_fields(r.result)}
            for r in runs
        ]
        return {"arch": spec.student.arch.model_dump(), **aggregate(rows)}

    extra_reports: dict[str, Any] = {}
    if generation_runs:  # the last generation is the student: measured once
        extra_reports["generations"] = [
            {"generation": g, **runs_report(runs)} for g, runs in enumerate(generation_runs, 1)
        ]
        student_report = {k: v for k, v in extra_reports["generations"][-1].items() if k != "generation"}
    else:
        student_report = runs_report(students)
    if assistant_runs:
        extra_reports["assistants"] = [
            {"link": i, "arch": arch.model_dump(),
             **metrics.evaluate(model, labeled_splits, teacher_test_logits), **_run_fields(result)}
            for i, (arch, model, result) in enumerate(assistant_runs, 1)
        ]
    baseline_report = runs_report(baselines) if baselines is not None else None
    progress.tail(0.5)

    # --- export ---------------------------------------------------------------
    _phase(reporter, "export")
    # max() keeps the first of equals, i.e. the earliest seed in spec order.
    best = max(range(len(students)), key=lambda i: student_report["runs"][i]["val_accuracy"])
    chosen = student_report["runs"][best]
    files = export_model(
        students[best].model, list(spec.export.formats), out_dir,
        stem=STUDENT_STEM, onnx_opset=spec.export.onnx_opset, check_x=splits.test.x,
    )
    reporter.event(
        f"exported the seed={chosen['seed']} student (best validation accuracy "
        f"{chosen['val_accuracy']:.4f}): {', '.join(f.name for f in files)}"
    )
    report = json_safe({
        "name": spec.name,
        "dataset": {
            "name": spec.dataset.label,
            **({"artifact": spec.dataset.artifact} if spec.dataset.artifact is not None else {}),
            "input_shape": list(splits.input_shape),
            "num_classes": splits.num_classes,
            "train_size": len(labeled_splits.train),  # the students' labeled examples
            "teacher_train_size": len(teacher_splits.train),
            "transfer_size": transfer_size,
            "val_size": len(splits.val),
            "test_size": len(splits.test),
        },
        "method": spec.method.model_dump(),
        "seeds": list(spec.seeds),
        "device": device.type,
        "soft_targets": soft_mode,
        "teacher": teacher_report,
        "student": student_report,
        "baseline": baseline_report,
        **extra_reports,
        "exported": {
            "seed": chosen["seed"],
            "selected_by": "validation accuracy",
            "val_accuracy": chosen["val_accuracy"],
            "test_accuracy": chosen["test_accuracy"],
            "files": {f.kind: f.name for f in files},
            "onnx_opset": spec.export.onnx_opset if "onnx" in spec.export.formats else None,
            **{"onnx_check": f.check for f in files if f.check is not None},  # with an ONNX export
        },
        "summary": summary(teacher_report, student_report, baseline_report),
    })
    report_path = write_json(report, out_dir / REPORT_NAME)
    files.append(OutputFile(REPORT_NAME, report_path, "application/json", "report"))
    progress.tail(1.0)
    return JobResult(report=report, files=files)


def _cpu(model: Classifier) -> Classifier:
    return copy.deepcopy(model).to("cpu").float().eval()
