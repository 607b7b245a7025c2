"""The golden test: every case of tests/distill/golden shows exactly what it showed when it
was recorded (report, phases, metrics, events, progress), bit for bit on the CPU, on one of the
kinds of machine it was recorded on (tests/distill/golden/cases.py says why there are several)."""

from __future__ import annotations

import json

import pytest

from tests.distill.golden.cases import CASES, MACHINES, outcome, recorded_path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome_is_the_recorded_one(case, tmp_path, data_cache):
    shown = outcome(case, tmp_path, data_cache)
    recorded = {m: json.loads(recorded_path(case, m).read_text()) for m in MACHINES}
    if shown in recorded.values():
        return
    # none: the diff against the closest recording (the most metric epochs alike)
    closest = max(
        recorded.values(), key=lambda r: sum(a == b for a, b in zip(r["metrics"], shown["metrics"], strict=False))
    )
    assert shown == closest, f"{case.name}: matches none of {MACHINES} exactly"
