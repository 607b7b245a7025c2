"""bench/quality_fashion.py's jobs are valid and would be accepted (no training here)."""

from __future__ import annotations

import pytest

from app.contract.fit import fit_errors
from app.contract.packaged import PACKAGED
from app.contract.spec import JobSpec
from bench.quality_fashion import configurations


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_every_row_is_an_accepted_spec(profile, monkeypatch, tmp_path):
    if PACKAGED["fashion_mnist"].missing():  # the check of the package is another test's
        monkeypatch.setenv("DISTILL_FASHION_MNIST_DIR", str(tmp_path))
        for name in PACKAGED["fashion_mnist"].files.values():
            (tmp_path / name).write_bytes(b"")
    configs = configurations(profile, [0, 1, 2])
    assert {c["read"] for c in configs} == {"teacher", "student", "baseline"}
    for c in configs:
        assert fit_errors(JobSpec.model_validate(c["spec"])) == [], c["row"]
