"""The verdict: crafted reports for each outcome and each warning, then a real tiny digits job."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from PIL import Image

from tests.support.specs import tiny_spec
from worker.distill import verdict as v
from worker.distill.data import ArraySplit, Splits
from worker.distill.pipeline import run_job
from worker.distill.plots import figure_size
from worker.distill.report import aggregate
from worker.distill.report_html import write_report_files
from worker.distill.reporting import MemoryReporter

SEEDS = [0, 1, 2]


def _runs(accuracies, **fields):
    rows = [
        {
            "seed": s,
            "test_accuracy": a,
            "val_accuracy": a,
            "test_ece": 0.05,
            "test_nll": 0.3,
            "parameters": fields.get("parameters", 1000),
            "best_epoch": 5,
            "epochs_run": 10,
            "stopped_early": False,
        }
        for s, a in zip(SEEDS, accuracies, strict=False)
    ]
    return {"arch": {"name": "mlp"}, **aggregate(rows)}


def crafted(
    student,
    baseline=None,
    *,
    teacher_acc=0.95,
    teacher_val=0.95,
    teacher_params=50_000,
    student_params=1000,
    train_size=1000,
    teacher_train_size=5000,
    teacher=None,
):
    """A report in report.py's shape, with the figures a test chooses."""
    return {
        "name": "crafted",
        "dataset": {
            "name": "digits",
            "num_classes": 10,
            "train_size": train_size,
            "teacher_train_size": teacher_train_size,
            "transfer_size": 0,
            "val_size": 100,
            "test_size": 10,
        },
        "device": "cpu",
        "teacher": teacher
        or {
            "test_accuracy": teacher_acc,
            "val_accuracy": teacher_val,
            "test_ece": 0.02,
            "parameters": teacher_params,
            "best_epoch": 8,
            "epochs_run": 10,
            "stopped_early": False,
        },
        "student": _runs(student, parameters=student_params),
        "baseline": _runs(baseline, parameters=student_params) if baseline is not None else None,
    }


def splits(duplicated: int = 0) -> Splits:
    """Distinct random rows, 10 balanced classes; `duplicated` test rows copied from train."""
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 4)).astype(np.float32)
    test = rng.normal(size=(10, 4)).astype(np.float32)
    test[:duplicated] = train[5 : 5 + duplicated]
    y10 = np.arange(10, dtype=np.int64)
    return Splits(
        ArraySplit(train, np.tile(y10, 5)),
        ArraySplit(rng.normal(size=(10, 4)).astype(np.float32), y10),
        ArraySplit(test, y10),
        (4,),
        10,
    )


@pytest.fixture
def spec():
    return tiny_spec(seeds=SEEDS, training={"epochs": 3, "batch_size": 64})


def codes(verdict):
    return [w["code"] for w in verdict["warnings"]]


def test_helped_beyond_the_spread(spec):
    out = v.assess(crafted([0.90, 0.91, 0.93], [0.85, 0.855, 0.87]), spec, splits())["verdict"]
    assert out["helped"] is True and out["outcome"] == "helped"
    diffs = [0.05, 0.055, 0.06]
    assert out["kd_minus_scratch"]["mean"] == pytest.approx(statistics.fmean(diffs))
    assert out["kd_minus_scratch"]["std"] == pytest.approx(statistics.stdev(diffs))
    assert [d["seed"] for d in out["kd_minus_scratch"]["per_seed"]] == SEEDS
    assert out["kd_minus_scratch"]["p_value"] < 0.05
    assert out["gap_closed"] == pytest.approx((0.91333333 - 0.85833333) / (0.95 - 0.85833333), rel=1e-5)
    assert out["summary"].startswith("Distillation helped")
    assert codes(out) == []


def test_hurt_beyond_the_spread_warns(spec):
    out = v.assess(crafted([0.85, 0.855, 0.87], [0.90, 0.91, 0.93]), spec, splits())["verdict"]
    assert out["helped"] is False and out["outcome"] == "hurt"
    assert codes(out) == ["student_worse_than_baseline"]
    figures = out["warnings"][0]["figures"]
    assert figures["kd_minus_scratch_mean"] == pytest.approx(-0.055) and figures["seeds"] == 3
    assert "It closed" not in out["summary"]  # a negative share of the gap is not "closed"


