"""Augmentation of a training batch, the same for the student and the teacher (the trainer
calls it on the batch as stored, before either sees it)."""

from __future__ import annotations

import torch


def augment_batch(x: torch.Tensor, aug) -> torch.Tensor:
    """image crop/flip/jitter (image_augment.py), then noise, circular shift per example and
    spatial axis, scale: in that order, drawn from the global (forked, seeded) RNG."""
    if aug.image_active():
        from worker.distill.image_augment import augment_images  # torchvision: only when asked

        x = augment_images(x, aug)
    n = len(x)
    if aug.noise_std > 0:
        x = x + aug.noise_std * torch.randn(x.shape, device=x.device, dtype=x.dtype)
    if aug.shift > 0:
        for axis in range(1, x.ndim):
            length = x.shape[axis]
            k = torch.randint(-aug.shift, aug.shift + 1, (n,), device=x.device)
            pos = torch.arange(length, device=x.device)
            index = (pos[None, :] - k[:, None]) % length  # (n, length): out[i, j] = x[i, j - k_i]
            view = [n] + [1] * (x.ndim - 1)
            view[axis] = length
            x = torch.gather(x, axis, index.view(view).expand(x.shape))
    if aug.scale > 0:
        factor = 1 + aug.scale * (2 * torch.rand(n, device=x.device, dtype=x.dtype) - 1)
        x = x * factor.view(n, *[1] * (x.ndim - 1))
    return x
