"""A brought ONNX teacher's batch has a deadline: onnxruntime stops the run from a timer
(RunOptions.terminate), and the error says which limit it hit."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.integration.test_runner import endless_teacher
from worker.distill.teachers import DeadlineSession, TeacherDeadlineExceeded


def test_an_endless_batch_is_stopped_at_the_deadline_and_a_quick_one_is_not():
    session = DeadlineSession(ort.InferenceSession(endless_teacher(), providers=["CPUExecutionProvider"]), seconds=0.5)
    (quick,) = session.run(["logits"], {"x": np.ones((4, 8, 8), np.float32)})
    assert quick.shape == (4, 10)
    with pytest.raises(TeacherDeadlineExceeded, match=r"0\.5 s on one batch"):
        session.run(["logits"], {"x": np.ones((64, 8, 8), np.float32)})
    assert session.get_inputs()[0].name == "x"  # the rest of the session is the session's
