"""Zip archives from strangers: traversal, links, bombs, lying headers, too many members."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.uploads import InspectionError, UploadLimits, inspect_dataset, zipsafe


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


DEFAULT_LIMITS = UploadLimits()


def refused(path: Path, fmt: str = "zip", limits: UploadLimits = DEFAULT_LIMITS) -> str:
    out = path.parent / "canonical.npz"
    with pytest.raises(InspectionError) as caught:
        inspect_dataset(path, fmt, out, limits=limits)
    assert caught.value.field == "file"
    assert not out.exists()
    return str(caught.value)


@pytest.mark.parametrize(
    "name, why",
    [
        ("../evil.txt", "'..'"),
        ("cat/../../evil.png", "'..'"),
        ("/tmp/evil.png", "absolute"),
        ("C:/evil.png", "drive letter"),
        ("..\\evil.png", "backslash"),
    ],
)
@pytest.mark.parametrize("fmt", ["zip", "npz"])
def test_members_that_climb_out_are_refused(tmp_path, name, why, fmt):
    path = make_zip(tmp_path / f"data.{fmt}", {"cat/001.png": b"x", name: b"evil"})
    message = refused(path, fmt)
    assert why in message and repr(name) in message
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_symlink_member_is_refused(tmp_path):
    info = zipfile.ZipInfo("cat/link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    assert "symbolic link" in refused(path)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """50 MB of zeros, deflated to about 50 KB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/zeros.png", bytes(50 << 20))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["zip", "npz"])
def test_a_zip_bomb_is_refused_by_its_ratio(tmp_path, bomb, fmt):
    path = tmp_path / f"bomb.{fmt}"
    path.write_bytes(bomb)
    assert len(bomb) < 1 << 20
    message = refused(path, fmt)
    assert "ratio" in message and "zip bomb" in message


def test_a_zip_over_the_total_size_is_refused(tmp_path):
    path = make_zip(tmp_path / "big.zip", {f"cat/{i}.png": bytes(1000) for i in range(5)})
    assert "expands to 5000 bytes" in refused(path, limits=UploadLimits(zip_max_total_bytes=4000))


def test_too_many_members_are_refused_before_the_directory_is_parsed(tmp_path):
    path = make_zip(tmp_path / "many.zip", {f"cat/{i}.png": b"x" for i in range(6)})
    assert zipsafe.entry_count(path) == 6
    assert "6 members, more than the 5 allowed" in refused(path, limits=UploadLimits(zip_max_members=5))


def test_a_huge_central_directory_is_refused_before_it_is_read(tmp_path):
    names = {f"cat/{'n' * 200}{i}.png": b"x" for i in range(20)}
    path = make_zip(tmp_path / "long-names.zip", names)
    entries, size = zipsafe.directory_size(path)
    assert entries == 20 and size > 4000
    message = refused(path, limits=UploadLimits(zip_max_directory_bytes=4000))
    assert f"a file list of {size} bytes, more than the 4000 allowed" in message


def lie_about_size(data: bytes, declared: int) -> bytes:
    """Patch the uncompressed size in the local header and the central directory."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    central = out.find(b"PK\x01\x02")
    struct.pack_into("<I", out, local + 22, declared)
    struct.pack_into("<I", out, central + 24, declared)
    return bytes(out)


def test_a_header_that_lies_about_sizes_is_stopped_while_reading(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/a.png", bytes(5 << 20))
    path = tmp_path / "liar.zip"
    path.write_bytes(lie_about_size(buffer.getvalue(), 100))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("cat/a.png").file_size == 100  # the ratio check sees nothing wrong
    message = refused(path)
    assert "cat/a.png" in message and "lie" in message


def test_the_read_budget_counts_bytes_whatever_the_headers_say(tmp_path):
    noise = np.random.default_rng(0).bytes(3 << 20)  # incompressible: no ratio cap applies
    path = make_zip(tmp_path / "a.zip", {"a": noise, "b": noise})
    limits = UploadLimits(zip_max_total_bytes=4 << 20)
    with zipfile.ZipFile(path) as zf:
        budget = zipsafe.ReadBudget(limits)
        assert len(zipsafe.read_member(zf, zf.getinfo("a"), budget)) == 3 << 20
        with pytest.raises(InspectionError, match="expands to more than 1048576 bytes"):
            zipsafe.read_member(zf, zf.getinfo("b"), budget)
        assert budget.used <= (4 << 20) + 1


def test_encrypted_and_duplicate_members_are_refused(tmp_path):
    path = make_zip(tmp_path / "enc.zip", {"cat/a.png": b"x"})
    data = bytearray(path.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(sig)
        struct.pack_into("<H", data, at + flag_at, 1)
    path.write_bytes(bytes(data))
    assert "encrypted" in refused(path)

    dup = tmp_path / "dup.zip"
    with zipfile.ZipFile(dup, "w") as zf:
        zf.writestr("cat/a.png", b"1")
        with pytest.warns(UserWarning):
            zf.writestr("cat/a.png", b"2")
    assert "appears twice" in refused(dup)


def test_a_small_highly_compressible_member_is_fine(tmp_path):
    # below RATIO_FLOOR_BYTES a high ratio harms nobody: an npz of zeros must pass
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((1000, 64), np.float32), y=np.arange(1000) % 2)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x.npy")
        assert info.file_size / info.compress_size > 100
    assert inspect_dataset(path, "npz", tmp_path / "out.npz")["rows"] == 1000


def test_unsafe_name_reasons():
    assert zipsafe.unsafe_name("cat/001.png") is None
    assert zipsafe.unsafe_name("a/..b/c") is None
    for name in ("../x", "a/../../x", "/x", "C:x", "a\\..\\x", "a\x00b"):
        assert zipsafe.unsafe_name(name)
