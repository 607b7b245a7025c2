"""ONNX teachers: which output holds the class scores, logits or probabilities, and
OnnxClassifier.logits against the model they came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.uploads import InspectionError, OnnxClassifier, inspect_teacher


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())  # never onnx.save: it could write external data
    return path


def linear_model(
    path: Path,
    inputs: int = 4,
    classes: int = 3,
    batch: int | str = "N",
    extra_output: bool = False,
    softmax: bool = False,
    seed: int = 0,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """x @ W + b (logits); optionally a second float output, or softmax on top."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((inputs, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["scores"])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, classes])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], axis=1))
        outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])]
    if extra_output:
        nodes.append(helper.make_node("Relu", ["scores"], ["hidden"]))
        outputs.append(helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [batch, classes]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, inputs])],
        outputs,
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    model.ir_version = 8
    return save(model, path), w, b


def test_probabilities_tensor(onnx_probabilities, digits, digits_classifier):
    info = inspect_teacher(onnx_probabilities, "onnx")
    json.dumps(info)
    assert info["format"] == "onnx" and info["producer"].startswith("skl2onnx")
    assert info["output"] == "probabilities" and info["output_kind"] == "probabilities"
    assert info["num_classes"] == 10 and info["input_shape"] == [64]
    assert info["inputs"] == [{"name": "input", "shape": [None, 64], "dtype": "float32"}]
    assert {o["name"]: o["kind"] for o in info["outputs"]} == {"label": "label", "probabilities": "probabilities"}
    assert "classes" not in info

    x, _ = digits
    x = x / 16.0
    teacher = OnnxClassifier(onnx_probabilities)
    logits = teacher.logits(x, batch_size=500)
    assert logits.dtype == np.float32 and logits.shape == (len(x), 10)
    expected = np.log(np.clip(digits_classifier.predict_proba(x), 1e-12, None))
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(teacher.logits(x.reshape(-1, 8, 8)), logits)
    np.testing.assert_array_equal(teacher.logits(x.astype(np.float64)), logits)
    assert teacher.logits(x[:0]).shape == (0, 10)


def test_probability_map(onnx_zipmap, digits, digits_classifier):
    info = inspect_teacher(onnx_zipmap, "onnx")
    json.dumps(info)
    assert info["output_kind"] == "probability_map"
    assert info["num_classes"] == 10 and info["input_shape"] == [64]
    assert info["classes"] == [str(i) for i in range(10)]

    x = digits[0][:300] / 16.0
    teacher = OnnxClassifier(onnx_zipmap)
    expected = np.log(np.clip(digits_classifier.predict_proba(x), 1e-12, None))
    np.testing.assert_allclose(teacher.logits(x), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(teacher.logits(x.reshape(-1, 8, 8), batch_size=7), expected, atol=1e-5, rtol=0)


def test_a_logits_model_is_detected_as_logits(tmp_path):
    path, w, b = linear_model(tmp_path / "linear.onnx")
    info = inspect_teacher(path, "onnx")
    assert (info["output"], info["output_kind"], info["num_classes"]) == ("scores", "logits", 3)
    assert info["opset"] == 17 and info["producer"] == "test"
    x = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    np.testing.assert_allclose(OnnxClassifier(path).logits(x), x @ w + b, atol=1e-5)


def test_a_softmax_model_is_detected_as_probabilities(tmp_path):
    path, w, b = linear_model(tmp_path / "softmax.onnx", softmax=True)
    teacher = OnnxClassifier(path)
    assert teacher.output_kind == "probabilities"
    x = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    z = x @ w + b
    log_softmax = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    np.testing.assert_allclose(teacher.logits(x), log_softmax, atol=1e-5)


def test_a_fixed_batch_of_one_is_run_example_by_example(tmp_path):
    path, w, b = linear_model(tmp_path / "b1.onnx", batch=1)
    teacher = OnnxClassifier(path)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(teacher.logits(x), x @ w + b, atol=1e-5)


def test_several_float_outputs_must_be_named(tmp_path):
    path, _, _ = linear_model(tmp_path / "two.onnx", extra_output=True)
    with pytest.raises(InspectionError) as caught:
        inspect_teacher(path, "onnx")
    assert caught.value.field == "output"
    assert "teacher.artifact.output" in str(caught.value)
    assert "scores" in str(caught.value) and "hidden" in str(caught.value)

    assert inspect_teacher(path, "onnx", output="hidden")["output"] == "hidden"
    with pytest.raises(InspectionError) as caught:
        inspect_teacher(path, "onnx", output="nope")
    assert caught.value.field == "output" and "scores" in str(caught.value)


def test_a_label_output_is_not_class_scores(onnx_probabilities):
    with pytest.raises(InspectionError) as caught:
        inspect_teacher(onnx_probabilities, "onnx", output="label")
    assert caught.value.field == "output"


def external_data_model(path: Path, location: str) -> Path:
    model = onnx.load_from_string(linear_model(path)[0].read_bytes())
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return save(model, path)


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    path = external_data_model(tmp_path / "ext.onnx", location)
    with pytest.raises(InspectionError) as caught:
        inspect_teacher(path, "onnx")
    message = str(caught.value)
    assert caught.value.field == "file"
    assert "'W'" in message and repr(location) in message and "outside" in message


def test_external_data_beside_the_model_is_refused_too(tmp_path):
    path = external_data_model(tmp_path / "ext.onnx", "weights.bin")
    (tmp_path / "weights.bin").write_bytes(bytes(48))
    with pytest.raises(InspectionError, match="save_as_external_data=False"):
        inspect_teacher(path, "onnx")


def test_inputs_must_be_one_fixed_float_tensor(tmp_path):
    two = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 3])],
    )
    path = save(
        helper.make_model(two, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "two.onnx"
    )
    with pytest.raises(InspectionError, match=r"exactly one input.*a \[None, 3\], b \[None, 3\]"):
        inspect_teacher(path, "onnx")

    path, _, _ = linear_model(tmp_path / "sym.onnx")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "F"
    save(model, path)
    with pytest.raises(InspectionError, match="must be fixed"):
        inspect_teacher(path, "onnx")


def test_garbage_is_not_an_onnx_model(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(InspectionError, match="ONNX") as caught:
        inspect_teacher(path, "onnx")
    assert caught.value.field == "file"


def test_the_worker_can_reopen_with_the_inspected_choice(onnx_zipmap, digits):
    info = inspect_teacher(onnx_zipmap, "onnx")
    teacher = OnnxClassifier(onnx_zipmap, output=info["output"], output_kind=info["output_kind"])
    assert (teacher.num_classes, teacher.input_shape, teacher.classes) == (10, (64,), info["classes"])
    assert teacher.logits(digits[0][:3] / 16.0).shape == (3, 10)
    with pytest.raises(InspectionError):
        OnnxClassifier(onnx_zipmap, output=info["output"], output_kind="logits")
    with pytest.raises(InspectionError, match="do not fit"):
        teacher.logits(np.zeros((2, 63), np.float32))
