"""The leaderboard from trial reports (no database): chosen on validation, never on test; the
budget's most accurate fitting student; the Pareto fronts; grid and random expansion."""

from __future__ import annotations

import pytest

from app.sweeps import board, expand
from app.sweeps.spec import Budget, SweepSpec


def trial(index: int, config: dict, control: bool = False) -> dict:
    return {"index": index, "config": config, "control": control, "spec": {"student": {"arch": {"name": "mlp"}}}}


def job(index: int, val: float, test: float, params: int, latency: float, status: str = "succeeded") -> dict:
    mean = {
        "val_accuracy": val,
        "test_accuracy": test,
        "parameters": params,
        "bytes": 4 * params,
        "latency_ms": latency,
    }
    student = {"arch": {"name": "mlp"}, "mean": mean, "std": {"val_accuracy": 0.01, "test_accuracy": 0.02}}
    scratch = {"mean": {"test_accuracy": 0.5}, "std": {"test_accuracy": 0.0}}
    report = {"student": student, "baseline": scratch, "teacher": {"test_accuracy": 0.9}}
    return {"id": f"job-{index}", "status": status, "result": report if status == "succeeded" else None}


TRIALS = [trial(i, {"student.arch": i}) for i in range(4)]
JOBS = {
    0: job(0, val=0.70, test=0.90, params=100, latency=1.0),  # the best on test, not on validation
    1: job(1, val=0.80, test=0.60, params=400, latency=3.0),
    2: job(2, val=0.75, test=0.70, params=200, latency=1.5),
    3: job(3, val=0.0, test=0.0, params=0, latency=0.0, status="failed"),
}


def test_the_winner_is_chosen_on_validation_and_ranked_first():
    result = board.leaderboard(TRIALS, JOBS, None, None)
    assert result["winner"]["trial"] == 1
    assert [r["trial"] for r in result["leaderboard"]] == [1, 2, 0, 3]  # the failed trial last
    assert result["leaderboard"][0]["gap_closed"] == pytest.approx((0.60 - 0.5) / (0.9 - 0.5))
    assert result["leaderboard"][-1]["val_accuracy"] is None and result["leaderboard"][-1]["status"] == "failed"


def test_a_budget_picks_the_most_accurate_student_that_fits():
    result = board.leaderboard(TRIALS, JOBS, Budget(latency_ms=2.0), None)
    assert result["winner"]["trial"] == 2
    assert result["budget"] == {"key": "latency_ms", "limit": 2.0, "met": True, "candidates": 3, "fitting": 2}
    assert board.leaderboard(TRIALS, JOBS, Budget(params=150), None)["winner"]["trial"] == 0


def test_a_budget_nobody_meets_says_so_and_names_the_smallest():
    result = board.leaderboard(TRIALS, JOBS, Budget(bytes=10), None)
    assert result["winner"] is None and result["budget"]["met"] is False
    assert result["budget"]["detail"].startswith("no finished candidate has bytes <= 10; the smallest has 400")


def test_the_pareto_front_keeps_the_undominated_cheapest_first():
    assert board.pareto_front(board.leaderboard(TRIALS, JOBS, None, None)["leaderboard"], "latency_ms") == [0, 2, 1]
    dominated = {**JOBS, 2: job(2, val=0.65, test=0.7, params=200, latency=1.5)}
    assert board.pareto_front(board.leaderboard(TRIALS, dominated, None, None)["leaderboard"], "parameters") == [0, 1]


def test_controls_are_shown_but_never_win():
    trials = [*TRIALS[:3], trial(3, {"method": {"name": "pseudo_label"}}, control=True)]
    jobs = {**JOBS, 3: job(3, val=0.99, test=0.99, params=10, latency=0.1)}
    result = board.leaderboard(trials, jobs, None, None)
    assert result["winner"]["trial"] == 1 and result["leaderboard"][-1]["control"] is True


BASE = {"dataset": {"name": "digits"}, "method": {"name": "kd"}, "student": {"arch": {"name": "mlp", "hidden": [8]}}}


def test_grid_and_random_expansion():
    grid = SweepSpec(base=BASE, axes={"method.temperature": [2, 4, 8], "method.alpha": [0.5, 0.9]})
    trials = expand.trials(grid)
    assert len(trials) == 6 and trials[5]["spec"]["method"] == {"name": "kd", "temperature": 8, "alpha": 0.9}
    assert BASE["method"] == {"name": "kd"}  # the base is never changed
    drawn = SweepSpec(base=BASE, axes=grid.axes, sampling="random", trials=3, random_seed=1)
    configs = [t["config"] for t in expand.trials(drawn)]
    assert len(configs) == 3 and len({str(c) for c in configs}) == 3
    assert configs == [t["config"] for t in expand.trials(drawn)]  # the same seed draws the same trials
    with_control = SweepSpec(base=BASE, axes={"method.temperature": [2, 4]}, controls=["pseudo_label"])
    assert [t["control"] for t in expand.trials(with_control)] == [False, False, True]
    assert expand.trials(with_control)[2]["spec"]["method"] == {"name": "pseudo_label"}


def test_a_huge_grid_is_refused_before_it_is_built_and_random_draws_from_it():
    axes = {f"method.p{i}": list(range(10)) for i in range(12)}  # 10**12 combinations
    assert expand.count_errors(SweepSpec(base=BASE, axes=axes))[0]["type"] == "too_many_trials"
    drawn = SweepSpec(base=BASE, axes=axes, sampling="random", trials=5)
    assert expand.count_errors(drawn) == [] and len(expand.trials(drawn)) == 5
