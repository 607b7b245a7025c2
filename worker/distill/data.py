"""Built-in and uploaded datasets -> train / validation / test splits of raw arrays.

Inputs are returned exactly as the dataset gives them (no normalisation):
the models normalise inside their own graph, so an exported student takes
the same raw input a user has.  The validation split is carved from the
training set and is the only thing early stopping and model selection see;
the test split is only ever used for the final report.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.contract.catalog import DATASETS
from app.contract.files import atomic_write
from app.contract.spec import DatasetSpec


@dataclass(frozen=True)
class ArraySplit:
    x: np.ndarray  # float32, or uint8 for images (the model converts), shape (n, *input_shape)
    y: np.ndarray  # int64, shape (n,)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    input_shape: tuple[int, ...]
    num_classes: int


def as_stored(x: np.ndarray) -> np.ndarray:
    """Inputs as a split holds them: uint8 images stay uint8 (4x smaller; every model turns
    them into float batch by batch), everything else is float32."""
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _split(x: np.ndarray, y: np.ndarray) -> ArraySplit:
    return ArraySplit(x=as_stored(x), y=np.ascontiguousarray(y, dtype=np.int64))


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): ceil(fraction * n) held out, each class in proportion
    (largest remainders), chosen by a seeded permutation. numpy only, so a job does not
    pay scikit-learn's import time."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    n_out = math.ceil(fraction * len(y))
    exact = counts * n_out / len(y)
    per_class = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - per_class), kind="stable")[: n_out - per_class.sum()]:
        per_class[i] += 1
    held = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, per_class, strict=True)]
    held_out = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(len(y)), held_out)
    return rng.permutation(kept), rng.permutation(held_out)


# --- loaders: each returns (x_train, y_train, x_test, y_test), train before the val split


def _generate_digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    d = load_digits()
    return {"x": d.images, "y": d.target}


def _load_digits(spec: DatasetSpec, cache_dir: Path) -> tuple[np.ndarray, ...]:
    d = _cached(Path(cache_dir) / "digits.npz", ("x", "y"), _generate_digits)
    train, test = stratified_split(d["y"], 0.2, spec.split_seed)
    return d["x"][train], d["y"][train], d["x"][test], d["y"][test]


def _mnist1d_args() -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # only get_dataset uses it (to download); we never do
    return args


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    # make_dataset reseeds numpy's and random's global generators; put them back
    # so that loading data never changes anyone else's random stream.
    import random

    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {"x": d["x"], "y": d["y"], "x_test": d["x_test"], "y_test": d["y_test"]}


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # A half-written cache file must never be visible: write aside, then rename.
    atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]  # numpy's stub: ** could pass allow_pickle


def _cached(path: Path, keys: tuple[str, ...], generate: Callable[[], dict]) -> dict[str, np.ndarray]:
    """Arrays from an .npz cache, generated (and written atomically) when missing or unreadable."""
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in keys}
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: regenerate and overwrite it
    arrays = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(path, arrays)
    return arrays


def _load_mnist1d(spec: DatasetSpec, cache_dir: Path) -> tuple[np.ndarray, ...]:
    # Generation takes seconds, so the arrays are cached; the file name carries a
    # hash of the generator's arguments so a change of arguments never hits a stale file.
    args = _mnist1d_args()
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    arrays = _cached(
        Path(cache_dir) / f"mnist1d-{key}.npz", ("x", "y", "x_test", "y_test"), lambda: _generate_mnist1d(args)
    )
    return arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]


TRANSFER_SEED = 4242  # the standard set is generated with seed 42


def mnist1d_transfer(n: int, cache_dir: Path) -> np.ndarray:
    """`n` extra MNIST-1D inputs from the reference generator with another seed (labels
    discarded), cached. Deterministic: the same n gives the same arrays."""
    args = _mnist1d_args()
    args.update(seed=TRANSFER_SEED, num_samples=int(n))
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    arrays = _cached(
        Path(cache_dir) / f"mnist1d-transfer-{key}.npz", ("x", "y", "x_test", "y_test"), lambda: _generate_mnist1d(args)
    )
    x = np.concatenate([arrays["x"], arrays["x_test"]])[:n]
    return np.ascontiguousarray(x, dtype=np.float32)


def with_transfer(train: ArraySplit, x_extra: np.ndarray) -> ArraySplit:
    """The training split plus unlabeled rows, whose label is -1."""
    return ArraySplit(
        x=np.concatenate([train.x, x_extra.astype(train.x.dtype)]),
        y=np.concatenate([train.y, np.full(len(x_extra), -1, dtype=np.int64)]),
    )


def _load_fashion_mnist(spec: DatasetSpec, cache_dir: Path) -> tuple[np.ndarray, ...]:
    """Fashion-MNIST from the Debian package dataset-fashion-mnist (IDX files, uint8): the
    standard 60,000 train / 10,000 test split, 6,000 / 1,000 per class."""
    from app.contract.packaged import PACKAGED
    from worker.distill.idx import read_images_and_labels

    package = PACKAGED["fashion_mnist"]
    if package.missing():
        raise FileNotFoundError(package.install_hint())
    where, files = package.location(), package.files
    x_tr, y_tr = read_images_and_labels(
        where / files["x_train"], where / files["y_train"], rows=60_000, side=28, classes=10
    )
    x_te, y_te = read_images_and_labels(
        where / files["x_test"], where / files["y_test"], rows=10_000, side=28, classes=10
    )
    if set(np.bincount(y_tr)) != {6000} or set(np.bincount(y_te)) != {1000}:
        raise ValueError("fashion_mnist: the label files do not hold 6,000 / 1,000 examples per class")
    return x_tr, y_tr, x_te, y_te


_LOADERS: dict[str, Callable[[DatasetSpec, Path], tuple[np.ndarray, ...]]] = {
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    "fashion_mnist": _load_fashion_mnist,
}


def load_dataset(spec: DatasetSpec, cache_dir: Path) -> Splits:
    """Load a built-in dataset and carve a stratified validation split from its training set."""
    assert spec.name is not None  # a built-in dataset (an uploaded one is read by jobdata)
    info = DATASETS[spec.name]
    x_tr, y_tr, x_te, y_te = _LOADERS[spec.name](spec, Path(cache_dir))
    fit, val = stratified_split(y_tr, spec.val_fraction, spec.split_seed)
    splits = Splits(
        train=_split(x_tr[fit], y_tr[fit]),
        val=_split(x_tr[val], y_tr[val]),
        test=_split(x_te, y_te),
        input_shape=tuple(info.input_shape),
        num_classes=info.num_classes,
    )
    # The catalog is what the API promised the user; disagreeing with it is a bug here.
    if splits.train.x.shape[1:] != splits.input_shape or len(x_tr) != info.train_size:
        raise RuntimeError(f"{spec.name}: loaded data does not match app.contract.catalog")
    return splits


def _stored_member_memmap(npz_path: Path, key: str) -> np.ndarray | None:
    """A read-only memory map of `key` in an uncompressed npz (np.savez's members are stored
    as they are), or None when the member is compressed or not there."""
    import zipfile

    with zipfile.ZipFile(npz_path) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    fmt = np.lib.format
    with open(npz_path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the member's local header: its name and extra field lengths follow
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None  # (3, 0) only adds utf-8 field names: not images
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(npz_path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _uploaded_inputs(f, npz_path: Path, key: str) -> np.ndarray:
    """uint8 images and float32 features memory-mapped from the file (read page by page, never
    whole in memory: the splits are the only copy); anything else loaded as before."""
    mapped = _stored_member_memmap(npz_path, key)
    if mapped is not None and mapped.dtype in (np.uint8, np.float32):
        return mapped
    return f[key]


def load_uploaded(npz_path: Path, spec: DatasetSpec) -> Splits:
    """An uploaded dataset's canonical arrays (validated by the API: `x` float32 (n, *shape),
    `y` int64 in 0..C-1, optional `x_test`/`y_test`, optional `x_unlabeled`) -> splits.

    The test split is the upload's own x_test/y_test when it has one, else a stratified
    `spec.test_fraction` held out (seeded by split_seed); the validation split is then carved
    from the rest exactly as for a built-in dataset. Classes: max label + 1 over y and y_test."""
    with np.load(npz_path, allow_pickle=False) as f:
        x, y = _uploaded_inputs(f, npz_path, "x"), f["y"]
        test = (_uploaded_inputs(f, npz_path, "x_test"), f["y_test"]) if "x_test" in f.files else None
    # Rows are picked from x once, through composed indices (x[kept][fit] == x[kept[fit]]): a
    # memory-mapped x is never copied whole in between.
    if test is None:
        kept, held = stratified_split(y, spec.test_fraction, spec.split_seed)
        x_te, y_te = x[held], y[held]
    else:
        kept, (x_te, y_te) = np.arange(len(y)), test
        if x_te.shape[1:] != x.shape[1:]:
            raise ValueError(f"uploaded dataset: x_test examples have shape {x_te.shape[1:]}, x's have {x.shape[1:]}")
    fit, val = stratified_split(y[kept], spec.val_fraction, spec.split_seed)
    labels = np.concatenate([y.reshape(-1), np.asarray(y_te).reshape(-1)])
    return Splits(
        train=_split(x[kept[fit]], y[kept[fit]]),
        val=_split(x[kept[val]], y[kept[val]]),
        test=_split(x_te, y_te),
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=int(labels.max()) + 1,
    )


def load_unlabeled(npz_path: Path) -> np.ndarray:
    """An uploaded dataset's unlabeled rows (`x_unlabeled`), for dataset.transfer.unlabeled."""
    with np.load(npz_path, allow_pickle=False) as f:
        if "x_unlabeled" not in f.files:
            raise ValueError("the uploaded dataset has no unlabeled rows (x_unlabeled)")
        return as_stored(f["x_unlabeled"])


