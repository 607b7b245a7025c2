"""The reaper and sweeper, run by every worker's main process in a thread.

- a running job whose lease expired lost its worker: back to the queue (and sent
  again) until max_attempts, then failed with an error that says so;
- a job past its time limit fails;
- queued jobs whose message was lost (committed, then the enqueue failed, or the broker
  forgot it) are sent again. A message only wakes a worker (worker/fair_share.py), so
  what matters is their number: every queued job needs one waiting in the broker. Jobs
  that merely wait for a busy worker have theirs, and are not sent again and again; only
  the shortfall is (counting jobs queued for resend_after_seconds, so that a job whose
  message is being sent right now is not counted as missing one).

Several workers may sweep at once: every change is a conditional UPDATE in
app/jobs.py, and a surplus message claims nothing.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

from app import jobs
from app.config import get_settings
from app.db import get_sessionmaker
from app.queue import enqueue_job, pending_messages

log = logging.getLogger(__name__)


def sweep_once() -> list[str]:
    """One pass; returns the ids sent to the broker."""
    with get_sessionmaker()() as session:
        jobs.expire_deadlines(session)
        reaped = jobs.reap_expired(session)
        session.commit()
    sent = send(reaped) + send(missing_messages())
    if sent:
        log.info("sweeper sent %d job(s) again: %s", len(sent), ", ".join(sent))
    return sent


def missing_messages() -> list[str]:
    """Queued jobs to send again: as many as the broker lacks messages for them."""
    older_than = timedelta(seconds=get_settings().resend_after_seconds)
    with get_sessionmaker()() as session:
        waiting = jobs.unsent_queued(session, older_than)
    if not waiting:
        return []
    try:
        missing = len(waiting) - pending_messages()
    except Exception as exc:
        log.warning("could not count the queued messages: %s", exc)
        return []
    return waiting[:missing] if missing > 0 else []


def send(job_ids: list[str]) -> list[str]:
    sent = []
    for job_id in dict.fromkeys(job_ids):
        try:
            enqueue_job(job_id)
        except Exception as exc:
            log.warning("could not send job %s: %s", job_id, exc)
            continue
        with get_sessionmaker()() as session:
            jobs.mark_enqueued(session, job_id)
            session.commit()
        sent.append(job_id)
    return sent


def run_forever(stop: threading.Event) -> None:
    interval = get_settings().sweep_seconds
    # Jitter, so that N workers started together do not sweep in lockstep.
    while not stop.wait(interval * random.uniform(0.8, 1.2)):
        try:
            sweep_once()
        except Exception:
            log.exception("sweep failed")


def start() -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=run_forever, args=(stop,), name="sweeper", daemon=True).start()
    return stop
