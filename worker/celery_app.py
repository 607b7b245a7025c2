"""The Celery app of the workers: `celery -A worker.celery_app worker`.

Configured from the same Settings as the API (app/queue.py). This module must
not import torch: CUDA does not survive the fork into the child that runs a job.
"""

from __future__ import annotations

from celery import Celery

from app.config import get_settings
from app.queue import celery_config

app = Celery("distill")
app.conf.update(celery_config(get_settings()))
app.conf.include = ["worker.tasks"]
