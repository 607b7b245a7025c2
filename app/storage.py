"""Artifact store: a local folder (shared by API and workers through a volume).

Keys are relative POSIX paths chosen by the service (never by a client), and
are resolved strictly inside the root.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from app.config import get_settings


@dataclass(frozen=True)
class Stored:
    key: str
    size_bytes: int
    sha256: str


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key leaves the store: {key!r}")
        return path

    def put_file(self, source: Path, key: str) -> Stored:
        """Copy a finished file in atomically (temp name, fsync, rename) and hash it."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        with source.open("rb") as src, temp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(temp, target)
        return Stored(key=key, size_bytes=target.stat().st_size, sha256=digest.hexdigest())


def get_storage() -> LocalStorage:
    return LocalStorage(get_settings().resolved_artifact_dir)


# Uploads: one folder per tenant, content hash and options (so identical uploads are stored
# once). A dataset's canonical arrays (what the worker reads) sit beside the file as uploaded,
# and a safetensors teacher's tensor list (checked at submission) in tensors.json.
DATASET_ARRAYS = "arrays.npz"
TENSORS_FILE = "tensors.json"
INCOMING = "uploads/.incoming"  # uploads while they stream and are inspected


def upload_key(tenant_id: str, sha256: str, filename: str) -> str:
    return f"uploads/{tenant_id}/{sha256}/{filename}"


def remove_stale_incoming(older_than_seconds: float) -> int:
    """Partial files of uploads that died with their API process (killed mid-stream)."""
    import time

    folder = get_storage().path(INCOMING)
    if not folder.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_seconds, 0
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another replica removed it first
            continue
    return removed


def dataset_arrays_key(upload_storage_key: str) -> str:
    return upload_storage_key.rsplit("/", 1)[0] + "/" + DATASET_ARRAYS
