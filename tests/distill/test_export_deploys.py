"""Export that deploys: one self-contained .onnx, uint8 input for images, checked against the
trained model (a broken graph fails the export)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from app.contract.standard import TimmArch, TorchvisionArch
from worker.distill.export import ExportError, check_onnx, export_model, load_safetensors, onnx_logits
from worker.distill.models import build_model


@pytest.mark.parametrize("arch", [TimmArch(model="test_resnet"), TorchvisionArch(model="mobilenet_v3_small")])
def test_standard_student_exports_one_file_taking_uint8(tmp_path, arch):
    x = np.random.default_rng(0).integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    model = build_model(arch, (3, 16, 16), 4, mean=127.0, std=70.0, seed=0).eval()
    files = export_model(model, ["safetensors", "onnx"], tmp_path, stem="student", onnx_opset=17, check_x=x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx", "student.safetensors"]
    graph = onnx.load(str(tmp_path / "student.onnx"), load_external_data=False)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    check = next(f.check for f in files if f.kind == "onnx")
    assert check["examples"] == 12 and check["argmax_agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-3
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_logits(tmp_path / "student.onnx", x), expected, atol=1e-4)
    rebuilt = load_safetensors(tmp_path / "student.safetensors")
    with torch.no_grad():
        np.testing.assert_allclose(rebuilt(torch.from_numpy(x)).numpy(), expected, atol=1e-5)


def test_a_broken_graph_fails_the_check(tmp_path):
    arch = TimmArch(model="test_resnet")
    x = np.random.default_rng(1).integers(0, 256, (8, 16, 16), dtype=np.uint8)
    model = build_model(arch, (16, 16), 3, mean=127.0, std=70.0, seed=0).eval()
    export_model(model, ["onnx"], tmp_path, stem="m", onnx_opset=17)
    path = tmp_path / "m.onnx"
    graph = onnx.load(str(path))
    head = max(graph.graph.initializer, key=lambda t: (len(t.dims) == 2, t.dims[0] == 3 if t.dims else False))
    head.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(head) * -3.0, head.name))
    onnx.save(graph, str(path))
    with pytest.raises(ExportError, match="does not match the trained model"):
        check_onnx(path, model, x)
