"""The live workers, as their heartbeats say (worker/heartbeat.py): for /readyz, the status line of
a queued job, and the refusal of a CUDA job that no live worker could run."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Worker, utcnow


@dataclass(frozen=True)
class LiveWorkers:
    devices: list[list[dict[str, Any]]]  # one list per live worker
    seen_seconds: float  # the window that makes a worker live

    @property
    def count(self) -> int:
        return len(self.devices)

    @property
    def has_gpu(self) -> bool:
        return any(d.get("type") == "cuda" for worker in self.devices for d in worker)

    def summary(self) -> str:
        """ "2 live workers: cpu (2), cuda NVIDIA H200 (1)", or that none is live."""
        if not self.devices:
            return f"no worker seen in the last {self.seen_seconds:g} s"
        kinds: Counter[str] = Counter()
        for worker in self.devices:
            kinds.update({_device_name(d) for d in worker})
        plural = "s" if self.count != 1 else ""
        return f"{self.count} live worker{plural}: " + ", ".join(f"{k} ({n})" for k, n in sorted(kinds.items()))


def _device_name(device: dict[str, Any]) -> str:
    if device.get("type") == "cuda":
        return f"cuda {device.get('name') or ''}".strip()
    return str(device.get("type", "cpu"))


def live_workers(db: Session | Connection) -> LiveWorkers:
    """The workers of this API's queue heard from within `worker_seen_seconds`."""
    settings = get_settings()
    since = utcnow() - timedelta(seconds=settings.worker_seen_seconds)
    rows = db.execute(select(Worker.devices).where(Worker.queue == settings.queue, Worker.last_seen_at >= since))
    return LiveWorkers([list(r.devices or []) for r in rows], settings.worker_seen_seconds)


_recent: dict[tuple[str, str], tuple[float, LiveWorkers]] = {}
_recent_lock = threading.Lock()


def _cache_key() -> tuple[str, str]:
    settings = get_settings()
    return settings.resolved_database_url, settings.queue


def cached_workers() -> LiveWorkers | None:
    """The live workers read within the last `worker_status_cache_seconds` by this process, if any."""
    with _recent_lock:
        at, workers = _recent.get(_cache_key(), (float("-inf"), None))
    return workers if time.monotonic() - at < get_settings().worker_status_cache_seconds else None


def recent_workers(db: Session | Connection) -> LiveWorkers:
    """live_workers, read at most every `worker_status_cache_seconds` per API process: what a queued
    job's poll shows (a poll stays one query most of the time). Admission and /readyz read afresh."""
    if (workers := cached_workers()) is not None:
        return workers
    now, workers = time.monotonic(), live_workers(db)
    with _recent_lock:
        _recent[_cache_key()] = (now, workers)
    return workers


def needs_gpu(spec: dict[str, Any] | None) -> bool:
    return ((spec or {}).get("training") or {}).get("device") == "cuda"


def waiting_detail(workers: LiveWorkers, spec: dict[str, Any] | None) -> str:
    """What a queued job waits for, in words."""
    if not workers.count:
        return f"waiting for a worker: none has been seen in the last {workers.seen_seconds:g} s"
    if needs_gpu(spec) and not workers.has_gpu:
        return f"waiting for a worker with a GPU (training.device is cuda); {workers.summary()}"
    return f"waiting in the queue for a free worker; {workers.summary()}"


def gpu_refusal(workers: LiveWorkers) -> str | None:
    """Why a job asking for CUDA cannot be admitted now (None: a live worker has a GPU)."""
    if workers.has_gpu:
        return None
    if not workers.count:
        return (
            f"no worker has been seen in the last {workers.seen_seconds:g} s, so none is known to have a GPU: "
            'start a worker on a machine with CUDA, or use "auto" (CUDA when the worker has it) or "cpu"'
        )
    return (
        f'no live worker has a GPU ({workers.summary()}): use "auto" or "cpu", or start a worker on a machine with CUDA'
    )
