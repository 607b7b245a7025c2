"""Report metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.contract.architectures import MLPArch
from worker.distill.metrics import (
    accuracy,
    agreement,
    evaluate,
    expected_calibration_error,
    nll,
    state_bytes,
)
from worker.distill.models import build_model


def _logits(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def test_ece_hand_example():
    # confidences 0.9 (right), 0.9 (wrong), 0.5 (right), 0.55 (wrong); 15 bins of width 1/15:
    # 0.9 -> bin 13 (acc 0.5, conf 0.9), 0.5 -> bin 7, 0.55 -> bin 8.
    logits = _logits([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.45, 0.55]])
    y = torch.tensor([0, 1, 0, 0])
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.5) + 1 / 4 * abs(0 - 0.55)
    assert expected_calibration_error(logits, y) == pytest.approx(expected)


def test_ece_of_a_calibrated_model_is_zero():
    # 10 examples at confidence 0.7, 7 of them right
    logits = _logits([[0.7, 0.3]] * 10)
    y = torch.tensor([0] * 7 + [1] * 3)
    assert expected_calibration_error(logits, y) == pytest.approx(0.0, abs=1e-9)


def test_accuracy_agreement_nll():
    s = _logits([[0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    t = _logits([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    y = torch.tensor([0, 0, 1])
    assert accuracy(s, y) == pytest.approx(1 / 3)
    assert agreement(s, t) == pytest.approx(2 / 3)
    assert nll(s, y) == pytest.approx(-(math.log(0.6) + math.log(0.2) + math.log(0.3)) / 3)


def test_evaluate_fields(digits):
    model = build_model(MLPArch(hidden=[8]), digits.input_shape, 10, seed=0)
    teacher_logits = torch.randn(len(digits.test), 10)
    out = evaluate(model, digits, teacher_logits, latency_runs=5)
    assert set(out) == {
        "test_accuracy",
        "val_accuracy",
        "train_accuracy",
        "generalization_gap",
        "test_agreement",
        "test_ece",
        "test_nll",
        "parameters",
        "bytes",
        "latency_ms",
        "latency_onnx_ms",
        "latency_onnx_batch_ms",
        "latency_onnx_batch_size",
        "latency_onnx_threads",
    }
    assert out["generalization_gap"] == pytest.approx(out["train_accuracy"] - out["test_accuracy"])
    assert out["parameters"] == 64 * 8 + 8 + 8 * 10 + 10
    assert out["bytes"] == state_bytes(model) == 4 * (out["parameters"] + 2)  # + mean, std
    assert out["latency_ms"] > 0 and out["latency_onnx_ms"] > 0  # PyTorch, and the deployed runtime
    assert out["latency_onnx_threads"] == 1
    assert out["latency_onnx_batch_size"] == 64 and out["latency_onnx_batch_ms"] > 0  # a batch too
    assert "test_agreement" not in evaluate(model, digits, latency_runs=1)
    assert all(np.isfinite(v) for v in out.values())


def test_onnx_latency_is_only_for_models_we_export():
    from worker.distill.metrics import onnx_latency_ms

    assert onnx_latency_ms(torch.nn.Linear(3, 2)) is None  # not a Classifier (an ONNX teacher, an ensemble)
