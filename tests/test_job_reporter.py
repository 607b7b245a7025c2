"""The runner's JobReporter on a real database: metrics and progress are buffered off the
training loop and written by one thread; phases, events and checkpoints (flush) deliver
them first; a lost lease stops the job and writes nothing more."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from app import jobs
from app.contract.spec import EXAMPLE_SPEC, JobSpec
from app.db import make_engine
from app.models import Artifact, Job, JobEvent, JobMetric, Tenant
from tests.conftest import clear_caches
from tests.support.polling import NotYet, poll_until
from worker.distill.export import OutputFile
from worker.runner_db import StopReason
from worker.runner_job import JobReporter, LeaseLost

OWNER = "w:test"


@pytest.fixture
def claimed(in_process_env, database_url, monkeypatch):
    """A job claimed by OWNER, and a session on its database."""
    monkeypatch.setenv("DISTILL_DATABASE_URL", database_url)
    monkeypatch.setenv("DISTILL_REPORT_SECONDS", "0.05")
    clear_caches()
    engine = make_engine(database_url)
    with Session(engine, expire_on_commit=False) as s:
        tenant = Tenant(name="t")
        s.add(tenant)
        s.flush()
        job_id = jobs.create(s, JobSpec.model_validate(EXAMPLE_SPEC), tenant_id=tenant.id).id
        s.commit()
        assert jobs.claim(s, job_id, OWNER, 60.0)
        s.commit()
        yield job_id, s
    engine.dispose()


def _epochs(session: Session, job_id: str) -> list[int]:
    session.expire_all()
    rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.name == "loss"))
    return sorted(m.epoch for m in rows)


def test_metrics_are_buffered_and_written_by_the_thread(claimed):
    job_id, s = claimed
    reporter = JobReporter(job_id, OWNER, mp.Value("i", StopReason.NONE))
    try:
        for epoch in range(1, 201):
            reporter.metric("student", "seed=0", epoch, {"loss": 1.0 / epoch})
        reporter.progress(0.5)
        poll_until(
            lambda: (e := _epochs(s, job_id)) == list(range(1, 201)) or NotYet(f"{len(e)} epochs"),
            timeout=10,
            what="the thread to write the 200 epochs",
            every=0.01,
        )
        poll_until(
            lambda: (s.expire_all(), s.get(Job, job_id).progress == 0.5)[1],
            timeout=10,
            what="the thread to write progress 0.5",
            every=0.01,
        )
    finally:
        reporter.close(flush=True)


def test_a_phase_and_a_flush_deliver_the_buffer_first(claimed, monkeypatch):
    job_id, s = claimed
    monkeypatch.setenv("DISTILL_REPORT_SECONDS", "3600")  # the thread never gets to it
    clear_caches()
    reporter = JobReporter(job_id, OWNER, mp.Value("i", StopReason.NONE))
    try:
        reporter.metric("teacher", "teacher", 1, {"loss": 0.5})
        assert _epochs(s, job_id) == []  # buffered
        reporter.phase("student")
        assert _epochs(s, job_id) == [1]
        reporter.metric("student", "seed=0", 2, {"loss": 0.4})
        reporter.flush()  # what the trainer calls before a checkpoint
        assert _epochs(s, job_id) == [1, 2]
        events = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        assert "phase student started" in events
    finally:
        reporter.close(flush=False)


def test_a_lost_lease_stops_the_job_and_writes_nothing(claimed):
    job_id, s = claimed
    flag = mp.Value("i", StopReason.NONE)
    reporter = JobReporter(job_id, OWNER, flag)
    # Another worker holds it now (ours expired and the reaper requeued it).
    assert jobs.hand_back(s, job_id, OWNER, "test") and jobs.claim(s, job_id, "w:other", 60.0)
    s.commit()
    reporter.metric("student", "seed=0", 1, {"loss": 0.5})
    # Found by the writer thread.
    poll_until(lambda: flag.value == StopReason.LOST, timeout=10, what="the lost lease", every=0.01)
    assert reporter.should_stop()
    reporter.close(flush=True)  # nothing is written for a lease that is gone
    with pytest.raises(LeaseLost):
        reporter.flush()
    assert _epochs(s, job_id) == []


def test_the_outputs_and_the_ending_are_one_transaction(claimed, tmp_path):
    # A worker killed between the two left a job whose next attempt stored its outputs again.
    job_id, s = claimed
    report = tmp_path / "report.json"
    report.write_text("{}")
    files = [OutputFile("report.json", report, "application/json", "report")]
    reporter = JobReporter(job_id, OWNER, mp.Value("i", StopReason.NONE))

    def state() -> tuple[str, list[str]]:
        s.expire_all()
        return s.get(Job, job_id).status, list(s.scalars(select(Artifact.filename).where(Artifact.job_id == job_id)))

    try:
        with pytest.raises((TypeError, StatementError)):  # an ending the database cannot take: no output stays
            reporter.succeed(files, {"result": object()})
        assert state() == ("running", [])
        reporter.succeed(files, {"result": 1})
        assert state() == ("succeeded", ["report.json"])
    finally:
        reporter.close(flush=False)


def test_the_estimate_is_written_and_the_api_counts_it_down(claimed, monkeypatch):
    """The engine's Estimate becomes the job's end time and epoch budget; GET shows the seconds
    left from it (never more than estimated), 0 once the estimate says so, and a new attempt
    keeps the epochs but drops the end time until it has measured an epoch."""
    from app.api.jobs import job_out
    from worker.distill.eta import Estimate

    job_id, s = claimed
    monkeypatch.setenv("DISTILL_REPORT_SECONDS", "3600")  # written by flush alone
    clear_caches()
    run = {"phase": "teacher", "name": "teacher", "epoch": 3, "budget": 60}
    reporter = JobReporter(job_id, OWNER, mp.Value("i", StopReason.NONE))

    def shown():
        s.expire_all()
        return job_out(s.get(Job, job_id))

    try:
        reporter.estimate(Estimate(seconds_left=None, epochs_done=0, epochs_budget=80, epochs_planned=80))
        reporter.flush()
        assert shown().eta_seconds is None and shown().epochs.budget == 80
        reporter.estimate(Estimate(300.0, 3, 80, 80, run))
        reporter.flush()
        job = shown()
        assert 0 < job.eta_seconds <= 300.0
        assert job.epochs.model_dump() == {"done": 3, "budget": 80, "planned": 80, "run": run}
        reporter.estimate(Estimate(0.0, 44, 44, 80))
        reporter.flush()
        assert shown().eta_seconds == 0.0 and shown().epochs.budget == 44
    finally:
        reporter.close(flush=True)
    assert jobs.hand_back(s, job_id, OWNER, "the worker is shutting down")
    assert jobs.claim(s, job_id, "w:next", 60.0)
    s.commit()
    job = shown()
    assert job.eta_seconds is None and job.epochs.done == 44 and job.attempts == 2
