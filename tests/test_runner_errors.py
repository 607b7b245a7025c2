"""What a client reads of a failed job: a code, a one-line message without server paths,
the spec field at fault (worker/runner_errors.py)."""

from __future__ import annotations

import errno

from app.uploads.errors import InspectionError
from worker.runner_errors import (
    ArtifactUnavailable,
    describe_failure,
    scrub,
    without_paths,
)


def test_paths_are_cut_to_their_file_name_and_messages_to_one_bounded_line():
    text = (
        "[ONNXRuntimeError] Load model from /srv/distill/var/artifacts/uploads/ab/cd.onnx failed:\n"
        '  File "/work/.venv/lib/python3.11/site-packages/torch/nn/x.py", line 3'
    )
    out = scrub(text)
    assert "/srv" not in out and "/work" not in out and "\n" not in out
    assert "cd.onnx" in out and "x.py" in out
    assert len(scrub("x" * 5000)) == 500
    assert scrub("ratio 1/2 and http://host/a stay") == "ratio 1/2 and http://host/a stay"


def test_failures_have_codes_and_fields():
    cases = [
        (ArtifactUnavailable("dataset artifact 'x' is gone", "dataset"), "artifact_unavailable", "dataset.artifact"),
        (InspectionError("no such output", field="output"), "teacher_unusable", "teacher.artifact.output"),
        (MemoryError(), "out_of_memory", None),
        (OSError(errno.ENOSPC, "No space left on device", "/var/x/ckpt.pt"), "out_of_space", None),
        (ValueError("cnn takes 1-D or 2-D inputs"), "spec_not_runnable", None),
        (KeyError("/home/app/secret/path.npz"), "internal_error", None),
    ]
    for exc, code, field in cases:
        failure = describe_failure(exc)
        assert (failure.code, failure.field) == (code, field), exc
        assert "/home/app" not in failure.message and "/var/x" not in failure.message


def test_events_keep_their_lines_and_lose_their_paths():
    event = "checkpoint of student not used: cannot read /data/artifacts/checkpoints/j1/student-seed=0.pt\nrestarting"
    assert without_paths(event) == "checkpoint of student not used: cannot read student-seed=0.pt\nrestarting"
