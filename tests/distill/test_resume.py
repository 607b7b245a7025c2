"""Checkpoints and resume: a job whose worker died resumes from its last checkpoint and
ends with the report (and metrics) of an uninterrupted run of the same spec.

A "crash" is a reporter that raises Killed at a chosen point, as SIGKILL would end the
process there: nothing after that point runs, what was already written stays.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from app.contract.architectures import MLPArch
from app.contract.spec import OptimSpec
from tests.support.engine import DiesAt, Killed, without_timing
from tests.support.specs import tiny_spec
from worker.distill import checkpoint
from worker.distill.data import input_stats
from worker.distill.inference import predict_logits
from worker.distill.models import build_model
from worker.distill.objectives import CE, KD
from worker.distill.pipeline import run_job
from worker.distill.reporting import MemoryReporter
from worker.distill.signals import CachedLogits
from worker.distill.trainer import train

CPU = torch.device("cpu")
ENGINE = Path(__file__).resolve().parents[2] / "worker" / "distill"


def _series(reporters) -> dict:
    """(phase, run, epoch) -> values over all attempts; a re-delivered epoch must carry
    the very numbers it had the first time."""
    out: dict = {}
    for reporter in reporters:
        for phase, run, epoch, values in reporter.metrics:
            key = (phase, run, epoch)
            assert out.setdefault(key, values) == values, key
    return out


def _epochs(reporter, phase, run) -> list[int]:
    return [e for p, r, e, _ in reporter.metrics if (p, r) == (phase, run)]


def _messages(reporter) -> list[str]:
    return [message for _, message in reporter.events]


def _crash_then_resume(spec, crashes, tmp_path, data_cache):
    """Die at each point of `crashes` in turn, resuming every time, then finish."""
    ck = tmp_path / "ck"
    attempts = []
    for i, at in enumerate(crashes):
        reporter = DiesAt(ck, at)
        with pytest.raises(Killed):
            run_job(spec, reporter, tmp_path / f"work{i}", data_cache)
        attempts.append(reporter)
    final = MemoryReporter(checkpoint_dir=ck)
    result = run_job(spec, final, tmp_path / "work", data_cache)
    return result, [*attempts, final]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_cache):
    """The uninterrupted run, in a checkpoint folder of its own."""
    tmp = tmp_path_factory.mktemp("reference")
    reporter = MemoryReporter(checkpoint_dir=tmp / "ck")
    result = run_job(tiny_spec(), reporter, tmp / "work", data_cache)
    assert result.report["teacher"]["epochs_run"] >= 2  # the teacher crash below needs it
    return result, reporter


def _assert_same_as_reference(result, reporters, reference):
    ref_result, ref_reporter = reference
    assert without_timing(result.report) == without_timing(ref_result.report)
    assert _series(reporters) == _series([ref_reporter])
    assert all(r.progresses == sorted(r.progresses) for r in reporters)
    assert reporters[-1].progresses[-1] == 1.0


# --- the pipeline ----------------------------------------------------------------------


def test_killed_in_a_student_run_resumes_at_its_last_epoch(tmp_path, data_cache, reference):
    spec = tiny_spec()
    result, (dead, resumed) = _crash_then_resume(spec, [("batch", "student", "seed=1", 2)], tmp_path, data_cache)
    _assert_same_as_reference(result, [dead, resumed], reference)

    # Finished runs are restored, not retrained; the interrupted one goes on after epoch 2.
    assert _epochs(resumed, "teacher", "teacher") == []
    assert _epochs(resumed, "student", "seed=0") == []
    assert _epochs(resumed, "student", "seed=1") == [3]
    assert _epochs(resumed, "baseline", "seed=0") == [1, 2, 3]
    messages = _messages(resumed)
    assert "resumed student seed=1 from epoch 2 checkpoint, continuing at epoch 3 of 3" in messages
    t_epochs = result.report["teacher"]["epochs_run"]
    assert f"resumed teacher from epoch {t_epochs} checkpoint: the run had finished, not retrained" in messages
    assert "resumed student seed=0 from epoch 3 checkpoint: the run had finished, not retrained" in messages
    # The per-run summaries of finished runs were said by the attempt that finished them.
    assert not any(m.startswith(("teacher: best", "student seed=0: best")) for m in messages)
    assert any(m.startswith("student seed=1: best") for m in messages)

    # Progress starts from the work already done: the teacher's and seed 0's whole
    # budgets and 2 epochs of seed 1, of 4 runs x 3 epochs + the teacher's budget.
    planned = spec.teacher.train.epochs + 4 * spec.training.epochs
    done = spec.teacher.train.epochs + spec.training.epochs + 2
    assert resumed.progresses[0] == pytest.approx(0.95 * done / planned)
    assert resumed.progresses[0] >= dead.progresses[-1]


def test_killed_mid_teacher_resumes_the_teacher(tmp_path, data_cache, reference):
    result, (dead, resumed) = _crash_then_resume(
        tiny_spec(), [("batch", "teacher", "teacher", 1)], tmp_path, data_cache
    )
    _assert_same_as_reference(result, [dead, resumed], reference)
    assert _epochs(dead, "teacher", "teacher") == [1]
    assert _epochs(resumed, "teacher", "teacher") == list(range(2, result.report["teacher"]["epochs_run"] + 1))
    assert "resumed teacher from epoch 1 checkpoint, continuing at epoch 2 of 4" in _messages(resumed)
    assert 0 < resumed.progresses[0] < 0.5


def test_several_crashes_in_a_row(tmp_path, data_cache, reference):
    crashes = [
        ("metric", "teacher", "teacher", 2),  # metric out, checkpoint not yet: epoch 2 again
        ("batch", "student", "seed=0", 1),
        ("phase", "baseline"),  # between phases: every run so far is finished
        ("metric", "baseline", "seed=1", 3),
        ("phase", "export"),  # all training done: only evaluate/export run again
    ]
    result, reporters = _crash_then_resume(tiny_spec(), crashes, tmp_path, data_cache)
    _assert_same_as_reference(result, reporters, reference)
    teacher_epochs = result.report["teacher"]["epochs_run"]
    assert _epochs(reporters[1], "teacher", "teacher") == list(range(2, teacher_epochs + 1))  # at least once
    assert _epochs(reporters[2], "student", "seed=0") == [2, 3]
    assert _epochs(reporters[4], "baseline", "seed=1") == [3]
    assert reporters[-1].metrics == []  # nothing trained in the last attempt
    for reporter in reporters[1:]:
        assert any(m.startswith("resumed ") for m in _messages(reporter))
        assert reporter.progresses[0] > 0
    assert reporters[-1].progresses[0] == pytest.approx(0.95)  # all training was done


def test_a_bad_checkpoint_in_a_job_restarts_only_that_run(tmp_path, data_cache, reference):
    spec = tiny_spec()
    ck = tmp_path / "ck"
    with pytest.raises(Killed):
        run_job(spec, DiesAt(ck, ("batch", "student", "seed=1", 2)), tmp_path / "work0", data_cache)
    path = ck / "student-seed=1.pt"
    assert checkpoint.load(path)["epoch"] == 2
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated

    resumed = MemoryReporter(checkpoint_dir=ck)
    result = run_job(spec, resumed, tmp_path / "work", data_cache)
    assert without_timing(result.report) == without_timing(reference[0].report)
    assert _epochs(resumed, "student", "seed=1") == [1, 2, 3]
    assert _epochs(resumed, "student", "seed=0") == []  # its good checkpoint was used
    warnings = [m for level, m in resumed.events if level == "warning" and not m.startswith("warning (")]
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint of student seed=1 not used: unreadable")
    assert warnings[0].endswith("restarting student seed=1 from scratch")


# --- the trainer ---------------------------------------------------------------------


def _student(digits):
    arch = MLPArch(hidden=[16], dropout=0.2)  # dropout: the global RNG matters
    return build_model(arch, digits.input_shape, digits.num_classes, *input_stats(digits.train.x), seed=0)


def _train(model, digits, reporter, optim, objective=None, seed=0, **kw):
    return train(
        model,
        objective or CE(),
        digits.train,
        digits.val,
        optim,
        seed=seed,
        device=CPU,
        reporter=reporter,
        phase="student",
        run=f"seed={seed}",
        **kw,
    )


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


RAN: list[str] = []


def _side_effect() -> str:
    RAN.append("unpickled")
    return "boom"


class _RunsCode:
    def __reduce__(self):
        return (_side_effect, ())


def _pickled_code(path: Path) -> None:
    # What an attacker's file would hold: unpickling it calls _side_effect.
    torch.save({"format": checkpoint.FORMAT, "payload": _RunsCode()}, path)


def _misfit(path: Path) -> None:
    # Readable, ours, the right signature: but a weight of the wrong shape.
    ck = torch.load(path, weights_only=True)
    ck["model"][next(iter(ck["model"]))] = torch.zeros(3)
    torch.save(ck, path)


def _optimizer_misfit(path: Path) -> None:
    ck = torch.load(path, weights_only=True)
    ck["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    torch.save(ck, path)


def _other_run(path: Path) -> None:
    # A sound checkpoint of another run (seed 1's), under this run's name.
    path.write_bytes((path.parent / "student-seed=1.pt").read_bytes())


CORRUPTIONS = {
    "garbage": (lambda p: p.write_bytes(b"\x00not a checkpoint\xff" * 64), "unreadable"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "unreadable"),
    "empty": (lambda p: p.write_bytes(b""), "unreadable"),
    "pickled_code": (_pickled_code, "unreadable"),
    "not_ours": (lambda p: torch.save({"weights": torch.zeros(3)}, p), "not a training checkpoint"),
    "other_run": (_other_run, "it was written for a different run configuration"),
    "misfit": (_misfit, "it does not fit this run"),
    "optimizer_misfit": (_optimizer_misfit, "it does not fit this run"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_bad_checkpoint_is_not_trusted(digits, tmp_path, corruption):
    optim = OptimSpec(epochs=3, batch_size=128)
    ref_model = _student(digits)
    expected = _train(ref_model, digits, MemoryReporter(checkpoint_dir=tmp_path / "ref"), optim)
    ck = tmp_path / "ck"
    _train(_student(digits), digits, MemoryReporter(checkpoint_dir=ck), optim, seed=1)  # for "other_run"
    with pytest.raises(Killed):
        _train(_student(digits), digits, DiesAt(ck, ("batch", "student", "seed=0", 2)), optim)
    corrupt, reason = CORRUPTIONS[corruption]
    RAN.clear()
    corrupt(ck / "student-seed=0.pt")

    model, reporter = _student(digits), MemoryReporter(checkpoint_dir=ck)
    result = _train(model, digits, reporter, optim)
    assert RAN == []  # weights_only: the file's code never ran
    assert result == expected and result.resumed_epochs == 0 and _same_weights(model, ref_model)
    assert [m[2] for m in reporter.metrics] == [1, 2, 3]  # from scratch
    assert len(reporter.events) == 1
    level, message = reporter.events[0]
    assert level == "warning" and message.startswith(f"checkpoint of student seed=0 not used: {reason}")
    assert message.endswith("restarting student seed=0 from scratch")
    assert checkpoint.load(ck / "student-seed=0.pt")["finished"]  # replaced by a sound one


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("kd", [False, True])
def test_trainer_resume_is_bit_identical(digits, tmp_path, optimizer, kd):
    optim = OptimSpec(epochs=4, batch_size=128, optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 3e-3)
    kw = {}
    if kd:  # an objective with teacher logits (any fixed logits serve)
        logits = predict_logits(_student(digits), digits.train.x) * 3
        kw = {"objective": KD(4.0, 0.9), "signal": CachedLogits(logits)}
    ref_model = _student(digits)
    expected = _train(ref_model, digits, MemoryReporter(checkpoint_dir=tmp_path / "ref"), optim, **kw)

    for crash_after in (1, 2, 3):
        ck = tmp_path / f"ck{crash_after}"
        with pytest.raises(Killed):
            _train(_student(digits), digits, DiesAt(ck, ("batch", "student", "seed=0", crash_after)), optim, **kw)
        model, reporter, seen = _student(digits), MemoryReporter(checkpoint_dir=ck), []
        result = _train(model, digits, reporter, optim, on_epoch=seen.append, **kw)
        assert result == expected and result.resumed_epochs == crash_after
        assert _same_weights(model, ref_model) and not model.training
        assert [m[2] for m in reporter.metrics] == list(range(crash_after + 1, 5))
        assert seen == list(range(crash_after, 5))  # progress first jumps to the work done


def test_a_finished_run_is_restored_not_retrained(digits, tmp_path):
    # Early stopping: a learning rate too small to change a prediction.
    optim = OptimSpec(epochs=10, lr=1e-12, lr_schedule="constant", patience=2)
    first_model = _student(digits)
    first = _train(first_model, digits, MemoryReporter(checkpoint_dir=tmp_path), optim)
    assert (first.epochs_run, first.stopped_early, first.resumed_epochs) == (3, True, 0)

    model, reporter = _student(digits), MemoryReporter(checkpoint_dir=tmp_path)
    again = _train(model, digits, reporter, optim, on_epoch=lambda e: None)
    assert again == first and again.resumed_epochs == 3
    assert _same_weights(model, first_model)
    assert reporter.metrics == []
    assert reporter.events == [
        ("info", "resumed student seed=0 from epoch 3 checkpoint: the run had finished, not retrained")
    ]


def test_checkpoint_file_layout(digits, tmp_path):
    ck = tmp_path / "new" / "folder"  # created when missing
    _train(_student(digits), digits, MemoryReporter(checkpoint_dir=ck), OptimSpec(epochs=2, batch_size=256))
    # no temp file left over; the history beside the checkpoint, not inside it
    assert sorted(p.name for p in ck.iterdir()) == ["student-seed=0.pt", "student-seed=0.pt.history"]
    raw = torch.load(ck / "student-seed=0.pt", weights_only=True)
    assert "history" not in raw and raw["history_bytes"] == (ck / "student-seed=0.pt.history").stat().st_size
    saved = checkpoint.load(ck / "student-seed=0.pt")
    assert (saved["phase"], saved["run"], saved["epoch"], saved["finished"], saved["stopped_early"]) == (
        "student",
        "seed=0",
        2,
        True,
        False,
    )
    assert saved["step"] == 2 * math.ceil(len(digits.train) / 256)
    assert len(saved["history"]) == 2 and saved["best"]["epoch"] in (1, 2)
    assert set(saved["best"]["state"]) == set(saved["model"]) and saved["optimizer"]["state"]
    assert saved["cuda_rng"] is None  # a CPU run
    assert checkpoint.checkpoint_path(ck, "teacher/assistant", "seed=0 #2").name == "teacher_assistant-seed=0__2.pt"


def test_no_checkpoint_dir_means_no_checkpoints(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _train(_student(digits), digits, MemoryReporter(checkpoint_dir=None), OptimSpec(epochs=1))
    assert list(tmp_path.iterdir()) == []


def test_a_crash_while_writing_keeps_the_previous_checkpoint(digits, tmp_path, monkeypatch):
    optim = OptimSpec(epochs=4, batch_size=128)
    ref_model = _student(digits)
    expected = _train(ref_model, digits, MemoryReporter(checkpoint_dir=tmp_path / "ref"), optim)

    real_save, calls = torch.save, []

    def dies_on_the_third_write(obj, f):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"PK\x03\x04half a checkpoint")  # half a file, then the process is gone
            raise Killed("mid-write")
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", dies_on_the_third_write)
    with pytest.raises(Killed):
        _train(_student(digits), digits, MemoryReporter(checkpoint_dir=tmp_path / "ck"), optim)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert checkpoint.load(tmp_path / "ck" / "student-seed=0.pt")["epoch"] == 2

    # Even a temp file a SIGKILL left behind is neither trusted nor kept.
    (tmp_path / "ck" / ".student-seed=0.pt.x1y2.tmp").write_bytes(b"half")
    model, reporter = _student(digits), MemoryReporter(checkpoint_dir=tmp_path / "ck")
    assert _train(model, digits, reporter, optim) == expected and _same_weights(model, ref_model)
    assert [m[2] for m in reporter.metrics] == [3, 4]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["student-seed=0.pt", "student-seed=0.pt.history"]
    # epoch 3's history line, appended before the write that died, was cut off, not doubled
    history = (tmp_path / "ck" / "student-seed=0.pt.history").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2, 3, 4]


def test_checkpoints_are_written_by_time_and_at_the_end(digits, tmp_path, monkeypatch):
    optim = OptimSpec(epochs=4, batch_size=128)
    ref_model = _student(digits)
    expected = _train(ref_model, digits, MemoryReporter(checkpoint_dir=tmp_path / "ref"), optim)
    real_save, saved_epochs = torch.save, []

    def counting_save(obj, f):
        saved_epochs.append(obj["epoch"])
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", counting_save)
    hourly = MemoryReporter(checkpoint_dir=tmp_path / "ck", checkpoint_seconds=3600)
    assert _train(_student(digits), digits, hourly, optim) == expected
    assert saved_epochs == [4]  # not one per epoch: only the run's end

    # A crash before the first checkpoint is due loses the epochs so far, never the result.
    dying = DiesAt(tmp_path / "ck2", ("batch", "student", "seed=0", 2))
    dying.checkpoint_seconds = 3600
    with pytest.raises(Killed):
        _train(_student(digits), digits, dying, optim)
    model, reporter = _student(digits), MemoryReporter(checkpoint_dir=tmp_path / "ck2")
    result = _train(model, digits, reporter, optim)
    assert result == expected and result.resumed_epochs == 0 and _same_weights(model, ref_model)


def test_a_version_1_checkpoint_with_its_history_inside_is_resumed(digits, tmp_path):
    optim = OptimSpec(epochs=3, batch_size=128)
    ref_model = _student(digits)
    expected = _train(ref_model, digits, MemoryReporter(checkpoint_dir=tmp_path / "ref"), optim)
    ck = tmp_path / "ck"
    with pytest.raises(Killed):
        _train(_student(digits), digits, DiesAt(ck, ("batch", "student", "seed=0", 2)), optim)
    path = ck / "student-seed=0.pt"
    old = checkpoint.load(path)  # what version 1 held: the history inside
    old["version"] = 1
    del old["history_bytes"]
    torch.save(old, path)
    (ck / "student-seed=0.pt.history").unlink()
    model, reporter = _student(digits), MemoryReporter(checkpoint_dir=ck)
    result = _train(model, digits, reporter, optim)
    assert result == expected and result.resumed_epochs == 2 and _same_weights(model, ref_model)


def test_checkpoints_are_only_loaded_with_weights_only():
    """House rule: never unpickle. Every torch.load in the engine says weights_only=True,
    and nothing in it uses pickle directly."""
    loads = 0
    for path in sorted(ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names), path.name
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                loads += 1
                flags = {kw.arg: kw.value for kw in node.keywords}
                flag = flags.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, (
                    f"{path.name}:{node.lineno}: torch.load without weights_only=True"
                )
    assert loads >= 1  # checkpoint.load


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_run_saves_and_restores_the_cuda_rng(digits, tmp_path):
    # bf16 autocast on the GPU: bit-identity is not promised there, the RNG streams are.
    cuda = torch.device("cuda")
    optim = OptimSpec(epochs=3, batch_size=128)

    def run(reporter):
        model = _student(digits)
        result = train(
            model,
            CE(),
            digits.train,
            digits.val,
            optim,
            seed=0,
            device=cuda,
            reporter=reporter,
            phase="student",
            run="seed=0",
        )
        return model, result

    _ref_model, expected = run(MemoryReporter(checkpoint_dir=tmp_path / "ref"))
    assert checkpoint.load(tmp_path / "ref" / "student-seed=0.pt")["cuda_rng"] is not None
    with pytest.raises(Killed):
        run(DiesAt(tmp_path / "ck", ("batch", "student", "seed=0", 1)))
    _model, result = run(MemoryReporter(checkpoint_dir=tmp_path / "ck"))
    assert result.resumed_epochs == 1 and result.epochs_run == expected.epochs_run
    for got, want in zip(result.history, expected.history, strict=True):
        assert got["val_loss"] == pytest.approx(want["val_loss"], abs=1e-3)
