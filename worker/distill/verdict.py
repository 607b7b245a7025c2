"""The verdict on a finished job: did distillation help, and what a person should be warned about.

It reads the report the pipeline assembled (report.py's shape: teacher, student and baseline
sections with per-seed runs), the job's spec and its dataset splits, and returns two new report
sections: `verdict` and `reproducibility`. Every warning is also sent as a Reporter event.

The comparison is paired: the student and the baseline of one seed start from the same weights
and see the same batches (pipeline.py), so the per-seed difference cancels most of the seed's
own luck, and a paired t-test over the seeds says whether the mean difference is beyond noise.
"""

from __future__ import annotations

import hashlib
import math
import platform
import statistics
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
from scipy.special import stdtr  # the t distribution's CDF; scipy.stats costs a second to import

from app.contract.spec import JobSpec
from worker.distill.data import ArraySplit, Splits
from worker.distill.report import json_safe
from worker.distill.reporting import Reporter

SIGNIFICANCE = 0.05  # two-sided p-value of the paired t-test below which a difference is real
CHANCE_MARGIN = 0.10  # "near chance": within this share of the way from chance to perfect
MIN_STEPS_PER_EPOCH = 10
PACKAGES = ("torch", "torchvision", "timm", "onnxruntime", "numpy")


@dataclass(frozen=True)
class Finding:
    """One warning: a stable code for programs, a sentence for people, the figures behind it."""

    code: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the comparison


def paired_difference(student: dict, baseline: dict, key: str = "test_accuracy") -> dict[str, Any]:
    """student - baseline per seed (runs matched by seed), its mean, std and paired t-test."""
    base = {r["seed"]: r[key] for r in baseline["runs"]}
    pairs = [(r["seed"], r[key], base.get(r["seed"])) for r in student["runs"]]
    per_seed = [{"seed": seed, "difference": s - b} for seed, s, b in pairs if s is not None and b is not None]
    diffs = [d["difference"] for d in per_seed]
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else None
    std = statistics.stdev(diffs) if n > 1 else None
    p_value = None
    if mean is not None and std == 0:
        p_value = 1.0 if mean == 0 else 0.0  # every seed moved by exactly the same amount
    elif mean is not None and std is not None:
        p_value = two_sided_t_test(mean, std, n)
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "per_seed": per_seed,
        "p_value": p_value,
        "beyond_noise": None if p_value is None else p_value < SIGNIFICANCE,
    }


def two_sided_t_test(mean: float, std: float, n: int) -> float:
    """The p-value of a one-sample t-test of n values against 0 (scipy.stats.ttest_1samp's, to
    1e-14), from their mean and standard deviation (ddof 1)."""
    t = mean / (std / math.sqrt(n))
    return float(2 * stdtr(n - 1, -abs(t)))


def outcome(diff: dict[str, Any]) -> str:
    """helped | hurt | within_noise | undetermined (no baseline, or one seed: no spread to judge by)."""
    if diff["beyond_noise"] is None:
        return "undetermined"
    if not diff["beyond_noise"]:
        return "within_noise"
    return "helped" if diff["mean"] > 0 else "hurt"


def gap_closed(teacher_acc: float | None, student_acc: float, baseline_acc: float) -> float | None:
    """(student - baseline) / (teacher - baseline): 1 = the student matches its teacher, 0 = no gain.
    Undefined when the teacher is no better than the scratch baseline."""
    if teacher_acc is None or teacher_acc <= baseline_acc:
        return None
    return (student_acc - baseline_acc) / (teacher_acc - baseline_acc)


def _mean_std(section: dict | None, key: str) -> dict[str, float | None] | None:
    if section is None or key not in section["mean"]:
        return None
    return {"mean": section["mean"][key], "std": section["std"][key]}