def student_train(splits: Splits, spec: DatasetSpec) -> ArraySplit:
    """The training split the students and the baseline see: a stratified share
    `spec.train_fraction` of the teacher's (Hinton 2015's 3% experiment: the teacher
    learned from all of it).  Seeded by split_seed; validation and test do not change."""
    if spec.train_fraction >= 1.0:
        return splits.train
    _, kept = stratified_split(splits.train.y, spec.train_fraction, spec.split_seed + 1)
    kept = np.sort(kept)
    return ArraySplit(x=splits.train.x[kept], y=splits.train.y[kept])


def input_stats(x: np.ndarray) -> tuple[float, float]:
    """Scalar mean and std of a training split, for the model's built-in normalisation."""
    if x.dtype == np.uint8:
        return _uint8_stats(x)
    mean = float(np.mean(x, dtype=np.float64))
    std = float(np.std(x, dtype=np.float64))
    return mean, (std if std > 0 else 1.0)


def _uint8_stats(x: np.ndarray, rows: int = 1024) -> tuple[float, float]:
    """Exact mean and std of uint8 data from a histogram, a few rows at a time: np.std would
    make a float64 copy of the whole array (8x its size)."""
    counts = np.zeros(256, dtype=np.int64)
    for i in range(0, len(x), rows):
        counts += np.bincount(np.asarray(x[i : i + rows]).reshape(-1), minlength=256)
    values = np.arange(256, dtype=np.float64)
    n = counts.sum()
    mean = float((counts * values).sum() / n)
    std = float(np.sqrt((counts * (values - mean) ** 2).sum() / n))
    return mean, (std if std > 0 else 1.0)
