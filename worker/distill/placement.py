"""Where a run's training inputs live while it trains, and how a batch of them reaches the model.

- on the device, moved once (as stored: uint8 images stay uint8, the model normalises them
  there): whenever they fit, which on the CPU is always;
- in host memory, when they do not fit the GPU: each batch is gathered on the host into one of
  two pinned (page-locked) buffers and copied with `non_blocking=True`, so the copy of the next
  batch overlaps the step on this one. Pinning the whole dataset instead would lock as much RAM
  as the data, which is what does not fit in the first place.

Labels are small (8 bytes a row) and always go to the device.
"""

from __future__ import annotations

import numpy as np
import torch

# The share of the GPU's free memory the inputs may take; the rest is for the model's weights,
# optimizer state and activations.
DEVICE_SHARE = 0.5
ON_DEVICE, PINNED = "device", "pinned"


def nbytes(*arrays: np.ndarray | torch.Tensor) -> int:
    return sum(a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size() for a in arrays)


def choose(data_bytes: int, device: torch.device, free_bytes: int | None = None) -> str:
    """ON_DEVICE when the inputs fit (DEVICE_SHARE of the free memory, asked of the GPU unless
    given), else PINNED; the CPU is its own host, so always ON_DEVICE there."""
    if device.type != "cuda":
        return ON_DEVICE
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    return ON_DEVICE if data_bytes <= DEVICE_SHARE * free_bytes else PINNED


class DeviceRows:
    """The inputs on the device, moved once; a batch is an index into them there."""

    placement = ON_DEVICE

    def __init__(self, x: np.ndarray | torch.Tensor, device: torch.device) -> None:
        self.x = torch.as_tensor(x).to(device)

    def take(self, idx: torch.Tensor, host_idx: torch.Tensor | None = None) -> torch.Tensor:
        return self.x[idx]


class HostRows:
    """The inputs in host memory; a batch is gathered into a staging buffer (pinned when `pin`,
    which needs CUDA) and copied to the device without blocking the host. Two buffers take
    turns: a buffer is refilled only once the copy that last read it has finished."""

    placement = PINNED

    def __init__(self, x: np.ndarray | torch.Tensor, device: torch.device, batch_size: int, pin: bool) -> None:
        self.x, self.device, self.pin = torch.as_tensor(x), device, pin
        shape = (min(batch_size, len(self.x)), *self.x.shape[1:])
        self.buffers = [torch.empty(shape, dtype=self.x.dtype, pin_memory=pin) for _ in range(2)]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def take(self, idx: torch.Tensor, host_idx: torch.Tensor | None = None) -> torch.Tensor:
        host_idx = idx.cpu() if host_idx is None else host_idx
        turn, self.turn = self.turn, 1 - self.turn
        copied = self.copied[turn]
        if copied is not None:
            copied.synchronize()
        buffer = self.buffers[turn][: len(host_idx)]
        torch.index_select(self.x, 0, host_idx, out=buffer)
        if self.device.type != "cuda":  # no copy to overlap with: a batch of its own
            return buffer.clone()
        batch = buffer.to(self.device, non_blocking=self.pin)
        event = torch.cuda.Event()
        event.record()
        self.copied[turn] = event
        return batch


def rows(
    x: np.ndarray | torch.Tensor, device: torch.device, batch_size: int, placement: str | None = None
) -> DeviceRows | HostRows:
    """The training inputs placed for `device`: by `choose` unless `placement` says."""
    placement = placement or choose(nbytes(x), device)
    if placement == ON_DEVICE:
        return DeviceRows(x, device)
    return HostRows(x, device, batch_size, pin=device.type == "cuda")
