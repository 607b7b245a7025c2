"""A hypothesis state machine over the job lifecycle: clients submit, cancel and
poll through the HTTP API while workers claim, finish, crash and get reaped
through the state machine, on a real database. After every step each job's
observed status may only have moved along an allowed transition."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import text

from app import jobs
from app.contract.spec import EXAMPLE_SPEC
from app.db import get_sessionmaker
from app.models import Job, utcnow

OUTCOMES = ("succeed", "fail", "cancelled", "hand_back", "crash")


def test_no_illegal_transition_is_ever_observed(client):
    sessions = get_sessionmaker()

    class Lifecycle(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with sessions() as s:  # each example starts from an empty database
                for table in ("job_metrics", "job_events", "artifacts", "jobs"):  # tenants stay
                    s.execute(text(f"DELETE FROM {table}"))
                s.commit()
            # job id -> last observed status. Jobs are drawn in submission order, never by
            # their random ids, so that hypothesis can replay a failing example.
            self.seen: dict[str, str] = {}
            self.owner: dict[str, str] = {}
            self.submissions = 0

        @rule(key=st.sampled_from([None, "k1", "k2"]))
        def submit(self, key):
            headers = {"Idempotency-Key": key} if key else {}
            r = client.post("/v1/jobs", json=EXAMPLE_SPEC, headers=headers)
            assert r.status_code == 202, r.text
            job = r.json()
            if job["id"] not in self.seen:
                assert job["status"] == "queued"
                self.seen[job["id"]] = "queued"

        @precondition(lambda self: self.seen)
        @rule(data=st.data())
        def cancel(self, data):
            job_id = data.draw(st.sampled_from(list(self.seen)))
            r = client.post(f"/v1/jobs/{job_id}/cancel")
            before = self.seen[job_id]
            expected = {"queued": 200, "running": 202, "cancelled": 200, "succeeded": 409, "failed": 409}
            assert r.status_code == expected[before], (before, r.text)

        @precondition(lambda self: self.seen)
        @rule(data=st.data(), n=st.integers(1, 3))
        def worker_claims(self, data, n):
            job_id = data.draw(st.sampled_from(list(self.seen)))
            owner = f"worker-{n}"
            with sessions() as s:
                if jobs.claim(s, job_id, owner, 60):
                    self.owner[job_id] = owner
                s.commit()

        @precondition(lambda self: self.owner)
        @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
        def worker_ends(self, data, outcome):
            job_id = data.draw(st.sampled_from(list(self.owner)))
            owner = self.owner[job_id]
            with sessions() as s:
                if outcome == "succeed":
                    jobs.succeed(s, job_id, owner, {"ok": True})
                elif outcome == "fail":
                    jobs.fail(s, job_id, "boom", owner=owner)
                elif outcome == "cancelled":
                    jobs.mark_cancelled(s, job_id, owner)
                elif outcome == "hand_back":
                    jobs.hand_back(s, job_id, owner, "shutdown")
                else:  # the worker dies: its lease runs out and the reaper acts
                    job = s.get(Job, job_id)
                    if job.status == "running":
                        job.lease_expires_at = utcnow() - timedelta(seconds=1)
                        s.flush()
                        jobs.reap_expired(s)
                s.commit()

        @invariant()
        def transitions_are_legal(self):
            for job_id, before in self.seen.items():
                now = client.get(f"/v1/jobs/{job_id}").json()["status"]
                assert now == before or jobs.Status(now) in jobs.ALLOWED[jobs.Status(before)], (
                    f"{job_id}: {before} -> {now}"
                )
                self.seen[job_id] = now
            # The listing tells the same story as the jobs one by one.
            listed = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
            assert {j["id"]: j["status"] for j in listed} == self.seen

    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=15, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
