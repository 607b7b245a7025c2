"""Image augmentation for the standard recipes, on the device, for whole batches.

Random resized crop (torchvision.ops.roi_align: every example's own box, resized back in one
call) or crop with padding (one reflect pad, then every example's own window), horizontal
flip (torchvision.transforms.v2.functional on the batch, kept where each example's coin says),
colour jitter (brightness, contrast, saturation with each example's own factors, blended as
torchvision's kernels do). Every draw comes from torch's global RNG on the batch's device,
which the trainer forks, seeds and checkpoints: a run is reproducible from its seed and a
resumed run draws what an uninterrupted one would. A v2 transform called on a batched tensor
would give the whole batch ONE crop; these give each example its own.

The batch keeps its shape and dtype ((N, H, W) grey or (N, C, H, W)): each model's input adapter
then converts and resizes it, and the teacher sees exactly the batch the student sees.
`aug` is an AugmentSpec with the image fields (crop, crop_padding, crop_scale, flip,
color_jitter); colour jitter needs uint8 images (its ranges are those of pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

RATIO = (3 / 4, 4 / 3)  # aspect ratios of a random resized crop, as torchvision's default


def image_augment_active(aug) -> bool:
    return (
        getattr(aug, "crop", "none") != "none"
        or bool(getattr(aug, "flip", False))
        or getattr(aug, "color_jitter", 0.0) > 0
    )


def _uniform(n: int, lo: float, hi: float, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=device)


def resized_crop(x: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Each image's own box (area share U(min_scale, 1), aspect ratio log-uniform in RATIO),
    resized back to the image's size. float (N, C, H, W) in and out."""
    n, _, h, w = x.shape
    area = _uniform(n, min_scale, 1.0, x.device) * h * w
    ratio = torch.exp(_uniform(n, math.log(RATIO[0]), math.log(RATIO[1]), x.device))
    bw = torch.sqrt(area * ratio).clamp(1, w)
    bh = torch.sqrt(area / ratio).clamp(1, h)
    x0 = torch.rand(n, device=x.device) * (w - bw)
    y0 = torch.rand(n, device=x.device) * (h - bh)
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=x.dtype), x0, y0, x0 + bw, y0 + bh], 1)
    return roi_align(x, boxes.to(x.dtype), output_size=(h, w), sampling_ratio=2, aligned=True)


def pad_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Reflect-pad by `padding`, then each image's own window of the original size."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, padded.shape[-1])
    picked = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return picked.gather(3, cols)


def flip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of each image with probability 1/2."""
    coin = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(coin[:, None, None, None], TF.horizontal_flip(x), x)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor[:, None, None, None] * a + (1 - factor[:, None, None, None]) * b).clamp(0, 255)


def jitter(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast, saturation, each with a factor U(1 - s, 1 + s) per image (on 0..255
    floats); saturation only for colour images."""
    n = len(x)

    def factor() -> torch.Tensor:
        return _uniform(n, max(0.0, 1 - strength), 1 + strength, x.device)

    x = _blend(x, torch.zeros_like(x), factor())
    grey = TF.rgb_to_grayscale(x) if x.shape[1] == 3 else x
    x = _blend(x, grey.mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factor())
    if x.shape[1] == 3:
        x = _blend(x, TF.rgb_to_grayscale(x).expand_as(x), factor())
    return x


def augment_images(x: torch.Tensor, aug) -> torch.Tensor:
    """A new batch of the same shape and dtype: crop, flip, jitter, in that order."""
    if x.ndim not in (3, 4):
        raise ValueError(f"image augmentation takes (N, H, W) or (N, C, H, W) batches, not {tuple(x.shape)}")
    if aug.color_jitter > 0 and x.dtype != torch.uint8:
        raise ValueError("color_jitter needs uint8 images (pixel values 0..255)")
    dtype, grey = x.dtype, x.ndim == 3
    out = (x.unsqueeze(1) if grey else x).float()
    if aug.crop == "resized":
        out = resized_crop(out, aug.crop_scale)
    elif aug.crop == "pad":
        out = pad_crop(out, aug.crop_padding)
    if aug.flip:
        out = flip(out)
    if aug.color_jitter > 0:
        out = jitter(out, aug.color_jitter)
    out = out.round().clamp(0, 255).to(torch.uint8) if dtype == torch.uint8 else out.to(dtype)
    return out.squeeze(1) if grey else out
