"""The Celery app of the workers: `celery -A worker.celery_app worker`.

Configured from the same Settings as the API (app/queue.py). The worker runs its task in
a thread of its main process (the `threads` pool, concurrency 1): that thread supervises
the worker's long-lived runner process, started with `spawn`, which alone imports torch
(worker/runner.py). Nothing here forks, and this module must not import torch.

The main process also runs the sweeper (worker/sweeper.py) and the heartbeat that tells the API
this worker is alive and which devices it has (worker/heartbeat.py). On a warm shutdown the running
job is asked to stop at the next batch and is handed back (or killed after a grace period).
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from app.config import get_settings
from app.queue import celery_config

log = logging.getLogger(__name__)

app = Celery("distill")
app.conf.update(celery_config(get_settings()))
app.conf.include = ["worker.tasks"]


HEARTBEAT = None


@worker_ready.connect
def _start(sender=None, **_kwargs) -> None:
    global HEARTBEAT
    from app.db import get_engine
    from app.schema import ensure_schema
    from worker import runner, sweeper
    from worker.heartbeat import Heartbeat

    try:  # embedded: whichever of API and worker starts first migrates the SQLite file
        if migrated := ensure_schema(get_engine()):
            log.info(migrated)
    except Exception as exc:  # a server schema behind, or no database yet: jobs will say so
        log.error("database schema: %s", exc)
    runner.RUNNER.ensure_started()  # warms up (imports torch) before the first job arrives
    sweeper.start()
    HEARTBEAT = Heartbeat(getattr(sender, "hostname", None) or f"worker@{os.getpid()}", runner.RUNNER.reported_devices)
    HEARTBEAT.start()


@worker_shutting_down.connect
def _hand_jobs_back(sig: str = "", how: str = "", **_kwargs) -> None:
    from worker import runner

    log.info("%s shutdown: the running job (if any) is handed back", how)
    runner.shutting_down.set()


@worker_shutdown.connect
def _stop_runner(**_kwargs) -> None:
    from worker import runner

    if HEARTBEAT is not None:
        HEARTBEAT.stop()
    runner.RUNNER.close()
