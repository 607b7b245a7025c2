"""Inspecting an uploaded dataset, and writing it out as one canonical npz.

Every format ends in the same file: ``x`` float32 (n, *shape), or uint8 for images (n, H, W)
grey or (n, C, H, W) colour, ``y`` int64 in 0..C-1, optionally ``x_unlabeled`` and
``x_test``/``y_test`` of the same dtype. Labels of any type are
mapped to 0..C-1 in the order of their sorted unique values (strings as strings,
numbers as numbers); the class names are kept, as strings, in the result.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from app.contract.files import atomic_write
from app.uploads import zipsafe
from app.uploads.errors import InspectionError, UploadLimits
from app.uploads.formats import DATASET_FORMATS, HOW_TO_CONVERT, code_carrying_content
from app.uploads.spool import ImageSpool, Spool, write_npz

NPZ_KEYS = ("x", "y", "x_unlabeled", "x_test", "y_test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Decoders Pillow may use: never EPS (Ghostscript) or other exotic plugins.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
UNLABELED_FOLDERS = ("unlabeled", "unlabelled")
_INT = re.compile(r"^[+-]?\d+$")
_CSV_COLUMN = re.compile(r"column #(\d+)")


Rows = np.ndarray | Spool  # inputs in memory, or streamed to a file as they were read (spool.py)


@dataclass
class _Parts:
    x: Rows
    y: np.ndarray  # raw labels, normalised: int64 or a str ('U') array
    x_unlabeled: Rows | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def inspect_dataset(
    path: Path,
    fmt: str,
    canonical_out: Path,
    *,
    label_column: str = "label",
    limits: UploadLimits | None = None,
    image_size: int | None = None,
) -> dict:
    """Check the dataset at ``path``, write it to ``canonical_out`` as the canonical npz
    (atomically), and say what it holds: {"format", "rows", "input_shape", "num_classes",
    "classes", "class_counts", "unlabeled_rows", "test_rows"} (+ "columns" for csv and
    parquet, the number of feature columns)."""
    path, canonical_out, limits = Path(path), Path(canonical_out), limits or UploadLimits()
    why = code_carrying_content(path)
    if why:
        raise InspectionError(f"The dataset is refused: it is {why}. {HOW_TO_CONVERT}", field="file")
    if fmt not in DATASET_FORMATS:
        raise InspectionError(
            f"Unknown dataset format {fmt!r}: use one of {', '.join(DATASET_FORMATS)}.", field="format"
        )
    # CSV rows and decoded images are streamed to files here, never held whole (spool.py).
    canonical_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=canonical_out.parent, prefix=".spool-") as spool_dir:
        if fmt == "csv":
            parts = _read_csv(path, limits, label_column, Path(spool_dir))
        elif fmt == "parquet":
            parts = _read_parquet(path, limits, label_column)
        elif fmt == "zip":
            parts = _read_image_zip(path, limits, image_size, Path(spool_dir))
        else:
            parts = _read_npz(path, limits)
        return _finish(fmt, parts, canonical_out)


# -- labels ------------------------------------------------------------------------------
def _normalise_labels(values: np.ndarray, what: str, digits_are_ints: bool = False) -> np.ndarray:
    """Labels as int64 (numbers) or a str array; anything else is refused."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise InspectionError(
            f"{what} must be one label per row, shape (n,); it has shape {list(values.shape)}. "
            "For one-hot labels give their argmax.",
            field="file",
        )
    kind = values.dtype.kind
    if kind in "biu":
        return values.astype(np.int64)
    if kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise InspectionError(
                f"{what} holds non-integer numbers; labels must be classes (integers or strings), "
                "not regression targets.",
                field="file",
            )
        return values.astype(np.int64)
    if kind == "S":
        try:
            values = np.char.decode(values, "utf-8")
        except UnicodeDecodeError as exc:
            raise InspectionError(f"{what} holds bytes that are not UTF-8.", field="file") from exc
        kind = "U"
    if kind == "O":
        items = values.tolist()
        if all(isinstance(v, (bool, int, np.integer)) for v in items):
            return np.array(items, dtype=np.int64)
        if all(isinstance(v, (float, int, np.integer, np.floating)) for v in items):
            return _normalise_labels(np.array(items, dtype=np.float64), what)
        if all(isinstance(v, str) for v in items):
            values = np.array(items, dtype=str) if items else np.array([], dtype="U1")
            kind = "U"
        else:
            raise InspectionError(
                f"{what} mixes labels of different types; use all integers or all strings.", field="file"
            )
    if kind == "U":
        if digits_are_ints and values.size and all(_INT.match(v) for v in values.tolist()):
            return np.array([int(v) for v in values.tolist()], dtype=np.int64)
        return values.astype(str)
    raise InspectionError(f"{what} has dtype {values.dtype}; labels must be integers or strings.", field="file")


