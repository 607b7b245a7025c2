"""Device choice, mixed precision, and batched prediction: shared by trainer and metrics."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but this worker has no GPU")
    return torch.device(name)


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast (no loss scaling needed): by default on CUDA only, plain fp32 on the CPU;
    `bf16=True` asks for it on the CPU too (how the GPU path's numerics are tested without one)."""
    if bf16 if bf16 is not None else device.type == "cuda":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, device: torch.device, wanted: bool | None = None) -> bool:
    """Channels-last (NHWC) memory for a conv net: by default on CUDA, where its convolutions
    (cuDNN, tensor cores) run fastest that way; `wanted` overrides. Converts the model's 4-d
    weights in place when it applies; the batches follow with `as_layout`."""
    apply = wanted if wanted is not None else device.type == "cuda" and has_conv2d(model)
    if apply:
        model.to(memory_format=torch.channels_last)
    return apply


def as_layout(xb: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch of images (N, C, H, W) in channels-last memory when the model is."""
    if channels_last and xb.ndim == 4:
        return xb.contiguous(memory_format=torch.channels_last)
    return xb


def model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors are; the CPU for one without any (an ONNX teacher)."""
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _tensor(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A batch as a tensor; a read-only array (a memory-mapped upload) is copied, batch by batch,
    since torch cannot share memory it may not write."""
    if isinstance(batch, torch.Tensor):
        return batch
    return torch.from_numpy(batch if batch.flags.writeable else batch.copy())


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits of `model` on `x`, on the model's device, as float32.

    Restores the model's train/eval mode afterwards.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        out = []
        with autocast(device):
            for i in range(0, len(x), batch_size):  # batch by batch: inputs too large for the device stay on the host
                out.append(model(_tensor(x[i : i + batch_size]).to(device)).float())
        return torch.cat(out)
    finally:
        model.train(was_training)
