"""Shared fixtures: tiny data and specs, so the whole directory runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.contract.spec import DatasetSpec, JobSpec
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


def _tiny_spec(**overrides) -> JobSpec:
    """A digits job that trains in about a second: CNN teacher, MLP student."""
    spec = {
        "name": "tiny",
        "dataset": {"name": "digits"},
        "teacher": {
            "train": {"arch": {"name": "cnn", "channels": [8], "hidden": 16}, "epochs": 4, "patience": 2}
        },
        "student": {"arch": {"name": "mlp", "hidden": [16]}},
        "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
        "training": {"epochs": 3, "batch_size": 64},
        "seeds": [0, 1],
        "baseline": True,
    }
    spec.update(overrides)
    return JobSpec.model_validate(spec)


@pytest.fixture(scope="session")
def tiny_spec():
    """Factory: tiny_spec(seeds=[0], baseline=False, ...) -> JobSpec."""
    return _tiny_spec


TIMING = {"latency_ms", "speedup"}  # wall-clock: the only report numbers that may differ


def without_timing(obj):
    """A report with its wall-clock figures removed, for comparing runs."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj
