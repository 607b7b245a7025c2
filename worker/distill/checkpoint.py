"""Epoch checkpoints of one training run: where they live, how they are written and read.

One file per run, `<checkpoint_dir>/<phase>-<run>.pt` (names made filesystem-safe),
rewritten at every epoch end by the trainer.  The last one of a run carries
`finished=True`: that is the "done" marker, and it holds everything the run's
TrainResult and best weights need, so a finished run is never trained again.

Writes are atomic (temp file in the same folder, fsync, os.replace, fsync of the
folder): a reader sees the previous checkpoint or the new one, never half of one.
Reads use torch.load(..., weights_only=True) only: a checkpoint holds tensors,
dicts, lists, tuples, ints, floats, strs, bools and None, nothing that needs
unpickling code.  A file that cannot be read or does not look like ours raises
CheckpointError; the trainer then restarts that run from scratch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from app.contract.files import atomic_write

FORMAT = "distill-train-checkpoint"
VERSION = 1

# Keys every checkpoint holds, with the type each must have after loading.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "phase": str,
    "run": str,
    "signature": str,
    "epoch": int,
    "step": int,
    "finished": bool,
    "stopped_early": bool,
    "model": dict,
    "objective": dict,
    "optimizer": dict,
    "shuffle_rng": torch.Tensor,
    "cpu_rng": torch.Tensor,
    "cuda_rng": (torch.Tensor, type(None)),
    "best": dict,
    "history": list,
}
_BEST: dict[str, type | tuple[type, ...]] = {"acc": float, "loss": float, "epoch": int, "state": dict}


class CheckpointError(Exception):
    """A checkpoint file exists but cannot be trusted (unreadable, truncated, not ours)."""


def safe_name(name: str) -> str:
    """A file-name-safe form of a phase or run name: 'seed=0' stays, '/' and the like go."""
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "_", name).strip(".")
    return safe or "_"


def checkpoint_path(folder: Path, phase: str, run: str) -> Path:
    return Path(folder) / f"{safe_name(phase)}-{safe_name(run)}.pt"


def save(obj: dict[str, Any], path: Path) -> Path:
    """torch.save `obj` to `path` atomically and durably."""
    return atomic_write(path, lambda f: torch.save(obj, f))

def _check(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError("not a training checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"checkpoint format version {obj.get('version')!r}, expected {VERSION}")
    for key, kind in _REQUIRED.items():
        if not isinstance(obj.get(key), kind):
            raise CheckpointError(f"checkpoint field {key!r} is missing or of the wrong type")
    for key, kind in _BEST.items():
        if not isinstance(obj["best"].get(key), kind):
            raise CheckpointError(f"checkpoint field best.{key!r} is missing or of the wrong type")
    if obj["epoch"] < 1 or len(obj["history"]) != obj["epoch"]:
        raise CheckpointError("checkpoint history does not match its epoch")
    if not 1 <= obj["best"]["epoch"] <= obj["epoch"]:
        raise CheckpointError("checkpoint best epoch is out of range")
    return obj


def load(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Read and sanity-check a checkpoint (tensors on the CPU). Never unpickles code."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - truncated, garbage, or a refused pickle
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"unreadable ({type(exc).__name__}: {first_line})") from exc
    return _check(obj)


def epochs_done(folder: Path | None, phase: str, run: str, budget: int) -> int:
    """How many of a run's `budget` planned epochs its checkpoint accounts for (for
    progress): the whole budget once the run finished, else its completed epochs.
    0 when there is none or it cannot be read (the trainer will say why)."""
    if folder is None:
        return 0
    path = checkpoint_path(folder, phase, run)
    if not path.is_file():
        return 0
    try:
        ck = load(path, mmap=True)
    except CheckpointError:
        return 0
    return budget if ck["finished"] else min(ck["epoch"], budget)
