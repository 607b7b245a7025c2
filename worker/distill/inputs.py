"""What a job brings besides its spec: the uploaded files the spec names, as local paths.

Torch-free (worker/tasks.py builds it in the worker's parent process from the database).
The engine reads the files; it never learns where they came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TeacherFormat = Literal["onnx", "safetensors"]


@dataclass(frozen=True)
class BroughtTeacher:
    """An uploaded teacher: an ONNX model, or safetensors weights of one of our architectures."""

    path: Path
    format: TeacherFormat
    inspection: Mapping[str, Any] = field(default_factory=dict)  # what the API found at upload


@dataclass(frozen=True)
class JobInputs:
    dataset_npz: Path | None = None  # an uploaded dataset's canonical arrays (x, y, x_unlabeled?, x_test?, y_test?)
    # artifact id -> file: model uploads (teachers, and the weights student.init names)
    teachers: Mapping[str, BroughtTeacher] = field(default_factory=dict)
    dataset_sha256: str | None = None  # an uploaded dataset's content hash (teacher keys)
    # Trained teachers this tenant already has: member index -> artifact id (in `teachers`).
    reused: Mapping[int, str] = field(default_factory=dict)
    # Teachers this job trains and publishes when done: member index -> teacher key.
    teacher_keys: Mapping[int, str] = field(default_factory=dict)
    outputs: Any = None  # the tenant's teacher-output cache (worker/distill/cache.py OutputStore), or None
