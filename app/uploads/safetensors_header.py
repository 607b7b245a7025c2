"""The header of a safetensors file, parsed and checked by hand (no safetensors
package in the API): 8 bytes little-endian u64 N, N bytes of UTF-8 JSON, the data."""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path
from typing import Any

from app.uploads.errors import InspectionError

# The header is a JSON list of tensors: ~100 bytes each, so 1 MiB holds ~10,000 tensors,
# far more than any of our architectures has. (The format's reader allows 100 MB, which is
# a memory bomb for a JSON parser; the header is parsed in the inspection process anyway.)
MAX_HEADER_BYTES = 1 << 20
DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
}
_HOW = "Save it again with safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors')."


def _bad(message: str) -> InspectionError:
    return InspectionError(f"Not a valid safetensors file: {message}. {_HOW}", field="file")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _bad(f"the header names {key!r} twice")
        out[key] = value
    return out


def read_header(path: Path) -> dict:
    """{"format": "safetensors", "tensors": {name: {"dtype", "shape"}}, "parameters",
    "metadata"}: every offset checked against the data section and the shapes."""
    header, data_len = _json_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _bad("__metadata__ must map strings to strings")
    tensors: dict[str, dict] = {}
    spans: list[tuple[int, int, str]] = []
    parameters = 0
    for name, entry in header.items():
        begin, end, count = _tensor_span(name, entry, data_len)
        spans.append((begin, end, name))
        tensors[name] = {"dtype": entry["dtype"], "shape": entry["shape"]}
        parameters += count
    _check_spans(spans, data_len)
    return {"format": "safetensors", "tensors": tensors, "parameters": parameters, "metadata": metadata}


def _json_header(path: Path) -> tuple[dict, int]:
    """The header's JSON object and the length of the data section after it."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        prefix = fp.read(8)
        if len(prefix) < 8:
            raise _bad(f"the file has {size} bytes, fewer than the 8 of the header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise _bad(f"its header would be {n} bytes, more than the {MAX_HEADER_BYTES} allowed")
        if n > size - 8:
            raise _bad(f"its header would be {n} bytes but only {size - 8} follow (truncated?)")
        raw = fp.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"its header is not UTF-8 JSON ({exc})") from exc
    except RecursionError as exc:
        raise _bad("its header nests too deeply to be a tensor list") from exc
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise _bad(f"its header holds a value JSON readers refuse ({str(exc)[:120]})") from exc
    if not isinstance(header, dict):
        raise _bad("its header is not a JSON object")
    return header, size - 8 - n


def _tensor_span(name: str, entry: Any, data_len: int) -> tuple[int, int, int]:
    """(begin, end, element count) of one tensor's entry, checked against its dtype and shape."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _bad(f"tensor {name!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_SIZES:
        raise _bad(f"tensor {name!r} has an unknown dtype {dtype!r} (known: {', '.join(DTYPE_SIZES)})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"tensor {name!r} has an invalid shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets):
        raise _bad(f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise _bad(f"tensor {name!r} has data_offsets [{begin}, {end}] outside the {data_len} bytes of data")
    count = math.prod(shape)
    if end - begin != count * DTYPE_SIZES[dtype]:
        raise _bad(
            f"tensor {name!r} of shape {shape} and dtype {dtype} needs "
            f"{count * DTYPE_SIZES[dtype]} bytes, its offsets give {end - begin}"
        )
    return begin, end, count


def _check_spans(spans: list[tuple[int, int, str]], data_len: int) -> None:
    """The tensors tile the data section: no overlap, no trailing bytes."""
    spans.sort()
    for (_b0, e0, a), (b1, _e1, b) in itertools.pairwise(spans):
        if b1 < e0:
            raise _bad(f"tensors {a!r} and {b!r} overlap in the data section")
    used = max((end for _, end, _ in spans), default=0)
    if used != data_len:  # what safetensors' own loader refuses (the worker would fail later)
        raise _bad(f"its tensors use {used} bytes of data but {data_len} follow the header (trailing bytes)")