def _encode(y: np.ndarray, y_test: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if y_test is not None and y.dtype.kind != y_test.dtype.kind:
        if y.dtype.kind == "U":
            y_test = y_test.astype(str)
        else:
            raise InspectionError("y_test holds strings while y holds integers; use the same labels.", field="file")
    classes, codes = np.unique(y, return_inverse=True)
    test_codes = None
    if y_test is not None:
        idx = np.searchsorted(classes, y_test)
        idx_clipped = np.clip(idx, 0, max(len(classes) - 1, 0))
        unknown = (
            (idx >= len(classes)) | (classes[idx_clipped] != y_test) if len(classes) else np.ones(len(y_test), bool)
        )
        if np.any(unknown):
            missing = sorted({str(v) for v in y_test[unknown].tolist()})
            raise InspectionError(
                f"y_test has labels that no training example has: {', '.join(missing[:10])}"
                f"{' ...' if len(missing) > 10 else ''}. Test classes must be training classes.",
                field="file",
            )
        test_codes = idx.astype(np.int64)
    return classes, codes.reshape(-1).astype(np.int64), test_codes


# -- features ----------------------------------------------------------------------------
def _features(x: Rows, what: str) -> Rows:
    if isinstance(x, Spool):  # float32, checked row block by row block as it was written
        return x
    if x.dtype.kind not in "biuf" or x.dtype.names:
        raise InspectionError(f"{what} has dtype {x.dtype}; features must be numbers.", field="file")
    with np.errstate(over="ignore", invalid="ignore"):
        out = x.astype(np.float32, copy=False)  # float32 already: not copied
    refuse_non_finite(out, what)
    return out


def refuse_non_finite(x: np.ndarray, what: str, first_row: int = 0) -> None:
    """NaN or infinity anywhere: refused, naming the first row that holds one (counted from
    0 in the order of the file, the header not counted; `x` starts at row `first_row`)."""
    rows = max(1, (1 << 24) // max(1, math.prod(x.shape[1:])))  # ~16 M values at a time, not a full mask
    for start in range(0, len(x), rows):
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(x[start : start + rows].astype(np.float32, copy=False))
        if not finite.all():
            break
    else:
        return
    bad = first_row + start + int(np.argmax(~finite.reshape(len(finite), -1).all(axis=1)))
    raise InspectionError(
        f"{what} holds NaN or infinite values (or numbers too large for float32), first in row "
        f"{bad}. Fill or drop those rows.",
        field="file",
    )


def _stored_features(x: Rows, what: str) -> Rows:
    """uint8 (images) are kept as they are, 4x smaller than float32 (the models convert them
    batch by batch); everything else becomes float32."""
    if isinstance(x, Spool):
        return x
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    return _features(x, what)


def _channels_first(x: np.ndarray) -> np.ndarray:
    """(n, H, W, C) with C in 1, 3, 4 -> (n, C, H, W); (n, C, H, W) and everything else as given."""
    if x.ndim != 4:
        return x
    if x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _finish(fmt: str, parts: _Parts, canonical_out: Path) -> dict:
    """Check the parts against each other, encode the labels, write the canonical npz (spools
    streamed from their files) and say what it holds."""
    arrays = _checked_inputs(parts)
    classes, y, y_test = _encode(parts.y, parts.y_test)
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(0, np.int64)
    names = [str(c) for c in classes.tolist()]
    _check_classes(names, counts)
    arrays["y"] = y
    if y_test is not None:
        arrays["y_test"] = y_test
    atomic_write(canonical_out, lambda f: write_npz(f, arrays))
    result = {
        "format": fmt,
        "rows": len(arrays["x"]),
        "input_shape": list(arrays["x"].shape[1:]),
        "num_classes": len(classes),
        "classes": names,
        "class_counts": [int(c) for c in counts],
        "unlabeled_rows": len(arrays["x_unlabeled"]) if "x_unlabeled" in arrays else 0,
        "test_rows": len(arrays["x_test"]) if "x_test" in arrays else 0,
    }
    if arrays["x"].dtype == np.uint8:
        result["dtype"] = "uint8"  # images kept as they are (float32 otherwise, as before)
    result.update(parts.extra)
    return result


def _checked_inputs(parts: _Parts) -> dict[str, Rows]:
    """x (and x_unlabeled, x_test) as stored: one dtype, one example shape, a label per row."""
    if parts.x.ndim < 2:
        raise InspectionError(
            f"x must be (n, features...), with one row per example; it has shape {list(parts.x.shape)}.", field="file"
        )
    # uint8 stays uint8 only when every input array is uint8 (one dtype per dataset).
    inputs = [a for a in (parts.x, parts.x_unlabeled, parts.x_test) if a is not None]
    keep = _stored_features if all(a.dtype == np.uint8 for a in inputs) else _features
    x = keep(parts.x, "x")
    if len(parts.y) != len(x):
        raise InspectionError(f"x has {len(x)} rows but y has {len(parts.y)}; give one label per row.", field="file")
    shape = tuple(x.shape[1:])
    arrays: dict[str, Rows] = {}
    for key in ("x_unlabeled", "x_test"):
        value = getattr(parts, key)
        if value is None:
            continue
        if tuple(value.shape[1:]) != shape or value.ndim != x.ndim:
            raise InspectionError(
                f"{key} has examples of shape {list(value.shape[1:])}, x has {list(shape)}; they must match.",
                field="file",
            )
        arrays[key] = keep(value, key)
    _check_test_split(parts)
    return {"x": x, **arrays}


def _check_test_split(parts: _Parts) -> None:
    if (parts.x_test is None) != (parts.y_test is None):
        raise InspectionError("Give both x_test and y_test, or neither.", field="file")
    if parts.x_test is not None and len(parts.x_test) == 0:
        raise InspectionError(
            "x_test has no rows: a test split needs examples to report on. "
            "Give some, or leave x_test and y_test out (test_fraction is then held out).",
            field="file",
        )
    if parts.x_test is not None and parts.y_test is not None and len(parts.y_test) != len(parts.x_test):
        raise InspectionError(f"x_test has {len(parts.x_test)} rows but y_test has {len(parts.y_test)}.", field="file")


def _check_classes(names: list[str], counts: np.ndarray) -> None:
    if len(names) < 2:
        raise InspectionError(
            f"The dataset has {len(names)} class{'es' if len(names) != 1 else ''} among its "
            f"labelled rows; a classifier needs at least 2.",
            field="file",
        )
    few = [(name, int(c)) for name, c in zip(names, counts, strict=True) if c < 2]
    if few:
        listed = ", ".join(f"{name!r} ({c})" for name, c in few[:10])
        raise InspectionError(
            f"Every class needs at least 2 examples (the validation split is stratified); these have fewer: {listed}.",
            field="file",
        )


def _too_many_cells(cells: int, limits: UploadLimits) -> InspectionError:
    return InspectionError(
        f"The dataset has more than {limits.max_cells} values (rows x features, {cells} so far); "
        "upload a smaller sample.",
        field="file",
    )


def _too_many_rows(rows: int, limits: UploadLimits) -> InspectionError:
    return InspectionError(
        f"The dataset has more than {limits.max_rows} rows ({rows} so far); upload a smaller sample.", field="file"
    )


def _too_many_columns(columns: int, limits: UploadLimits) -> InspectionError:
    return InspectionError(
        f"The table has {columns} columns, more than the {limits.max_columns} allowed; keep the features you need.",
        field="file",
    )


# -- npz ---------------------------------------------------------------------------------
def _read_npy(member: zipsafe.BoundedMember, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        if version == (1, 0):
            return fmt.read_array_header_1_0(member)
        if version == (2, 0):
            return fmt.read_array_header_2_0(member)
        return fmt._read_array_header(member, version)  # type: ignore[attr-defined]
    except InspectionError:
        raise
    except Exception as exc:
        raise InspectionError(
            f"{key} in the npz is not a valid .npy array ({exc}). Save the "
            "arrays with numpy.savez('data.npz', x=x, y=y).",
            field="file",
        ) from exc


def _read_npz(path: Path, limits: UploadLimits) -> _Parts:
    what = "The npz file"
    arrays: dict[str, np.ndarray] = {}
    cells = 0
    with zipsafe.open_zip(path, limits, what) as zf:
        budget = zipsafe.ReadBudget(limits, what)
        for info in zf.infolist():
            name = info.filename
            key = name.removesuffix(".npy")
            if key not in NPZ_KEYS:
                raise InspectionError(
                    f"The npz file has an array {key!r}; the allowed keys are {', '.join(NPZ_KEYS)} "
                    "(x and y required).",
                    field="file",
                )
            with zipsafe.BoundedMember(zf, info, budget) as member:
                shape, fortran, dtype = _read_npy(member, key)
                if dtype.hasobject:
                    raise InspectionError(
                        f"{key} in the npz is an object array, which only loads by unpickling "
                        "(running code), so it is refused. Save numbers (and labels as integers or "
                        "fixed-width strings: np.asarray(labels, dtype=str)).",
                        field="file",
                    )
                if dtype.names or dtype.kind not in "biufUS":
                    raise InspectionError(
                        f"{key} in the npz has dtype {dtype}; use numbers (or strings for labels).", field="file"
                    )
                count = math.prod(shape)
                cells += count
                if cells > limits.max_cells:
                    raise _too_many_cells(cells, limits)
                data = np.empty(count * dtype.itemsize, dtype=np.uint8)  # read straight into the array
                if member.read_into(data.data) != len(data) or member.read(1):
                    raise InspectionError(
                        f"{key} in the npz is damaged: its data does not match its shape {list(shape)}.", field="file"
                    )
            arrays[key] = data.view(dtype).reshape(shape, order="F" if fortran else "C")
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise InspectionError(
            f"The npz file lacks {' and '.join(missing)}; save it with numpy.savez('data.npz', x=x, y=y).", field="file"
        )
    y = _normalise_labels(arrays["y"], "y")
    y_test = arrays.get("y_test")
    if y_test is not None:
        y_test = _normalise_labels(y_test, "y_test")
    # NPZ images may come as (n, H, W), (n, H, W, C) or (n, C, H, W): stored channels first.
    for key in ("x", "x_unlabeled", "x_test"):
        if key in arrays:
            arrays[key] = _channels_first(arrays[key])
    return _Parts(
        x=arrays["x"],
        y=y,
        x_unlabeled=arrays.get("x_unlabeled"),
        x_test=arrays.get("x_test"),
        y_test=y_test,
        extra={"layout": "NCHW"} if arrays["x"].ndim == 4 else {},
    )


# -- tables: csv and parquet --------------------------------------------------------------
def _missing_label(label_column: str, names: list[str]) -> InspectionError:
    return InspectionError(
        f"There is no label column {label_column!r}; the columns are: {', '.join(map(repr, names))}. "
        "Name the column that holds the classes (label_column).",
        field="label_column",
    )


def _check_names(names: list[str], label_column: str) -> list[str]:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InspectionError(f"Column names must be unique; repeated: {', '.join(map(repr, dupes))}.", field="file")
    if label_column not in names:
        raise _missing_label(label_column, names)
    features = [n for n in names if n != label_column]
    if not features:
        raise InspectionError("The table has a label column and no feature column.", field="file")
    return features


def _missing_labels(labels: list) -> np.ndarray:
    """Rows without a label (empty, blank or NaN): the unlabeled ones."""
    return np.array(
        [
            v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))
            for v in labels
        ],
        dtype=bool,
    )


def _present_labels(labels: list, missing: np.ndarray) -> list:
    return [v.strip() if isinstance(v, str) else v for v, m in zip(labels, missing, strict=True) if not m]


def _label_array(present: list, digits_are_ints: bool) -> np.ndarray:
    return _normalise_labels(
        np.array(present, dtype=object) if present else np.array([], dtype=np.int64),
        "The label column",
        digits_are_ints,
    )


def _split_labels(labels: list, features: np.ndarray, digits_are_ints: bool) -> _Parts:
    missing = _missing_labels(labels)
    refuse_non_finite(features, "The table")  # before the split, so the row is the file's
    y = _label_array(_present_labels(labels, missing), digits_are_ints)
    return _Parts(x=features[~missing], y=y, x_unlabeled=features[missing] if missing.any() else None)


def _csv_names(path: Path, limits: UploadLimits) -> list[str]:
    """The header's column names, its size and width checked before the parser sees them."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fp:
            header = fp.readline(limits.max_header_bytes + 1)
        if len(header) > limits.max_header_bytes:
            raise InspectionError(
                f"The CSV header is longer than {limits.max_header_bytes} characters; "
                "use fewer or shorter column names.",
                field="file",
            )
        if header.count(",") >= limits.max_columns:
            raise _too_many_columns(header.count(",") + 1, limits)
        names = next(csv.reader([header]), None)
    except UnicodeDecodeError as exc:
        raise InspectionError("The CSV file is not UTF-8 text. Save it as UTF-8.", field="file") from exc
    except csv.Error as exc:
        raise InspectionError(f"The CSV header cannot be read: {exc}.", field="file") from exc
    if not names:
        raise InspectionError("The CSV file is empty: it needs a header row naming its columns.", field="file")
    return [n.strip() for n in names]


def _csv_batches(path: Path, names: list[str], features: list[str], label_column: str):
    """pyarrow's streaming reader: record batches of about 1 MiB of text each."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {n: pa.float64() for n in features} | {label_column: pa.string()}
    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 20)
    convert = pacsv.ConvertOptions(
        column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True
    )
    return pacsv.open_csv(path, read_options=read, convert_options=convert)