def test_a_difference_within_the_seeds_spread_is_no_verdict(spec):
    out = v.assess(crafted([0.90, 0.86, 0.885], [0.88, 0.87, 0.88]), spec, splits())["verdict"]
    assert out["helped"] is None and out["outcome"] == "within_noise"
    assert out["kd_minus_scratch"]["beyond_noise"] is False
    assert "within the seeds' spread" in out["summary"]


def test_one_seed_cannot_tell(spec):
    report = crafted([0.9], [0.8])
    out = v.assess(report, spec, splits())["verdict"]
    assert out["outcome"] == "undetermined" and out["helped"] is None
    assert out["kd_minus_scratch"]["std"] is None and out["kd_minus_scratch"]["mean"] == pytest.approx(0.1)
    assert "3 or more seeds" in out["summary"]


def test_no_baseline_no_comparison(spec):
    out = v.assess(crafted([0.9, 0.9, 0.9]), spec, splits())["verdict"]
    assert out["helped"] is None and out["kd_minus_scratch"] is None and out["gap_closed"] is None
    assert "baseline" in out["summary"]


def test_calibration_compares_ece_per_seed(spec):
    report = crafted([0.9, 0.9, 0.9], [0.9, 0.9, 0.9])
    for i, r in enumerate(report["student"]["runs"]):
        r["test_ece"] = 0.02 + 0.001 * i
    report["student"] = {"arch": {}, **aggregate(report["student"]["runs"])}
    cal = v.assess(report, spec, splits())["verdict"]["calibration"]
    assert cal["better_calibrated"] == "student"
    assert cal["ece_student_minus_baseline"]["mean"] == pytest.approx(0.021 - 0.05)
    assert cal["student_ece"]["mean"] == pytest.approx(0.021) and cal["teacher_ece"] == 0.02


@pytest.mark.parametrize(
    "case, code",
    [
        ({"teacher_val": 0.12}, "teacher_near_chance"),
        ({"teacher_acc": 0.80}, "teacher_not_better_than_baseline"),
        ({"student_params": 60_000}, "student_larger_than_teacher"),
        ({"train_size": 100}, "few_steps_per_epoch"),
    ],
)
def test_each_warning(spec, case, code):
    out = v.assess(crafted([0.9, 0.91, 0.92], [0.85, 0.86, 0.87], **case), spec, splits())["verdict"]
    assert code in codes(out)
    warning = next(w for w in out["warnings"] if w["code"] == code)
    assert warning["message"] and warning["figures"]


def test_few_steps_figures(spec):
    out = v.assess(crafted([0.9] * 3, [0.85] * 3, train_size=100), spec, splits())["verdict"]
    student = next(
        w
        for w in out["warnings"]
        if w["code"] == "few_steps_per_epoch" and w["figures"]["run"] == "student and baseline"
    )
    assert student["figures"]["steps_per_epoch"] == 2 and student["figures"]["batch_size"] == 64


def test_teacher_best_at_first_epoch_each_ensemble_member(spec):
    members = [
        {"member": 1, "val_accuracy": 0.9, "best_epoch": 1, "epochs_run": 3, "stopped_early": True},
        {"member": 2, "val_accuracy": 0.9, "best_epoch": 3, "epochs_run": 3, "stopped_early": False},
    ]
    teacher = {"test_accuracy": 0.95, "val_accuracy": 0.95, "parameters": 50_000, "members": members}
    out = v.assess(crafted([0.9] * 3, [0.85] * 3, teacher=teacher), spec, splits())["verdict"]
    firsts = [w for w in out["warnings"] if w["code"] == "teacher_best_at_first_epoch"]
    assert [w["figures"]["run"] for w in firsts] == ["teacher member=1"]
    assert firsts[0]["figures"]["stopped_early"] is True


def test_test_rows_in_train_are_counted(spec):
    out = v.assess(crafted([0.9] * 3, [0.85] * 3), spec, splits(duplicated=3))["verdict"]
    assert out["duplicates"] == {"count": 3, "fraction": 0.3, "test_size": 10}
    assert codes(out) == ["test_rows_in_train"]
    assert v.assess(crafted([0.9] * 3, [0.85] * 3), spec, splits())["verdict"]["duplicates"]["count"] == 0


