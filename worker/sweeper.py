"""The reaper and sweeper, run by every worker's main process in a thread.

- a running job whose lease expired lost its worker: back to the queue (and sent
  again) until max_attempts, then failed with an error that says so;
- a job past its time limit fails;
- running sweeps advance (app/sweeps/state.py): bad trials stopped, the next trials released,
  the leaderboard written and pareto.png drawn when the last trial ends;
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

from sqlalchemy.orm import Session

from app import jobs
from app.config import get_settings
from app.db import get_sessionmaker
from app.models import Sweep
from app.queue import enqueue_job, pending_messages
from app.storage import get_storage
from app.sweeps import state as sweep_state
from worker.sweep_plot import draw_pareto

log = logging.getLogger(__name__)


def sweep_once() -> list[str]:
    """One pass; returns the ids sent to the broker."""
    with get_sessionmaker()() as session:
        jobs.expire_deadlines(session)
        reaped = jobs.reap_expired(session)
        session.commit()
    sent = send(reaped) + send(advance_sweeps()) + send(missing_messages())
    if sent:
        log.info("sweeper sent %d job(s) again: %s", len(sent), ", ".join(sent))
    return sent


def advance_sweeps() -> list[str]:
    """Every running sweep one step on; returns the trials released (to send)."""
    released: list[str] = []
    with get_sessionmaker()() as session:
        sweep_ids = sweep_state.running_sweep_ids(session)
    for sweep_id in sweep_ids:
        try:
            released += _advance_sweep(sweep_id)
        except Exception:
            log.exception("advancing sweep %s failed (the next sweep tries again)", sweep_id)
    return released


def _advance_sweep(sweep_id: str) -> list[str]:
    with get_sessionmaker()() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:  # deleted with its tenant meanwhile
            return []
        released, finished = sweep_state.advance(session, sweep)
        session.commit()
        if finished:
            _draw_pareto(session, sweep_id)
    return released


def _draw_pareto(session: Session, sweep_id: str) -> None:
    """The finished sweep's figure, in the artifact store; its key in the result."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:  # deleted with its tenant meanwhile
        return
    session.refresh(sweep)
    result = dict(sweep.result or {})
    if not result.get("leaderboard"):
        return
    key = f"sweeps/{sweep.tenant_id}/{sweep.id}/pareto.png"
    target = get_storage().path(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(".pareto.png.part")
    temp.write_bytes(draw_pareto(result))
    temp.replace(target)
    sweep.result = {**result, "pareto_png_key": key, "pareto_png_url": f"/v1/sweeps/{sweep.id}/pareto.png"}
    session.commit()


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
