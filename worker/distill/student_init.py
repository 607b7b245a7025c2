"""A student's starting point (spec.student.init): uploaded safetensors weights of the student's
own architecture, loaded (every key matched) into each run of that architecture before it trains:
the students, born-again generations and the baselines. The baseline starts from them too, so
the report still compares the same student with and without a teacher. A run resumed from its
checkpoint takes the checkpoint's weights instead (they started from these)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from app.contract.phases import BASELINE, GENERATION, STUDENT
from app.contract.spec import JobSpec
from worker.distill.inputs import JobInputs
from worker.distill.models import load_weights

STARTS_FROM_INIT = (STUDENT, GENERATION, BASELINE)  # the runs of the student's arch


class StudentStart:
    """The uploaded weights every student and baseline run starts from."""

    def __init__(self, artifact: str, path: Path) -> None:
        self.artifact, self.path = artifact, Path(path)

    @classmethod
    def of(cls, spec: JobSpec, inputs: JobInputs) -> StudentStart | None:
        if spec.student.init is None:
            return None
        artifact = spec.student.init.artifact
        brought = inputs.teachers.get(artifact)  # model uploads, resolved by the caller
        if brought is None:
            raise ValueError(f"student.init artifact {artifact!r}: the job was given no file for it")
        return cls(artifact, brought.path)

    def load_into(self, model: nn.Module) -> None:
        from safetensors.torch import load_file

        load_weights(model, load_file(str(self.path)))
