"""The tests' one way to wait (tests/support/polling.py): the condition's value back, or an
AssertionError that names what was awaited and what was seen last."""

from __future__ import annotations

import pytest

from tests.support.polling import NotYet, poll_until, wait_for_job


def test_poll_until_returns_the_first_truthy_value():
    answers = iter([0, None, "", "there"])
    assert poll_until(lambda: next(answers), timeout=5, what="an answer", every=0) == "there"


def test_poll_until_names_what_it_waited_for_and_the_last_value_seen():
    seen = iter(range(1000))
    with pytest.raises(AssertionError) as caught:
        poll_until(lambda: NotYet(f"{next(seen)} rows"), timeout=0.05, what="the rows", every=0.01)
    message = str(caught.value)
    assert message.startswith("timed out after 0.05 s waiting for the rows; last seen: '")
    assert message.endswith(" rows'")


def test_a_long_last_value_is_cut():
    with pytest.raises(AssertionError) as caught:
        poll_until(lambda: NotYet("x" * 5000), timeout=0, what="nothing")
    assert len(str(caught.value)) < 700 and str(caught.value).endswith("...")


class _Jobs:
    """An API client stand-in whose job goes through `statuses`, one per GET."""

    def __init__(self, *statuses: str) -> None:
        self.statuses = list(statuses)

    def get(self, path: str):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        job = {"id": path.rsplit("/", 1)[1], "status": status, "phase": "student", "spec": {"big": "..."}}
        return type("Response", (), {"json": lambda _self: job})()


def test_wait_for_job_returns_the_job_once_it_ended_and_keeps_what_it_saw():
    seen: list[dict] = []
    job = wait_for_job(_Jobs("queued", "running", "succeeded"), "j1", timeout=5, every=0, seen=seen)
    assert job["status"] == "succeeded"
    assert [j["status"] for j in seen] == ["queued", "running", "succeeded"]


def test_wait_for_job_waits_for_the_statuses_asked_and_says_where_the_job_was():
    assert (
        wait_for_job(_Jobs("queued", "running"), "j2", timeout=5, every=0, statuses={"running"})["status"] == "running"
    )
    with pytest.raises(AssertionError) as caught:
        wait_for_job(_Jobs("running"), "j3", timeout=0.05, every=0.01)
    message = str(caught.value)
    assert "waiting for job j3 to end; last seen: {'id': 'j3', 'status': 'running', 'phase': 'student'" in message
    assert "spec" not in message
