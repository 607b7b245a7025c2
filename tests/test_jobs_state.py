"""The job state machine on real databases: every transition is guarded, and a
race between two actors has exactly one winner."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from app import jobs, tenants
from app.contract.spec import EXAMPLE_SPEC, JobSpec
from app.db import make_engine
from app.models import Job, utcnow


@pytest.fixture
def session(database_url: str):
    engine = make_engine(database_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


W1, W2 = "worker-1", "worker-2"
LEASE = 30.0


def new_job(session: Session, **limits) -> str:
    tenant = tenants.local_tenant(session)
    job = jobs.create(session, JobSpec.model_validate({**EXAMPLE_SPEC, "limits": limits}), tenant_id=tenant.id)
    session.commit()
    return job.id


def claim(session: Session, job_id: str, owner: str = W1) -> bool:
    return jobs.claim(session, job_id, owner, LEASE)


def status_of(session: Session, job_id: str) -> str:
    session.expire_all()
    return session.get(Job, job_id).status


def test_happy_path(session):
    job_id = new_job(session)
    assert claim(session, job_id)
    assert jobs.report_progress(session, job_id, W1, phase="student", progress=0.5)
    assert jobs.succeed(session, job_id, W1, {"ok": True})
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert (job.status, job.progress, job.result, job.attempts) == ("succeeded", 1.0, {"ok": True}, 1)


def test_a_finished_job_cannot_run_again(session):
    job_id = new_job(session)
    claim(session, job_id)
    jobs.succeed(session, job_id, W1, {})
    session.commit()
    assert not claim(session, job_id)
    assert not jobs.fail(session, job_id, "late error")
    assert not jobs.mark_cancelled(session, job_id, W1)
    session.commit()
    assert status_of(session, job_id) == "succeeded"


def test_a_duplicate_delivery_does_not_claim_twice(session):
    job_id = new_job(session)
    assert claim(session, job_id, W1)
    assert not claim(session, job_id, W2)
    session.commit()
    assert session.get(Job, job_id).attempts == 1


def test_cancel_queued_is_immediate_and_running_is_a_request(session):
    queued = new_job(session)
    assert jobs.request_cancel(session, queued).status == "cancelled"
    assert not claim(session, queued)  # a worker that receives it later does nothing

    running = new_job(session)
    claim(session, running)
    job = jobs.request_cancel(session, running)
    assert job.status == "running" and job.cancel_requested
    assert jobs.cancel_requested(session, running)
    assert jobs.mark_cancelled(session, running, W1)
    session.commit()
    assert status_of(session, running) == "cancelled"


def test_cancel_and_finish_race_has_one_winner(session):
    job_id = new_job(session)
    claim(session, job_id)
    session.commit()
    jobs.request_cancel(session, job_id)
    assert jobs.mark_cancelled(session, job_id, W1)
    assert not jobs.succeed(session, job_id, W1, {"late": True})
    session.commit()
    assert status_of(session, job_id) == "cancelled"
    assert session.get(Job, job_id).result is None


def test_progress_is_ignored_once_the_job_is_no_longer_running(session):
    job_id = new_job(session)
    jobs.request_cancel(session, job_id)
    assert not jobs.report_progress(session, job_id, W1, phase="student", progress=0.7)
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert (job.phase, job.progress) == (None, 0.0)


def test_transition_table_has_no_exit_from_terminal_states():
    for status in jobs.TERMINAL:
        assert jobs.ALLOWED[status] == frozenset()
    assert jobs.Status.RUNNING in jobs.ALLOWED[jobs.Status.QUEUED]
    assert jobs.Status.QUEUED not in jobs.ALLOWED[jobs.Status.QUEUED]


def expire_lease(session: Session, job_id: str) -> None:
    session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    session.commit()


def test_an_expired_lease_sends_the_job_back_and_silences_the_old_worker(session):
    job_id = new_job(session)
    claim(session, job_id, W1)
    session.commit()
    assert jobs.reap_expired(session) == []  # the lease is live
    expire_lease(session, job_id)
    assert jobs.reap_expired(session) == [job_id]
    session.commit()
    assert status_of(session, job_id) == "queued"

    assert claim(session, job_id, W2)
    # The first worker comes back from a long pause: none of its writes land.
    assert not jobs.renew_lease(session, job_id, W1, LEASE)
    assert not jobs.report_progress(session, job_id, W1, progress=0.9)
    assert not jobs.succeed(session, job_id, W1, {"from": "the old worker"})
    assert jobs.renew_lease(session, job_id, W2, LEASE)
    assert jobs.succeed(session, job_id, W2, {"from": "the new worker"})
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert (job.status, job.result, job.attempts) == ("succeeded", {"from": "the new worker"}, 2)


def test_a_job_that_keeps_losing_its_worker_fails_after_max_attempts(session):
    job_id = new_job(session, max_attempts=2)
    for attempt in (1, 2):
        assert claim(session, job_id, f"worker-{attempt}")
        session.commit()
        expire_lease(session, job_id)
        jobs.reap_expired(session)
        session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert job.status == "failed" and "max_attempts 2" in job.error


def test_a_renewing_worker_keeps_its_job(session):
    job_id = new_job(session)
    claim(session, job_id)
    session.commit()
    expire_lease(session, job_id)
    assert jobs.renew_lease(session, job_id, W1, LEASE)  # renewed before the reaper looked
    session.commit()
    assert jobs.reap_expired(session) == []


def test_queued_jobs_nobody_took_are_found_for_resending(session):
    job_id = new_job(session)
    jobs.mark_enqueued(session, job_id)
    session.commit()
    assert jobs.unsent_queued(session, timedelta(seconds=60)) == []
    later = utcnow() + timedelta(seconds=61)
    assert jobs.unsent_queued(session, timedelta(seconds=60), now=later) == [job_id]
    claim(session, job_id)
    session.commit()
    assert jobs.unsent_queued(session, timedelta(seconds=60), now=later) == []


def test_a_job_past_its_time_limit_fails(session):
    job_id = new_job(session, time_limit_seconds=5)
    claim(session, job_id)
    session.commit()
    assert jobs.expire_deadlines(session) == 0
    assert jobs.expire_deadlines(session, now=utcnow() + timedelta(seconds=6)) == 1
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert job.status == "failed" and "time limit" in job.error and job.lease_owner is None


def test_hand_back_requeues_and_keeps_attempt_count(session):
    job_id = new_job(session)
    claim(session, job_id)
    assert not jobs.hand_back(session, job_id, W2, "not mine")
    assert jobs.hand_back(session, job_id, W1, "worker shutting down")
    session.commit()
    assert status_of(session, job_id) == "queued"
    assert claim(session, job_id, W2)
