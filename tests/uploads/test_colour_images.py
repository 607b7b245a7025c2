"""Colour images at any size, and image NPZ layouts: channels kept, uint8 stored."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from app.uploads.dataset import inspect_dataset
from app.uploads.errors import InspectionError


def _png(mode: str, size=(6, 5), value=7) -> bytes:
    buffer = io.BytesIO()
    colour = {
        "L": value,
        "LA": (value, 255),
        "RGB": (value, 2 * value, 3 * value),
        "RGBA": (value, 2 * value, 3 * value, 128),
    }.get(mode, value)
    Image.new(mode, size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _palette_png() -> bytes:
    img = Image.new("P", (6, 5), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _canonical(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_rgba_and_palette_become_rgb_channels_first(tmp_path):
    zip_path = _zip(
        tmp_path / "c.zip",
        {"a/1.png": _png("RGBA"), "a/2.png": _png("RGB"), "b/1.png": _palette_png(), "b/2.png": _png("RGB", value=9)},
    )
    info = inspect_dataset(zip_path, "zip", tmp_path / "out.npz")
    assert info["input_shape"] == [3, 5, 6] and info["dtype"] == "uint8"
    x = _canonical(tmp_path / "out.npz")["x"]
    assert x.dtype == np.uint8 and x.shape == (4, 3, 5, 6)
    assert x[0, :, 0, 0].tolist() == [7, 14, 21]  # RGBA: alpha dropped
    assert x[2, :, 0, 0].tolist() == [10, 20, 30]  # palette index 1 -> its colour


def test_grey_stays_one_channel(tmp_path):
    zip_path = _zip(
        tmp_path / "g.zip",
        {"a/1.png": _png("L"), "a/2.png": _png("LA"), "b/1.png": _png("L", value=3), "b/2.png": _png("L", value=4)},
    )
    info = inspect_dataset(zip_path, "zip", tmp_path / "out.npz")
    assert info["input_shape"] == [5, 6]
    assert _canonical(tmp_path / "out.npz")["x"].dtype == np.uint8


def test_mixed_sizes_are_resized_to_image_size(tmp_path):
    members = {
        "a/1.png": _png("RGB", (6, 5)),
        "a/2.png": _png("RGB", (12, 9)),
        "b/1.png": _png("L", (3, 3)),
        "b/2.png": _png("RGB", (6, 5)),
    }
    with pytest.raises(InspectionError) as exc:
        inspect_dataset(_zip(tmp_path / "m.zip", members), "zip", tmp_path / "out.npz")
    assert "3 different sizes" in str(exc.value) and "12x9" in str(exc.value)
    assert exc.value.field == "image_size"
    info = inspect_dataset(tmp_path / "m.zip", "zip", tmp_path / "out.npz", image_size=8)
    assert info["input_shape"] == [3, 8, 8]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_npz_image_layouts(tmp_path, layout, dtype):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (20, 3, 5, 6)).astype(dtype)
    x = {"NHWC": nchw.transpose(0, 2, 3, 1), "NCHW": nchw, "NHW": nchw[:, 0]}[layout]
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat([0, 1], 10))
    info = inspect_dataset(tmp_path / "d.npz", "npz", tmp_path / "out.npz")
    stored = _canonical(tmp_path / "out.npz")["x"]
    want = nchw[:, 0] if layout == "NHW" else nchw
    assert info["input_shape"] == list(want.shape[1:])
    assert stored.dtype == (np.uint8 if dtype == np.uint8 else np.float32)
    assert np.array_equal(stored, want)


def test_one_colour_image_makes_every_image_rgb_in_both_arrays(tmp_path, monkeypatch):
    # Decoded images are streamed to files as they come; the layout is settled at the end,
    # the same for the labelled and the unlabeled ones (read back a few images at a time).
    monkeypatch.setattr("app.uploads.spool.CHUNK_BYTES", 200)
    members = {f"{c}/{i}.png": _png("L", value=10 * i + 1) for c in "ab" for i in range(4)}
    members["unlabeled/0.png"] = _png("L", value=5)
    members["unlabeled/1.png"] = _png("RGB", value=6)
    info = inspect_dataset(_zip(tmp_path / "m.zip", members), "zip", tmp_path / "out.npz")
    assert (info["input_shape"], info["rows"], info["unlabeled_rows"]) == ([3, 5, 6], 8, 2)
    data = _canonical(tmp_path / "out.npz")
    assert data["x"].shape == (8, 3, 5, 6) and data["x_unlabeled"].shape == (2, 3, 5, 6)
    assert data["x"][:, :, 2, 3].tolist() == [[v] * 3 for v in (1, 11, 21, 31)] * 2  # grey, repeated
    assert data["x_unlabeled"][:, :, 0, 0].tolist() == [[5, 5, 5], [6, 12, 18]]