def _csv_features(batch, features: list[str], first_row: int) -> np.ndarray:
    """One batch's feature columns as float32 rows, empty cells and NaN/infinity refused."""
    cols = []
    for name in features:
        column = batch.column(name)
        if column.null_count:
            raise InspectionError(f"Column {name!r} has empty cells; fill or drop those rows.", field="file")
        cols.append(column.to_numpy(zero_copy_only=False))
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: inf, refused next
        block = np.stack(cols, axis=1).astype(np.float32)
    refuse_non_finite(block, "The table", first_row)
    return block


def _csv_error(exc: Exception, names: list[str], label_column: str) -> InspectionError:
    message = str(exc)
    match = _CSV_COLUMN.search(message)
    if match and "conversion error" in message and int(match.group(1)) < len(names):
        column = names[int(match.group(1))]
        return InspectionError(
            f"Column {column!r} is not numeric ({message.split(': ', 1)[-1]}); every column but "
            f"the label ({label_column!r}) must be a number. Drop or encode it.",
            field="file",
        )
    return InspectionError(f"The CSV file cannot be parsed: {message}", field="file")


def _read_csv(path: Path, limits: UploadLimits, label_column: str, spool_dir: Path) -> _Parts:
    """Streamed: each batch's rows go to the labelled or the unlabeled spool as it is parsed."""
    import pyarrow as pa

    names = _csv_names(path, limits)
    features = _check_names(names, label_column)
    x = Spool(spool_dir / "x", np.float32, (len(features),))
    x_unlabeled = Spool(spool_dir / "x_unlabeled", np.float32, (len(features),))
    present: list = []
    rows = 0
    try:
        for batch in _csv_batches(path, names, features, label_column):
            if (rows + batch.num_rows) * len(features) > limits.max_cells:
                raise _too_many_cells((rows + batch.num_rows) * len(features), limits)
            if rows + batch.num_rows > limits.max_rows:
                raise _too_many_rows(rows + batch.num_rows, limits)
            block = _csv_features(batch, features, rows)
            labels = batch.column(label_column).to_pylist()
            missing = _missing_labels(labels)
            x.append(block[~missing])
            x_unlabeled.append(block[missing])
            present += _present_labels(labels, missing)
            rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise _csv_error(exc, names, label_column) from exc
    parts = _Parts(x=x, y=_label_array(present, True), x_unlabeled=x_unlabeled if len(x_unlabeled) else None)
    parts.extra["columns"] = len(features)
    return parts


