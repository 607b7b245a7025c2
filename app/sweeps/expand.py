"""A sweep's trials: the axes' combinations (grid or random), each a full job spec."""

from __future__ import annotations

import copy
import math
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


def grid_size(sweep: SweepSpec) -> int:
    return math.prod(len(values) for values in sweep.axes.values())


def _combination(sweep: SweepSpec, index: int) -> dict[str, Any]:
    """The grid's `index`-th combination (the last axis varies fastest), without building the grid."""
    config: dict[str, Any] = {}
    for path, values in reversed(sweep.axes.items()):
        index, i = divmod(index, len(values))
        config[path] = values[i]
    return dict(reversed(config.items()))


def configurations(sweep: SweepSpec) -> list[dict[str, Any]]:
    """{axis: value} per trial: every combination (grid), or `trials` distinct ones drawn with
    `random_seed` (random). Call count_errors first: a grid is built only when it is small."""
    size = grid_size(sweep)
    indexes: range | list[int] = range(size)
    if sweep.sampling == "random" and sweep.trials is not None and sweep.trials < size:
        indexes = sorted(random.Random(sweep.random_seed).sample(range(size), sweep.trials))
    return [_combination(sweep, i) for i in indexes]


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
    out: list[dict[str, Any]] = [{"config": c, "control": False} for c in configs]
    out += [{"config": c, "control": True} for c in controls(sweep, configs)]
    for index, trial in enumerate(out):
        trial["index"] = index
        trial["spec"] = trial_spec(sweep.base, trial["config"])
    return out


def count_errors(sweep: SweepSpec) -> list[dict[str, str]]:
    """Refused before anything is expanded: more trials than the sweep's budget (or MAX_TRIALS)."""
    limit = min(sweep.trials or MAX_TRIALS, MAX_TRIALS)
    n = grid_size(sweep) if sweep.sampling == "grid" else min(grid_size(sweep), limit)
    n += len(sweep.controls) * len(sweep.axes.get("student.arch", [None]))
    if n <= limit or (sweep.sampling == "random" and n <= MAX_TRIALS):
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
