"""uint8 images: IDX files, Fashion-MNIST from its Debian package, memory-mapped uploads, stats."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from app.contract.packaged import PACKAGED
from app.contract.spec import DatasetSpec
from worker.distill import data
from worker.distill.idx import read_idx, read_images_and_labels


def _idx(path, array: np.ndarray, *, type_code: int = 0x08, gz: bool = True):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)
    return path


def test_idx_round_trip_and_refusals(tmp_path):
    x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(read_idx(_idx(tmp_path / "a.gz", x), ndim=3), x)
    assert np.array_equal(read_idx(_idx(tmp_path / "a.idx", x, gz=False), ndim=3), x)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad", ndim=3)
    with pytest.raises(ValueError, match="type 0x0d"):
        read_idx(_idx(tmp_path / "f.gz", x, type_code=0x0D), ndim=3)
    short = tmp_path / "short"
    short.write_bytes(gzip.decompress((tmp_path / "a.gz").read_bytes())[:-1])
    with pytest.raises(ValueError, match="promises"):
        read_idx(short, ndim=3)


def test_images_and_labels_check_sizes_and_classes(tmp_path):
    x = np.zeros((4, 5, 5), np.uint8)
    images = _idx(tmp_path / "x.gz", x)
    with pytest.raises(ValueError, match="class missing"):
        read_images_and_labels(images, _idx(tmp_path / "y.gz", np.array([0, 0, 1, 1])), rows=4, side=5, classes=3)
    with pytest.raises(ValueError, match="expected"):
        read_images_and_labels(images, _idx(tmp_path / "y2.gz", np.array([0, 1, 2])), rows=4, side=5, classes=3)
    xs, ys = read_images_and_labels(images, _idx(tmp_path / "y3.gz", np.array([0, 1, 2, 2])), rows=4, side=5, classes=3)
    assert xs.dtype == np.uint8 and ys.dtype == np.int64


@pytest.mark.skipif(bool(PACKAGED["fashion_mnist"].missing()), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package(tmp_path):
    x_tr, _y_tr, x_te, y_te = data._load_fashion_mnist(DatasetSpec(name="digits"), tmp_path)
    assert x_tr.shape == (60_000, 28, 28) and x_te.shape == (10_000, 28, 28)
    assert x_tr.dtype == np.uint8 and np.bincount(y_te).tolist() == [1000] * 10
    assert 0 < x_tr.mean() < 255


def test_missing_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data._load_fashion_mnist(DatasetSpec(name="digits"), tmp_path)


def test_uint8_stats_are_exact_and_float_stats_unchanged():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3000, 3, 4, 4), dtype=np.uint8)
    mean, std = data.input_stats(x)
    assert mean == pytest.approx(float(x.mean(dtype=np.float64)), rel=1e-12)
    assert std == pytest.approx(float(x.std(dtype=np.float64)), rel=1e-12)
    xf = x.astype(np.float32)
    assert data.input_stats(xf) == (float(np.mean(xf, dtype=np.float64)), float(np.std(xf, dtype=np.float64)))


def test_uploaded_uint8_images_are_memory_mapped_and_stay_uint8(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (60, 3, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    mapped = data._stored_member_memmap(tmp_path / "d.npz", "x")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, x)
    splits = data.load_uploaded(tmp_path / "d.npz", DatasetSpec(artifact="a"))
    assert splits.train.x.dtype == np.uint8 and splits.input_shape == (3, 8, 8)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    assert data._stored_member_memmap(tmp_path / "c.npz", "x") is None  # compressed: loaded instead
    assert data.load_uploaded(tmp_path / "c.npz", DatasetSpec(artifact="a")).train.x.dtype == np.uint8


def test_float_uploads_stay_float32(tmp_path):
    x = np.random.default_rng(2).normal(size=(40, 5)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=np.repeat(np.arange(2), 20))
    assert data.load_uploaded(tmp_path / "f.npz", DatasetSpec(artifact="a")).train.x.dtype == np.float32
