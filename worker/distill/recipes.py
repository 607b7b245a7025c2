"""Recipes: how a method's runs are planned, registered by name (a method's spec class names
its recipe, app.contract.methods.MethodSpec.recipe). Without one, a method trains one student
per seed, learning from the job's teacher."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from app.contract.methods import BornAgainMethod, TeacherAssistantMethod
from app.contract.phases import (
    ASSISTANT,
    GENERATION,
    STUDENT,
    generation_run,
    link_run,
    seed_run,
)
from app.contract.spec import JobSpec
from worker.distill.plan import LearnsFrom, Run, job_teacher, teacher_seed

Recipe = Callable[[JobSpec], list[Run]]
RECIPES: dict[str, Recipe] = {}
R = TypeVar("R", bound=Recipe)


def recipe(name: str) -> Callable[[R], R]:
    def register(build: R) -> R:
        RECIPES[name] = build
        return build

    return register


def recipe_for(method) -> Recipe:
    return RECIPES[method.recipe or "students"]


def _signal(spec: JobSpec) -> LearnsFrom:
    return job_teacher(spec) if spec.method.uses_teacher else LearnsFrom.NONE


@recipe("students")
def students(spec: JobSpec, learns_from: LearnsFrom | None = None, source: tuple[str, str] | None = None) -> list[Run]:
    """One student per seed."""
    return [
        Run(
            STUDENT,
            seed_run(seed),
            seed,
            spec.training.epochs,
            spec.student.arch,
            spec.training,
            learns_from or _signal(spec),
            source,
        )
        for seed in spec.seeds
    ]


@recipe("teacher_assistant")
def assistant_chain(spec: JobSpec) -> list[Run]:
    """teacher -> assistant 1 -> ... -> student (Mirzadeh et al. 2019): each link learns from
    the one before it, the students from the last."""
    method = spec.method
    assert isinstance(method, TeacherAssistantMethod)  # its recipe
    links: list[Run] = []
    for i, arch in enumerate(method.assistants, 1):
        learns, source = (job_teacher(spec), None) if i == 1 else (LearnsFrom.ASSISTANT, (ASSISTANT, links[-1].name))
        links.append(
            Run(ASSISTANT, link_run(i), teacher_seed(spec), spec.training.epochs, arch, spec.training, learns, source)
        )
    return links + students(spec, LearnsFrom.ASSISTANT, (ASSISTANT, links[-1].name))


@recipe("born_again")
def generations(spec: JobSpec) -> list[Run]:
    """Born-again networks (Furlanello et al. 2018): generation g of each seed learns from
    generation g - 1 of that seed, generation 0 being the teacher; the last is the student."""
    method = spec.method
    assert isinstance(method, BornAgainMethod)  # its recipe
    runs = []
    for g in range(1, method.generations + 1):
        for seed in spec.seeds:
            learns, source = (
                (job_teacher(spec), None)
                if g == 1
                else (LearnsFrom.GENERATION, (GENERATION, generation_run(g - 1, seed)))
            )
            runs.append(
                Run(
                    GENERATION,
                    generation_run(g, seed),
                    seed,
                    spec.training.epochs,
                    spec.student.arch,
                    spec.training,
                    learns,
                    source,
                )
            )
    return runs
