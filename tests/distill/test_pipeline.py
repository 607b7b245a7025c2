"""run_job end to end on a tiny digits job."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from app.contract.phases import KD_PHASES as PHASES
from tests.support.engine import run_tiny_job, without_timing
from tests.support.specs import tiny_spec
from worker.distill.export import load_safetensors, onnx_accuracy
from worker.distill.inference import predict_logits
from worker.distill.metrics import accuracy
from worker.distill.pipeline import run_job
from worker.distill.reporting import Cancelled, MemoryReporter

METRICS = {
    "test_accuracy",
    "val_accuracy",
    "train_accuracy",
    "generalization_gap",
    "test_ece",
    "test_nll",
    "parameters",
    "bytes",
    "latency_ms",
    "latency_onnx_ms",
    "latency_onnx_batch_ms",
    "latency_onnx_batch_size",
    "latency_onnx_threads",
    "epochs_run",
    "best_epoch",
    "stopped_early",
}
# Wall-clock measurements: the only numbers allowed to differ between identical runs.


@pytest.fixture(scope="module")
def job(tmp_path_factory, data_cache):
    tmp = tmp_path_factory.mktemp("job")
    result, reporter = run_tiny_job(tiny_spec(), tmp, data_cache)
    return result, reporter, tmp


def test_phases_in_order(job):
    _, reporter, _ = job
    assert reporter.phases == list(PHASES)


def test_metrics_recorded_for_every_run(job):
    result, reporter, _ = job
    runs = {(p, r) for p, r, _, _ in reporter.metrics}
    assert runs == {("teacher", "teacher")} | {(p, f"seed={s}") for p in ("student", "baseline") for s in (0, 1)}
    for phase, run in runs:
        epochs = [e for p, r, e, _ in reporter.metrics if (p, r) == (phase, run)]
        assert epochs == list(range(1, len(epochs) + 1))
    assert len([m for m in reporter.metrics if m[0] == "teacher"]) == result.report["teacher"]["epochs_run"]


def test_progress_monotone_and_complete(job):
    _, reporter, _ = job
    p = reporter.progresses
    assert p[0] == 0.0 and p[-1] == 1.0
    assert all(b > a for a, b in itertools.pairwise(p))


def test_report_shape(job):
    result, _, _ = job
    r = result.report
    assert json.loads((result.files[-1].path).read_text()) == r
    json.dumps(r, allow_nan=False)
    assert r["dataset"]["name"] == "digits" and r["device"] == "cpu" and r["soft_targets"] == "cached"
    assert r["method"] == {"name": "kd", "temperature": 4.0, "alpha": 0.9}
    assert r["seeds"] == [0, 1]
    assert set(r["teacher"]) >= METRICS and r["teacher"]["arch"]["name"] == "cnn"
    for part in ("student", "baseline"):
        assert [run["seed"] for run in r[part]["runs"]] == [0, 1]
        for run in r[part]["runs"]:
            assert METRICS | {"seed", "test_agreement"} <= set(run)
        mean, std = r[part]["mean"], r[part]["std"]
        accs = [run["test_accuracy"] for run in r[part]["runs"]]
        assert mean["test_accuracy"] == pytest.approx(np.mean(accs))
        assert std["test_accuracy"] == pytest.approx(np.std(accs, ddof=1))
    s = r["summary"]
    assert s["student_vs_baseline_test_accuracy"] == pytest.approx(
        r["student"]["mean"]["test_accuracy"] - r["baseline"]["mean"]["test_accuracy"]
    )
    assert s["compression"] == pytest.approx(r["teacher"]["parameters"] / r["student"]["mean"]["parameters"])
    assert s["speedup"] > 0


def test_exported_student_is_best_on_validation_and_matches_report(job, digits):
    result, _, _ = job
    r = result.report
    exported = r["exported"]
    runs = r["student"]["runs"]
    best = max(runs, key=lambda run: run["val_accuracy"])
    assert exported["seed"] == best["seed"] and exported["selected_by"] == "validation accuracy"
    assert exported["test_accuracy"] == best["test_accuracy"]
    assert exported["onnx_opset"] == 17
    files = {f.kind: f for f in result.files}
    assert set(files) == {"safetensors", "onnx", "report"}
    assert exported["files"] == {"safetensors": "student.safetensors", "onnx": "student.onnx"}
    assert all(f.path.parent.name == "out" and f.path.exists() for f in result.files)
    assert files["report"].media_type == "application/json"
    assert onnx_accuracy(files["onnx"].path, digits.test.x, digits.test.y) == exported["test_accuracy"]
    student = load_safetensors(files["safetensors"].path)
    assert accuracy(predict_logits(student, digits.test.x), digits.test.y) == exported["test_accuracy"]


def test_same_spec_gives_same_report(job, tmp_path, data_cache):
    first, first_reporter, _ = job
    again, reporter = run_tiny_job(tiny_spec(), tmp_path, data_cache)
    assert without_timing(again.report) == without_timing(first.report)
    assert reporter.metrics == first_reporter.metrics


class PublishesTeachers(MemoryReporter):
    """Records the facts each kept teacher is published with (as the worker's reporter does)."""

    def __init__(self, checkpoint_dir) -> None:
        super().__init__(checkpoint_dir=checkpoint_dir)
        self.published: list[dict] = []

    def keep_teacher(self, files, facts: dict, key: str | None) -> None:
        self.published.append(facts)


def test_the_report_gives_the_teacher_figures_taken_when_it_was_kept(tmp_path, data_cache):
    # A CPU CNN teacher's second pass over every split cost ~8 s of a Fashion-MNIST job's tail.
    reporter = PublishesTeachers(tmp_path / "ck")
    result, _ = run_tiny_job(tiny_spec(baseline=False), tmp_path, data_cache, reporter=reporter)
    [kept] = reporter.published
    teacher = result.report["teacher"]
    for key in ("test_accuracy", "val_accuracy", "train_accuracy", "latency_ms", "latency_onnx_ms"):
        assert teacher[key] == kept[key], key  # the latencies: one measurement, not two that agree


def test_recomputed_soft_targets_match_cached(job, tmp_path, data_cache):
    cached = job[0].report
    spec = tiny_spec(training={"epochs": 3, "batch_size": 64, "soft_targets": "recomputed"}, baseline=False)
    recomputed = run_tiny_job(spec, tmp_path, data_cache)[0].report
    assert recomputed["soft_targets"] == "recomputed"
    for a, b in zip(cached["student"]["runs"], recomputed["student"]["runs"], strict=True):
        for key in ("test_accuracy", "val_accuracy", "train_accuracy", "test_nll", "test_ece"):
            assert a[key] == pytest.approx(b[key], abs=1e-4)


def test_ce_method_without_baseline(tmp_path, data_cache):
    spec = tiny_spec(method={"name": "ce"}, baseline=False, seeds=[3], export={"formats": ["safetensors"]})
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    r = result.report
    assert reporter.phases == [p for p in PHASES if p != "baseline"]
    assert r["baseline"] is None and r["soft_targets"] is None
    assert r["summary"]["student_vs_baseline_test_accuracy"] is None
    assert set(r["student"]["std"].values()) == {0.0}
    assert r["exported"]["seed"] == 3 and r["exported"]["onnx_opset"] is None
    assert [f.name for f in result.files] == ["student.safetensors", "curves.png", "report.html", "report.json"]
    assert "test_accuracy" in r["teacher"]  # the teacher is still reported


class _CancelInPhase(MemoryReporter):
    def __init__(self, phase, **kw):
        super().__init__(**kw)
        self.cancel_phase = phase

    def phase(self, name):
        super().phase(name)
        if name == self.cancel_phase:
            self.stop_requested = True


@pytest.mark.parametrize("phase", ["soft_targets", "student"])  # between phases; inside training
def test_cancellation_propagates(tmp_path, data_cache, phase):
    reporter = _CancelInPhase(phase, checkpoint_dir=tmp_path / "ck")
    with pytest.raises(Cancelled):
        run_job(tiny_spec(), reporter, tmp_path / "work", data_cache)
    assert reporter.phases[-1] == phase
    assert not (tmp_path / "work" / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_job_reports_fp32_numbers_that_the_onnx_file_reproduces(tmp_path, data_cache, digits):
    # Training runs under bf16 autocast; the report's metrics are fp32 on the CPU.
    spec = tiny_spec(training={"epochs": 3, "batch_size": 64, "device": "cuda"}, seeds=[0], baseline=False)
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    assert result.report["device"] == "cuda" and reporter.progresses[-1] == 1.0
    onnx_path = next(f.path for f in result.files if f.kind == "onnx")
    assert onnx_accuracy(onnx_path, digits.test.x, digits.test.y) == result.report["exported"]["test_accuracy"]


def test_compiled_job_reports_what_the_eager_one_does(job, tmp_path, data_cache):
    # training.compile: the students' forward pass and the live teacher's go through
    # torch.compile (inductor, C++ on the CPU). Fused kernels may round differently from
    # eager ones, so the figures agree to a tolerance, not bit for bit.
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    training = {"epochs": 3, "batch_size": 64, "soft_targets": "recomputed", "compile": True}
    compiled = run_tiny_job(tiny_spec(training=training, seeds=[0], baseline=False), tmp_path, data_cache)[0].report
    assert counters["stats"]["unique_graphs"] >= graphs + 2  # the student and the live teacher
    eager = job[0].report["student"]["runs"][0]
    (run,) = compiled["student"]["runs"]
    assert run["seed"] == eager["seed"] == 0
    for key in ("test_accuracy", "val_accuracy", "train_accuracy", "test_nll", "test_ece"):
        assert run[key] == pytest.approx(eager[key], abs=2e-3)
