"""Inspecting an uploaded teacher: an ONNX model or a safetensors state dict."""

from __future__ import annotations

from pathlib import Path

from app.contract.onnx_classifier import OnnxClassifier
from app.uploads.errors import InspectionError
from app.uploads.formats import HOW_TO_CONVERT, TEACHER_FORMATS, code_carrying_content
from app.uploads.safetensors_header import read_header


def inspect_teacher(path: Path, fmt: str, *, output: str | None = None) -> dict:
    """What the teacher at ``path`` is (JSON-able), or InspectionError.

    onnx: {"format", "opset", "producer", "inputs", "outputs", "output", "output_kind",
    "input_shape", "num_classes"} (+ "classes" for probability maps);
    safetensors: {"format", "tensors", "parameters", "metadata"}."""
    path = Path(path)
    why = code_carrying_content(path)
    if why:
        raise InspectionError(f"The teacher is refused: it is {why}. {HOW_TO_CONVERT}", field="file")
    if fmt == "onnx":
        return OnnxClassifier(path, output=output).describe()
    if fmt == "safetensors":
        if output is not None:
            raise InspectionError("`output` names an ONNX output; a safetensors teacher has none.", field="output")
        return read_header(path)
    raise InspectionError(f"Unknown teacher format {fmt!r}: use one of {', '.join(TEACHER_FORMATS)}.", field="format")
