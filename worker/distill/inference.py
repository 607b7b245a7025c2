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


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors are; the CPU for one without any (an ONNX teacher)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits of `model` on `x`, on the model's device, as float32.

    Restores the model's train/eval mode afterwards.
    """
    device = model_device(model)
    x = torch.as_tensor(x).to(device)
    was_training = model.training
    model.eval()
    try:
        out = []
        with autocast(device):
            for i in range(0, len(x), batch_size):
                out.append(model(x[i : i + batch_size]).float())
        return torch.cat(out)
    finally:
        model.train(was_training)
