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
        "latency_ms": 100 - latency,  # PyTorch's: never what the board uses
        "latency_onnx_ms": latency,
        "latency_onnx_batch_ms": 10 * latency,
        "latency_onnx_batch_size": 64.0,
        "latency_onnx_threads": 1.0,
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
    assert result["budget"] == {
        "key": "latency_ms", "limit": 2.0, "met": True, "candidates": 3, "fitting": 2,
        "measured": "onnxruntime, CPU, batch 1, 1 thread(s)",
    }  # fmt: skip
    assert board.leaderboard(TRIALS, JOBS, Budget(params=150), None)["winner"]["trial"] == 0


def test_a_budget_nobody_meets_says_so_and_names_the_smallest():
    result = board.leaderboard(TRIALS, JOBS, Budget(bytes=10), None)
    assert result["winner"] is None and result["budget"]["met"] is False
    assert result["budget"]["detail"].startswith("no finished candidate has bytes <= 10; the smallest has 400")


def test_the_pareto_front_keeps_the_undominated_cheapest_first():
    assert board.pareto_front(board.leaderboard(TRIALS, JOBS, None, None)["leaderboard"], "latency_ms") == [0, 2, 1]
    dominated = {**JOBS, 2: job(2, val=0.65, test=0.7, params=200, latency=1.5)}
    assert board.pareto_front(board.leaderboard(TRIALS, dominated, None, None)["leaderboard"], "parameters") == [0, 1]


def test_latency_is_onnxruntimes_for_one_example_and_for_a_batch():
    result = board.leaderboard(TRIALS, JOBS, None, None)
    best = result["leaderboard"][0]
    assert (best["latency_ms"], best["latency_batch_ms"], best["latency_torch_ms"]) == (3.0, 30.0, 97.0)
    assert (best["latency_batch_size"], best["latency_threads"]) == (64, 1)
    assert result["latency"]["batch_size"] == [64] and result["latency"]["intra_op_threads"] == [1]
    assert board.pareto_front(result["leaderboard"], "latency_batch_ms") == [0, 2, 1]
    no_onnx = {0: {**JOBS[0], "result": {"student": {"mean": {"val_accuracy": 0.7, "latency_ms": 1.0}}}}}
    assert board.leaderboard(TRIALS, no_onnx, None, None)["leaderboard"][0]["latency_ms"] is None  # not PyTorch's


def test_the_figures_are_pareto_pngs_points_with_the_front_the_winner_and_the_budget():
    result = board.leaderboard(TRIALS, JOBS, Budget(latency_ms=2.0), None)
    figures = {f["x"]: f for f in result["figures"]}
    assert list(figures) == ["latency_ms", "latency_batch_ms", "parameters"]
    latency = figures["latency_ms"]
    assert latency["budget"] == 2.0 and figures["parameters"]["budget"] is None
    points = {p["trial"]: p for p in latency["points"]}
    assert set(points) == {0, 1, 2}  # the failed trial has no point
    assert (points[2]["x"], points[2]["y"], points[2]["winner"]) == (1.5, 0.75, True)
    assert all(p["on_front"] for p in points.values())  # the front is [0, 2, 1]
    dominated = {**JOBS, 2: job(2, val=0.65, test=0.7, params=200, latency=1.5)}
    figure = board.leaderboard(TRIALS, dominated, None, None)["figures"][0]
    assert {p["trial"]: p["on_front"] for p in figure["points"]} == {0: True, 1: True, 2: False}
    assert [r["trial"] for r in result["leaderboard"] if r["winner"]] == [2]


def test_each_configuration_shows_its_students_pseudo_label_control():
    other = {"student": {"arch": {"name": "mlp", "hidden": [99]}}}
    trials = [*TRIALS[:2], {**trial(2, {"student.arch": 2}), "spec": other}]
    trials += [trial(3, {"method": {"name": "pseudo_label"}}, control=True)]
    jobs = {**JOBS, 3: job(3, val=0.6, test=0.55, params=100, latency=1.0)}
    rows = {r["trial"]: r for r in board.leaderboard(trials, jobs, None, None)["leaderboard"]}
    assert rows[0]["pseudo_label_test_accuracy"] == rows[1]["pseudo_label_test_accuracy"] == {"mean": 0.55, "std": 0.02}
    assert rows[2]["pseudo_label_test_accuracy"] is None  # another student: no control of its own
    assert rows[0]["scratch_val_accuracy"] is None and rows[0]["scratch_test_accuracy"] == {"mean": 0.5, "std": 0.0}


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


def test_pareto_png_draws_the_figures():
    from worker.sweep_plot import draw_pareto

    png = draw_pareto(board.leaderboard(TRIALS, JOBS, Budget(latency_ms=2.0), None))
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert draw_pareto(board.leaderboard(TRIALS, {}, None, None)).startswith(b"\x89PNG")  # nothing measured yet
