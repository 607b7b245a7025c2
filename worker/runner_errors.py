"""A job's failure as its client reads it: a code, a message a person can act on, and the
spec field at fault when there is one. Never a server path, never a traceback (those go to
the worker's log)."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

MAX_MESSAGE = 500
# An absolute POSIX path of two or more parts (what torch, numpy, onnxruntime and the OS put
# in their messages); replaced by its last part, which names the file without the server's
# layout.
_PATH = re.compile(r"(?<![\w:/.])/(?:[^\s/'\"():,;]+/)+([^\s/'\"():,;]*)")


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


def without_paths(text: str) -> str:
    """Every absolute path cut to its file name."""
    return _PATH.sub(lambda m: m.group(1) or "<dir>", text)


def scrub(text: str) -> str:
    """One line, bounded, without paths."""
    line = " ".join(without_paths(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


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