def _read_parquet(path: Path, limits: UploadLimits, label_column: str) -> _Parts:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise InspectionError(f"Not a readable Parquet file ({exc}).", field="file") from exc
    rows, columns = pf.metadata.num_rows, pf.metadata.num_columns  # from the footer, nothing decoded
    if columns > limits.max_columns:
        raise _too_many_columns(columns, limits)
    if rows > limits.max_rows:
        raise _too_many_rows(rows, limits)
    cells = rows * max(columns - 1, 1)
    if cells > limits.max_cells:
        raise _too_many_cells(cells, limits)
    schema = pf.schema_arrow
    names = list(schema.names)
    features = _check_names(names, label_column)
    for name in features:
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind)
        ):
            raise InspectionError(
                f"Column {name!r} is {kind}, not numeric; every column but the label "
                f"({label_column!r}) must be a number. Drop or encode it.",
                field="file",
            )
    try:
        table = pf.read()
    except Exception as exc:
        raise InspectionError(f"The Parquet file cannot be read ({exc}).", field="file") from exc
    cols = []
    for name in features:
        column = table.column(name)
        if column.null_count:
            raise InspectionError(f"Column {name!r} has empty cells; fill or drop those rows.", field="file")
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_decimal(column.type):
            column = column.cast(pa.float64())
        cols.append(column.to_numpy().astype(np.float64, copy=False))
    x = np.stack(cols, axis=1) if cols else np.zeros((rows, 0))
    parts = _split_labels(table.column(label_column).to_pylist(), x, digits_are_ints=False)
    parts.extra["columns"] = len(features)
    return parts


