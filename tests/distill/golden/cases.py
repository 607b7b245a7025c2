"""The golden set: small specs run through the engine, their outcome compared with one
recorded from the code before the engine was reshaped (issue 9).  The figures must match
exactly on the CPU: a change of shape must not change a number.

Exactly, on one kind of machine: these tiny runs are chaotic, and a CPU whose kernels sum in
another order (this is not torch's ISA level alone: forcing ATEN_CPU_CAPABILITY and
ONEDNN_MAX_CPU_ISA to AVX2 did not reproduce machine-a) drifts from the first validation loss on
(1e-6 relative) to other accuracies by the last epoch. So each kind of machine has its own
recording, and an outcome must equal one of them exactly:
- machine-a/: recorded before the reshaping, on the machines of the first sessions (CI passed
  on it through stop 17);
- machine-b/: an "Intel(R) Xeon(R) Processor" with AVX512 (session 5), recorded from main at
  ffcd3e8, the code that matched machine-a exactly in CI.
- machine-c/: an "AMD EPYC" with AVX2 (session 6), recorded from main at 00ee7c3, the code that
  passed CI at stop 18.
A new kind of machine fails here with the diff against the closest recording: record it from
a commit that passes on a recorded machine (record.py), never from the change under test.

Each case gives the spec and how to run it; `outcome` runs it and keeps what a job shows:
the report (wall-clock figures removed), the phases, the metric series, the events and the
progress.  The ONNX teacher is a committed file (teacher.onnx, with the inspection the API
made of it), so the set does not depend on scikit-learn's version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.engine import DiesAt, Killed, without_timing
from tests.support.specs import CNN, MLP
from worker.distill.inputs import BroughtTeacher, JobInputs
from worker.distill.pipeline import run_job
from worker.distill.reporting import MemoryReporter

HERE = Path(__file__).resolve().parent
ONNX_ID = "onnx-teacher"

BASE: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": CNN, "epochs": 3, "patience": 2}},
    "student": {"arch": MLP},
    "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
    "training": {"epochs": 2, "batch_size": 64},
    "seeds": [0],
    "baseline": False,
    "export": {"formats": ["safetensors"]},
}


@dataclass(frozen=True)
class Case:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    onnx_teacher: bool = False
    crash_at: tuple | None = None  # ("batch", phase, run, epoch): killed there, then resumed

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **BASE, **self.overrides}


CASES = [
    Case("kd", {"seeds": [0, 1], "baseline": True}),
    Case("dkd", {"method": {"name": "dkd", "warmup_epochs": 1}}),
    Case("fitnet", {"method": {"name": "fitnet"}}),
    Case(
        "attention",
        {"method": {"name": "attention"}, "student": {"arch": {"name": "cnn", "channels": [4], "hidden": 0}}},
    ),
    Case("adversarial", {"method": {"name": "adversarial"}}),
    Case(
        "born-again",
        {
            "teacher": {"train": {"arch": MLP, "epochs": 2}},
            "method": {"name": "born_again", "generations": 2},
            "seeds": [0, 1],
        },
    ),
    Case(
        "teacher-assistant",
        {
            "method": {
                "name": "teacher_assistant",
                "assistants": [{"name": "mlp", "hidden": [32]}, {"name": "mlp", "hidden": [24]}],
            },
            "baseline": True,
        },
    ),
    Case(
        "ensemble",
        {"teacher": {"ensemble": [{"arch": MLP, "epochs": 2, "seed": 1}, {"arch": CNN, "epochs": 2, "seed": 2}]}},
    ),
    Case(
        "transfer-set",
        {
            "dataset": {"name": "mnist1d", "train_fraction": 0.5, "transfer": {"extra_generated": 400}},
            "teacher": {"train": {"arch": {"name": "mlp", "hidden": [32]}, "epochs": 2}},
            "baseline": True,
        },
    ),
    Case(
        "augmented",
        {
            "training": {
                "epochs": 2,
                "batch_size": 64,
                "lr_schedule": "constant",
                "augment": {"noise_std": 0.1, "shift": 1, "scale": 0.1},
            }
        },
    ),
    Case(
        "pseudo-label",
        {
            "method": {"name": "pseudo_label"},
            "training": {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.05},
        },
    ),
    Case(
        "onnx-teacher",
        {"teacher": {"artifact": {"id": ONNX_ID}}, "baseline": True, "export": {"formats": ["safetensors", "onnx"]}},
        onnx_teacher=True,
    ),
    Case("resumed", {"seeds": [0, 1], "baseline": True}, crash_at=("batch", "student", "seed=1", 1)),
]


def _inputs(case: Case) -> JobInputs:
    if not case.onnx_teacher:
        return JobInputs()
    inspection = json.loads((HERE / "teacher.inspection.json").read_text())
    return JobInputs(teachers={ONNX_ID: BroughtTeacher(HERE / "teacher.onnx", "onnx", inspection)})


def outcome(case: Case, tmp: Path, data_cache: Path) -> dict[str, Any]:
    """Run the case (crash and resume it when asked); what the last attempt showed, as JSON."""
    from app.contract.spec import JobSpec

    spec = JobSpec.model_validate(case.spec())
    attempts = []
    if case.crash_at is not None:
        dead = DiesAt(tmp / "ck", case.crash_at)
        try:
            run_job(spec, dead, tmp / "work0", data_cache, _inputs(case))
        except Killed:
            attempts.append(_shown(dead))
        else:
            raise AssertionError(f"{case.name}: the crash at {case.crash_at} never came")
    reporter = MemoryReporter(checkpoint_dir=tmp / "ck")
    result = run_job(spec, reporter, tmp / "work", data_cache, _inputs(case))
    shown = {
        "report": without_later_additions(without_timing(result.report)),
        **_shown(reporter),
        "files": sorted(f.name for f in result.files if f.name not in ADDED_FILES),
    }
    if attempts:
        shown["crashed_attempt"] = attempts[0]
    return json.loads(json.dumps(shown))  # tuples -> lists, as the recorded file has them


# What jobs show now that they did not when the cases were recorded: the verdict and its
# provenance (their own tests: tests/distill/test_verdict.py, test_plots.py). Everything else must
# be what it was, bit for bit.
ADDED_REPORT_KEYS = ("verdict", "reproducibility")
ADDED_FILES = ("curves.png", "report.html")
ADDED_EVENTS = ("warning (", "verdict: ")


def without_later_additions(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ADDED_REPORT_KEYS}


def _shown(reporter: MemoryReporter) -> dict[str, Any]:
    events = [e for e in reporter.events if not e[1].startswith(ADDED_EVENTS)]  # (level, message)
    return {"phases": reporter.phases, "metrics": reporter.metrics, "events": events, "progress": reporter.progresses}


MACHINES = ("machine-a", "machine-b", "machine-c")


def recorded_path(case: Case, machine: str) -> Path:
    return HERE / machine / f"{case.name}.json"
