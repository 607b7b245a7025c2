"""Image augmentation on whole batches: each example its own draw, reproducible from the seed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from worker.distill.image_augment import augment_images, image_augment_active


def _aug(**kw):
    base = {"crop": "none", "crop_padding": 4, "crop_scale": 0.35, "flip": False, "color_jitter": 0.0}
    return SimpleNamespace(**{**base, **kw})


def _images(shape=(16, 3, 12, 12)):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("aug", [_aug(crop="resized", flip=True, color_jitter=0.4), _aug(crop="pad", flip=True)])
def test_same_seed_same_batch_and_shape_dtype_kept(aug):
    x = _images()
    torch.manual_seed(3)
    a = augment_images(x, aug)
    torch.manual_seed(3)
    b = augment_images(x, aug)
    torch.manual_seed(4)
    c = augment_images(x, aug)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    grey = augment_images(x[:, 0], aug)
    assert grey.shape == x[:, 0].shape


def test_flip_flips_some_examples_exactly():
    x = _images((64, 3, 5, 7))
    torch.manual_seed(0)
    out = augment_images(x, _aug(flip=True))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 10 < sum(flipped) < 54


def test_pad_crop_is_a_shifted_window_of_each_own():
    x = _images((32, 1, 10, 10)).float()
    torch.manual_seed(1)
    out = augment_images(x, _aug(crop="pad", crop_padding=2))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    shifts = []
    for o, p in zip(out, padded, strict=True):
        found = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(o, p[:, dy : dy + 10, dx : dx + 10])]
        assert found
        shifts.append(found[0])
    assert len(set(shifts)) > 5  # every example its own window


def test_resized_crop_and_jitter_change_each_example_differently():
    x = _images((8, 3, 16, 16))
    x[:] = x[0]  # eight copies of one image
    torch.manual_seed(2)
    out = augment_images(x, _aug(crop="resized", color_jitter=0.5))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_jitter_needs_uint8_and_activity():
    with pytest.raises(ValueError, match="uint8"):
        augment_images(torch.rand(2, 3, 4, 4), _aug(color_jitter=0.2))
    assert not image_augment_active(_aug()) and image_augment_active(_aug(flip=True))
    assert not image_augment_active(SimpleNamespace(noise_std=0.1))  # the signal augmentations' spec


def test_the_trainer_hook_applies_image_fields_of_the_spec():
    from app.contract.spec import AugmentSpec
    from worker.distill.augment import augment_batch

    spec = AugmentSpec(crop="pad", crop_padding=2, flip=True)
    assert spec.active() and spec.model_dump() == {
        "noise_std": 0.0,
        "shift": 0,
        "scale": 0.0,
        "crop": "pad",
        "crop_padding": 2,
        "flip": True,
    }
    assert AugmentSpec(noise_std=0.1).model_dump() == {"noise_std": 0.1, "shift": 0, "scale": 0.0}
    x = _images((8, 1, 6, 6))
    torch.manual_seed(0)
    out = augment_batch(x, spec)
    torch.manual_seed(0)
    assert torch.equal(out, augment_images(x, spec)) and out.dtype == torch.uint8
