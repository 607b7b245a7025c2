"""The one training loop: reproducible, teacher-output modes agree, best weights kept, cancellable."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from app.contract.architectures import CNNArch, MLPArch
from app.contract.spec import OptimSpec
from worker.distill.data import input_stats
from worker.distill.inference import predict_logits
from worker.distill.models import build_model
from worker.distill.objectives import CE, KD
from worker.distill.reporting import Cancelled, MemoryReporter
from worker.distill.signals import CachedLogits, LiveTeacher
from worker.distill.trainer import lr_at, train

CPU = torch.device("cpu")
OPT = OptimSpec(epochs=3, batch_size=64)


def _student(splits, seed=0):
    # dropout on: its masks must be reproducible too
    arch = MLPArch(hidden=[16], dropout=0.2)
    return build_model(arch, splits.input_shape, splits.num_classes, *input_stats(splits.train.x), seed=seed)


def _train(model, splits, reporter, objective=None, optim=OPT, seed=0, **kw):
    return train(
        model,
        objective or CE(),
        splits.train,
        splits.val,
        optim,
        seed=seed,
        device=CPU,
        reporter=reporter,
        phase="student",
        run=f"seed={seed}",
        **kw,
    )


def _max_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


@pytest.fixture(scope="module")
def teacher(digits):
    t = build_model(CNNArch(channels=[4], hidden=8), digits.input_shape, 10, *input_stats(digits.train.x), seed=1)
    _train(t, digits, MemoryReporter(checkpoint_dir=None), optim=OptimSpec(epochs=1))
    return t


def _fresh(tmp_path, name):
    # Its own checkpoint folder: a second run of the same (phase, run) in a shared folder
    # would resume the first one's finished checkpoint instead of training.
    return MemoryReporter(checkpoint_dir=tmp_path / name)


def test_same_seed_gives_identical_run(digits, reporter, tmp_path):
    a, b, c = _student(digits), _student(digits), _student(digits)
    ra, rb = _train(a, digits, reporter), _train(b, digits, _fresh(tmp_path, "b"))
    assert ra.history == rb.history
    assert _max_diff(a, b) == 0.0
    rc = _train(c, digits, reporter, seed=1)  # same init, other batch order and dropout
    assert rc.history != ra.history


def test_metrics_reported_per_epoch_and_progress_called(digits, reporter):
    seen = []
    result = _train(_student(digits), digits, reporter, on_epoch=seen.append)
    assert seen == [1, 2, 3] and result.epochs_run == 3
    assert [(p, r, e) for p, r, e, _ in reporter.metrics] == [("student", "seed=0", e) for e in (1, 2, 3)]
    for *_, values in reporter.metrics:
        assert set(values) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"}
        assert all(math.isfinite(v) for v in values.values())


def test_cached_and_recomputed_teacher_outputs_agree(digits, reporter, teacher, tmp_path):
    objective = KD(temperature=4.0, alpha=0.9)
    cached_student, live_student = _student(digits), _student(digits)
    cached = _train(
        cached_student, digits, reporter, objective, signal=CachedLogits(predict_logits(teacher, digits.train.x))
    )
    live = _train(live_student, digits, _fresh(tmp_path, "live"), objective, signal=LiveTeacher(teacher))
    assert _max_diff(cached_student, live_student) < 1e-4
    for h_cached, h_live in zip(cached.history, live.history, strict=True):
        assert h_cached["val_accuracy"] == h_live["val_accuracy"]
        assert h_cached["val_loss"] == pytest.approx(h_live["val_loss"], abs=1e-4)


def test_teacher_outputs_must_fit_the_objective_and_the_data(digits, reporter, teacher):
    with pytest.raises(ValueError, match="needs the teacher"):
        _train(_student(digits), digits, reporter, KD(4.0, 0.9))
    logits = predict_logits(teacher, digits.train.x)
    with pytest.raises(ValueError, match="rows"):
        _train(_student(digits), digits, reporter, KD(4.0, 0.9), signal=CachedLogits(logits[:10]))


def test_best_validation_weights_are_restored(digits, reporter):
    model = _student(digits)
    optim = OptimSpec(epochs=5, batch_size=64, optimizer="sgd", lr=0.05, lr_schedule="constant")
    result = _train(model, digits, reporter, optim=optim)
    accs = [h["val_accuracy"] for h in result.history]
    assert result.best_epoch == accs.index(max(accs)) + 1
    final = predict_logits(model, digits.val.x).argmax(1)
    assert (final == torch.as_tensor(digits.val.y)).sum().item() / len(digits.val) == result.best_val_accuracy
    assert not model.training


def test_early_stopping_on_validation_accuracy(digits, reporter):
    # A learning rate too small to change any prediction: no epoch beats the first.
    optim = OptimSpec(epochs=10, lr=1e-12, lr_schedule="constant", patience=2)
    result = _train(_student(digits), digits, reporter, optim=optim)
    assert (result.best_epoch, result.epochs_run, result.stopped_early) == (1, 3, True)


class _StopAfter(MemoryReporter):
    def __init__(self, checks: int):
        super().__init__(checkpoint_dir=None)
        self.left = checks

    def should_stop(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_cancellation_at_a_batch_boundary(digits):
    reporter = _StopAfter(checks=25)  # 21 batches per epoch: stops inside epoch 2
    with pytest.raises(Cancelled):
        _train(_student(digits), digits, reporter)
    assert [m[2] for m in reporter.metrics] == [1]


def test_lr_schedules():
    cos = OptimSpec(lr=0.1)
    assert lr_at(0, 100, cos) == pytest.approx(0.1)
    assert lr_at(50, 100, cos) == pytest.approx(0.05)
    assert lr_at(100, 100, cos) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(73, 100, OptimSpec(lr=0.1, lr_schedule="constant")) == 0.1


# --- the GPU paths, on the CPU --------------------------------------------------------------------


def _cnn(splits):
    return build_model(CNNArch(channels=[4], hidden=8), splits.input_shape, 10, *input_stats(splits.train.x), seed=1)


def test_bf16_autocast_trains_on_the_cpu_when_asked(digits):
    from worker.distill.inference import autocast

    model = _cnn(digits)
    with autocast(CPU, True):
        assert model(torch.as_tensor(digits.train.x[:4])).dtype == torch.bfloat16
    with autocast(CPU):
        assert model(torch.as_tensor(digits.train.x[:4])).dtype == torch.float32  # the CPU default
    reporter = MemoryReporter(checkpoint_dir=None)
    bf16 = _train(model, digits, reporter, optim=OptimSpec(epochs=2, batch_size=64), bf16=True)
    fp32 = _train(_cnn(digits), digits, reporter, optim=OptimSpec(epochs=2, batch_size=64))
    assert all(math.isfinite(h["train_loss"]) for h in bf16.history)
    assert bf16.history != fp32.history  # the bf16 path ran ...
    assert abs(bf16.best_val_accuracy - fp32.best_val_accuracy) < 0.1  # ... and learns as fp32 does


def test_channels_last_conv_nets_train_alike_on_the_cpu(digits):
    from worker.distill.inference import as_layout, use_channels_last

    images = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    assert as_layout(images, True).is_contiguous(memory_format=torch.channels_last)
    one = images[0]
    assert as_layout(images, False) is images and as_layout(one, True) is one  # 4-d batches only
    assert not use_channels_last(_cnn(digits), CPU)  # the CPU default: off
    model = _cnn(digits)
    optim = OptimSpec(epochs=2, batch_size=64)
    result = _train(model, digits, MemoryReporter(checkpoint_dir=None), optim=optim, channels_last=True)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    reference = _train(_cnn(digits), digits, MemoryReporter(checkpoint_dir=None), optim=optim)
    for got, want in zip(result.history, reference.history, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)


def test_inputs_stay_on_the_device_when_they_fit_else_on_the_host():
    from worker.distill import placement

    cuda = torch.device("cuda")
    assert placement.choose(10**12, CPU) == placement.ON_DEVICE  # the CPU is its own host
    assert placement.choose(400, cuda, free_bytes=1000) == placement.ON_DEVICE
    assert placement.choose(600, cuda, free_bytes=1000) == placement.PINNED  # more than DEVICE_SHARE
    x = np.arange(40, dtype=np.uint8).reshape(10, 4)
    assert placement.nbytes(x, torch.zeros(3, dtype=torch.float32)) == 40 + 12
    assert isinstance(placement.rows(x, CPU, 4), placement.DeviceRows)
    host = placement.rows(x, CPU, 4, placement.PINNED)
    assert isinstance(host, placement.HostRows) and not host.pin  # pinning needs CUDA
    first = host.take(torch.tensor([3, 1]))
    host.take(torch.tensor([0, 2, 4]))
    host.take(torch.tensor([5]))  # both staging buffers reused since `first` was taken ...
    assert first.tolist() == x[[3, 1]].tolist()  # ... and it is still its own rows
    assert first.dtype == torch.uint8  # as stored


def test_inputs_from_the_host_train_bit_for_bit_as_on_the_device(digits):
    from worker.distill import placement

    optim = OptimSpec(epochs=2, batch_size=64)
    on_device = _train(_student(digits), digits, MemoryReporter(checkpoint_dir=None), optim=optim)
    from_host = _train(
        _student(digits), digits, MemoryReporter(checkpoint_dir=None), optim=optim, data_placement=placement.PINNED
    )
    assert from_host.history == on_device.history


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory and non-blocking copies need CUDA")
def test_pinned_batches_reach_the_gpu(digits):
    from worker.distill import placement

    host = placement.rows(digits.train.x, torch.device("cuda"), 64, placement.PINNED)
    assert host.pin and all(b.is_pinned() for b in host.buffers)
    idx = torch.arange(64)
    for _ in range(3):
        batch = host.take(idx.cuda(), idx)
    assert batch.is_cuda and torch.equal(batch.cpu(), torch.as_tensor(digits.train.x[:64]))


def test_no_compiler_is_loaded_unless_compile_is_on(data_cache):
    # torch.optim imports torch._dynamo whatever we do (bench/results/jobs.md); the compiler
    # proper (inductor's compile_fx, ~900 modules) comes only with training.compile.
    script = f"""
