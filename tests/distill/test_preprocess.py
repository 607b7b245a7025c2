"""A brought ONNX teacher trained on other inputs: teacher.artifact.preprocess makes it right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from app.contract.fit import ArtifactFacts, fit_errors
from app.contract.onnx_classifier import OnnxClassifier
from app.contract.spec import JobSpec, PreprocessSpec, TeacherArtifact
from worker.distill.inference import predict_logits
from worker.distill.inputs import BroughtTeacher
from worker.distill.preprocess import Preprocess
from worker.distill.teachers import load_brought_teacher

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")

PRE = {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "channel_order": "BGR"}


class _BGRTeacher(nn.Module):
    """Trained (by hand) on BGR, normalised images: class k is the brightest of R, G, B."""

    def forward(self, x):
        bgr_means = x.mean((2, 3)) * torch.tensor(PRE["std"][::-1]) + torch.tensor(PRE["mean"][::-1])
        return 10 * bgr_means[:, [2, 1, 0]]  # R, G, B scores read from a BGR input


def _colour_data(n: int = 90):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), n // 3)
    x = rng.integers(0, 90, (n, 3, 6, 6)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, c] += 150  # class c: channel c (R, G or B) is bright
    return x, y


@pytest.fixture
def onnx_teacher(tmp_path):
    path = tmp_path / "bgr.onnx"
    torch.onnx.export(
        _BGRTeacher(),
        (torch.zeros(2, 3, 6, 6),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "n"}},
    )
    return path, OnnxClassifier(path).describe()


def _accuracy(member: TeacherArtifact, path, inspection, x, y) -> tuple[float, dict]:
    loaded = load_brought_teacher(member, BroughtTeacher(path, "onnx", inspection), (3, 6, 6), 3)
    logits = predict_logits(loaded.model, torch.from_numpy(x))
    return float((logits.argmax(1).numpy() == y).mean()), loaded.facts


def test_without_preprocess_the_teacher_collapses_with_it_it_is_right(onnx_teacher):
    path, inspection = onnx_teacher
    x, y = _colour_data()
    plain, facts = _accuracy(TeacherArtifact(id="t"), path, inspection, x, y)
    right, facts_pre = _accuracy(TeacherArtifact(id="t", preprocess=PreprocessSpec(**PRE)), path, inspection, x, y)
    assert plain < 0.5 and right == 1.0
    assert "preprocess" not in facts and facts_pre["preprocess"]["channel_order"] == "BGR"


def test_resize_and_nhwc():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = Preprocess(PreprocessSpec(layout="NHWC", input_size=8))(x)
    assert out.shape == (2, 8, 8, 3)
    grey = Preprocess(PreprocessSpec(scale=0.5, mean=[1.0], std=[2.0]))(torch.full((1, 5, 5), 4.0))
    assert grey.shape == (1, 1, 5, 5) and torch.allclose(grey, torch.full_like(grey, 0.5))


def _spec(preprocess: dict | None) -> JobSpec:
    artifact = {"id": "t", **({"preprocess": preprocess} if preprocess is not None else {})}
    return JobSpec.model_validate(
        {
            "dataset": {"artifact": "d"},
            "teacher": {"artifact": artifact},
            "student": {"arch": {"name": "mlp", "hidden": [8]}},
        }
    )


def test_submission_checks_the_preprocessed_shape():
    teacher = {
        "format": "onnx",
        "input_shape": [16, 16, 3],
        "num_classes": 3,
        "output": "logits",
        "outputs": [{"name": "logits", "kind": "logits", "shape": [None, 3]}],
    }
    facts = {
        "d": ArtifactFacts("dataset", "npz", {"input_shape": [3, 8, 8], "num_classes": 3}),
        "t": ArtifactFacts("teacher", "onnx", teacher),
    }
    [error] = fit_errors(_spec(None), facts)
    assert error.loc == ("teacher", "artifact", "id") and "preprocess" in error.msg
    assert fit_errors(_spec({"layout": "NHWC", "input_size": 16}), facts) == []
    [error] = fit_errors(_spec({"mean": [0.1, 0.2]}), facts)
    assert error.loc == ("teacher", "artifact", "preprocess") and "2 values" in error.msg
