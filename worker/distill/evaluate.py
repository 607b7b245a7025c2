"""Evaluate a finished job's models and assemble its report (report.py: aggregation, JSON)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from app.contract.methods import BornAgainMethod
from app.contract.phases import ASSISTANT, BASELINE, GENERATION, STUDENT, TEACHER
from app.contract.spec import JobSpec
from worker.distill import metrics
from worker.distill.export import OutputFile
from worker.distill.inference import predict_logits
from worker.distill.jobdata import JobData
from worker.distill.plan import Run
from worker.distill.report import aggregate, json_safe, summary
from worker.distill.trainer import TrainResult


@dataclass(frozen=True)
class Trained:
    run: Run
    model: nn.Module
    result: TrainResult | None  # None: a brought teacher
    facts: dict[str, Any] | None = None  # a brought teacher's, for the report
    # Its metrics on the teacher's splits, taken when it was kept (pipeline.Job.keep): the report's
    # teacher figures, not computed twice (a CPU CNN teacher's pass over Fashion-MNIST: ~8 s).
    evaluated: dict[str, Any] | None = None


def _evaluated(t: Trained, data: JobData) -> dict[str, Any]:
    return dict(t.evaluated) if t.evaluated is not None else metrics.evaluate(t.model, data.splits)


@dataclass(frozen=True)
class Evaluation:
    sections: dict[str, Any]  # the report up to "exported"
    best: Trained  # the student to export: the best validation accuracy, earliest seed of equals
    chosen: dict[str, Any]  # its row of the report


def _run_fields(r: TrainResult | None) -> dict[str, Any]:
    assert r is not None  # a run trained in the job
    return {"epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "stopped_early": r.stopped_early}


def _member_facts(t: Trained) -> dict[str, Any]:
    if t.result is None:
        return dict(t.facts or {})
    assert t.run.arch is not None  # trained in the job: one of ours
    return {"source": "trained", "arch": t.run.arch.model_dump(), **_run_fields(t.result)}


def _teacher_report(teacher: nn.Module, members: list[Trained], data: JobData) -> dict[str, Any]:
    if len(members) == 1:
        return {**_evaluated(members[0], data), **_member_facts(members[0])}  # the teacher itself
    return {
        **metrics.evaluate(teacher, data.splits),
        "members": [{"member": i, **_evaluated(t, data), **_member_facts(t)} for i, t in enumerate(members, 1)],
    }


def _seeds_report(spec: JobSpec, runs: list[Trained], data: JobData, teacher_logits: torch.Tensor) -> dict:
    rows = [
        {"seed": t.run.seed, **metrics.evaluate(t.model, data.labeled, teacher_logits), **_run_fields(t.result)}
        for t in runs
    ]
    init = {"init": {"artifact": spec.student.init.artifact, "format": "safetensors"}} if spec.student.init else {}
    return {"arch": spec.student.arch.model_dump(), **init, **aggregate(rows)}


def _of(trained: dict[tuple[str, str], Trained], phase: str) -> list[Trained]:
    return [t for t in trained.values() if t.run.phase == phase]


def _student_reports(spec, trained, data, teacher_logits) -> tuple[list[Trained], dict, dict]:
    """(the student runs, the student's report, the extra sections: generations, assistants)."""
    extra: dict[str, Any] = {}
    generations = _of(trained, GENERATION)
    if generations:  # the last generation is the student: measured once
        assert isinstance(spec.method, BornAgainMethod)  # the method that trains generations
        n = spec.method.generations
        per_gen = [generations[g * len(spec.seeds) : (g + 1) * len(spec.seeds)] for g in range(n)]
        extra["generations"] = [
            {"generation": g, **_seeds_report(spec, runs, data, teacher_logits)} for g, runs in enumerate(per_gen, 1)
        ]
        students = per_gen[-1]
        student = {k: v for k, v in extra["generations"][-1].items() if k != "generation"}
    else:
        students = _of(trained, STUDENT)
        student = _seeds_report(spec, students, data, teacher_logits)
    if assistants := _of(trained, ASSISTANT):
        extra["assistants"] = [
            {
                "link": i,
                "arch": t.run.arch.model_dump() if t.run.arch is not None else None,
                **metrics.evaluate(t.model, data.labeled, teacher_logits),
                **_run_fields(t.result),
            }
            for i, t in enumerate(assistants, 1)
        ]
    return students, student, extra


def _dataset(spec: JobSpec, data: JobData) -> dict[str, Any]:
    splits = data.students
    return {
        "name": spec.dataset.label,
        **({"artifact": spec.dataset.artifact} if spec.dataset.artifact is not None else {}),
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        "train_size": len(data.labeled.train),  # the students' labeled examples
        "teacher_train_size": len(data.splits.train),
        "transfer_size": data.transfer_size,
        "val_size": len(splits.val),
        "test_size": len(splits.test),
    }


def evaluate_job(
    spec: JobSpec,
    data: JobData,
    trained: dict[tuple[str, str], Trained],
    teacher: nn.Module,
    soft_mode: str | None,
    device: torch.device,
) -> Evaluation:
    teacher_logits = predict_logits(copy.deepcopy(teacher).to("cpu").float().eval(), data.students.test.x)
    teacher_report = _teacher_report(teacher, _of(trained, TEACHER), data)
    students, student, extra = _student_reports(spec, trained, data, teacher_logits)
    baselines = _of(trained, BASELINE)
    baseline = _seeds_report(spec, baselines, data, teacher_logits) if baselines else None
    # max() keeps the first of equals, i.e. the earliest seed in spec order.
    best = max(range(len(students)), key=lambda i: student["runs"][i]["val_accuracy"])
    sections = {
        "name": spec.name,
        "dataset": _dataset(spec, data),
        "method": spec.method.model_dump(),
        "seeds": list(spec.seeds),
        "device": device.type,
        "soft_targets": soft_mode,
        "teacher": teacher_report,
        "student": student,
        "baseline": baseline,
        **extra,
    }
    return Evaluation(sections, students[best], student["runs"][best])


def job_report(spec: JobSpec, evaluation: Evaluation, files: list[OutputFile]) -> dict[str, Any]:
    """The report as report.json and the API give it: plain JSON."""
    chosen, sections = evaluation.chosen, evaluation.sections
    checks = [f.check for f in files if f.check is not None]  # with an ONNX export; the last one counts
    return json_safe(
        {
            **sections,
            "exported": {
                "seed": chosen["seed"],
                "selected_by": "validation accuracy",
                "val_accuracy": chosen["val_accuracy"],
                "test_accuracy": chosen["test_accuracy"],
                "files": {f.kind: f.name for f in files},
                "onnx_opset": spec.export.onnx_opset if "onnx" in spec.export.formats else None,
                **({"onnx_check": checks[-1]} if checks else {}),
            },
            "summary": summary(sections["teacher"], sections["student"], sections["baseline"]),
        }
    )