import sys, torch
from pathlib import Path
from app.contract.architectures import MLPArch
from app.contract.spec import DatasetSpec, OptimSpec
from worker.distill.data import input_stats, load_dataset
from worker.distill.models import build_model
from worker.distill.objectives import CE
from worker.distill.reporting import MemoryReporter
from worker.distill.trainer import train
s = load_dataset(DatasetSpec(name="digits"), Path({str(data_cache)!r}))
m = build_model(MLPArch(hidden=[8]), s.input_shape, s.num_classes, *input_stats(s.train.x), seed=0)
train(m, CE(), s.train, s.val, OptimSpec(epochs=1), seed=0, device=torch.device("cpu"),
      reporter=MemoryReporter(checkpoint_dir=None), phase="student", run="seed=0")
print(sorted(m for m in ("torch._inductor.compile_fx", "torch._dynamo.backends.inductor") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_gpu_paths_together_on_the_cpu(digits, teacher):
    # What a CUDA run does by default, asked for on the CPU: bf16 autocast, channels-last
    # weights, inputs gathered from host memory batch by batch, a live teacher under autocast.
    from worker.distill import placement

    optim = OptimSpec(epochs=3, batch_size=64)
    result = _train(
        _cnn(digits),
        digits,
        MemoryReporter(checkpoint_dir=None),
        KD(4.0, 0.9),
        optim=optim,
        signal=LiveTeacher(teacher),
        bf16=True,
        channels_last=True,
        data_placement=placement.PINNED,
    )
    reference = _train(
        _cnn(digits),
        digits,
        MemoryReporter(checkpoint_dir=None),
        KD(4.0, 0.9),
        optim=optim,
        signal=LiveTeacher(teacher),
    )
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]  # it learns ...
    assert result.history != reference.history  # ... on the other paths ...
    assert abs(result.best_val_accuracy - reference.best_val_accuracy) < 0.1  # ... as the CPU defaults do
