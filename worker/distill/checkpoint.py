"""Epoch checkpoints of one training run: where they live, how they are written and read.

One file per run, `<checkpoint_dir>/<phase>-<run>.pt` (names made filesystem-safe),
rewritten by the trainer at an epoch end once `checkpoint_seconds` have passed since the
last one, and at the run's end.  The last one of a run carries `finished=True`: that is
the "done" marker, and it holds everything the run's TrainResult and best weights need,
so a finished run is never trained again.

The per-epoch history is not in the checkpoint (rewriting it made a checkpoint's cost
grow with the epoch: 1.9 ms at epoch 1, 35.6 ms at 10,000): it is appended, one JSON line
per epoch, to `<phase>-<run>.pt.history` and fsynced before the checkpoint is replaced;
the checkpoint records how many bytes of that file are its history (`history_bytes`).
Lines past that (a crash between the two writes) are ignored when read and cut off by
the next save.  Version 1 checkpoints (history inside) are still read.

Writes are atomic (temp file in the same folder, fsync, os.replace, fsync of the
folder): a reader sees the previous checkpoint or the new one, never half of one.
Reads use torch.load(..., weights_only=True) only: a checkpoint holds tensors,
dicts, lists, tuples, ints, floats, strs, bools and None, nothing that needs
unpickling code.  A file that cannot be read or does not look like ours raises
CheckpointError; the trainer then restarts that run from scratch.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.contract.files import atomic_write

FORMAT = "distill-train-checkpoint"
VERSION = 2

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
    "history": list,  # read from the history file (version 2) or the checkpoint (version 1)
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


def history_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".history")


def append_history(path: Path, rows: list[dict[str, float]], valid_bytes: int) -> int:
    """Cut the history file at `valid_bytes` (what the last checkpoint accounts for), append
    `rows` as JSON lines, fsync; the file's new length."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, valid_bytes)
        os.lseek(fd, valid_bytes, os.SEEK_SET)
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        os.write(fd, data)
        os.fsync(fd)
        return valid_bytes + len(data)
    finally:
        os.close(fd)


def read_history(path: Path, length: int) -> list[dict[str, float]]:
    """The first `length` bytes of a history file, parsed; CheckpointError when it is short."""
    try:
        with open(path, "rb") as f:
            data = f.read(length)
    except OSError as exc:
        raise CheckpointError(f"history unreadable ({type(exc).__name__})") from exc
    if len(data) != length:
        raise CheckpointError("history file is shorter than its checkpoint says")
    try:
        return [json.loads(line) for line in data.decode().splitlines()]
    except ValueError as exc:
        raise CheckpointError("history file is not JSON lines") from exc


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
    # How much of `history` is in the history file already, and that file's valid length.
    saved_epochs: int = 0
    history_bytes: int = 0

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
            "history_bytes": self.history_bytes,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> RunState:
        obj = _check(obj)
        fields = {k: obj[k] for k in _REQUIRED if k not in ("format", "version", "best")}
        state = cls(**fields, best=Best(**{k: obj["best"][k] for k in _BEST}))
        state.saved_epochs = len(state.history) if obj["version"] == VERSION else 0
        state.history_bytes = obj.get("history_bytes", 0)
        return state

    def save(self, path: Path) -> Path:
        """The new epochs' history appended (only those), then the checkpoint replaced."""
        new = self.history[self.saved_epochs :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # the checkpoint's folder fsync covers the new file
        self.history_bytes = append_history(history_path(path), new, self.history_bytes)
        self.saved_epochs = len(self.history)
        return save(self.to_dict(), path)

    @classmethod
    def read(cls, path: Path, signature: str | None = None) -> RunState:
        """Raises CheckpointError when the file cannot be trusted (or is another run's)."""
        return cls.from_dict(load(path, signature=signature))


def _check(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError("not a training checkpoint")
    if obj.get("version") not in (1, VERSION):
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


def load(path: Path, *, mmap: bool = False, signature: str | None = None) -> dict[str, Any]:
    """Read and sanity-check a checkpoint and its history (tensors on the CPU); with
    `signature`, one written for another run configuration is refused before its history
    is read. Never unpickles code."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"unreadable ({type(exc).__name__}: {first_line})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError("not a training checkpoint")
    if signature is not None and obj.get("signature") != signature:
        raise CheckpointError("it was written for a different run configuration")
    if obj.get("version") == VERSION:
        if not isinstance(obj.get("history_bytes"), int) or obj["history_bytes"] < 0:
            raise CheckpointError("checkpoint field 'history_bytes' is missing or of the wrong type")
        obj["history"] = read_history(history_path(path), obj["history_bytes"])
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
