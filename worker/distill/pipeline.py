"""One job: plan its runs, train each, evaluate, export.

The pipeline only orchestrates: plan.py says what runs, data.py loads, models.py builds,
trainer.py trains, signals.py says where a run's teacher outputs come from, evaluate.py
measures, export.py writes. It talks to the outside through the Reporter alone.
Cancelled (raised by the trainer, or here when a cancel is noticed between phases) goes
up untouched for the caller to handle.

Selection rule: the exported student is the seed with the best *validation* accuracy.
The test split is only ever measured, never chosen on.

Resume: every run checkpoints into reporter.checkpoint_dir (see trainer.py). Running the
same spec again with the same checkpoint_dir (a worker died, the job was handed to another)
restores finished runs without training them, continues the interrupted run from its last
epoch, recomputes the cached soft targets from the restored teacher, and ends with the
report of an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from app.contract.phases import (
    ASSISTANT,
    BASELINE,
    EVALUATE,
    EXPORT,
    GENERATION,
    SOFT_TARGETS,
    STUDENT,
    TEACHER,
)
from app.contract.spec import JobSpec
from worker.distill import checkpoint, events, metrics
from worker.distill.cache import TeacherOutputs
from worker.distill.eta import PlannedRun, planned_run
from worker.distill.evaluate import Evaluation, Trained, evaluate_job, job_report
from worker.distill.export import ExportError, OutputFile, export_model
from worker.distill.inference import resolve_device
from worker.distill.inputs import JobInputs
from worker.distill.jobdata import JobData
from worker.distill.models import build_model
from worker.distill.objectives import CE, Objective, build_objective
from worker.distill.plan import LearnsFrom, Run, plan, runs_of
from worker.distill.progress import Progress
from worker.distill.report import json_safe, write_json
from worker.distill.report_html import write_report_files
from worker.distill.reporting import Cancelled, Reporter
from worker.distill.signals import NoTeacher, TeacherSignal, choose
from worker.distill.step_probe import with_probes
from worker.distill.student_init import STARTS_FROM_INIT, StudentStart
from worker.distill.teachers import EnsembleTeacher, load_brought_teacher
from worker.distill.trainer import train
from worker.distill.verdict import assess

if TYPE_CHECKING:
    from worker.distill.models import Model

STUDENT_STEM = "student"
REPORT_NAME = "report.json"
FROZEN = (TEACHER, ASSISTANT, GENERATION)  # phases whose models teach another run


@dataclass(frozen=True)
class JobResult:
    report: dict[str, Any]  # JSON-serialisable; also written to out/report.json
    files: list[OutputFile]  # the student's files and the report's, report.json last
    kept: list[OutputFile] = field(default_factory=list)  # the trained teachers' and assistants' files


def run_job(
    spec: JobSpec, reporter: Reporter, workdir: Path, data_cache: Path, inputs: JobInputs | None = None
) -> JobResult:
    """Run one job. `inputs` carries the uploaded files the spec names (dataset.artifact, brought
    teachers), resolved by the caller; built-in datasets and trained teachers need none."""
    job = Job(spec, reporter, inputs or JobInputs(), Path(data_cache), Path(workdir))
    job.train(runs_of(job.runs, TEACHER))
    job.combine_teachers()
    job.prepare_student_data()
    job.train(runs_of(job.runs, ASSISTANT))
    job.soft_targets()
    job.train([r for r in job.runs if r.phase in (STUDENT, GENERATION)])
    job.train(runs_of(job.runs, BASELINE))
    job.enter(EVALUATE)
    job.progress.evaluating()
    evaluation = evaluate_job(spec, job.data, job.trained, job.teacher, job.soft_mode, job.device)
    job.progress.tail(0.5)
    job.enter(EXPORT)
    return job.export(evaluation)


def kept_stem(run: Run) -> str:
    """teacher, teacher-member1, assistant-link1: the kept model's file names."""
    return run.phase if run.name == TEACHER else f"{run.phase}-{run.name.replace('=', '')}"


def member_index(run: Run) -> int:
    """The teacher run's index in spec.teacher.members."""
    return int(run.name.split("=")[1]) - 1 if "=" in run.name else 0