# -- images in class folders --------------------------------------------------------------
def _junk(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (
        "__MACOSX" in parts
        or any(p.startswith(".") for p in parts)
        or parts[-1].lower() in ("thumbs.db", "desktop.ini")
    )


def _decode_image(data: bytes, name: str, limits: UploadLimits, image_size: int | None) -> np.ndarray:
    """One image as uint8 (H, W) grey or (H, W, 3) RGB: grey (and grey with alpha) stays one
    channel; RGBA, palette, CMYK... become RGB. Resized (bilinear) to image_size x image_size
    when given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as img:
            width, height = img.size
            if width * height > limits.max_image_pixels:
                raise InspectionError(
                    f"{name!r} is {width}x{height}, more than the {limits.max_image_pixels} pixels allowed per image.",
                    field="file",
                )
            mode = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            picture = img.convert(mode)
            if image_size is not None and picture.size != (image_size, image_size):
                picture = picture.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(picture, dtype=np.uint8)
    except InspectionError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        ValueError,
        SyntaxError,
        zipfile.BadZipFile,
    ) as exc:
        raise InspectionError(f"{name!r} cannot be read as an image ({exc}).", field="file") from exc


def _refuse_mixed_sizes(sizes: dict[tuple[int, int], str]) -> None:
    """Different sizes are refused, listing them (dataset.image_size resizes them at upload)."""
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h} (e.g. {n!r})" for (w, h), n in list(sizes.items())[:8])
        raise InspectionError(
            f"The images have {len(sizes)} different sizes: {listed}. Give image_size (a side in "
            "pixels) with the upload to resize them all to image_size x image_size, or resize them "
            "first.",
            field="image_size",
        )


def _top_folder_strip(files: list[zipfile.ZipInfo]) -> int:
    """1 when one top folder holds every image (in its class folders), else 0."""
    tops = set()
    for info in files:
        parts = PurePosixPath(info.filename).parts
        if len(parts) < 3:
            return 0
        tops.add(parts[0])
        if len(tops) > 1:
            return 0
    return 1


def _image_files(zf: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, str]]:
    """(member, class folder) of every image, in the zip's order, one at a time (a zip of 70,000
    images holds 70,000 names: no second list of them); a top folder that holds everything is
    stripped."""
    files = [i for i in zf.infolist() if not i.is_dir() and not _junk(i.filename)]
    if not files:
        raise InspectionError(
            "The zip holds no images. Put them in one folder per class: cat/001.png, dog/002.png ...", field="file"
        )
    strip = _top_folder_strip(files)
    for info in files:
        parts = PurePosixPath(info.filename).parts[strip:]
        if len(parts) != 2:
            raise InspectionError(
                f"{info.filename!r} is not in a class folder. Put the images in one folder per "
                "class (cat/001.png, dog/002.png; unlabeled/ for unlabelled ones), optionally "
                "all under one top folder.",
                field="file",
            )
        if PurePosixPath(parts[1]).suffix.lower() not in IMAGE_EXTENSIONS:
            raise InspectionError(
                f"{info.filename!r} is not an image (allowed: {', '.join(IMAGE_EXTENSIONS)}).", field="file"
            )
        yield info, parts[0]


def _read_image_zip(path: Path, limits: UploadLimits, image_size: int | None, spool_dir: Path) -> _Parts:
    """Streamed: each image is decoded and appended to the labelled or the unlabeled spool (the
    zip's order kept in each); (n, H, W) when every image is grey, else (n, 3, H, W)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    what = "The zip"
    spools: dict[bool, ImageSpool] = {}  # unlabeled? -> its images
    sizes: dict[tuple[int, int], str] = {}  # (width, height) -> the first image of that size
    labels: list[str] = []
    cells = 0
    with zipsafe.open_zip(path, limits, what) as zf:
        budget = zipsafe.ReadBudget(limits, what)
        for info, folder in _image_files(zf):
            image = _decode_image(zipsafe.read_member(zf, info, budget), info.filename, limits, image_size)
            cells += image.size
            if cells > limits.max_cells:
                raise _too_many_cells(cells, limits)
            sizes.setdefault((image.shape[1], image.shape[0]), info.filename)
            if len(sizes) > 1:  # refused once every size is known; nothing more is kept
                continue
            unlabeled = folder.lower() in UNLABELED_FOLDERS
            if unlabeled not in spools:
                spools[unlabeled] = ImageSpool(spool_dir / f"images-{int(unlabeled)}", image.shape[:2])
            spools[unlabeled].append_image(image)
            if not unlabeled:
                labels.append(folder)
    _refuse_mixed_sizes(sizes)
    if False not in spools:  # only unlabeled images: refused later, for want of classes
        height, width = spools[True].row_shape[-2:]
        spools[False] = ImageSpool(spool_dir / "images-0", (height, width))
    if any(spool.has_rgb for spool in spools.values()):  # one layout for both
        for spool in spools.values():
            spool.make_rgb()
    x = spools[False]
    return _Parts(
        x=x, y=np.array(labels, dtype=str) if labels else np.array([], dtype="U1"), x_unlabeled=spools.get(True)
    )
