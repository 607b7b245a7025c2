"""The tenant's cache of teacher outputs (worker/output_store.py, worker/distill/cache.py) on a
real migrated database: eviction under a small cap (least recently used first), tenants kept
apart, augmentation bypassing it, and the teacher key changing with any teacher field."""

from __future__ import annotations

import pytest

from app.contract.spec import JobSpec
from app.models import Tenant
from tests.conftest import clear_caches
from tests.support.engine import run_tiny_job, tiny_spec
from worker.distill.cache import teacher_key
from worker.distill.inputs import JobInputs
from worker.output_store import OutputStore
from worker.runner_db import in_transaction


@pytest.fixture
def store_env(database_url, service_env, monkeypatch):
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
