"""Which queued job a free worker claims (worker/fair_share.py), on real databases: tenants
take turns, the fewest running first; a job someone else took is skipped."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from app import jobs
from app.contract.spec import EXAMPLE_SPEC, JobSpec
from app.db import make_engine
from app.models import Tenant
from worker.fair_share import claim_fairest, fairest_queued

LEASE = 30.0


@pytest.fixture
def session(database_url: str):
    engine = make_engine(database_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def tenant(session: Session, name: str) -> str:
    t = Tenant(name=name)
    session.add(t)
    session.flush()
    return t.id


def submit(session: Session, tenant_id: str, n: int = 1) -> list[str]:
    ids = [jobs.create(session, JobSpec.model_validate(EXAMPLE_SPEC), tenant_id=tenant_id).id for _ in range(n)]
    session.commit()
    return ids


def finish(session: Session, job_id: str, owner: str) -> None:
    assert jobs.succeed(session, job_id, owner, {})
    session.commit()


def test_on_one_worker_tenants_take_turns(session):
    a, b = tenant(session, "a"), tenant(session, "b")
    a_jobs = submit(session, a, 4)
    (b_job,) = submit(session, b)
    order = []
    for turn in range(5):
        claimed = claim_fairest(session, f"w:{turn}", LEASE)
        session.commit()
        order.append(claimed)
        finish(session, claimed, f"w:{turn}")
    assert claim_fairest(session, "w:idle", LEASE) is None  # nothing left: a duplicate message
    assert order == [a_jobs[0], b_job, *a_jobs[1:]]


def test_the_tenant_with_fewest_running_jobs_goes_first(session):
    a, b, c = tenant(session, "a"), tenant(session, "b"), tenant(session, "c")
    a_jobs, b_jobs = submit(session, a, 3), submit(session, b, 2)
    assert claim_fairest(session, "w1", LEASE) == a_jobs[0]
    assert claim_fairest(session, "w2", LEASE) == b_jobs[0]
    session.commit()
    (c_job,) = submit(session, c)
    # a and b run one job each, c none: c's job, although the newest, goes first.
    assert fairest_queued(session)[0] == c_job
    assert claim_fairest(session, "w3", LEASE) == c_job


def test_a_job_claimed_meanwhile_is_skipped_for_the_next(session):
    a = tenant(session, "a")
    first, second = submit(session, a, 2)
    assert jobs.claim(session, first, "other", LEASE)  # another worker won the race
    session.commit()
    assert claim_fairest(session, "me", LEASE) == second
