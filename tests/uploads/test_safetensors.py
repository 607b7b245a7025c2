"""safetensors headers parsed by hand: read back, and every inconsistency refused."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from app.uploads import InspectionError, inspect_teacher


def write(path: Path, header: dict | bytes, data: bytes) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


HEADER = {
    "__metadata__": {"format": "pt"},
    "fc.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    "fc.bias": {"dtype": "F16", "shape": [2], "data_offsets": [24, 28]},
    "steps": {"dtype": "I64", "shape": [], "data_offsets": [28, 36]},
}


def test_a_hand_written_header_is_read_back(tmp_path):
    path = write(tmp_path / "t.safetensors", HEADER, bytes(36))
    info = inspect_teacher(path, "safetensors")
    assert info == {
        "format": "safetensors",
        "tensors": {
            "fc.weight": {"dtype": "F32", "shape": [2, 3]},
            "fc.bias": {"dtype": "F16", "shape": [2]},
            "steps": {"dtype": "I64", "shape": []},
        },
        "parameters": 9,
        "metadata": {"format": "pt"},
    }


def test_a_file_written_by_safetensors_is_read_back(tmp_path):
    numpy_io = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "t.safetensors"
    numpy_io.save_file(
        {"w": np.zeros((4, 5), np.float32), "b": np.ones(5, np.float64)}, str(path), metadata={"arch": "mlp"}
    )
    info = inspect_teacher(path, "safetensors")
    assert info["tensors"] == {"w": {"dtype": "F32", "shape": [4, 5]}, "b": {"dtype": "F64", "shape": [5]}}
    assert info["parameters"] == 25 and info["metadata"] == {"arch": "mlp"}


def refused(path: Path) -> str:
    with pytest.raises(InspectionError) as caught:
        inspect_teacher(path, "safetensors")
    assert caught.value.field == "file"
    assert "safetensors.torch.save_file" in str(caught.value)
    return str(caught.value)


def test_a_truncated_file_is_refused(tmp_path):
    full = write(tmp_path / "full.safetensors", HEADER, bytes(36)).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(full[:-10])
    assert "outside the 26 bytes of data" in refused(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(full[:40])
    assert "only 32 follow" in refused(tmp_path / "head.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x00")
    assert "fewer than the 8" in refused(tmp_path / "tiny.safetensors")


def test_an_oversized_header_is_refused(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 200_000_000) + b"{}")
    assert "more than the 1048576 allowed" in refused(path)


@pytest.mark.parametrize(
    "entry, why",
    [
        ({"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 40]}, "outside"),
        ({"dtype": "F32", "shape": [2, 3], "data_offsets": [-4, 20]}, "outside"),
        ({"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}, "needs 24 bytes"),
        ({"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 24]}, "invalid shape"),
        ({"dtype": "Q7", "shape": [2, 3], "data_offsets": [0, 24]}, "unknown dtype"),
        ({"dtype": "F32", "shape": [2, 3], "data_offsets": [0]}, "invalid data_offsets"),
        ({"dtype": "F32", "shape": [2, 3]}, "exactly dtype, shape and data_offsets"),
    ],
)
def test_inconsistent_entries_are_refused(tmp_path, entry, why):
    path = write(tmp_path / "bad.safetensors", {"w": entry}, bytes(36))
    assert why in refused(path)


def test_overlaps_duplicates_and_bad_json_are_refused(tmp_path):
    overlap = {
        "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
    }
    assert "overlap" in refused(write(tmp_path / "o.safetensors", overlap, bytes(6)))
    dup = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    assert "twice" in refused(write(tmp_path / "d.safetensors", dup, bytes(1)))
    assert "not UTF-8 JSON" in refused(write(tmp_path / "j.safetensors", b"{nope", b""))
    assert "JSON object" in refused(write(tmp_path / "l.safetensors", b"[1, 2]", b""))
    meta = {"__metadata__": {"n": 1}}
    assert "__metadata__" in refused(write(tmp_path / "m.safetensors", meta, b""))


def test_output_is_for_onnx_only(tmp_path):
    path = write(tmp_path / "t.safetensors", HEADER, bytes(36))
    with pytest.raises(InspectionError) as caught:
        inspect_teacher(path, "safetensors", output="logits")
    assert caught.value.field == "output"
