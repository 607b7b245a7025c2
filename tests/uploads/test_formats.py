"""Formats from file names, and the package's own import rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.uploads import DATASET_FORMATS, TEACHER_FORMATS, InspectionError, guess_format
from tests.support.imports import loaded_after

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "kind, name, fmt",
    [
        ("teacher", "teacher.onnx", "onnx"),
        ("teacher", "My.Model.ONNX", "onnx"),
        ("teacher", "w.safetensors", "safetensors"),
        ("dataset", "d.npz", "npz"),
        ("dataset", "d.csv", "csv"),
        ("dataset", "d.parquet", "parquet"),
        ("dataset", "d.pq", "parquet"),
        ("dataset", "images.zip", "zip"),
    ],
)
def test_known_extensions(kind, name, fmt):
    assert guess_format(kind, name) == fmt
    assert fmt in (TEACHER_FORMATS if kind == "teacher" else DATASET_FORMATS)


def test_unknown_extensions_name_the_field_and_the_choices():
    with pytest.raises(InspectionError) as caught:
        guess_format("teacher", "teacher.h5")
    assert caught.value.field == "format" and ".onnx" in str(caught.value)
    with pytest.raises(InspectionError) as caught:
        guess_format("teacher", "data.csv")
    assert caught.value.field == "format" and "dataset format" in str(caught.value)
    with pytest.raises(InspectionError) as caught:
        guess_format("dataset", "noextension")
    assert caught.value.field == "format"
    with pytest.raises(InspectionError):
        guess_format("student", "x.onnx")


def test_the_package_loads_no_torch_fastapi_or_worker():
    imports = "import app.uploads; from app.uploads import dataset, zipsafe; from app.contract import onnx_classifier"
    heavy = ("torch", "fastapi", "worker", "onnx", "onnxruntime", "pyarrow", "PIL")
    assert loaded_after(imports, heavy) == []  # the heavy readers load on first use
