"""A job as a plan of training runs, made once from the spec before anything trains.

The plan is the one list of what the job trains: progress (planned epochs), resume
(each run's checkpoint), events, the metric series and the report all take run names
from it. Recipes (worker/distill/recipes.py) plan the method's runs; the teachers come
first and the baselines last, whatever the method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from app.contract.architectures import Arch
from app.contract.phases import BASELINE, TEACHER, member_run, seed_run
from app.contract.spec import JobSpec, OptimSpec, TeacherArtifact, TeacherTrain


class LearnsFrom(str, Enum):  # noqa: UP042 - StrEnum would change str() and format() of members
    """Where a run's teacher signal comes from."""

    NONE = "none"  # labels only: a teacher, a baseline, or method ce
    TEACHER = "teacher"  # the job's teacher, trained in the job
    BROUGHT = "brought teacher"  # the job's teacher, uploaded
    ENSEMBLE = "ensemble"  # the job's teachers, their probabilities averaged
    ASSISTANT = "assistant"  # a teacher assistant run of this plan
    GENERATION = "previous generation"  # born-again: the generation before, same seed


@dataclass(frozen=True)
class Run:
    phase: str
    name: str
    seed: int
    epochs: int  # the epoch budget; 0 for a brought teacher, which is loaded, not trained
    arch: Arch | None  # None: a brought ONNX teacher
    optim: OptimSpec  # how it is trained (a teacher's own spec, else spec.training)
    learns_from: LearnsFrom = LearnsFrom.NONE
    source: tuple[str, str] | None = None  # (phase, name) of the run whose model teaches it; None: the job's teacher
    brought: TeacherArtifact | None = None  # a teacher the job was given
    reused: bool = False  # brought because this tenant trained the same teacher before

    @property
    def trained(self) -> bool:
        return self.brought is None


def job_teacher(spec: JobSpec) -> LearnsFrom:
    """What "the teacher" of the job is."""
    members = spec.teacher.members
    if len(members) > 1:
        return LearnsFrom.ENSEMBLE
    return LearnsFrom.BROUGHT if isinstance(members[0], TeacherArtifact) else LearnsFrom.TEACHER


def teacher_seed(spec: JobSpec) -> int:
    """The seed of runs that belong to the job rather than to a student seed (the assistants):
    the first teacher's, or the first student seed when that teacher was brought."""
    first = spec.teacher.members[0]
    return first.seed if isinstance(first, TeacherTrain) else spec.seeds[0]


def teacher_runs(spec: JobSpec, reused: Mapping[int, str] | None = None) -> list[Run]:
    """One run per teacher; a trained member whose weights this tenant already has (`reused`:
    member index -> artifact id, worker/teacher_builds.py) is brought, not trained."""
    members, reused = spec.teacher.members, reused or {}
    runs = []
    for i, member in enumerate(members, 1):
        name = member_run(i, len(members))
        if i - 1 in reused and isinstance(member, TeacherTrain):  # only trained members are reused
            artifact = TeacherArtifact(id=reused[i - 1], arch=member.arch)
            runs.append(Run(TEACHER, name, member.seed, 0, member.arch, member, brought=artifact, reused=True))
        elif isinstance(member, TeacherArtifact):
            runs.append(Run(TEACHER, name, spec.seeds[0], 0, member.arch, spec.training, brought=member))
        else:
            runs.append(Run(TEACHER, name, member.seed, member.epochs, member.arch, member))
    return runs


def baseline_runs(spec: JobSpec) -> list[Run]:
    if not spec.baseline:
        return []
    return [
        Run(BASELINE, seed_run(seed), seed, spec.training.epochs, spec.student.arch, spec.training)
        for seed in spec.seeds
    ]


def plan(spec: JobSpec, reused: Mapping[int, str] | None = None) -> list[Run]:
    """Every run of the job, in the order they run."""
    from worker.distill.recipes import recipe_for

    return teacher_runs(spec, reused) + recipe_for(spec.method)(spec) + baseline_runs(spec)


def runs_of(runs: list[Run], phase: str) -> list[Run]:
    return [r for r in runs if r.phase == phase]
