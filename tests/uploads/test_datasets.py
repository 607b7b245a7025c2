"""Datasets in every accepted format end as the same canonical npz."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from app.uploads import InspectionError, UploadLimits, inspect_dataset


def canonical(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def refused(path: Path, fmt: str, **kwargs) -> InspectionError:
    out = path.parent / "canonical.npz"
    with pytest.raises(InspectionError) as caught:
        inspect_dataset(path, fmt, out, **kwargs)
    assert not out.exists()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".canonical")] == []
    return caught.value


# -- npz ----------------------------------------------------------------------------------
def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 8, 8))
    y = np.array([10, 2, 1] * 10)
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=y, x_unlabeled=x[:5], x_test=x[:6], y_test=y[:6])
    out = tmp_path / "out" / "canonical.npz"
    info = inspect_dataset(path, "npz", out)
    assert info == {
        "format": "npz",
        "rows": 30,
        "input_shape": [8, 8],
        "num_classes": 3,
        "classes": ["1", "2", "10"],
        "class_counts": [10, 10, 10],
        "unlabeled_rows": 5,
        "test_rows": 6,
    }
    data = canonical(out)
    assert set(data) == {"x", "y", "x_unlabeled", "x_test", "y_test"}
    assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64
    np.testing.assert_allclose(data["x"], x.astype(np.float32))
    np.testing.assert_array_equal(data["y"], np.array([2, 1, 0] * 10))
    np.testing.assert_array_equal(data["y_test"], np.array([2, 1, 0] * 2))
    assert data["x_unlabeled"].shape == (5, 8, 8)
    assert [p.name for p in out.parent.iterdir()] == ["canonical.npz"]  # no temp file left


def test_npz_string_labels(tmp_path):
    path = tmp_path / "d.npz"
    y = np.array(["dog", "cat", "bird", "cat", "dog", "bird"])
    np.savez(
        path,
        x=np.arange(12, dtype=np.int32).reshape(6, 2),
        y=y,
        x_test=np.zeros((2, 2)),
        y_test=np.array(["cat", "dog"]),
    )
    info = inspect_dataset(path, "npz", tmp_path / "out.npz")
    assert info["classes"] == ["bird", "cat", "dog"] and info["class_counts"] == [2, 2, 2]
    data = canonical(tmp_path / "out.npz")
    np.testing.assert_array_equal(data["y"], [2, 1, 0, 1, 2, 0])
    np.testing.assert_array_equal(data["y_test"], [1, 2])


def test_npz_object_array_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.array(["a", "b", 1, None], dtype=object))
    error = refused(path, "npz")
    assert "object array" in str(error) and "unpickling" in str(error)


@pytest.mark.parametrize(
    "arrays, why",
    [
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1]), "w": np.zeros(4)}, "allowed keys are x, y"),
        ({"x": np.zeros((4, 2))}, "lacks y"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0])}, "4 rows but y has 3"),
        ({"x": np.array([[0, np.nan]] * 4), "y": np.array([0, 1, 0, 1])}, "NaN"),
        ({"x": np.array([[0, 1e300]] * 4), "y": np.array([0, 1, 0, 1])}, "too large for float32"),
        ({"x": np.zeros(4), "y": np.array([0, 1, 0, 1])}, "one row per example"),
        ({"x": np.zeros((4, 2)), "y": np.array([0.5, 1, 0, 1])}, "non-integer"),
        ({"x": np.zeros((4, 2)), "y": np.zeros((4, 3))}, "argmax"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 0, 0, 0])}, "1 class"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 0, 0, 1])}, "'1' (1)"),
        (
            {
                "x": np.zeros((4, 2)),
                "y": np.array([0, 1, 0, 1]),
                "x_test": np.zeros((2, 2)),
                "y_test": np.array([0, 7]),
            },
            "no training example has: 7",
        ),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1]), "x_test": np.zeros((2, 2))}, "both x_test and y_test"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1]), "x_unlabeled": np.zeros((2, 3))}, "must match"),
        ({"x": np.array([["a", "b"]] * 4), "y": np.array([0, 1, 0, 1])}, "features must be numbers"),
    ],
)
def test_npz_refusals(tmp_path, arrays, why):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    assert why in str(refused(path, "npz"))


def test_npz_cells_are_capped_before_the_data_is_read(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((100, 10)), y=np.arange(100) % 2)
    assert "more than 500 values" in str(refused(path, "npz", limits=UploadLimits(max_cells=500)))


def test_an_mnist_sized_dataset_is_accepted_under_the_default_caps(tmp_path):
    # 70,000 x 784 = 55 M values: above the old 50 M cap, well inside the memory it protects.
    x = np.zeros((70_000, 784), dtype=np.uint8)
    x[:, 0] = np.arange(70_000) % 251
    path = tmp_path / "mnist.npz"
    np.savez(path, x=x, y=np.arange(70_000) % 10)
    found = inspect_dataset(path, "npz", tmp_path / "out.npz")
    assert (found["rows"], found["input_shape"], found["dtype"]) == (70_000, [784], "uint8")
    assert np.array_equal(canonical(tmp_path / "out.npz")["x"], x)


def test_a_non_finite_value_is_found_in_a_later_chunk(tmp_path):
    x = np.zeros((30_000, 784), dtype=np.float32)  # more rows than one check's chunk
    x[25_000, 3] = np.nan
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(30_000) % 2)
    assert "first in row 25000" in str(refused(path, "npz"))


# -- csv ----------------------------------------------------------------------------------
def test_csv_with_string_labels_and_an_unlabeled_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("f0,f1,label\n1,2,cat\n3,4,dog\n5,6,\n7,8.5,cat\n9,10,dog\n")
    info = inspect_dataset(path, "csv", tmp_path / "out.npz")
    assert info == {
        "format": "csv",
        "rows": 4,
        "input_shape": [2],
        "num_classes": 2,
        "classes": ["cat", "dog"],
        "class_counts": [2, 2],
        "unlabeled_rows": 1,
        "test_rows": 0,
        "columns": 2,
    }
    data = canonical(tmp_path / "out.npz")
    np.testing.assert_array_equal(data["x"], np.array([[1, 2], [3, 4], [7, 8.5], [9, 10]], np.float32))
    np.testing.assert_array_equal(data["y"], [0, 1, 0, 1])
    np.testing.assert_array_equal(data["x_unlabeled"], [[5, 6]])


def test_csv_integer_labels_sort_as_numbers_and_label_column_is_chosen(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("target,a\n10,1\n2,2\n10,3\n2,4\n")
    info = inspect_dataset(path, "csv", tmp_path / "out.npz", label_column="target")
    assert info["classes"] == ["2", "10"]
    np.testing.assert_array_equal(canonical(tmp_path / "out.npz")["y"], [1, 0, 1, 0])


def test_csv_non_numeric_feature_is_refused_naming_the_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("f0,colour,label\n1,red,a\n2,blue,b\n3,red,a\n4,red,b\n")
    error = refused(path, "csv")
    assert error.field == "file" and "'colour'" in str(error) and "not numeric" in str(error)


def test_csv_missing_label_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("f0,class\n1,a\n2,b\n")
    error = refused(path, "csv")
    assert error.field == "label_column"
    assert "'label'" in str(error) and "'f0', 'class'" in str(error)


def test_csv_empty_feature_cell_and_ragged_rows_are_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("f0,f1,label\n1,,a\n2,3,b\n")
    assert "'f1' has empty cells" in str(refused(path, "csv"))
    path.write_text("f0,f1,label\n1,2,a,9\n2,3,b\n")
    assert "cannot be parsed" in str(refused(path, "csv"))


# -- parquet ------------------------------------------------------------------------------
def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    table = pa.table(
        {
            "a": pa.array([1, 2, 3, 4, 5], pa.int32()),
            "b": [0.5, 1.5, 2.5, 3.5, 4.5],
            "label": pa.array(["x", "y", None, "x", "y"]).dictionary_encode(),
        }
    )
    pq.write_table(table, path)
    info = inspect_dataset(path, "parquet", tmp_path / "out.npz")
    assert info == {
        "format": "parquet",
        "rows": 4,
        "input_shape": [2],
        "num_classes": 2,
        "classes": ["x", "y"],
        "class_counts": [2, 2],
        "unlabeled_rows": 1,
        "test_rows": 0,
        "columns": 2,
    }
    data = canonical(tmp_path / "out.npz")
    np.testing.assert_array_equal(data["x"], [[1, 0.5], [2, 1.5], [4, 3.5], [5, 4.5]])
    np.testing.assert_array_equal(data["x_unlabeled"], [[3, 2.5]])


def test_parquet_refusals(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]}), path)
    error = refused(path, "parquet")
    assert error.field == "label_column" and "'a', 'y'" in str(error)
    assert inspect_dataset(path, "parquet", tmp_path / "ok.npz", label_column="y")["classes"] == ["0", "1"]
    assert "more than 3 values" in str(refused(path, "parquet", label_column="y", limits=UploadLimits(max_cells=3)))
    pq.write_table(pa.table({"name": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}), path)
    error = refused(path, "parquet")
    assert "'name'" in str(error) and "not numeric" in str(error)


# -- images -------------------------------------------------------------------------------
def png(value: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(buffer, "PNG")
    return buffer.getvalue()


def image_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("top", ["", "pets/"])
def test_images_in_class_folders(tmp_path, top):
    members = {
        f"{top}{cls}/{i}.png": png(10 * k + i, mode="RGB" if cls == "dog" else "L")
        for k, cls in enumerate(["cat", "dog", "bird"])
        for i in range(3)
    }
    members[f"{top}unlabeled/u.png"] = png(200)
    members["__MACOSX/._junk"] = b"junk"
    path = image_zip(tmp_path / "images.zip", members)
    info = inspect_dataset(path, "zip", tmp_path / "out.npz")
    # One colour image makes the whole set RGB, (n, 3, H, W) uint8; grey ones are repeated.
    assert info == {
        "format": "zip",
        "rows": 9,
        "input_shape": [3, 8, 8],
        "num_classes": 3,
        "classes": ["bird", "cat", "dog"],
        "class_counts": [3, 3, 3],
        "unlabeled_rows": 1,
        "test_rows": 0,
        "dtype": "uint8",
    }
    data = canonical(tmp_path / "out.npz")
    assert data["x"].shape == (9, 3, 8, 8) and data["x"].dtype == np.uint8
    assert sorted(data["x"][:, 0, 0, 0].tolist()) == [0, 1, 2, 10, 11, 12, 20, 21, 22]  # raw 0..255
    assert data["x_unlabeled"][0, :, 0, 0].tolist() == [200, 200, 200]
    for row, label in zip(data["x"][:, 0, 0, 0], data["y"], strict=True):
        assert label == {0: 1, 1: 2, 2: 0}[int(row) // 10]


def test_images_of_different_sizes_are_refused(tmp_path):
    path = image_zip(
        tmp_path / "images.zip",
        {"a/1.png": png(1), "a/2.png": png(2), "b/1.png": png(3), "b/2.png": png(4, size=(8, 9))},
    )
    message = str(refused(path, "zip"))
    assert "8x8 (e.g. 'a/1.png')" in message and "8x9 (e.g. 'b/2.png')" in message
    assert "image_size" in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_zip_refusals(tmp_path):
    path = image_zip(tmp_path / "flat.zip", {"1.png": png(1), "2.png": png(2)})
    assert "not in a class folder" in str(refused(path, "zip"))
    path = image_zip(tmp_path / "txt.zip", {"a/1.png": png(1), "a/notes.txt": b"hi"})
    assert "not an image" in str(refused(path, "zip"))
    path = image_zip(tmp_path / "fake.zip", {"a/1.png": b"not a png", "b/1.png": png(1)})
    assert "cannot be read as an image" in str(refused(path, "zip"))
    path = image_zip(tmp_path / "big.zip", {"a/1.png": png(1, size=(40, 40)), "b/1.png": png(1, size=(40, 40))})
    assert "more than the 1000 pixels" in str(refused(path, "zip", limits=UploadLimits(max_image_pixels=1000)))
    path = image_zip(tmp_path / "one.zip", {"a/1.png": png(1), "a/2.png": png(2)})
    assert "1 class" in str(refused(path, "zip"))


def test_unknown_format(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("x")
    assert refused(path, "txt").field == "format"


def test_a_csv_of_many_blocks_is_streamed_in_the_file_order(tmp_path, monkeypatch):
    # More than one parser block (1 MiB of text) and more than one read-back chunk: the rows
    # go to the labelled or the unlabeled file as they are parsed, and come back in order.
    monkeypatch.setattr("app.uploads.spool.CHUNK_BYTES", 4096)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1000, size=(6_000, 60)).astype(np.float32) / 8
    labels = np.array(["a", "b", "c"])[np.arange(6_000) % 3].astype(object)
    unlabeled = np.zeros(6_000, bool)
    unlabeled[[7, 2_500, 5_999]] = True
    labels[unlabeled] = ""
    lines = [",".join([*(f"f{i}" for i in range(60)), "label"])]
    lines += [",".join([*(repr(float(v)) for v in row), label]) for row, label in zip(x, labels, strict=True)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 2 << 20
    info = inspect_dataset(path, "csv", tmp_path / "out.npz")
    assert (info["rows"], info["unlabeled_rows"], info["class_counts"]) == (5_997, 3, [2000, 1998, 1999])
    data = canonical(tmp_path / "out.npz")
    np.testing.assert_array_equal(data["x"], x[~unlabeled])
    np.testing.assert_array_equal(data["x_unlabeled"], x[unlabeled])
    np.testing.assert_array_equal(data["y"], (np.arange(6_000) % 3)[~unlabeled])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the spools are gone
    bad = lines[:]
    bad[1 + 5_000] = ",".join(["nan", *lines[1 + 5_000].split(",")[1:]])
    path.write_text("\n".join(bad) + "\n")
    assert "first in row 5000" in str(refused(path, "csv"))  # counted across blocks
