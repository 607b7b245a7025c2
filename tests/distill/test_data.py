"""The loaders agree with app.contract.catalog, split reproducibly, and cache mnist1d safely."""

from __future__ import annotations

import numpy as np
import pytest

from app.contract.catalog import DATASETS
from app.contract.spec import DatasetSpec
from worker.distill.data import input_stats, load_dataset


@pytest.fixture(scope="module")
def mnist1d(data_cache):
    return load_dataset(DatasetSpec(name="mnist1d"), data_cache)


def _check_against_catalog(splits, name, val_fraction):
    info = DATASETS[name]
    assert splits.input_shape == info.input_shape
    assert splits.num_classes == info.num_classes
    assert len(splits.train) + len(splits.val) == info.train_size
    assert len(splits.test) == info.test_size
    assert len(splits.val) == pytest.approx(val_fraction * info.train_size, abs=1)
    for part in (splits.train, splits.val, splits.test):
        assert part.x.shape[1:] == info.input_shape
        assert part.x.dtype == np.float32 and part.y.dtype == np.int64
        assert set(np.unique(part.y)) == set(range(info.num_classes))


def test_digits_matches_catalog(digits):
    _check_against_catalog(digits, "digits", 0.1)
    # raw pixel values, not normalised
    assert digits.train.x.min() == 0.0 and digits.train.x.max() == 16.0


def test_mnist1d_matches_catalog(mnist1d):
    _check_against_catalog(mnist1d, "mnist1d", 0.1)


def test_mnist1d_is_cached_and_identical(mnist1d, data_cache):
    files = list(data_cache.glob("mnist1d-*.npz"))
    assert len(files) == 1
    assert not list(data_cache.glob("*.tmp"))  # no leftovers of the atomic write
    again = load_dataset(DatasetSpec(name="mnist1d"), data_cache)
    np.testing.assert_array_equal(again.train.x, mnist1d.train.x)
    np.testing.assert_array_equal(again.test.y, mnist1d.test.y)


def test_corrupt_cache_is_regenerated_without_moving_global_rng(mnist1d, data_cache, tmp_path):
    (src,) = data_cache.glob("mnist1d-*.npz")
    (tmp_path / src.name).write_bytes(b"not a zip file")
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    again = load_dataset(DatasetSpec(name="mnist1d"), tmp_path)  # regenerates
    np.testing.assert_array_equal(again.test.x, mnist1d.test.x)
    # mnist1d reseeds numpy's global RNG; the loader must put it back
    assert np.random.rand() == expected


def test_splits_depend_on_split_seed_only(data_cache):
    a = load_dataset(DatasetSpec(name="digits", split_seed=3), data_cache)
    b = load_dataset(DatasetSpec(name="digits", split_seed=3), data_cache)
    c = load_dataset(DatasetSpec(name="digits", split_seed=4), data_cache)
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert not np.array_equal(a.test.x, c.test.x)


def test_val_fraction_and_stratification(data_cache):
    s = load_dataset(DatasetSpec(name="digits", val_fraction=0.25), data_cache)
    assert len(s.val) == pytest.approx(0.25 * 1437, abs=1)
    train_share = np.bincount(s.train.y) / len(s.train)
    val_share = np.bincount(s.val.y) / len(s.val)
    assert np.abs(train_share - val_share).max() < 0.02


def test_input_stats(digits):
    mean, std = input_stats(digits.train.x)
    assert mean == pytest.approx(float(digits.train.x.mean()), rel=1e-5)
    assert std > 0
    assert input_stats(np.zeros((4, 3), np.float32)) == (0.0, 1.0)


def test_train_fraction_keeps_a_stratified_share_and_the_same_val_and_test(data_cache):
    from app.contract.spec import DatasetSpec
    from worker.distill.data import load_dataset, student_train

    spec = DatasetSpec(name="digits", train_fraction=0.1)
    full = load_dataset(spec, data_cache)  # the teacher's: all of it
    assert len(full.train) == len(load_dataset(DatasetSpec(name="digits"), data_cache).train)
    small = student_train(full, spec)
    assert len(small) == int(np.ceil(0.1 * len(full.train)))
    assert set(np.unique(small.y)) == set(range(10))
    train_rows = {r.tobytes() for r in full.train.x}
    assert all(r.tobytes() in train_rows for r in small.x)
    assert np.array_equal(student_train(full, spec).x, small.x)
    assert student_train(full, DatasetSpec(name="digits")) is full.train
