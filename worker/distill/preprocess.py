"""The preprocessing a brought ONNX teacher was trained with (teacher.artifact.preprocess),
applied to each batch as the dataset stores it, before onnxruntime runs the teacher.

Order: x * scale; (x - mean) / std per channel; RGB -> BGR; bilinear resize to input_size;
NCHW -> NHWC. Images are (N, H, W) (one channel added) or (N, C, H, W); anything else gets
scale, mean and std only. Plain tensors (no buffers): a brought teacher's size and state stay
those of its file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Preprocess:
    def __init__(self, spec) -> None:
        self.spec = spec

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        x = x.float() * s.scale
        image = x.ndim in (3, 4)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        view = (1, -1, 1, 1) if image else (1, -1)
        mean = torch.tensor(s.mean, dtype=x.dtype, device=x.device).view(view)
        std = torch.tensor(s.std, dtype=x.dtype, device=x.device).view(view)
        x = (x - mean) / std
        if not image:
            return x
        if s.channel_order == "BGR":
            x = x.flip(1)
        if s.input_size is not None and tuple(x.shape[-2:]) != (s.input_size, s.input_size):
            x = F.interpolate(x, size=(s.input_size, s.input_size), mode="bilinear", align_corners=False)
        if s.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        return x.contiguous()
