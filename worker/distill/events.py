"""What a job tells the person watching it: the wording of the engine's events, one place."""

from __future__ import annotations

from app.contract.phases import ASSISTANT, TEACHER
from worker.distill.models import count_parameters
from worker.distill.plan import LearnsFrom, Run
from worker.distill.trainer import TrainResult


def dataset(label: str, n_train: int, n_val: int, n_test: int, device: str) -> str:
    return f"dataset {label}: {n_train} train / {n_val} validation / {n_test} test examples; device {device}"


def teacher_loaded(run: Run, description: str) -> str:
    return ("teacher: " if run.name == TEACHER else f"teacher {run.name}: ") + description


def student_init(artifact: str, baseline: bool) -> str:
    return f"students start from the uploaded weights {artifact} (student.init)" + (
        ", and so does the baseline: both begin from the same weights" if baseline else ""
    )


def teacher_reused(run: Run, trained_by: dict) -> str:
    who = "teacher" if run.name == TEACHER else f"teacher {run.name}"
    job = trained_by.get("job")
    return (
        f"{who}: reused (the same teacher spec, data and seed was trained before"
        + (f" by job {job}" if job else "")
        + "); the teacher phase is skipped. teacher.train.reuse: false trains a new one"
    )


def ensemble(members: int) -> str:
    return (
        f"teacher: an ensemble of {members}; its output is the log of the members' "
        "mean probabilities, and the temperature applies to that"
    )


def run_trained(run: Run, model, result: TrainResult) -> str:
    best = f"best validation accuracy {result.best_val_accuracy:.4f} at epoch {result.best_epoch}"
    if run.phase == TEACHER:
        who = "teacher" if run.name == TEACHER else f"teacher {run.name}"
        return f"{who}: {best} of {result.epochs_run}" + (" (stopped early)" if result.stopped_early else "")
    if run.phase == ASSISTANT:
        source = "teacher" if run.source is None else f"assistant {run.source[1]}"
        assert run.arch is not None  # an assistant is one of ours
        return (
            f"assistant {run.name} ({run.arch.name}, {count_parameters(model)} parameters) learned "
            f"from the {source}: {best}"
        )
    return f"{run.phase} {run.name}: {best} of {result.epochs_run}"


def students_share(n: int, fraction: float) -> str:
    return f"students learn from {n} training examples ({fraction:g} of the teacher's, stratified)"


def transfer_set(size: int, unlabeled: bool) -> str:
    what = (
        "unlabeled rows of the uploaded dataset" if unlabeled else "extra generated mnist1d inputs (labels discarded)"
    )
    return f"transfer set: {size} {what}; the student learns there from the teacher alone, the baseline never sees them"


def soft_targets(
    mode: str | None, first: Run, n_train: int, features: bool, augmented: bool, generations: bool, method: str
) -> str:
    if mode == "cached":
        source = "last assistant" if first.learns_from == LearnsFrom.ASSISTANT else "teacher"
        what = "logits and stage features" if features else "logits"
        return (
            f"soft targets: cached ({source} {what} on {n_train} training examples computed once, "
            "reused every epoch)"
            + (" for generation 1; each later generation's are computed from the one before" if generations else "")
        )
    if mode == "recomputed":
        return (
            "soft targets: recomputed (the frozen teacher runs on every batch"
            + (
                " because augmentation changes the inputs: it sees the augmented batch the student sees"
                if augmented
                else ""
            )
            + (", in eval mode, giving the stage features the method needs)" if features else ")")
        )
    return f"method {method}: the student does not use the teacher"


def exported(seed: int, val_accuracy: float, files: list[str]) -> str:
    return f"exported the seed={seed} student (best validation accuracy {val_accuracy:.4f}): {', '.join(files)}"
