"""The tiny jobs the tests run: tiny_job, a dict to submit over HTTP to a real worker, and
tiny_spec, a JobSpec for the engine run in process. Each test names what it changes as
overrides (top-level fields, replaced whole)."""

from __future__ import annotations

import copy
from typing import Any

from app.contract.spec import JobSpec

CNN = {"name": "cnn", "channels": [8], "hidden": 16}
MLP = {"name": "mlp", "hidden": [16]}
# What a spec without "export" gets (ExportSpec's default): the ONNX file and the weights.
EVERY_EXPORT = {"formats": ["safetensors", "onnx"]}

# The quickest job a worker runs end to end: one teacher epoch, one student epoch, one seed, no
# baseline, no ONNX export.
_TINY_JOB: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "training": {"epochs": 1},
    "seeds": [0],
    "baseline": False,
    "export": {"formats": ["safetensors"]},
}

# A digits job the engine trains in about a second with every phase in it: a CNN teacher, an MLP
# student, two seeds and a baseline.
_TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": CNN, "epochs": 4, "patience": 2}},
    "student": {"arch": MLP},
    "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
    "training": {"epochs": 3, "batch_size": 64},
    "seeds": [0, 1],
    "baseline": True,
}


def tiny_job(**overrides: Any) -> dict[str, Any]:
    """The JSON body of a job that a worker runs in seconds (a fresh copy, `overrides` applied)."""
    return copy.deepcopy(_TINY_JOB) | overrides


def tiny_spec(**overrides: Any) -> JobSpec:
    """The engine's tiny digits job as a JobSpec: tiny_spec(seeds=[0], baseline=False, ...)."""
    return JobSpec.model_validate(copy.deepcopy(_TINY_SPEC) | overrides)