def calibration(report: dict) -> dict[str, Any]:
    """Expected calibration error and NLL on the test split (lower is better), student vs baseline."""
    student, baseline = report["student"], report.get("baseline")
    out: dict[str, Any] = {
        "teacher_ece": report["teacher"].get("test_ece"),
        "student_ece": _mean_std(student, "test_ece"),
        "baseline_ece": _mean_std(baseline, "test_ece"),
        "student_nll": _mean_std(student, "test_nll"),
        "baseline_nll": _mean_std(baseline, "test_nll"),
        "better_calibrated": None,
    }
    if baseline is not None:
        ece = paired_difference(student, baseline, "test_ece")
        out["ece_student_minus_baseline"] = {"mean": ece["mean"], "std": ece["std"]}
        if ece["beyond_noise"]:
            out["better_calibrated"] = "student" if ece["mean"] < 0 else "baseline"
    return out


# --------------------------------------------------------------------------- warnings


def _teacher_runs(teacher: dict) -> list[tuple[str, dict]]:
    """(label, report facts) of each trained teacher: the teacher, or each ensemble member."""
    members = teacher.get("members")
    if members:
        return [(f"teacher member={m['member']}", m) for m in members]
    return [("teacher", teacher)]


def teacher_findings(report: dict, splits: Splits) -> list[Finding]:
    """The teacher under-fits: validation accuracy near chance, or no better epoch after the first."""
    counts = np.bincount(np.asarray(splits.val.y), minlength=report["dataset"]["num_classes"])
    chance = float(counts.max() / counts.sum())  # always guessing the commonest class
    threshold = chance + CHANCE_MARGIN * (1 - chance)
    findings = []
    for label, facts in _teacher_runs(report["teacher"]):
        acc = facts.get("val_accuracy")
        if acc is not None and acc < threshold:
            findings.append(
                Finding(
                    "teacher_near_chance",
                    f"the {label} reaches {acc:.1%} validation accuracy, near chance ({chance:.1%}): it has learned "
                    "little, so its soft targets carry little; train it longer, with a higher learning rate or a "
                    "bigger architecture",
                    {"run": label, "val_accuracy": acc, "chance": chance, "threshold": threshold},
                )
            )
        if facts.get("best_epoch") == 1 and (facts.get("epochs_run") or 0) > 1:
            findings.append(
                Finding(
                    "teacher_best_at_first_epoch",
                    f"the {label}'s validation accuracy never improved after epoch 1 (of {facts['epochs_run']} run"
                    + (", stopped early" if facts.get("stopped_early") else "")
                    + "): its learning rate may be too high, or patience too short",
                    {
                        "run": label,
                        "best_epoch": 1,
                        "epochs_run": facts["epochs_run"],
                        "stopped_early": facts.get("stopped_early"),
                    },
                )
            )
    return findings


def comparison_findings(report: dict, diff: dict[str, Any] | None) -> list[Finding]:
    findings = []
    teacher_acc = report["teacher"].get("test_accuracy")
    baseline = report.get("baseline")
    if diff is not None and diff["mean"] is not None and diff["mean"] < 0:
        noise = {
            True: "beyond the seeds' spread",
            False: "within the seeds' spread",
            None: "with one seed, no spread to judge by",
        }[diff["beyond_noise"]]
        findings.append(
            Finding(
                "student_worse_than_baseline",
                f"the distilled student is {-diff['mean'] * 100:.2f} points below the same student trained without "
                f"a teacher ({noise}): distillation did not pay off with these settings",
                {
                    "kd_minus_scratch_mean": diff["mean"],
                    "kd_minus_scratch_std": diff["std"],
                    "p_value": diff["p_value"],
                    "seeds": diff["n"],
                },
            )
        )
    if baseline is not None and teacher_acc is not None and teacher_acc <= baseline["mean"]["test_accuracy"]:
        findings.append(
            Finding(
                "teacher_not_better_than_baseline",
                f"the teacher ({teacher_acc:.1%} test accuracy) is no better than the student trained from scratch "
                f"({baseline['mean']['test_accuracy']:.1%}): there is no gap for distillation to close",
                {"teacher_test_accuracy": teacher_acc, "baseline_test_accuracy": baseline["mean"]["test_accuracy"]},
            )
        )
    t_params, s_params = report["teacher"].get("parameters"), report["student"]["mean"].get("parameters")
    if t_params is not None and s_params is not None and s_params > t_params:
        findings.append(
            Finding(
                "student_larger_than_teacher",
                f"the student has more parameters ({s_params:,.0f}) than its teacher ({t_params:,.0f}): this is not "
                "compression; pick a smaller student architecture",
                {"student_parameters": s_params, "teacher_parameters": t_params},
            )
        )
    return findings


