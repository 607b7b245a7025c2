"""Progress in units of time (worker/distill/progress.py): with a plan of runs, each run's epochs are
weighted by their measured seconds per epoch, so the API's ETA (elapsed * (1 - p) / p) is the time
left, also when a slow teacher stopped early and fast students follow. A fake clock, a real Progress."""

from __future__ import annotations

from worker.distill.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The reporter's progress calls, with the clock's time."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.points = clock, []

    def progress(self, fraction: float) -> None:
        self.points.append((self.clock.now, fraction))


def simulate(plan: list[tuple[str, int, int, float]]) -> tuple[list[tuple[float, float]], float]:
    """plan: (phase, budget, epochs actually run, seconds per epoch) per run -> progress points, end."""
    clock = Clock()
    recorder = Recorder(clock)
    progress = Progress(recorder, sum(p[1] for p in plan), runs=[(p[0], p[1]) for p in plan], clock=clock)
    progress.start()
    for _phase, budget, ran, seconds in plan:
        on_epoch = progress.run(budget)
        for epoch in range(1, ran + 1):
            clock.now += seconds
            on_epoch(epoch)
        progress.run_done(budget)
    clock.now += clock.now * 0.05 / 0.95  # evaluate and export: the 5% tail the bar gives them
    progress.tail(1.0)
    return recorder.points, clock.now


def eta_errors(points: list[tuple[float, float]], end: float, after: float) -> list[float]:
    errors = []
    for at, fraction in points:
        if at >= after and 0 < fraction < 1 and end - at > 0:
            eta = at * (1 - fraction) / fraction
            errors.append(abs(eta - (end - at)) / (end - at))
    return errors


def test_slow_teacher_then_fast_students_the_eta_is_the_time_left() -> None:
    # A teacher epoch costs 10x a student's; the teacher runs its whole budget.
    points, end = simulate([("teacher", 10, 10, 1.0), ("student", 10, 10, 0.1), ("student", 10, 10, 0.1)])
    fractions = [f for _, f in points]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # Once the first student epoch is measured, the ETA is within 10% of the time left.
    assert max(eta_errors(points, end, after=10.1)) < 0.1
    # Epoch counting alone would put the job at 1/3 after the teacher; by time it is ~5/6 done,
    # which the first student epoch shows.
    after_first_student_epoch = next(f for t, f in points if t > 10.0)
    assert after_first_student_epoch > 0.75


def test_a_run_that_stops_early_costs_only_its_time() -> None:
    points, end = simulate([("teacher", 20, 5, 1.0), ("student", 10, 10, 0.5), ("baseline", 10, 10, 0.5)])
    assert max(eta_errors(points, end, after=5.5)) < 0.1


def test_without_a_plan_every_epoch_counts_the_same() -> None:
    clock = Clock()
    recorder = Recorder(clock)
    progress = Progress(recorder, 10, clock=clock)
    progress.start()
    on_epoch = progress.run(10)
    clock.now += 1
    on_epoch(5)
    assert recorder.points[-1][1] == (1 - 0.05) * 5 / 10
