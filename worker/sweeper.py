"""The reaper and sweeper, run by every worker's main process in a thread.

- a running job whose lease expired lost its worker: back to the queue (and sent
  again) until max_attempts, then failed with an error that says so;
- a job past its time limit fails;
- a queued job that no worker took for a while may have lost its message
  (committed, then the enqueue failed or the broker forgot it): sent again.

Several workers may sweep at once: every change is a conditional UPDATE in
app/jobs.py, and a duplicate message claims nothing.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

from app import jobs
from app.config import get_settings
from app.db import get_sessionmaker
from app.queue import enqueue_job

log = logging.getLogger(__name__)


def sweep_once() -> list[str]:
    """One pass; returns the ids sent to the broker."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        jobs.expire_deadlines(session)
        to_send = jobs.reap_expired(session)
        session.commit()
        to_send += jobs.unsent_queued(session, timedelta(seconds=settings.resend_after_seconds))
    sent = []
    for job_id in dict.fromkeys(to_send):
        try:
            enqueue_job(job_id)
        except Exception as exc:  # noqa: BLE001 - broker down: the next pass tries again
            log.warning("could not send job %s: %s", job_id, exc)
            continue
        with get_sessionmaker()() as session:
            jobs.mark_enqueued(session, job_id)
            session.commit()
        sent.append(job_id)
    if sent:
        log.info("sweeper sent %d job(s) again: %s", len(sent), ", ".join(sent))
    return sent


def run_forever(stop: threading.Event) -> None:
    interval = get_settings().sweep_seconds
    # Jitter, so that N workers started together do not sweep in lockstep.
    while not stop.wait(interval * random.uniform(0.8, 1.2)):
        try:
            sweep_once()
        except Exception:  # noqa: BLE001 - the database may be restarting; next pass
            log.exception("sweep failed")


def start() -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=run_forever, args=(stop,), name="sweeper", daemon=True).start()
    return stop
