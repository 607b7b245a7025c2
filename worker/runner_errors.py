"""A job's failure as its client reads it: a code, a message a person can act on, and the
spec field at fault when there is one. Never a server path, never a traceback (those go to
the worker's log)."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from app.redact import MAX_MESSAGE, scrub, without_paths

__all__ = ["MAX_MESSAGE", "ArtifactUnavailable", "Failure", "describe_failure", "scrub", "without_paths"]


class ArtifactUnavailable(Exception):
    """An upload the spec names cannot be used by this job: the job fails, saying which."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.field = "dataset.artifact" if kind == "dataset" else "teacher.artifact"


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    field: str | None = None


def describe_failure(exc: BaseException) -> Failure:
    """The client's view of an exception that ended a job."""
    from app.uploads.errors import InspectionError

    name = type(exc).__name__
    text = scrub(str(exc))
    if name == "TeacherDeadlineExceeded":  # worker.distill.teachers; not imported: torch
        return Failure("teacher_deadline_exceeded", text, "teacher.artifact")
    if isinstance(exc, ArtifactUnavailable):
        return Failure("artifact_unavailable", text, exc.field)
    if isinstance(exc, InspectionError):
        field = "teacher.artifact.output" if exc.field == "output" else "teacher.artifact"
        return Failure("teacher_unusable", text, field)
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError":
        return Failure("out_of_memory", "the job ran out of memory: use a smaller model, batch size or dataset")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return Failure("out_of_space", "the worker ran out of disk space; try again later")
    if isinstance(exc, ValueError):
        return Failure("spec_not_runnable", f"the job cannot run as specified: {text}")
    return Failure("internal_error", f"the worker failed ({name}: {text})" if text else f"the worker failed ({name})")
