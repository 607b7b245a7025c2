"""`distill sweep show|watch` text: the standings while a sweep runs (the best so far marked),
the leaderboard once it ended, the latency's measurement said, the budget and early stopping."""

from __future__ import annotations

from rich.console import Console

from app.cli.sweep_tables import progress_line, sweep_view
from app.client import Sweep
from app.sweeps import board
from app.sweeps.spec import Budget
from tests.sweeps.test_board import JOBS, TRIALS


def text(sweep: Sweep) -> str:
    console = Console(width=240, record=True)
    console.print(sweep_view(sweep))
    return console.export_text()


def sweep(status: str, **fields) -> Sweep:
    progress = {"total": 4, "done": 2, "running": 1, "queued": 1, "pending": 0, "best_so_far": None}
    return Sweep.model_validate(
        {"id": "s1", "status": status, "created_at": "2026-01-01T00:00:00Z", "progress": progress, **fields}
    )


def test_a_running_sweep_shows_its_standings_with_the_best_so_far_marked():
    standings = board.leaderboard(TRIALS, JOBS, None, None)["leaderboard"]
    shown = text(sweep("running", leaderboard_so_far=standings))
    assert "2/4 done, 1 running, 1 queued" in progress_line(sweep("running"))
    assert "Standings so far" in shown and "Leaderboard" not in shown
    assert "1 *" in shown and "0 *" not in shown
    assert "[failed]" in shown  # an ended trial without figures, with its state
    assert "ms (batch 1) is one example" in shown and "batch of 64" in shown


def test_an_ended_sweep_shows_its_leaderboard_budget_and_early_stopping():
    early = {"rule": "median", "fraction": 0.5, "min_trials": 2, "stopped_trials": [3]}
    result = board.leaderboard(TRIALS, JOBS, Budget(latency_ms=2.0), early) | {"teacher_trainings": 1}
    shown = text(sweep("succeeded", result=result))
    assert "Leaderboard (ranked on validation)" in shown and "2 *" in shown
    assert "budget latency_ms <= 2 (onnxruntime, CPU, batch 1, 1 thread(s)): met." in shown
    assert "early stopping on (median rule at 50% of the epochs): stopped trials [3]" in shown
