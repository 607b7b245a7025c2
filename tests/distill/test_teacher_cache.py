"""The tenant's cache of teacher outputs (worker/output_store.py, worker/distill/cache.py) on a
real migrated database: eviction under a small cap (least recently used first), tenants kept
apart, augmentation bypassing it, and the teacher key changing with any teacher field."""

from __future__ import annotations

import pytest

from app.contract.spec import JobSpec
from app.models import Tenant
from tests.conftest import clear_caches
from tests.support.engine import run_tiny_job, without_timing
from tests.support.specs import tiny_spec
from worker.distill.cache import teacher_key
from worker.distill.inputs import JobInputs
from worker.output_store import OutputStore
from worker.runner_db import in_transaction


@pytest.fixture
def store_env(database_url, in_process_env, monkeypatch):
    monkeypatch.setenv("DISTILL_DATABASE_URL", database_url)
    clear_caches()
    for name in ("a", "b"):
        in_transaction(lambda s, name=name: s.add(Tenant(id=name, name=name)))
    yield
    clear_caches()


def cached_events(reporter) -> list[str]:
    return [m for _, m in reporter.events if m.startswith(("teacher outputs", "teacher output cache"))]


def test_a_small_cap_evicts_the_least_recently_used_and_tenants_never_share(store_env, tmp_path, data_cache):
    spec = tiny_spec(seeds=[0], baseline=False)
    other_teacher = tiny_spec(seeds=[0], baseline=False, teacher={"train": {"arch": {"name": "mlp", "hidden": [8]}}})
    cap = 9_000  # smaller than one logit file: each new file evicts every other (never itself)
    a = OutputStore("a", cap)
    _, first = run_tiny_job(spec, tmp_path / "1", data_cache, JobInputs(outputs=a))
    assert "miss" in cached_events(first)[0]
    _, again = run_tiny_job(spec, tmp_path / "2", data_cache, JobInputs(outputs=OutputStore("a", 10**9)))
    assert "(hit" in cached_events(again)[0]
    _, theirs = run_tiny_job(spec, tmp_path / "3", data_cache, JobInputs(outputs=OutputStore("b", 10**9)))
    assert "miss" in cached_events(theirs)[0]  # tenant b never reads tenant a's file
    run_tiny_job(other_teacher, tmp_path / "4", data_cache, JobInputs(outputs=a))  # evicts the first file
    _, after = run_tiny_job(spec, tmp_path / "5", data_cache, JobInputs(outputs=a))
    assert "miss" in cached_events(after)[0]


def test_augmentation_bypasses_the_cache_and_says_why(store_env, tmp_path, data_cache):
    spec = tiny_spec(seeds=[0], baseline=False, training={"epochs": 1, "augment": {"noise_std": 0.1}})
    _, reporter = run_tiny_job(spec, tmp_path, data_cache, JobInputs(outputs=OutputStore("a", 10**9)))
    said = cached_events(reporter)
    assert said == [
        "teacher output cache bypassed: augmentation changes the inputs, so the teacher must see each augmented batch"
    ]


def test_the_teacher_key_changes_with_any_teacher_field_but_not_with_reuse():
    base = tiny_spec().model_dump(mode="json")

    def key(**teacher) -> str:
        spec = JobSpec.model_validate({**base, "teacher": {"train": {**base["teacher"]["train"], **teacher}}})
        return teacher_key(spec.teacher.train, spec.dataset, None)

    assert key() == key(reuse=False)
    assert key() != key(lr=0.001) != key(seed=1)
    assert key() != key(epochs=5)


def test_a_feature_method_reads_its_teachers_stage_features_from_the_cache(store_env, tmp_path, data_cache):
    spec = tiny_spec(seeds=[0], baseline=False, method={"name": "fitnet"})
    store = OutputStore("a", 10**9)
    first, miss = run_tiny_job(spec, tmp_path / "1", data_cache, JobInputs(outputs=store))
    again, hit = run_tiny_job(spec, tmp_path / "2", data_cache, JobInputs(outputs=store))
    assert "stage features" in cached_events(miss)[0] and "(miss" in cached_events(miss)[0]
    assert "stage features" in cached_events(hit)[0] and "(hit" in cached_events(hit)[0]
    assert first.report["soft_targets"] == again.report["soft_targets"] == "cached"
    same = without_timing(first.report["student"]["mean"]) == without_timing(again.report["student"]["mean"])
    assert same  # the same features, read back
    live, _ = run_tiny_job(spec, tmp_path / "3", data_cache)  # no cache: the teacher runs every batch
    assert live.report["soft_targets"] == "recomputed"
    assert (
        abs(live.report["student"]["mean"]["test_accuracy"] - first.report["student"]["mean"]["test_accuracy"]) < 0.05
    )


def test_stage_features_past_the_cap_are_not_cached(store_env, tmp_path, data_cache):
    spec = tiny_spec(seeds=[0], baseline=False, method={"name": "fitnet"})
    store = OutputStore("a", 10**9)
    store.max_features_bytes = 1_000
    result, reporter = run_tiny_job(spec, tmp_path, data_cache, JobInputs(outputs=store))
    assert "pass the cache's cap" in cached_events(reporter)[0]
    assert result.report["soft_targets"] == "recomputed"
