"""`distill watch`'s live block (app/cli/live.py): the run's epoch of its budget and the job's epoch
budget from the API's `epochs`, and an ETA that counts down between the job's messages."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from rich.console import Console

from app.cli.background import in_background
from app.cli.live import LiveView, progress_view
from app.client import Job

RUNNING = {
    "id": "j1",
    "status": "running",
    "phase": "teacher",
    "progress": 0.2,
    "eta_seconds": 100.0,
    "attempts": 1,
    "created_at": datetime(2026, 12, 1, tzinfo=UTC).isoformat(),
    "latest_metrics": {"phase": "teacher", "run": "teacher", "epoch": 14, "values": {"val_accuracy": 0.9}},
    "epochs": {
        "done": 14,
        "budget": 380,
        "planned": 420,
        "run": {"phase": "teacher", "name": "teacher", "epoch": 14, "budget": 60},
    },
    "spec": {},
}


def text(renderable) -> str:
    console = Console(record=True, width=120)
    console.print(renderable)
    return console.export_text()


def test_the_block_shows_the_epoch_budget_and_the_eta() -> None:
    shown = text(progress_view(Job.model_validate(RUNNING)))
    assert "run teacher  epoch 14 of 60" in shown
    assert "14 of 380 (planned 420; early stops end runs sooner)" in shown
    assert "ETA 1m40s" in shown


def test_the_eta_counts_down_between_messages() -> None:
    now = [1000.0]
    view = LiveView(Job.model_validate(RUNNING), clock=lambda: now[0])
    now[0] += 30.0
    assert "ETA 1m10s" in text(view)
    now[0] += 500.0
    assert "ETA 0s" in text(view)  # never below zero
    view.update(Job.model_validate({**RUNNING, "eta_seconds": 42.0}))
    assert "ETA 42s" in text(view)


def test_without_the_worker_s_epochs_the_spec_gives_the_budget() -> None:
    job = Job.model_validate({**RUNNING, "epochs": None, "spec": {"teacher": {"train": {"epochs": 60}}}})
    shown = text(progress_view(job))
    assert "epoch 14 of 60" in shown and "planned" not in shown


def test_in_background_yields_in_order_then_raises_the_sources_error_here():
    def source():
        yield 1
        yield 2
        raise ValueError("the server went away")

    got = []
    with pytest.raises(ValueError, match="went away"):
        for item in in_background(source()):
            got.append((item, threading.current_thread() is threading.main_thread()))
    assert got == [(1, True), (2, True)]
