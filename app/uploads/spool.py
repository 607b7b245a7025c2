"""Arrays that never sit whole in memory while an upload is converted: rows are appended to a
file as they are parsed or decoded (a Spool), and the canonical npz is written from those files
chunk by chunk (write_npz). Plain reads, not memory maps: a map's pages would count as the
process's resident memory (and against the sandbox's address-space cap) as they are read."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

CHUNK_BYTES = 8 << 20  # what is read back at a time


def _bytes(array: np.ndarray) -> memoryview:
    """A C-contiguous, non-empty array's memory as bytes, without a copy."""
    return memoryview(array).cast("B")  # type: ignore[arg-type]  # numpy's stubs lack __buffer__ for ndarray here


class Spool:
    """The rows of one array, in a file: (rows, *row_shape) of `dtype`, C order."""

    def __init__(self, path: Path, dtype: np.dtype | type, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self.file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 (closed by close/chunks)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return self.rows

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if tuple(block.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]} in a spool of {self.row_shape}")
        if block.size:  # (a cast of an empty view is refused)
            assert self.file is not None, "append after close"
            self.file.write(_bytes(block))
        self.rows += len(block)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def chunks(self) -> Iterator[np.ndarray]:
        """The rows back, a few MiB at a time (each chunk's buffer is reused by the next)."""
        self.close()
        row_bytes = self.dtype.itemsize * math.prod(self.row_shape)
        per_chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
        buffer = np.empty((min(per_chunk, max(self.rows, 1)), *self.row_shape), dtype=self.dtype)
        with open(self.path, "rb") as f:
            for start in range(0, self.rows, per_chunk):
                part = buffer[: min(per_chunk, self.rows - start)]
                if f.readinto(_bytes(part)) != part.nbytes:
                    raise OSError(f"{self.path.name} is shorter than its {self.rows} rows")
                yield part


class ImageSpool(Spool):
    """Decoded images, each as it came: (H, W) grey or (H, W, 3) RGB uint8, all of one size.
    Read back as (n, H, W) while every image is grey, else (n, 3, H, W) with grey ones repeated
    into RGB (what stacking them in memory gave before); `make_rgb` asks for the latter."""

    def __init__(self, path: Path, size: tuple[int, int]) -> None:
        super().__init__(path, np.uint8, size)
        self.grey: list[bool] = []

    @property
    def has_rgb(self) -> bool:
        return not all(self.grey)

    def append_image(self, image: np.ndarray) -> None:
        assert self.file is not None, "append after close"
        self.file.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
        self.grey.append(image.ndim == 2)
        self.rows += 1
        if image.ndim == 3:
            self.make_rgb()

    def make_rgb(self) -> None:
        self.row_shape = (3, *self.row_shape[-2:])

    def chunks(self) -> Iterator[np.ndarray]:
        if len(self.row_shape) == 2:  # every image grey
            yield from super().chunks()
            return
        self.close()
        h, w = self.row_shape[-2:]
        per_chunk = max(1, CHUNK_BYTES // (3 * h * w))
        with open(self.path, "rb") as f:
            for start in range(0, self.rows, per_chunk):
                grey = self.grey[start : start + per_chunk]
                out = np.empty((len(grey), 3, h, w), dtype=np.uint8)
                for i, one in enumerate(grey):
                    image = np.frombuffer(f.read(h * w * (1 if one else 3)), dtype=np.uint8)
                    out[i] = image.reshape(1, h, w) if one else image.reshape(h, w, 3).transpose(2, 0, 1)
                yield out


def _write_rows(member: IO[bytes], dtype: np.dtype, shape: tuple[int, ...], chunks) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(member, header)
    for chunk in chunks:
        member.write(_bytes(np.ascontiguousarray(chunk)))


def _row_views(array: np.ndarray) -> Iterator[np.ndarray]:
    """A C-contiguous array in views of a few MiB (numpy's own writer copies through a 16 MiB
    buffer: a fixed cost that is a third of a small dataset)."""
    per_chunk = max(1, CHUNK_BYTES // max(array[:1].nbytes, 1))
    for start in range(0, len(array), per_chunk):
        yield array[start : start + per_chunk]


def write_npz(f: BinaryIO, arrays: Mapping[str, np.ndarray | Spool]) -> None:
    """What numpy.savez writes (stored members, zip64, one .npy per key), spools streamed from
    their files; arrays as numpy writes them (16 MiB at a time)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                if isinstance(value, Spool):
                    _write_rows(member, value.dtype, value.shape, value.chunks())
                elif value.flags.c_contiguous and value.ndim and value.size and not value.dtype.hasobject:
                    _write_rows(member, value.dtype, value.shape, _row_views(value))
                else:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
