"""The Celery app of the workers: `celery -A worker.celery_app worker`.

Configured from the same Settings as the API (app/queue.py). The worker runs its task in
a thread of its main process (the `threads` pool, concurrency 1): that thread supervises
the worker's long-lived runner process, started with `spawn`, which alone imports torch
(worker/runner.py). Nothing here forks, and this module must not import torch.

The main process also runs the sweeper (worker/sweeper.py). On a warm shutdown the running
job is asked to stop at the next batch and is handed back (or killed after a grace period).
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from app.config import get_settings
from app.queue import celery_config

log = logging.getLogger(__name__)

app = Celery("distill")
app.conf.update(celery_config(get_settings()))
app.conf.include = ["worker.tasks"]


@worker_ready.connect
def _start(**_kwargs) -> None:
    from worker import runner, sweeper

    runner.RUNNER.ensure_started()  # warms up (imports torch) before the first job arrives
    sweeper.start()


@worker_shutting_down.connect
def _hand_jobs_back(sig: str = "", how: str = "", **_kwargs) -> None:
    from worker import runner

    log.info("%s shutdown: the running job (if any) is handed back", how)
    runner.shutting_down.set()


@worker_shutdown.connect
def _stop_runner(**_kwargs) -> None:
    from worker import runner

    runner.RUNNER.close()
