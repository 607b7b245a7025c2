"""Files that run code when loaded (pickles, torch archives, TorchScript, .pt2) are
refused by name and by content, whatever they are called, and never unpickled."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.uploads import InspectionError, guess_format, inspect_dataset, inspect_teacher, refuse_code_carrying
from app.uploads.formats import PICKLE_EXTENSIONS


class Evil:
    """Unpickling this creates the marker file: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def assert_how_to_convert(exc: InspectionError) -> None:
    message = str(exc)
    assert exc.field == "file"
    assert "runs code" in message
    assert "torch.onnx.export" in message
    assert "safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors')" in message


def torch_style_zip(path: Path, payload: bytes) -> Path:
    """The layout of torch.save since 1.6: archive/data.pkl, archive/data/0, archive/version."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/data/0", b"\0" * 64)
        zf.writestr("archive/version", b"3\n")
    return path


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("name", ["teacher.pt", "teacher.onnx", "teacher.safetensors", "data.npz"])
def test_a_malicious_pickle_is_refused_under_any_name(tmp_path, protocol, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(Evil(marker), protocol=protocol))

    with pytest.raises(InspectionError) as caught:
        refuse_code_carrying(path, name)
    assert_how_to_convert(caught.value)
    assert "pickle" in str(caught.value)

    if name.endswith((".onnx", ".safetensors")):
        with pytest.raises(InspectionError) as caught:
            inspect_teacher(path, guess_format("teacher", name))
        assert_how_to_convert(caught.value)
    elif name.endswith(".npz"):
        with pytest.raises(InspectionError) as caught:
            inspect_dataset(path, "npz", tmp_path / "out.npz")
        assert_how_to_convert(caught.value)
    assert not marker.exists()
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("ext", PICKLE_EXTENSIONS)
def test_pickle_based_extensions_are_refused_by_name(tmp_path, ext):
    with pytest.raises(InspectionError) as caught:
        guess_format("teacher", f"model{ext}")
    assert_how_to_convert(caught.value)
    path = tmp_path / f"model{ext}"
    path.write_bytes(b"anything")
    with pytest.raises(InspectionError) as caught:
        refuse_code_carrying(path, path.name)
    assert_how_to_convert(caught.value)


@pytest.mark.parametrize("name", ["teacher.pt", "teacher.onnx", "teacher.safetensors"])
def test_a_torch_style_zip_is_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    path = torch_style_zip(tmp_path / name, pickle.dumps(Evil(marker), protocol=2))
    with pytest.raises(InspectionError) as caught:
        refuse_code_carrying(path, name)
    assert_how_to_convert(caught.value)
    if not name.endswith(".pt"):  # a .pt is refused by its name before its content is read
        assert "data.pkl" in str(caught.value)
        with pytest.raises(InspectionError):
            inspect_teacher(path, guess_format("teacher", name))
    assert not marker.exists()


def test_a_torch_style_zip_named_npz_is_refused_as_a_dataset(tmp_path):
    marker = tmp_path / "pwned"
    path = torch_style_zip(tmp_path / "data.npz", pickle.dumps(Evil(marker)))
    with pytest.raises(InspectionError) as caught:
        inspect_dataset(path, "npz", tmp_path / "out.npz")
    assert_how_to_convert(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "members",
    [
        ["model/code/__torch__/model.py", "model/constants.pkl", "model/data/0"],  # TorchScript
        ["m/code/__torch__/m.py", "m/version"],  # TorchScript code without the pickles
        ["archive_format", "models/model.json", "data/weights/w0"],  # torch.export .pt2
        ["nested/weights.pth"],  # a zip carrying a pickle-based file
    ],
)
def test_torchscript_and_pt2_archives_are_refused(tmp_path, members):
    path = tmp_path / "teacher.onnx"
    with zipfile.ZipFile(path, "w") as zf:
        for member in members:
            zf.writestr(member, b"x")
    with pytest.raises(InspectionError) as caught:
        refuse_code_carrying(path, path.name)
    assert_how_to_convert(caught.value)


def test_safe_files_pass(tmp_path):
    # a safetensors file whose header length starts with 0x80 0x03 is not a pickle
    header = json.dumps({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}).encode()
    header += b" " * (0x380 - len(header))
    safetensors = tmp_path / "teacher.safetensors"
    safetensors.write_bytes(struct.pack("<Q", len(header)) + header + b"\x01")
    assert safetensors.read_bytes()[:2] == b"\x80\x03"
    refuse_code_carrying(safetensors, safetensors.name)
    assert inspect_teacher(safetensors, "safetensors")["parameters"] == 1

    npz = tmp_path / "data.npz"
    np.savez(npz, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    refuse_code_carrying(npz, npz.name)

    # an image dataset with a class called "code" is not TorchScript
    images = tmp_path / "images.zip"
    with zipfile.ZipFile(images, "w") as zf:
        zf.writestr("code/001.png", b"png")
    refuse_code_carrying(images, images.name)

    text = tmp_path / "data.csv"
    text.write_text("a,label\n1,0\n")
    refuse_code_carrying(text, text.name)


def test_nothing_here_imports_pickle_loading():
    # the package never calls pickle.load(s) / np.load(allow_pickle=True)
    root = Path(__file__).resolve().parents[2] / "app" / "uploads"
    source = "\n".join(p.read_text() for p in root.glob("*.py"))
    assert "import pickle" not in source
    assert "allow_pickle=True" not in source
