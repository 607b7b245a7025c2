"""The golden test: every case of tests/distill/golden shows exactly what it showed when it
was recorded (report, phases, metrics, events, progress), bit for bit on the CPU."""

from __future__ import annotations

import json

import pytest

from tests.distill.golden.cases import CASES, outcome, recorded_path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome_is_the_recorded_one(case, tmp_path, data_cache):
    recorded = json.loads(recorded_path(case).read_text())
    assert outcome(case, tmp_path, data_cache) == recorded
