"""The Celery app of the workers: `celery -A worker.celery_app worker`.

Configured from the same Settings as the API (app/queue.py). This module must
not import torch: CUDA does not survive the fork into the child that runs a job.

The main process also runs the sweeper (worker/sweeper.py), and on a warm
shutdown passes SIGTERM on to the child running a job, which then stops at the
next batch and hands the job back (Celery itself would wait for the job to end).
"""

from __future__ import annotations

import logging
import os
import signal

from billiard.process import active_children
from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from app.config import get_settings
from app.queue import celery_config

log = logging.getLogger(__name__)

app = Celery("distill")
app.conf.update(celery_config(get_settings()))
app.conf.include = ["worker.tasks"]


@worker_process_init.connect
def _forget_inherited_connections(**_kwargs) -> None:  # noqa: ANN003
    # A forked child inherits the parent's pooled database and broker connections
    # (the sweeper uses them): sharing a socket across processes corrupts both sides.
    # Drop them without closing, so the parent's stay intact; the child opens its own.
    from app import db, queue

    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose(close=False)
    queue.reset_client()


@worker_ready.connect
def _start_sweeper(**_kwargs) -> None:  # noqa: ANN003
    from worker import sweeper

    sweeper.start()


@worker_shutting_down.connect
def _hand_jobs_back(sig: str = "", how: str = "", **_kwargs) -> None:  # noqa: ANN003
    for child in active_children():
        log.info("%s shutdown: asking pool process %s to hand its job back", how, child.pid)
        try:
            os.kill(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
