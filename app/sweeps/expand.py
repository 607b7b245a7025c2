"""A sweep's trials: the axes' combinations (grid or random), each a full job spec."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

from app.sweeps.spec import MAX_TRIALS, SweepSpec


def set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    """document[a][b][c] = value for "a.b.c"; missing levels become objects."""
    *parents, last = dotted.split(".")
    node = document
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = copy.deepcopy(value)


def configurations(sweep: SweepSpec) -> list[dict[str, Any]]:
    """{axis: value} per trial: every combination (grid), or `trials` distinct ones drawn with
    `random_seed` (random)."""
    names = list(sweep.axes)
    grid = [dict(zip(names, values, strict=True)) for values in itertools.product(*sweep.axes.values())]
    if sweep.sampling == "random" and sweep.trials is not None and sweep.trials < len(grid):
        chosen = sorted(random.Random(sweep.random_seed).sample(range(len(grid)), sweep.trials))
        grid = [grid[i] for i in chosen]
    return grid


def trial_spec(base: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    for path, value in config.items():
        set_path(spec, path, value)
    return spec


def controls(sweep: SweepSpec, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pseudo-label trial per distinct student (the hard-label control of each)."""
    if "pseudo_label" not in sweep.controls:
        return []
    students = []
    for config in configs:
        arch = trial_spec(sweep.base, config).get("student", {}).get("arch")
        if arch not in students:
            students.append(arch)
    return [{"student.arch": arch, "method": {"name": "pseudo_label"}} for arch in students]


def trials(sweep: SweepSpec) -> list[dict[str, Any]]:
    """[{"index", "config", "control", "spec"}], the grid's first (trial 0 trains the teacher)."""
    configs = configurations(sweep)
    out = [{"config": c, "control": False} for c in configs]
    out += [{"config": c, "control": True} for c in controls(sweep, configs)]
    for index, trial in enumerate(out):
        trial["index"] = index
        trial["spec"] = trial_spec(sweep.base, trial["config"])
    return out


def count_errors(sweep: SweepSpec, n: int) -> list[dict[str, str]]:
    limit = min(sweep.trials or MAX_TRIALS, MAX_TRIALS)
    if n <= limit:
        return []
    field = "/trials" if sweep.trials else "/axes"
    return [
        {
            "pointer": field,
            "in": "body",
            "detail": f"the axes make {n} trials, more than {limit}: use fewer values, or sampling 'random' "
            "with a trial budget",
            "type": "too_many_trials",
        }
    ]
