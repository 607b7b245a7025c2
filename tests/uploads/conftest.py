"""Fixtures for the upload inspection tests: small sklearn teachers converted to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits_classifier(digits):
    from sklearn.linear_model import LogisticRegression

    x, y = digits
    return LogisticRegression(max_iter=300).fit(x / 16.0, y)


def _to_onnx(clf, path: Path, zipmap: bool) -> Path:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = None if zipmap else {id(clf): {"zipmap": False}}
    model = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="session")
def onnx_probabilities(digits_classifier, tmp_path_factory) -> Path:
    """label + probabilities tensor (zipmap off)."""
    return _to_onnx(digits_classifier, tmp_path_factory.mktemp("onnx") / "teacher.onnx", zipmap=False)


@pytest.fixture(scope="session")
def onnx_zipmap(digits_classifier, tmp_path_factory) -> Path:
    """label + a sequence of {class: probability} maps (skl2onnx's default)."""
    return _to_onnx(digits_classifier, tmp_path_factory.mktemp("onnx") / "teacher.onnx", zipmap=True)