def steps_findings(report: dict, spec: JobSpec) -> list[Finding]:
    """Fewer than MIN_STEPS_PER_EPOCH optimizer steps per epoch: the epoch budget buys few updates."""
    data = report["dataset"]
    runs = [("student and baseline", data["train_size"] + data.get("transfer_size", 0), spec.training.batch_size)]
    runs += [(label, data["teacher_train_size"], member.batch_size) for label, member in _trained_members(spec)]
    findings = []
    for label, rows, batch_size in runs:
        steps = math.ceil(rows / batch_size)
        if steps < MIN_STEPS_PER_EPOCH:
            findings.append(
                Finding(
                    "few_steps_per_epoch",
                    f"the {label} take only {steps} optimizer step{'s' if steps != 1 else ''} per epoch ({rows} "
                    f"training examples, batch size {batch_size}): lower the batch size or raise the epochs",
                    {
                        "run": label,
                        "steps_per_epoch": steps,
                        "train_size": rows,
                        "batch_size": batch_size,
                        "minimum": MIN_STEPS_PER_EPOCH,
                    },
                )
            )
    return findings


def _trained_members(spec: JobSpec) -> list[tuple[str, Any]]:
    members = spec.teacher.members
    return [
        ("teacher" if len(members) == 1 else f"teacher member={i}", m)
        for i, m in enumerate(members, 1)
        if hasattr(m, "batch_size")
    ]  # brought ones are not trained


