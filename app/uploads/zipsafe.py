"""Zip archives from strangers: check the central directory before anything is read,
and keep counting while reading, since the sizes a header declares can lie.

Nothing is ever extracted to disk: members are read into memory one at a time, each
read bounded. Used for image zips and for npz files (an npz is a zip of .npy files).
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from app.uploads.errors import InspectionError, UploadLimits

# Below this many uncompressed bytes a high ratio is harmless (a small file of zeros
# compresses 1000:1); the ratio caps only count above it, per member and in total.
RATIO_FLOOR_BYTES = 1 << 20
_CHUNK = 1 << 16
_DRIVE = re.compile(r"^[A-Za-z]:")


def directory_size(path: Path) -> tuple[int, int] | None:
    """(entries, bytes) of the central directory as the end-of-central-directory record
    declares them, read before zipfile parses the directory (a huge directory is itself a
    memory bomb). None when there is no such record."""
    try:
        with open(path, "rb") as fp:
            end = zipfile._EndRecData(fp)  # type: ignore[attr-defined]
    except (OSError, AttributeError, zipfile.BadZipFile):
        return None
    if not end:
        return None
    return int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])  # type: ignore[attr-defined]


def entry_count(path: Path) -> int | None:
    size = directory_size(path)
    return None if size is None else size[0]


def is_zip(path: Path) -> bool:
    with open(path, "rb") as fp:
        head = fp.read(4)
    return head in (b"PK\x03\x04", b"PK\x05\x06") or zipfile.is_zipfile(path)


def unsafe_name(name: str) -> str | None:
    """Why a member name could write outside an extraction folder, or None."""
    if "\x00" in name:
        return "has a NUL byte in its name"
    if "\\" in name:
        return "has a backslash in its path (a Windows path that can climb out of its folder)"
    if name.startswith("/"):
        return "has an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' component that climbs out of its folder"
    return None


def is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return bool(mode) and stat.S_ISLNK(mode)


def _ratio(uncompressed: int, compressed: int) -> float:
    return uncompressed / compressed if compressed > 0 else float("inf")


def open_zip(path: Path, limits: UploadLimits, what: str = "The zip") -> zipfile.ZipFile:
    """Open ``path`` as a zip and check every member's entry; the caller closes it."""
    count, directory = directory_size(path) or (None, 0)
    if count is not None and count > limits.zip_max_members:
        raise InspectionError(
            f"{what} has {count} members, more than the {limits.zip_max_members} allowed. "
            "Split the data into fewer, larger files."
        )
    if directory > limits.zip_max_directory_bytes:
        raise InspectionError(
            f"{what} has a file list of {directory} bytes, more than the "
            f"{limits.zip_max_directory_bytes} allowed (long member names?). Use fewer, shorter names."
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InspectionError(
            f"{what} is not a readable zip archive ({exc}). Create it again, e.g. with `zip -r data.zip folder/`."
        ) from exc
    try:
        check_members(zf, limits, what)
    except BaseException:
        zf.close()
        raise
    return zf


def check_members(zf: zipfile.ZipFile, limits: UploadLimits, what: str = "The zip") -> None:
    infos = zf.infolist()
    if len(infos) > limits.zip_max_members:
        raise InspectionError(
            f"{what} has {len(infos)} members, more than the {limits.zip_max_members} allowed. "
            "Split the data into fewer, larger files."
        )
    seen: set[str] = set()
    total = compressed = 0
    for info in infos:
        name = info.filename
        why = unsafe_name(name) or unsafe_name(info.orig_filename)
        if why:
            raise InspectionError(
                f"{what} is refused: member {name!r} {why}. Put every file under relative folders inside the archive."
            )
        if is_symlink(info):
            raise InspectionError(
                f"{what} is refused: member {name!r} is a symbolic link. Zip the files themselves, not links to them."
            )
        if info.flag_bits & 0x1:
            raise InspectionError(
                f"{what} is refused: member {name!r} is encrypted. Upload an archive without a password."
            )
        if name in seen:
            raise InspectionError(f"{what} is refused: member {name!r} appears twice.")
        seen.add(name)
        if info.file_size > RATIO_FLOOR_BYTES and _ratio(info.file_size, info.compress_size) > limits.zip_max_ratio:
            raise InspectionError(
                f"{what} is refused: member {name!r} expands from {info.compress_size} to "
                f"{info.file_size} bytes, a ratio over {limits.zip_max_ratio:g} (a zip bomb?)."
            )
        total += info.file_size
        compressed += info.compress_size
    if total > limits.zip_max_total_bytes:
        raise InspectionError(
            f"{what} is refused: it expands to {total} bytes, more than the "
            f"{limits.zip_max_total_bytes} allowed. Upload less data."
        )
    if total > RATIO_FLOOR_BYTES and _ratio(total, compressed) > limits.zip_max_ratio:
        raise InspectionError(
            f"{what} is refused: it expands from {compressed} to {total} bytes, a ratio "
            f"over {limits.zip_max_ratio:g} (a zip bomb?)."
        )


class ReadBudget:
    """Caps on what is actually decompressed, whatever the headers say: per member
    ``max(RATIO_FLOOR_BYTES, compress_size * ratio)``, and in total
    ``zip_max_total_bytes``."""

    def __init__(self, limits: UploadLimits, what: str = "The zip") -> None:
        self.limits, self.what, self.used = limits, what, 0

    def member_cap(self, info: zipfile.ZipInfo) -> int:
        by_ratio = max(RATIO_FLOOR_BYTES, int(info.compress_size * self.limits.zip_max_ratio))
        return min(by_ratio, self.limits.zip_max_total_bytes - self.used)

    def over(self, info: zipfile.ZipInfo, cap: int) -> InspectionError:
        return InspectionError(
            f"{self.what} is refused: member {info.filename!r} expands to more than {cap} bytes "
            f"while its header declares {info.file_size} (the archive lies about its sizes, "
            "or is a zip bomb)."
        )


class BoundedMember:
    """A read-only stream over one member that stops at the budget's cap."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: ReadBudget) -> None:
        self.info, self.budget = info, budget
        self.cap = budget.member_cap(info)
        self.count = 0
        self._fp: IO[bytes] = zf.open(info)

    def read(self, n: int = -1) -> bytes:
        want = self.cap + 1 - self.count if n is None or n < 0 else min(n, self.cap + 1 - self.count)
        out = bytearray()
        try:
            while want > 0:
                chunk = self._fp.read(min(want, _CHUNK))
                if not chunk:
                    break
                out += chunk
                want -= len(chunk)
                if n is not None and n >= 0:
                    break
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise corrupt(self.budget.what, self.info, exc) from exc
        self.count += len(out)
        self.budget.used += len(out)
        if self.count > self.cap:
            raise self.budget.over(self.info, self.cap)
        return bytes(out)

    def read_into(self, buffer: memoryview) -> int:
        """Fill `buffer` (bytes) from the member in chunks, without a second copy of it; the
        number of bytes read (fewer at the member's end)."""
        filled = 0
        while filled < len(buffer):
            chunk = self.read(min(len(buffer) - filled, 1 << 20))
            if not chunk:
                break
            buffer[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def read_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def close(self) -> None:
        self._fp.close()

    def __enter__(self) -> BoundedMember:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def corrupt(what: str, info: zipfile.ZipInfo, exc: BaseException) -> InspectionError:
    return InspectionError(
        f"{what} is refused: member {info.filename!r} cannot be read ({exc}); the archive is "
        "damaged or its headers lie about its sizes. Create it again."
    )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: ReadBudget) -> bytes:
    """The whole member, in memory, never more than the budget allows."""
    with BoundedMember(zf, info, budget) as member:
        return member.read()
