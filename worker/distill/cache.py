"""Teachers trained once, and their outputs computed once (issue 12).

- `teacher_key`: the content hash that says two jobs would train the same teacher (its training
  config, the data it learns from, the code version that matters), so a tenant's later job
  reuses the weights instead of training them again;
- `model_sha256`: what a teaching model *is* (its weights; an ONNX file, its output and
  preprocessing), the first part of a cached output's key;
- `TeacherOutputs`: a teacher's logits (or stage features) over a split, computed once per job
  and, with an `OutputStore` (the worker's, on the database and the artifact store), once per
  tenant: a file is trusted only when its sha256 and shape match, else it is recomputed.

The store is a protocol: the engine never learns where the files live (worker/output_store.py).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from app.contract.spec import DatasetSpec, TeacherTrain
from worker.distill.inference import autocast, model_device, predict_logits
from worker.distill.reporting import Reporter

if TYPE_CHECKING:
    from worker.distill.models import Model

# Bump when a change of the engine changes what the same teacher spec trains to.
TEACHER_CODE_VERSION = "1"
OUTPUTS_VERSION = "1"


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def data_identity(dataset: DatasetSpec, dataset_sha256: str | None) -> dict:
    """What the teacher's training data depends on: the dataset's content (an upload's sha256,
    a built-in's name) and its train/validation split. The students' share and transfer set
    do not change the teacher."""
    source = {"artifact_sha256": dataset_sha256, "test_fraction": dataset.test_fraction}
    if dataset.name is not None:
        source = {"name": dataset.name}
    return {**source, "split_seed": dataset.split_seed, "val_fraction": dataset.val_fraction}


def teacher_key(member: TeacherTrain, dataset: DatasetSpec, dataset_sha256: str | None) -> str:
    return _sha256_json(
        {
            "teacher": member.training_config(),
            "data": data_identity(dataset, dataset_sha256),
            "code": TEACHER_CODE_VERSION,
            "torch": torch.__version__.split("+")[0],
        }
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(model: nn.Module) -> str:
    """The identity of a teaching model: its tensors, or (ONNX) its file, output and
    preprocessing, or (an ensemble) its members'."""
    members = getattr(model, "members", None)
    if isinstance(members, nn.ModuleList):
        return _sha256_json(["ensemble", [model_sha256(m) for m in members]])
    path = getattr(model, "path", None)
    if path is not None:  # an ONNX teacher
        preprocess = getattr(model.preprocess, "spec", None)
        steps = preprocess.model_dump(mode="json") if preprocess is not None else None
        return _sha256_json(["onnx", _file_sha256(Path(path)), model.output, model.output_kind, steps])
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def tensor_sha256(x: torch.Tensor | np.ndarray) -> str:
    t = torch.as_tensor(x).detach().cpu().contiguous()
    return hashlib.sha256(str((t.dtype, tuple(t.shape))).encode() + t.numpy().tobytes()).hexdigest()


@dataclass(frozen=True)
class CachedFile:
    path: Path
    sha256: str  # as stored; the file must still hash to it


class OutputStore(Protocol):
    """Where cached teacher outputs live, per tenant (worker/output_store.py)."""

    def lookup(self, key: str) -> CachedFile | None:
        """The file for `key`, marked as just used; None when there is none (a miss)."""

    def store(self, key: str, path: Path) -> int:
        """Keep `path`'s content under `key` (a miss filled); returns the bytes the tenant's
        cache holds after any eviction."""

    def discard(self, key: str) -> None:
        """The file failed its check: forget it (counted as corrupt)."""

    def bypassed(self) -> None:
        """Augmentation made a run skip the cache."""

    # Stage features larger than this are not cached: the teacher runs on every batch.
    max_features_bytes: int


def _read(found: CachedFile, rows: int) -> dict[str, np.ndarray] | None:
    """The cached arrays ("logits", and "stage:<name>" for features), or None when the file is
    missing, altered, truncated or not the shape."""
    try:
        if _file_sha256(found.path) != found.sha256:
            return None
        with np.load(found.path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    fits = "logits" in arrays and all(a.ndim >= 2 and len(a) == rows for a in arrays.values())
    return arrays if fits else None


def _write(arrays: dict[str, torch.Tensor], folder: Path) -> Path:
    path = folder / "outputs.npz"
    plain = {k: v.detach().cpu().float().numpy() for k, v in arrays.items()}
    np.savez(path, **plain)  # type: ignore[arg-type]  # numpy's stub: ** could pass allow_pickle
    return path


@torch.no_grad()
def predict_features(teacher: Model, x: torch.Tensor | np.ndarray, max_bytes: int, batch_size: int = 1024):
    """(logits, {stage: features}) of the frozen teacher over x in eval mode, or None as soon as
    the features would pass `max_bytes`."""
    device = model_device(teacher)
    was_training = teacher.training
    teacher.eval()
    logits: list[torch.Tensor] = []
    stages: dict[str, list[torch.Tensor]] = {name: [] for name in teacher.stage_names}
    held = 0
    try:
        for i in range(0, len(x), batch_size):
            with autocast(device):
                out, feats = teacher.forward_features(torch.as_tensor(x[i : i + batch_size]).to(device))
            logits.append(out.float())
            for name, f in zip(teacher.stage_names, feats, strict=True):
                stages[name].append(f.float())
                held += f.numel() * 4
            if held * len(x) / min(len(x), i + batch_size) > max_bytes:
                return None
    finally:
        teacher.train(was_training)
    return torch.cat(logits), {name: torch.cat(parts) for name, parts in stages.items()}


class TeacherOutputs:
    """A job's teacher logits over the students' training set: per teaching model, computed once
    in the job, and read from / written to the tenant's store when there is one."""

    def __init__(self, x_train: torch.Tensor | np.ndarray, store: OutputStore | None, reporter: Reporter) -> None:
        self._x = x_train
        self._x_sha: str | None = None
        self._store, self._reporter = store, reporter
        self._logits: dict[int, torch.Tensor] = {}
        self._features: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]] | None] = {}

    @property
    def _tenant_store(self) -> OutputStore:
        """The store, for the methods that run only when there is one."""
        if self._store is None:
            raise RuntimeError("no teacher output store in this job")
        return self._store

    def __call__(self, teacher: nn.Module) -> torch.Tensor:
        if id(teacher) not in self._logits:
            self._logits[id(teacher)] = self._from_store(teacher) if self._store else predict_logits(teacher, self._x)
        return self._logits[id(teacher)]

    def features(self, teacher: Model) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """The teacher's logits and stage features over the training set, once per job and tenant;
        None (the teacher then runs every batch) without a store or past its cap."""
        if self._store is None:
            return None
        if id(teacher) not in self._features:
            self._features[id(teacher)] = self._features_from_store(teacher)
        return self._features[id(teacher)]

    def _features_from_store(self, teacher: Model):
        key = self.key(teacher, "features")
        arrays = self._cached(key, "stage features")
        if arrays is not None:
            stages = {k.removeprefix("stage:"): torch.from_numpy(v) for k, v in arrays.items() if k != "logits"}
            return torch.from_numpy(arrays["logits"]), stages
        cap = self._tenant_store.max_features_bytes
        found = predict_features(teacher, self._x, cap)
        if found is None:
            self._reporter.event(
                f"teacher outputs: the stage features pass the cache's cap ({cap:,} bytes): "
                "the teacher runs on every batch"
            )
            return None
        logits, stages = found
        self._put(key, {"logits": logits, **{f"stage:{k}": v for k, v in stages.items()}}, "stage features")
        return found

    def _cached(self, key: str, what: str) -> dict[str, np.ndarray] | None:
        """The store's arrays for `key` after their check, or None (a miss; a file that fails the
        check is dropped and said)."""
        found = self._tenant_store.lookup(key)
        if found is None:
            return None
        arrays = _read(found, len(self._x))
        if arrays is not None:
            self._reporter.event(
                f"teacher outputs: {what} of {len(self._x)} training examples read from the cache "
                f"(hit, {found.path.stat().st_size:,} bytes); the teacher did not run over them"
            )
            return arrays
        self._tenant_store.discard(key)
        self._reporter.event(
            f"teacher outputs: the cached {what} failed their check (altered or truncated): recomputed", "warning"
        )
        return None

    def _put(self, key: str, arrays: dict[str, torch.Tensor], what: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = _write(arrays, Path(tmp))
            size = path.stat().st_size
            held = self._tenant_store.store(key, path)
        self._reporter.event(
            f"teacher outputs: {what} of {len(self._x)} training examples computed and cached "
            f"(miss, {size:,} bytes; the tenant's cache holds {held:,} bytes)"
        )

    def key(self, teacher: nn.Module, what: str = "logits", split: str = "students.train") -> str:
        if self._x_sha is None:
            self._x_sha = tensor_sha256(self._x)
        return _sha256_json([OUTPUTS_VERSION, model_sha256(teacher), self._x_sha, what, split])

    def bypass(self, why: str) -> None:
        if self._store is not None:
            self._store.bypassed()
            self._reporter.event(f"teacher output cache bypassed: {why}")

    def _from_store(self, teacher: nn.Module) -> torch.Tensor:
        key = self.key(teacher)
        arrays = self._cached(key, "logits")
        if arrays is not None:
            return torch.from_numpy(arrays["logits"]).float()
        logits = predict_logits(teacher, self._x)
        self._put(key, {"logits": logits}, "logits")
        return logits
