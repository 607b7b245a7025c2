"""IDX files (LeCun's MNIST format, also Fashion-MNIST's), read with numpy and checked.

Layout: two zero bytes, a type code (0x08 = uint8), the number of dimensions, each dimension
as a big-endian uint32, then the values. Gzipped files are read through gzip.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_UINT8 = 0x08


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """A uint8 array of `ndim` dimensions; ValueError naming the file when it is not one."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path.name} is not an IDX file (bad magic number)")
    if data[2] != _UINT8 or data[3] != ndim:
        raise ValueError(
            f"{path.name}: expected uint8 values in {ndim} dimensions, the header says "
            f"type 0x{data[2]:02x} in {data[3]}"
        )
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path.name}: the header promises shape {shape} "
            f"({int(np.prod(shape))} values), the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_images_and_labels(
    images: Path, labels: Path, *, rows: int, side: int, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (rows, side, side), y int64 (rows,)): sizes and labels checked."""
    x = read_idx(images, ndim=3)
    y = read_idx(labels, ndim=1)
    if x.shape != (rows, side, side) or y.shape != (rows,):
        raise ValueError(
            f"{Path(images).name}/{Path(labels).name}: shapes {x.shape} and {y.shape}, "
            f"expected ({rows}, {side}, {side}) and ({rows},)"
        )
    counts = np.bincount(y, minlength=classes)
    if len(counts) != classes or counts.min() == 0:
        raise ValueError(
            f"{Path(labels).name}: labels outside 0..{classes - 1} or a class missing (counts {counts.tolist()})"
        )
    return x, y.astype(np.int64)