def row_digests(x: np.ndarray) -> list[bytes]:
    """A 128-bit digest of each row's bytes: equal rows, equal digests."""
    rows = np.ascontiguousarray(x).reshape(len(x), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def duplicate_rows(train: ArraySplit, test: ArraySplit) -> dict[str, Any]:
    """How many test rows are byte-for-byte a training row."""
    seen = set(row_digests(train.x))
    count = sum(d in seen for d in row_digests(test.x))
    return {"count": count, "fraction": count / len(test) if len(test) else 0.0, "test_size": len(test)}


def duplicate_findings(duplicates: dict[str, Any]) -> list[Finding]:
    if duplicates["count"] == 0:
        return []
    return [
        Finding(
            "test_rows_in_train",
            f"{duplicates['count']} of the {duplicates['test_size']} test rows ({duplicates['fraction']:.1%}) are "
            "identical to training rows: test accuracy overstates how the model does on new data",
            dict(duplicates),
        )
    ]


# --------------------------------------------------------------------------- words


def summary_text(verdict: dict[str, Any]) -> str:
    """One or two sentences a person can act on."""
    diff = verdict["kd_minus_scratch"]
    if diff is None or diff["mean"] is None:
        return "No scratch baseline was trained (baseline: false), so the job cannot say whether distillation helped."
    points = f"{diff['mean'] * 100:+.2f} points"
    if verdict["outcome"] == "undetermined":
        return (
            f"The student is {points} against its scratch baseline with one seed: run 3 or more seeds to tell "
            "an effect from noise."
        )
    lead = {"helped": "Distillation helped", "hurt": "Distillation hurt", "within_noise": "No clear effect"}
    where = "within" if verdict["outcome"] == "within_noise" else "beyond"
    text = (
        f"{lead[verdict['outcome']]}: the student is {points} ± {diff['std'] * 100:.2f} against its scratch "
        f"baseline over {diff['n']} seeds, {where} the seeds' spread (paired t-test p = {diff['p_value']:.3g})."
    )
    if verdict["gap_closed"] is not None and verdict["gap_closed"] >= 0:
        text += f" It closed {verdict['gap_closed']:.0%} of the gap between the scratch student and the teacher."
    return text


# --------------------------------------------------------------------------- provenance


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def split_sha256(split: ArraySplit) -> str:
    """sha256 of a split as the job saw it: each array's dtype, shape and bytes."""
    h = hashlib.sha256()
    for a in (split.x, split.y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def reproducibility(spec: JobSpec, report: dict, splits: Splits, job_id: str | None = None) -> dict[str, Any]:
    """What it takes to run the job again and get the same figures."""
    parts = {name: getattr(splits, name) for name in ("train", "val", "test")}
    hashes = {name: split_sha256(part) for name, part in parts.items()}
    return {
        "job_id": job_id,
        "spec": spec.model_dump(mode="json"),
        "seeds": list(spec.seeds),
        "device": report.get("device"),
        "software": {
            "python": platform.python_version(),
            **{p: _version(p) for p in PACKAGES},
            "platform": platform.platform(),
        },
        "dataset": {
            "name": report["dataset"]["name"],
            "artifact": report["dataset"].get("artifact"),
            "sha256": hashlib.sha256("".join(hashes.values()).encode()).hexdigest(),
            "splits": {name: {"rows": len(part), "sha256": hashes[name]} for name, part in parts.items()},
        },
    }


# --------------------------------------------------------------------------- the whole


def judge(report: dict, spec: JobSpec, splits: Splits) -> dict[str, Any]:
    """The `verdict` section (no events)."""
    student, baseline, teacher = report["student"], report.get("baseline"), report["teacher"]
    diff = paired_difference(student, baseline) if baseline is not None else None
    duplicates = duplicate_rows(splits.train, splits.test)
    findings = (
        teacher_findings(report, splits)
        + comparison_findings(report, diff)
        + duplicate_findings(duplicates)
        + steps_findings(report, spec)
    )
    result = outcome(diff) if diff is not None else "undetermined"
    verdict: dict[str, Any] = {
        "helped": {"helped": True, "hurt": False}.get(result),
        "outcome": result,
        "kd_minus_scratch": diff,
        "student_test_accuracy": _mean_std(student, "test_accuracy"),
        "baseline_test_accuracy": _mean_std(baseline, "test_accuracy"),
        "teacher_test_accuracy": teacher.get("test_accuracy"),
        "gap_closed": (
            gap_closed(
                teacher.get("test_accuracy"), student["mean"]["test_accuracy"], baseline["mean"]["test_accuracy"]
            )
            if baseline is not None
            else None
        ),
        "calibration": calibration(report),
        "duplicates": duplicates,
        "significance": SIGNIFICANCE,
        "warnings": [asdict(f) for f in findings],
    }
    verdict["summary"] = summary_text(verdict)
    return verdict


def assess(
    report: dict, spec: JobSpec, splits: Splits, *, reporter: Reporter | None = None, job_id: str | None = None
) -> dict[str, Any]:
    """{"verdict": ..., "reproducibility": ...}, plain JSON, to merge into the report. Each warning
    goes to `reporter` (a worker.distill.reporting.Reporter) as a warning event, then the summary."""
    verdict = json_safe(judge(report, spec, splits))
    if reporter is not None:
        for w in verdict["warnings"]:
            reporter.event(f"warning ({w['code']}): {w['message']}", level="warning")
        reporter.event(f"verdict: {verdict['summary']}")
    return {"verdict": verdict, "reproducibility": json_safe(reproducibility(spec, report, splits, job_id))}
