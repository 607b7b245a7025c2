"""run_job: the task a message delivers. Thin: it claims a job under a lease and hands it
to the supervisor (worker/runner.py), which runs it in the worker's runner process.

The message is a wake-up: the worker claims the fairest queued job (worker/fair_share.py),
usually but not always the one the message names. A message that finds no queued job
(a duplicate delivery, a job cancelled or finished meanwhile, or taken by another worker
woken for it) does nothing. No torch in this process.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from app import jobs
from app.config import get_settings
from app.queue import RUN_JOB_TASK
from worker import runner
from worker.celery_app import app
from worker.fair_share import claim_fairest
from worker.runner_db import in_transaction

log = logging.getLogger(__name__)


def new_owner() -> str:
    """The lease owner of one attempt: this host and process, and a fresh suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    if runner.shutting_down.is_set():
        return  # not acknowledged work: the hand-back and the sweeper resend what is queued
    owner = new_owner()
    lease_seconds = get_settings().lease_seconds
    claimed = in_transaction(lambda s: claim_fairest(s, owner, lease_seconds))
    if claimed is None:
        log.info(
            "job %s: nothing queued to claim (duplicate delivery, cancelled, finished, or "
            "taken by another worker): skipped",
            job_id,
        )
        return
    if claimed != job_id:
        log.info("message for job %s: took job %s (fair share between tenants)", job_id, claimed)
    deadline = in_transaction(lambda s: jobs.get(s, claimed).deadline_at)
    runner.supervise(claimed, owner, deadline)