def test_every_warning_is_an_event(spec):
    reporter = MemoryReporter(checkpoint_dir=None)
    report = crafted([0.85, 0.855, 0.87], [0.90, 0.91, 0.93], teacher_val=0.1, train_size=100)
    out = v.assess(report, spec, splits(duplicated=1), reporter=reporter)["verdict"]
    warned = [m for level, m in reporter.events if level == "warning"]
    assert len(warned) == len(out["warnings"]) >= 4
    for w, message in zip(out["warnings"], warned, strict=True):
        assert w["code"] in message and w["message"] in message
    assert reporter.events[-1] == ("info", f"verdict: {out['summary']}")


def test_reproducibility_block(spec):
    block = v.assess(crafted([0.9] * 3, [0.85] * 3), spec, splits(), job_id="job-42")["reproducibility"]
    assert block["job_id"] == "job-42"
    assert block["spec"]["training"]["batch_size"] == 64 and block["seeds"] == SEEDS
    assert set(block["software"]) >= {"python", "torch", "torchvision", "timm", "onnxruntime", "numpy"}
    assert block["software"]["torch"] and block["software"]["numpy"] == np.__version__
    assert {k: p["rows"] for k, p in block["dataset"]["splits"].items()} == {"train": 50, "val": 10, "test": 10}
    changed = splits()
    changed.test.x[0, 0] += 1
    other = v.reproducibility(spec, crafted([0.9] * 3), changed)["dataset"]
    assert other["splits"]["train"]["sha256"] == block["dataset"]["splits"]["train"]["sha256"]
    assert other["splits"]["test"]["sha256"] != block["dataset"]["splits"]["test"]["sha256"]
    assert other["sha256"] != block["dataset"]["sha256"]


# --------------------------------------------------------------------------- a real job


def _histories(metrics):
    out = {}
    for phase, run, epoch, values in metrics:
        out.setdefault((phase, run), []).append({"epoch": epoch, **values})
    return out


def test_a_real_tiny_digits_job(tmp_path, data_cache, digits):
    spec = tiny_spec(
        training={"epochs": 2, "batch_size": 64},
        teacher={"train": {"arch": {"name": "cnn", "channels": [8], "hidden": 16}, "epochs": 2}},
    )
    reporter = MemoryReporter(checkpoint_dir=None)
    report = run_job(spec, reporter, tmp_path / "work", data_cache).report
    out = report["verdict"]  # the pipeline judged its own report
    before = {k: val for k, val in report.items() if k not in ("verdict", "reproducibility")}
    added = v.assess(before, spec, digits, job_id="job-1")
    json.dumps(added, allow_nan=False)  # plain JSON, as the report must be
    assert added["verdict"] == out
    pairs = [
        (s["test_accuracy"], b["test_accuracy"])
        for s, b in zip(report["student"]["runs"], report["baseline"]["runs"], strict=False)
    ]
    assert out["kd_minus_scratch"]["n"] == len(spec.seeds) == 2
    assert out["kd_minus_scratch"]["mean"] == pytest.approx(statistics.fmean(s - b for s, b in pairs))
    assert out["outcome"] in {"helped", "hurt", "within_noise"} and out["summary"]
    train_rows = {row.tobytes() for row in digits.train.x}
    assert out["duplicates"]["count"] == sum(row.tobytes() in train_rows for row in digits.test.x)
    assert added["reproducibility"]["dataset"]["splits"]["test"]["rows"] == len(digits.test)
    assert sum(level == "warning" and m.startswith("warning (") for level, m in reporter.events) == len(out["warnings"])

    files = write_report_files({**report, **added}, _histories(reporter.metrics), tmp_path / "work" / "out")
    assert [f.name for f in files] == ["curves.png", "report.html"]
    with Image.open(files[0].path) as png:
        assert png.format == "PNG" and png.size == figure_size(3)  # teacher, student, baseline
    page = files[1].path.read_text()
    assert out["summary"].replace("'", "&#39;") in page


@pytest.mark.parametrize("diffs", [[0.01, 0.03], [0.02, -0.01, 0.005], [0.1, 0.11, 0.09, 0.12, 0.1]])
def test_the_t_test_is_scipys(diffs):
    from scipy import stats

    p = v.two_sided_t_test(statistics.fmean(diffs), statistics.stdev(diffs), len(diffs))
    assert p == pytest.approx(float(stats.ttest_1samp(diffs, 0.0).pvalue), rel=1e-12)
