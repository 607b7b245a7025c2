"""Which format an upload is, and the refusal of files that carry code.

A pickle (``torch.save``'s format, joblib, ...) runs code while it is loaded, and so
do TorchScript and ``torch.export`` (.pt2) archives, which embed pickles and Python
source. They are refused by their name and by their content, whatever they are called;
nothing here ever unpickles anything.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from app.uploads import zipsafe
from app.uploads.errors import InspectionError

TEACHER_FORMATS = ("onnx", "safetensors")
DATASET_FORMATS = ("npz", "csv", "parquet", "zip")

_EXTENSIONS = {
    "teacher": {".onnx": "onnx", ".safetensors": "safetensors"},
    "dataset": {".npz": "npz", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".zip": "zip"},
}
PICKLE_EXTENSIONS = (
    ".pt",
    ".pth",
    ".bin",
    ".pkl",
    ".pickle",
    ".joblib",
    ".ckpt",
    ".pt2",
    ".ptl",
    ".torchscript",
    ".jit",
)
# Names in a zip that mark a torch archive (torch.save since 1.6, TorchScript, .pt2).
_PICKLE_MEMBERS = {"data.pkl", "constants.pkl", ".data/serialization_id"}
_PT2_MEMBERS = {
    "archive_format",
    "archive_version",
    "serialized_exported_program.json",
    "serialized_state_dict.json",
    "serialized_state_dict.pt",
}
# Listing a directory larger than this costs too much memory to look for markers.
_MAX_LISTED_MEMBERS = 1_000_000

HOW_TO_CONVERT = (
    "Loading such a file runs code that the file itself carries, so it is never opened here. "
    "Convert it first: a model to ONNX with torch.onnx.export(model, example_input, 'teacher.onnx'), "
    "or its weights to safetensors with "
    "safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors'); "
    "a dataset to plain arrays with numpy.savez('data.npz', x=x, y=y), or to CSV or Parquet. "
    "Then upload that file."
)


def _refuse(filename: str, what: str) -> InspectionError:
    return InspectionError(f"{filename!r} is refused: it is {what}. {HOW_TO_CONVERT}", field="file")


def _suffix(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def guess_format(kind: str, filename: str) -> str:
    """The format of an upload of ``kind`` ("teacher" or "dataset") from its file name."""
    if kind not in _EXTENSIONS:
        raise InspectionError(f"Unknown upload kind {kind!r}: use 'teacher' or 'dataset'.", field="kind")
    suffix = _suffix(filename)
    if suffix in PICKLE_EXTENSIONS:
        raise _refuse(filename, f"a pickle-based file ({suffix})")
    if suffix in _EXTENSIONS[kind]:
        return _EXTENSIONS[kind][suffix]
    allowed = ", ".join(sorted(_EXTENSIONS[kind]))
    other = next((k for k, exts in _EXTENSIONS.items() if k != kind and suffix in exts), None)
    hint = f" A {suffix} file is a {other} format." if other else ""
    raise InspectionError(
        f"Cannot tell the format of {filename!r} from its name.{hint} A {kind} must be one of: "
        f"{allowed} (or name the format explicitly).",
        field="format",
    )


def pickle_protocol(head: bytes) -> int | None:
    """The protocol of a pickle starting with ``head`` (2..5 carry a PROTO opcode), or None.
    The third byte is an opcode, never 0: that tells a safetensors header whose length
    happens to start with 0x80 0x02..0x05 from a pickle."""
    if len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] != 0:
        return head[1]
    return None


def code_carrying_member(name: str) -> str | None:
    """Why a zip member marks a pickle-based or code-carrying archive, or None."""
    path = PurePosixPath(name)
    base = path.name.lower()
    parts = [p.lower() for p in path.parts]
    if base in _PICKLE_MEMBERS or base.endswith((".pkl", ".pickle", ".debug_pkl")):
        return f"a torch archive (its member {name!r} is a pickle)"
    if path.suffix.lower() in PICKLE_EXTENSIONS:
        return f"an archive holding a pickle-based file ({name!r})"
    if "code" in parts[:-1] and (base.endswith(".py") or "__torch__" in parts):
        return f"a TorchScript archive (its member {name!r} is Python code)"
    if base in _PT2_MEMBERS:
        return f"a torch.export (.pt2) archive (member {name!r})"
    return None


def refuse_code_carrying(path: Path, filename: str) -> None:
    """Raise InspectionError(field="file") for pickle-based files, TorchScript and .pt2,
    by extension and by content, whatever the file is called. Never unpickles anything."""
    suffix = _suffix(filename)
    if suffix in PICKLE_EXTENSIONS:
        raise _refuse(filename, f"a pickle-based file ({suffix})")
    why = code_carrying_content(path)
    if why:
        raise _refuse(filename, why)


def code_carrying_content(path: Path) -> str | None:
    """Why the content at ``path`` carries code (a pickle, a torch archive), or None."""
    with open(path, "rb") as fp:
        head = fp.read(16)
    protocol = pickle_protocol(head)
    if protocol is not None:
        return f"a Python pickle (protocol {protocol}), the format of torch.save and joblib"
    if not zipsafe.is_zip(path):
        return None
    count = zipsafe.entry_count(path)
    if count is not None and count > _MAX_LISTED_MEMBERS:
        raise InspectionError(f"The archive has {count} members, too many to inspect.", field="file")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None  # not a zip after all: the format's own reader refuses it
    for name in names:
        why = code_carrying_member(name)
        if why:
            return why
    return None
