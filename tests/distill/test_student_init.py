"""student.init: every student run (and the baseline) starts from uploaded safetensors weights
of the student's arch, loaded strictly; the report and the events say so."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.contract.architectures import MLPArch
from app.contract.fit import ArtifactFacts, fit_errors
from app.contract.spec import TeacherTrain
from tests.support.engine import run_tiny_job
from tests.support.specs import MLP, tiny_spec
from worker.distill.data import input_stats
from worker.distill.inference import predict_logits
from worker.distill.inputs import BroughtTeacher, JobInputs
from worker.distill.metrics import accuracy
from worker.distill.models import build_model
from worker.distill.objectives import CE
from worker.distill.reporting import MemoryReporter
from worker.distill.student_init import StudentStart
from worker.distill.trainer import train

INIT_ID = "student-init"


@pytest.fixture(scope="module")
def trained_mlp(digits, tmp_path_factory):
    """An MLP of the student's arch trained on digits (other normalisation than the job fits: seed 7,
    stats of half the data), saved as a user would: its state dict with safetensors."""
    arch = MLPArch.model_validate(MLP)
    half = digits.train.x[: len(digits.train) // 2]
    model = build_model(arch, digits.input_shape, digits.num_classes, *input_stats(half), seed=7)
    optim = TeacherTrain(arch=MLP, epochs=4, batch_size=64)
    reporter = MemoryReporter(checkpoint_dir=None)
    train(model, CE(), digits.train, digits.val, optim, seed=7, device=torch.device("cpu"), reporter=reporter,
          phase="teacher", run="teacher")  # fmt: skip
    path = tmp_path_factory.mktemp("init") / "student.safetensors"
    save_file(model.state_dict(), str(path))
    return model.eval(), path


def _inputs(path) -> JobInputs:
    return JobInputs(teachers={INIT_ID: BroughtTeacher(path, "safetensors", {})})


def test_students_and_baseline_start_from_the_files_weights(trained_mlp, digits, tmp_path, data_cache):
    model, path = trained_mlp
    # One epoch at a learning rate too small to move anything: what the runs end with is where they began.
    spec = tiny_spec(
        student={"arch": MLP, "init": {"artifact": INIT_ID}},
        training={"epochs": 1, "batch_size": 64, "lr": 1e-9, "lr_schedule": "constant"},
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache, _inputs(path))
    exported = load_file(str(tmp_path / "work" / "out" / "student.safetensors"))
    for key, value in model.state_dict().items():  # mean/std included: the weights' own normalisation
        torch.testing.assert_close(exported[key], value, atol=1e-6, rtol=0)

    report = result.report
    expected = accuracy(predict_logits(model, digits.test.x), digits.test.y)
    assert expected > 0.5  # trained, not random: the comparison below can fail
    for section in ("student", "baseline"):
        assert report[section]["init"] == {"artifact": INIT_ID, "format": "safetensors"}
        assert [r["test_accuracy"] for r in report[section]["runs"]] == pytest.approx([expected] * 2, abs=1e-9)
    assert any("start from the uploaded weights student-init" in message for _, message in reporter.events)


def test_without_init_each_seed_starts_afresh(trained_mlp, tmp_path, data_cache):
    spec = tiny_spec(seeds=[0], baseline=False, training={"epochs": 1, "lr": 1e-9, "lr_schedule": "constant"})
    result, _ = run_tiny_job(spec, tmp_path, data_cache)
    assert "init" not in result.report["student"]
    assert "init" not in spec.model_dump(mode="json")["student"]  # stored specs read as before
    exported = load_file(str(tmp_path / "work" / "out" / "student.safetensors"))
    assert not torch.allclose(exported["head.weight"], trained_mlp[0].state_dict()["head.weight"])


def test_keys_are_matched_strictly(trained_mlp, digits, tmp_path):
    state = dict(trained_mlp[0].state_dict())
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "extra.safetensors"))
    model = build_model(MLPArch.model_validate(MLP), digits.input_shape, digits.num_classes)
    with pytest.raises(RuntimeError, match=r"extra\.weight"):
        StudentStart(INIT_ID, tmp_path / "extra.safetensors").load_into(model)


def test_submission_checks_name_the_init_field(trained_mlp):
    tensors = {k: {"shape": list(v.shape), "dtype": "F32"} for k, v in trained_mlp[0].state_dict().items()}
    spec = tiny_spec(student={"arch": MLP, "init": {"artifact": INIT_ID}})
    fits = {INIT_ID: ArtifactFacts("teacher", "safetensors", {"tensors": tensors})}
    assert fit_errors(spec, fits) == []
    wider = tiny_spec(student={"arch": {"name": "mlp", "hidden": [32]}, "init": {"artifact": INIT_ID}})
    (error,) = fit_errors(wider, fits)
    assert error.loc == ("student", "init", "artifact") and "expected 32x64" in error.msg
    onnx = {INIT_ID: ArtifactFacts("teacher", "onnx", {"outputs": []})}
    (error,) = fit_errors(spec, onnx)
    assert error.loc == ("student", "init", "artifact") and "onnx" in error.msg
    (error,) = fit_errors(spec, {})
    assert error.loc == ("student", "init", "artifact") and "upload it first" in error.msg
