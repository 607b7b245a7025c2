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

import math
import re
from dataclasses import dataclass, field
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


@dataclass
class Best:
    """The best validation-accuracy epoch so far, and its weights."""

    acc: float = -1.0
    loss: float = math.inf
    epoch: int = 0
    state: dict[str, Any] | None = None


@dataclass
class RunState:
    """Where a run stands after its last completed epoch: what its checkpoint holds (format
    VERSION), so that a later attempt goes on from there with the numbers of an uninterrupted run.

    The live objects' states (model, objective, optimizer, RNG streams) are captured into it
    just before it is saved, and put back from it when a run resumes."""

    phase: str
    run: str
    signature: str  # what the run was configured with: a checkpoint of another is not resumed
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    finished: bool = False
    stopped_early: bool = False
    best: Best = field(default_factory=Best)
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch
    model: dict[str, Any] | None = None
    objective: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    shuffle_rng: torch.Tensor | None = None
    cpu_rng: torch.Tensor | None = None
    cuda_rng: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "phase": self.phase,
            "run": self.run,
            "signature": self.signature,
            "epoch": self.epoch,
            "step": self.step,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "model": self.model,
            "objective": self.objective,
            "optimizer": self.optimizer,
            "shuffle_rng": self.shuffle_rng,
            "cpu_rng": self.cpu_rng,
            "cuda_rng": self.cuda_rng,
            "best": {
                "acc": float(self.best.acc),
                "loss": float(self.best.loss),
                "epoch": int(self.best.epoch),
                "state": self.best.state,
            },
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> RunState:
        obj = _check(obj)
        fields = {k: obj[k] for k in _REQUIRED if k not in ("format", "version", "best")}
        return cls(**fields, best=Best(**{k: obj["best"][k] for k in _BEST}))

    def save(self, path: Path) -> Path:
        return save(self.to_dict(), path)

    @classmethod
    def read(cls, path: Path) -> RunState:
        """Raises CheckpointError when the file cannot be trusted."""
        return cls.from_dict(load(path))


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
    except Exception as exc:
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
