"""What an upload may cost: how many one key streams at once, what a full disk answers,
and how much of a file's inspection the database keeps."""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from app.auth import Caller
from app.config import get_settings
from app.problems import Problem

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MAX_METADATA_KEYS = 32


class UploadSlots:
    """Uploads in flight per API key, in this process (the route runs on the event loop,
    so no lock is needed)."""

    def __init__(self) -> None:
        self._active: Counter[str] = Counter()

    @contextmanager
    def take(self, caller: Caller) -> Iterator[None]:
        key = caller.key_id or caller.tenant_id
        cap = get_settings().max_concurrent_uploads_per_key
        if self._active[key] >= cap:
            raise Problem(
                429,
                "Too many uploads at once",
                f"This key is streaming {cap} uploads "
                "already (DISTILL_MAX_CONCURRENT_UPLOADS_PER_KEY); wait for one to end.",
                type_="concurrent-upload-cap",
                headers={"Retry-After": "5"},
            )
        self._active[key] += 1
        try:
            yield
        finally:
            self._active[key] -= 1
            if not self._active[key]:
                del self._active[key]


@contextmanager
def disk_full_is_507() -> Iterator[None]:
    """A store without space answers 507 (the partial file is removed by the caller)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise Problem(
            507,
            "Storage full",
            "The artifact store has no space left for this upload; "
            "nothing was kept. Try again later or upload a smaller file.",
            type_="insufficient-storage",
            headers={"Retry-After": "60"},
        ) from None


def safetensors_summary(inspection: dict) -> dict:
    """What the row keeps of a safetensors header: counts, not the tensor list (kept in a
    file beside the upload) nor the free-form metadata."""
    tensors = inspection["tensors"]
    metadata = inspection.get("metadata") or {}
    return {
        "format": "safetensors",
        "tensor_count": len(tensors),
        "parameters": inspection["parameters"],
        "dtypes": sorted({t["dtype"] for t in tensors.values()}),
        "metadata_keys": sorted(metadata)[:MAX_METADATA_KEYS],
    }
