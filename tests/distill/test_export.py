"""Exported files run without our code and give the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from app.contract.architectures import CNNArch, MLPArch
from worker.distill.data import input_stats
from worker.distill.export import (
    export_model,
    load_safetensors,
    onnx_accuracy,
    onnx_logits,
)
from worker.distill.inference import predict_logits
from worker.distill.metrics import accuracy


@pytest.fixture(params=[MLPArch(hidden=[8], dropout=0.3), CNNArch(channels=[4, 4], hidden=8, dropout=0.3)])
def model(request, digits):
    from worker.distill.models import build_model

    m = build_model(request.param, digits.input_shape, 10, *input_stats(digits.train.x), seed=0)
    with torch.no_grad():
        for p in m.state_dict().values():
            if p.dtype.is_floating_point and p.ndim == 1 and p.numel() > 1:
                p.add_(0.1)  # move batch-norm running stats and biases off their defaults
    return m.eval()


def test_safetensors_and_onnx_roundtrip(model, digits, tmp_path):
    files = export_model(model, ["safetensors", "onnx"], tmp_path, stem="student", onnx_opset=17)
    assert [(f.name, f.kind) for f in files] == [("student.safetensors", "safetensors"), ("student.onnx", "onnx")]
    x = digits.test.x
    expected = predict_logits(model, x)

    again = load_safetensors(tmp_path / "student.safetensors")
    assert torch.equal(predict_logits(again, x), expected)

    for batch in (1, 7, len(x)):
        np.testing.assert_allclose(
            onnx_logits(tmp_path / "student.onnx", x[:batch]), expected[:batch].numpy(), atol=1e-4
        )
    assert onnx_accuracy(tmp_path / "student.onnx", x, digits.test.y) == accuracy(expected, digits.test.y)

    graph = onnx.load(str(tmp_path / "student.onnx"))
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert [i.name for i in graph.graph.input] == ["input"]
    assert [o.name for o in graph.graph.output] == ["logits"]


def test_export_does_not_move_or_mutate_the_model(model, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, ["onnx"], tmp_path, stem="m", onnx_opset=13)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError):
        load_safetensors(tmp_path / "x.safetensors")
