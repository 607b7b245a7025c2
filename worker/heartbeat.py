"""The worker's heartbeat: a row in `workers` (app/models.Worker) written every
`heartbeat_seconds` by a thread of the worker's main process (which never trains, so the beat
keeps time while a job runs): its node name, host, pid, queue and the devices its runner process
found. The API reads it (app/workers.py): /readyz, "waiting for a worker", GPU admission.

The first beat waits until the runner process has reported its devices (it imports torch first),
so a live worker's devices are always what it can train on. A clean shutdown deletes the row; a
killed worker's row ages out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Worker, utcnow
from worker.runner_db import in_transaction

log = logging.getLogger(__name__)
FORGET_AFTER = timedelta(days=1)  # rows of workers gone this long are removed
CPU_ONLY = [{"type": "cpu", "name": "cpu"}]  # when the runner could not say
DEVICES_WAIT_SECONDS = 300.0  # a runner that takes longer to warm up gets reported as CPU-only


def beat(session: Session, worker_id: str, devices: list[dict], queue: str) -> None:
    """Insert or refresh this worker's row (one statement, on PostgreSQL and SQLite)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    values = {"hostname": socket.gethostname(), "pid": os.getpid(), "queue": queue, "devices": devices}
    session.execute(
        insert(Worker)
        .values(id=worker_id, started_at=now, last_seen_at=now, **values)
        .on_conflict_do_update(index_elements=[Worker.id], set_={**values, "last_seen_at": now})
    )


class Heartbeat:
    def __init__(self, worker_id: str, devices_of: Callable[[], list[dict] | None]) -> None:
        self.worker_id, self.devices_of = worker_id, devices_of
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _devices(self) -> list[dict] | None:
        every = min(0.2, get_settings().heartbeat_seconds)
        waited = 0.0
        while not self._stopped.is_set():
            if (found := self.devices_of()) is not None:
                return found
            if waited >= DEVICES_WAIT_SECONDS:
                log.warning("the runner process has not reported its devices: reporting CPU only")
                return CPU_ONLY
            self._stopped.wait(every)
            waited += every
        return None

    def _run(self) -> None:
        settings = get_settings()
        devices = self._devices()
        try:
            in_transaction(lambda s: s.execute(delete(Worker).where(Worker.last_seen_at < utcnow() - FORGET_AFTER)))
        except Exception:
            log.warning("rows of long-gone workers not removed", exc_info=True)
        while devices is not None and not self._stopped.is_set():
            devices = self.devices_of() or devices  # a replaced runner reports again
            try:
                in_transaction(partial(beat, worker_id=self.worker_id, devices=devices, queue=settings.queue))
            except Exception:
                log.exception("worker heartbeat not recorded; trying again")
            self._stopped.wait(settings.heartbeat_seconds)

    def stop(self) -> None:
        """A clean shutdown: the worker is gone at once, not after worker_seen_seconds."""
        self._stopped.set()
        self._thread.join(5)
        try:
            in_transaction(lambda s: s.execute(delete(Worker).where(Worker.id == self.worker_id)))
        except Exception:
            log.warning("worker row not removed at shutdown; it ages out", exc_info=True)