class Job:
    """One job's state as it runs: its plan, data, device, progress and the trained models."""

    def __init__(self, spec: JobSpec, reporter: Reporter, inputs: JobInputs, data_cache: Path, workdir: Path) -> None:
        self.spec, self.reporter, self.inputs = spec, reporter, inputs
        # The student's files and the report go to out/ only at export (a cancelled job leaves
        # none); trained teachers are kept as they finish, in kept/.
        self.out_dir, self.kept_dir = workdir / "out", workdir / "kept"
        self.device = resolve_device(spec.training.device)
        self.data = JobData.load(spec, inputs, data_cache)
        self.runs = plan(spec, inputs.reused)
        self.start = StudentStart.of(spec, self.inputs)  # student.init: where student runs start
        self.kept: list[OutputFile] = []  # the trained teachers' and assistants' files
        self.trained: dict[tuple[str, str], Trained] = {}
        self._teacher: nn.Module | None = None  # combine_teachers sets it
        self.soft_mode: str | None = None
        self._phase: str | None = None
        self._cached: TeacherOutputs | None = None
        splits = self.data.splits
        reporter.event(
            events.dataset(spec.dataset.label, len(splits.train), len(splits.val), len(splits.test), self.device.type)
        )
        if self.start is not None:
            reporter.event(events.student_init(self.start.artifact, spec.baseline))
        if reporter.checkpoint_dir is not None:
            Path(reporter.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        self.progress = Progress(reporter, sum(r.epochs for r in self.runs), runs=self._planned_runs())
        self.progress.start(
            sum(checkpoint.epochs_done(reporter.checkpoint_dir, r.phase, r.name, r.epochs) for r in self.runs)
        )

    def _planned_runs(self) -> list[PlannedRun]:
        """The trained runs as the ETA prices them (brought teachers are loaded: no epochs); the
        students' rows are the teacher's share of train_fraction until their data is made
        (prepare_student_data: a transfer set adds rows)."""
        splits = self.data.splits
        teacher_rows = len(splits.train)
        student_rows = max(1, round(teacher_rows * self.spec.dataset.train_fraction))
        planned = [
            planned_run(r, splits.input_shape, splits.num_classes, teacher_rows if r.phase == TEACHER else student_rows)
            for r in self.runs
            if r.trained
        ]
        trained = [r for r in self.runs if r.trained]
        return with_probes(planned, trained, splits.input_shape, splits.num_classes, len(splits.val), self.device)

    def enter(self, phase: str) -> None:
        # Phases without batches (soft targets, evaluate, export) honour a cancel here.
        if self.reporter.should_stop():
            raise Cancelled(f"cancellation requested before phase {phase}")
        self.reporter.phase(phase)
        self._phase = phase

    def train(self, runs: list[Run]) -> None:
        for run in runs:
            if run.phase != self._phase:
                self.enter(run.phase)
            if run.trained:
                self._train(run)
            else:
                self._load(run)

    @property
    def teacher(self) -> nn.Module:
        """The students' teacher: the one trained or brought, or the ensemble of them."""
        if self._teacher is None:
            raise RuntimeError("no teacher yet: combine_teachers comes after the teacher runs")
        return self._teacher

    @teacher.setter
    def teacher(self, teacher: nn.Module) -> None:
        self._teacher = teacher

    def _train(self, run: Run) -> None:
        splits = self.data.for_phase(run.phase)
        assert run.arch is not None  # a run trained here is one of ours
        model = build_model(run.arch, splits.input_shape, splits.num_classes, *self.data.stats, seed=run.seed)
        if self.start is not None and run.phase in STARTS_FROM_INIT:
            self.start.load_into(model)
        objective = self.objective(run)
        result = train(
            model,
            objective,
            splits.train,
            splits.val,
            run.optim,
            seed=run.seed,
            device=self.device,
            reporter=self.reporter,
            phase=run.phase,
            run=run.name,
            on_epoch=self.progress.run(run.epochs, (run.phase, run.name), len(splits.train)),
            augment=None if run.phase == TEACHER else self.spec.training.augment,
            signal=self.signal(run, objective),
            compile=self.spec.training.compile and run.phase != TEACHER,  # runs on spec.training
        )
        self.progress.run_done(run.epochs, result.epochs_run)
        if run.phase in FROZEN:
            model.requires_grad_(False)
        if result.resumed_epochs != result.epochs_run:  # else an earlier attempt said so already
            self.reporter.event(events.run_trained(run, model, result))
        self.trained[(run.phase, run.name)] = Trained(run, model, result)
        if run.phase in (TEACHER, ASSISTANT):
            self.keep(run, model, splits)

    def keep(self, run: Run, model: Model, splits) -> None:
        """A trained teacher or assistant is a job artifact (safetensors + ONNX + its facts);
        a teacher the tenant may reuse is published as soon as it is trained."""
        try:
            files = export_model(
                model,
                ["safetensors", "onnx"],
                self.kept_dir,
                stem=kept_stem(run),
                onnx_opset=self.spec.export.onnx_opset,
                check_x=splits.test.x,
            )
        except ExportError as exc:  # the job goes on: only the teacher's files are missing
            self.reporter.event(f"{run.phase} {run.name} not kept as an artifact: {exc}", "warning")
            return
        assert run.arch is not None  # a kept run was trained here
        facts: dict[str, Any] = {"phase": run.phase, "run": run.name, "arch": run.arch.model_dump(mode="json")}
        evaluated = metrics.evaluate(model, self.data.splits)
        facts |= {"data": self.spec.dataset.label, **evaluated}
        trained = self.trained[(run.phase, run.name)]
        self.trained[(run.phase, run.name)] = replace(trained, evaluated=evaluated)  # the report's too
        self.kept += files
        publish = getattr(self.reporter, "keep_teacher", None)
        if publish is not None:
            key = self.inputs.teacher_keys.get(member_index(run)) if run.phase == TEACHER else None
            publish(files, json_safe(facts), key)

    def _load(self, run: Run) -> None:
        assert run.brought is not None  # a teacher run that is not trained is brought
        brought = self.inputs.teachers.get(run.brought.id)
        if brought is None:
            raise ValueError(f"teacher artifact {run.brought.id!r}: the job was given no file for it")
        splits = self.data.splits
        loaded = load_brought_teacher(run.brought, brought, splits.input_shape, splits.num_classes)
        facts = loaded.facts
        if run.reused:
            facts = {**facts, "source": "reused", "reused_from": dict(brought.inspection.get("trained_by") or {})}
            self.reporter.event(events.teacher_reused(run, brought.inspection.get("trained_by") or {}))
        else:
            self.reporter.event(events.teacher_loaded(run, loaded.description))
        self.trained[(run.phase, run.name)] = Trained(run, loaded.model.to(self.device), None, facts)

    def combine_teachers(self) -> None:
        members = [t.model for t in self.trained.values() if t.run.phase == TEACHER]
        if len(members) == 1:
            self.teacher = members[0]
            return
        self.teacher = EnsembleTeacher(members).eval()
        self.reporter.event(events.ensemble(len(members)))

    def prepare_student_data(self) -> None:
        """The students' training set (a share of the teacher's, a transfer set), said in events."""
        for message in self.data.prepare_students(self.spec, self.inputs):
            self.reporter.event(message)
        for phase in (ASSISTANT, STUDENT, GENERATION, BASELINE):
            self.progress.estimator.rows_of(phase, len(self.data.for_phase(phase).train))
        self._cached = TeacherOutputs(self.data.students.train.x, self.inputs.outputs, self.reporter)

    def objective(self, run: Run) -> Objective:
        """A fresh objective per run: labels alone for teachers and baselines."""
        if run.phase in (TEACHER, BASELINE):
            return CE()
        splits = self.data.students
        return build_objective(
            self.spec.method,
            seed=run.seed,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            teacher_arch=self.spec.teacher.members[0].arch,
            student_arch=self.spec.student.arch,
        )

    def signal(self, run: Run, objective: Objective) -> TeacherSignal:
        if run.learns_from == LearnsFrom.NONE:
            return NoTeacher()
        source = self.teacher if run.source is None else self.trained[run.source].model
        return choose(objective, source, self.spec.training, self._cached)

    def soft_targets(self) -> None:
        """The phase where the students' teacher outputs are computed, once, when they can be cached."""
        self.enter(SOFT_TARGETS)
        first = next(r for r in self.runs if r.phase in (STUDENT, GENERATION))
        objective = self.objective(first)
        self.soft_mode = self.signal(first, objective).mode
        augment = self.spec.training.augment
        augmented = augment is not None and augment.active()
        if augmented and self.soft_mode == "recomputed" and self._cached is not None:
            self._cached.bypass("augmentation changes the inputs, so the teacher must see each augmented batch")
        self.reporter.event(
            events.soft_targets(
                self.soft_mode,
                first,
                len(self.data.students.train),
                objective.needs_features,
                augment is not None and augment.active(),
                first.phase == GENERATION,
                self.spec.method.name,
            )
        )

    def histories(self) -> dict[tuple[str, str], list[dict[str, float]]]:
        return {key: t.result.history for key, t in self.trained.items() if t.result is not None}

    def export(self, evaluation: Evaluation) -> JobResult:
        out_dir = self.out_dir
        files = export_model(
            cast("Model", evaluation.best.model),  # a student: one of ours
            list(self.spec.export.formats),
            out_dir,
            stem=STUDENT_STEM,
            onnx_opset=self.spec.export.onnx_opset,
            check_x=self.data.splits.test.x,
        )
        chosen = evaluation.chosen
        self.reporter.event(events.exported(chosen["seed"], chosen["val_accuracy"], [f.name for f in files]))
        report = job_report(self.spec, evaluation, files)
        reused = [t.run.name for t in self.trained.values() if t.run.reused]
        if reused:
            report["teacher_reused"] = reused
        report |= assess(report, self.spec, self.data.splits, reporter=self.reporter, job_id=self.reporter.job_id)
        files += write_report_files(report, self.histories(), out_dir)
        path = write_json(report, out_dir / REPORT_NAME)
        files.append(OutputFile(REPORT_NAME, path, "application/json", "report"))
        self.progress.tail(1.0)
        return JobResult(report=report, files=files, kept=self.kept)
