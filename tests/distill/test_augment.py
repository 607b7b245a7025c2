"""Augmentation: applied to the batch before both the teacher and the student see it."""

from __future__ import annotations

import pytest
import torch

from app.contract.architectures import MLPArch
from app.contract.fit import fit_errors
from app.contract.spec import AugmentSpec, OptimSpec
from tests.support.specs import tiny_spec
from worker.distill.augment import augment_batch
from worker.distill.models import build_model
from worker.distill.objectives import KD
from worker.distill.reporting import MemoryReporter
from worker.distill.signals import CachedLogits, LiveTeacher
from worker.distill.trainer import train

OPT = OptimSpec(epochs=2, batch_size=256, lr=0.01)


def test_shift_is_a_circular_roll_per_example_and_scale_multiplies():
    x = torch.arange(2 * 12, dtype=torch.float32).view(2, 12)
    torch.manual_seed(0)
    out = augment_batch(x, AugmentSpec(shift=3))
    for row, orig in zip(out, x, strict=True):
        assert any(torch.equal(row, torch.roll(orig, k)) for k in range(-3, 4))
    img = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    out = augment_batch(img, AugmentSpec(shift=1))
    for row, orig in zip(out, img, strict=True):
        assert any(torch.equal(row, torch.roll(orig, (a, b), (0, 1))) for a in (-1, 0, 1) for b in (-1, 0, 1))
    out = augment_batch(x + 1, AugmentSpec(scale=0.5))
    ratio = out / (x + 1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio)) and ((ratio > 0.5) & (ratio < 1.5)).all()


class Recording(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []
        self.stage_names = inner.stage_names

    def forward(self, x):
        if self.training or not torch.is_grad_enabled():
            self.seen.append(x.detach().clone())
        return self.inner(x)


def test_teacher_sees_the_augmented_batch_the_student_sees(digits):
    teacher = Recording(build_model(MLPArch(hidden=[8]), digits.input_shape, 10, seed=1)).eval()
    student = Recording(build_model(MLPArch(hidden=[8]), digits.input_shape, 10, seed=0))
    aug = AugmentSpec(noise_std=0.5, shift=1, scale=0.1)
    train(
        student,
        KD(4.0, 0.9),
        digits.train,
        digits.val,
        OPT,
        seed=0,
        device=torch.device("cpu"),
        reporter=MemoryReporter(checkpoint_dir=None),
        phase="student",
        run="s",
        signal=LiveTeacher(teacher),
        augment=aug,
    )
    n_batches = 2 * -(-len(digits.train) // 256)
    s_train = (
        student.seen[:n_batches]
        if len(student.seen) == n_batches
        else [b for b in student.seen if len(b) in (256, len(digits.train) % 256)][:n_batches]
    )
    t_seen = [b for b in teacher.seen if len(b) != len(digits.val)]
    assert len(t_seen) == n_batches
    raw = torch.as_tensor(digits.train.x)
    for tb, sb in zip(t_seen, s_train, strict=False):
        assert torch.equal(tb, sb)
    assert not any(torch.equal(tb, raw[: len(tb)]) for tb in t_seen)


def test_augmented_training_is_reproducible_and_refuses_cached_logits(digits):
    def run():
        model = build_model(MLPArch(hidden=[8]), digits.input_shape, 10, seed=0)
        return train(
            model,
            KD(4.0, 0.9),
            digits.train,
            digits.val,
            OPT,
            seed=3,
            device=torch.device("cpu"),
            reporter=MemoryReporter(checkpoint_dir=None),
            phase="s",
            run="s",
            signal=LiveTeacher(build_model(MLPArch(hidden=[8]), digits.input_shape, 10, seed=1).eval()),
            augment=AugmentSpec(noise_std=1.0, shift=1),
        ).history

    assert run() == run()
    with pytest.raises(ValueError, match="cached"):
        train(
            build_model(MLPArch(hidden=[8]), digits.input_shape, 10),
            KD(4.0, 0.9),
            digits.train,
            digits.val,
            OPT,
            seed=0,
            device=torch.device("cpu"),
            reporter=MemoryReporter(checkpoint_dir=None),
            phase="s",
            run="s",
            signal=CachedLogits(torch.zeros(len(digits.train), 10)),
            augment=AugmentSpec(shift=1),
        )


def test_pipeline_recomputes_soft_targets_and_says_so(tmp_path, data_cache):
    from worker.distill.pipeline import run_job

    spec = tiny_spec(training={"epochs": 1, "augment": {"noise_std": 0.5, "shift": 1}}, seeds=[0])
    reporter = MemoryReporter(checkpoint_dir=tmp_path / "ck")
    result = run_job(spec, reporter, tmp_path / "w", data_cache)
    assert result.report["soft_targets"] == "recomputed"
    assert any("because augmentation" in m for _, m in reporter.events)
    bad = tiny_spec(training={"augment": {"shift": 1}, "soft_targets": "cached"})
    assert [e.loc for e in fit_errors(bad)] == [("training", "soft_targets")]
