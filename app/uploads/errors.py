"""What a refused upload raises (InspectionError, shared with the engine: app/contract/errors.py),
and the limits inspection enforces."""

from __future__ import annotations

from dataclasses import dataclass

from app.contract.errors import InspectionError

__all__ = ["InspectionError", "UploadLimits"]


@dataclass(frozen=True)
class UploadLimits:
    # an image ZIP of MNIST (70,000) or CIFAR-10 (60,000) fits; the directory's byte cap below still
    # bounds what reading the member list costs
    zip_max_members: int = 100_000
    zip_max_total_bytes: int = 1 << 30  # sum of uncompressed sizes
    zip_max_ratio: float = 100.0  # uncompressed / compressed, per member and in total
    # rows * features of a dataset (memory bound): MNIST (70,000 x 784 = 55 M) and CIFAR-10
    # (60,000 x 3,072 = 184 M) fit; uploads are read at about 1x their size (bench/memory.py),
    # and the sandbox's address-space cap stays the last guard.
    max_cells: int = 200_000_000
    max_rows: int = 1_000_000  # labels pass through Python objects: rows cost more than cells
    max_columns: int = 10_000  # CSV/Parquet columns (a wide header is itself slow to parse)
    max_header_bytes: int = 1 << 20  # a CSV header line
    zip_max_directory_bytes: int = 16 << 20  # a zip's central directory, checked before it is read
    max_image_pixels: int = 4096 * 4096
