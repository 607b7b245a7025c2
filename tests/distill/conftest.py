"""Shared fixtures: tiny data, so the whole directory runs in seconds (the tiny spec:
tests/support/specs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.contract.spec import DatasetSpec
from worker.distill.data import Splits, load_dataset
from worker.distill.reporting import MemoryReporter


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def digits(data_cache) -> Splits:
    return load_dataset(DatasetSpec(name="digits"), data_cache)


@pytest.fixture
def reporter(tmp_path) -> MemoryReporter:
    return MemoryReporter(checkpoint_dir=tmp_path / "checkpoints")
