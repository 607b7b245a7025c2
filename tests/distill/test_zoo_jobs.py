"""Whole jobs with timm/torchvision models on colour uint8 images (tiny, CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from app.contract.spec import JobSpec
from worker.distill.export import onnx_logits
from worker.distill.inputs import JobInputs
from worker.distill.pipeline import run_job
from worker.distill.reporting import MemoryReporter


def colour_npz(path, n: int = 120, side: int = 12):
    """Three classes: the brightest channel is R, G or B; uint8 (n, 3, side, side)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), n // 3)
    x = rng.integers(0, 100, (n, 3, side, side)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, c] += 120
    np.savez(path, x=x, y=y)
    return path


def _job(tmp_path, data_cache, **parts):
    spec = JobSpec.model_validate(
        {
            "dataset": {"artifact": "d"},
            "teacher": {"train": {"arch": {"name": "timm", "model": "test_resnet"}, "epochs": 2, "batch_size": 32}},
            "student": {"arch": {"name": "torchvision", "model": "squeezenet1_1", "input_size": 24}},
            "training": {"epochs": 2, "batch_size": 32, "lr": 0.003},
            "seeds": [0],
            "baseline": False,
            **parts,
        }
    )
    inputs = JobInputs(dataset_npz=colour_npz(tmp_path / "d.npz"))
    return run_job(spec, MemoryReporter(checkpoint_dir=tmp_path / "ck"), tmp_path / "work", data_cache, inputs)


def test_feature_method_between_timm_and_torchvision_exports_a_deployable_student(tmp_path, data_cache):
    result = _job(
        tmp_path,
        data_cache,
        method={"name": "fitnet", "teacher_stage": "layer3", "student_stage": "features.12"},
        training={"epochs": 2, "batch_size": 32, "augment": {"crop": "pad", "crop_padding": 2, "flip": True}},
    )
    r = result.report
    assert r["dataset"]["input_shape"] == [3, 12, 12] and r["soft_targets"] == "recomputed"
    check = r["exported"]["onnx_check"]
    assert check["examples"] == r["dataset"]["test_size"] and check["max_abs_logit_diff"] < 1e-3
    files = {f.kind: f.path for f in result.files}
    assert not list(files["onnx"].parent.glob("*.data"))
    with np.load(tmp_path / "d.npz") as f:
        x, y = f["x"], f["y"]
    # the student takes the raw uint8 images; its accuracy on the test split is the reported one
    from worker.distill.data import load_uploaded

    splits = load_uploaded(
        tmp_path / "d.npz",
        JobSpec.model_validate(
            {
                "dataset": {"artifact": "d"},
                "teacher": {"train": {"arch": {"name": "mlp"}}},
                "student": {"arch": {"name": "mlp"}},
            }
        ).dataset,
    )
    got = float((onnx_logits(files["onnx"], splits.test.x).argmax(1) == splits.test.y).mean())
    assert got == pytest.approx(r["exported"]["test_accuracy"], abs=1e-9)
    assert x.dtype == np.uint8 and len(y) == 120


def test_attention_and_kd_with_timm_models(tmp_path, data_cache):
    result = _job(
        tmp_path,
        data_cache,
        method={"name": "attention", "beta": 10.0},
        student={"arch": {"name": "timm", "model": "test_efficientnet"}},
        training={"epochs": 1, "batch_size": 32},
    )
    assert result.report["student"]["runs"][0]["test_accuracy"] >= 0.0
    assert result.report["teacher"]["arch"] == {"name": "timm", "model": "test_resnet"}
