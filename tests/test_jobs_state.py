"""The job state machine on real databases: every transition is guarded, and a
race between two actors has exactly one winner."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from app import jobs
from app.db import make_engine
from app.models import Job
from app.spec import EXAMPLE_SPEC, JobSpec


@pytest.fixture
def session(database_url: str):
    engine = make_engine(database_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def new_job(session: Session) -> str:
    job = jobs.create(session, JobSpec.model_validate(EXAMPLE_SPEC))
    session.commit()
    return job.id


def status_of(session: Session, job_id: str) -> str:
    session.expire_all()
    return session.get(Job, job_id).status


def test_happy_path(session):
    job_id = new_job(session)
    assert jobs.claim(session, job_id)
    jobs.report_progress(session, job_id, phase="student", progress=0.5)
    assert jobs.succeed(session, job_id, {"ok": True})
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert (job.status, job.progress, job.result, job.attempts) == ("succeeded", 1.0, {"ok": True}, 1)


def test_a_finished_job_cannot_run_again(session):
    job_id = new_job(session)
    jobs.claim(session, job_id)
    jobs.succeed(session, job_id, {})
    session.commit()
    assert not jobs.claim(session, job_id)
    assert not jobs.fail(session, job_id, "late error")
    assert not jobs.mark_cancelled(session, job_id)
    session.commit()
    assert status_of(session, job_id) == "succeeded"


def test_a_duplicate_delivery_does_not_claim_twice(session):
    job_id = new_job(session)
    assert jobs.claim(session, job_id)
    assert not jobs.claim(session, job_id)
    session.commit()
    assert session.get(Job, job_id).attempts == 1


def test_cancel_queued_is_immediate_and_running_is_a_request(session):
    queued = new_job(session)
    assert jobs.request_cancel(session, queued).status == "cancelled"
    assert not jobs.claim(session, queued)  # a worker that receives it later does nothing

    running = new_job(session)
    jobs.claim(session, running)
    job = jobs.request_cancel(session, running)
    assert job.status == "running" and job.cancel_requested
    assert jobs.cancel_requested(session, running)
    assert jobs.mark_cancelled(session, running)
    session.commit()
    assert status_of(session, running) == "cancelled"


def test_cancel_and_finish_race_has_one_winner(session):
    job_id = new_job(session)
    jobs.claim(session, job_id)
    session.commit()
    jobs.request_cancel(session, job_id)
    assert jobs.mark_cancelled(session, job_id)
    assert not jobs.succeed(session, job_id, {"late": True})
    session.commit()
    assert status_of(session, job_id) == "cancelled"
    assert session.get(Job, job_id).result is None


def test_progress_is_ignored_once_the_job_is_no_longer_running(session):
    job_id = new_job(session)
    jobs.request_cancel(session, job_id)
    jobs.report_progress(session, job_id, phase="student", progress=0.7)
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert (job.phase, job.progress) == (None, 0.0)


def test_transition_table_has_no_exit_from_terminal_states():
    for status in jobs.TERMINAL:
        assert jobs.ALLOWED[status] == frozenset()
    assert jobs.Status.RUNNING in jobs.ALLOWED[jobs.Status.QUEUED]
    assert jobs.Status.QUEUED not in jobs.ALLOWED[jobs.Status.QUEUED]
