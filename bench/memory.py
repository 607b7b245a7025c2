"""Memory peaks in proportion to the data: an MNIST-sized dataset (70,000 x 784) uploaded as
NPZ (uint8 and float32), as CSV (integers 0..255: float32 when converted) and as a ZIP of
28 x 28 grey PNGs in class folders (uint8), (a) inspected and converted as the API's sandbox
child does (app/uploads/dataset.py inspect_dataset) and (b) loaded by the worker
(worker/distill/data.py load_uploaded). Each in a fresh child process: its peak of allocated memory (tracemalloc,
which counts numpy's arrays; a read-only memory map of the file is not allocated memory: the
kernel pages it in and drops it as it likes) and its peak resident memory (VmHWM, memory-mapped
pages included) above what it held after its imports, over the data's size.

    .venv/bin/python bench/memory.py                    # this tree
    .venv/bin/python bench/memory.py --tree before=/work/main --tree after=.
    .venv/bin/python bench/memory.py --formats csv,zip --steps inspect
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ROWS, FEATURES = 70_000, 784

CHILD = r"""
import json, sys
from pathlib import Path

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

what, path, out, fmt, traced = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
import numpy as np
if what == "inspect":
    import PIL.Image, pyarrow.csv  # imported by the readers: imports, not data
    from app.uploads.dataset import inspect_dataset
else:
    from app.contract.spec import DatasetSpec
    from worker.distill.data import load_uploaded
import tracemalloc
base = rss("VmRSS:")
if traced:  # its own bookkeeping (a traceback per block) is resident too: RSS comes from a run without
    tracemalloc.start()
if what == "inspect":
    inspect_dataset(path, fmt, out)
else:
    splits = load_uploaded(path, DatasetSpec(artifact="bench"))
print(json.dumps({"base": base, "peak": rss("VmHWM:"), "heap": tracemalloc.get_traced_memory()[1] if traced else 0}))
"""


def make_npz(folder: Path, dtype: str, rows: int) -> tuple[Path, int]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(rows, FEATURES), dtype=np.uint8)
    if dtype == "float32":
        x = x.astype(np.float32) / 255
    y = rng.integers(0, 10, size=rows)
    path = folder / f"mnist-{dtype}-{rows}.npz"
    np.savez(path, x=x, y=y)
    return path, x.nbytes + y.nbytes


def make_csv(folder: Path, rows: int) -> tuple[Path, int]:
    """Integer pixels and a label column, written by pyarrow (fast); converted to float32."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(rows, FEATURES), dtype=np.uint8)
    y = rng.integers(0, 10, size=rows)
    columns = {f"p{i}": pa.array(x[:, i]) for i in range(FEATURES)} | {"label": pa.array(y)}
    path = folder / f"mnist-{rows}.csv"
    pacsv.write_csv(pa.table(columns), path)
    return path, rows * FEATURES * 4 + y.nbytes


def make_image_zip(folder: Path, rows: int) -> tuple[Path, int]:
    """28 x 28 grey PNGs, one folder per class (uint8 when converted)."""
    import zipfile

    rng = np.random.default_rng(0)
    path = folder / f"mnist-{rows}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(rows):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, size=(28, 28), dtype=np.uint8)).save(buffer, "PNG")
            zf.writestr(f"{i % 10}/{i}.png", buffer.getvalue())
    return path, rows * 28 * 28 + rows * 8


MAKERS = {
    "npz-uint8": lambda folder, n: make_npz(folder, "uint8", n),
    "npz-float32": lambda folder, n: make_npz(folder, "float32", n),
    "csv": make_csv,
    "zip": make_image_zip,
}


def _child(tree: Path, what: str, path: Path, out: Path, fmt: str, traced: bool) -> dict:
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(out.parent)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(path), str(out), fmt, str(int(traced))],
        env=env,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak(tree: Path, what: str, path: Path, out: Path, fmt: str = "npz") -> dict:
    """Allocated memory from a traced run, resident memory from an untraced one."""
    untraced = _child(tree, what, path, out, fmt, traced=False)
    if "error" in untraced:
        return untraced
    return {**untraced, "heap": _child(tree, what, path, out, fmt, traced=True)["heap"]}


def measure(
    trees: dict[str, Path], n: int = ROWS, formats=("npz-uint8", "npz-float32"), steps=("inspect", "load")
) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for upload in formats:
            path, data_bytes = MAKERS[upload](folder, n)
            fmt = upload.split("-")[0]
            # what the worker loads is the API's canonical npz: write it once with this tree
            canonical = folder / f"canonical-{upload}.npz"
            if "load" in steps:
                peak(ROOT, "inspect", path, canonical, fmt)
            for name, tree in trees.items():
                for what, source in (("inspect", path), ("load", canonical)):
                    if what not in steps:
                        continue
                    got = peak(tree, what, source, folder / f"out-{name}.npz", fmt)
                    if "error" not in got:
                        got["ratio"] = got["heap"] / data_bytes
                        got["rss_ratio"] = (got["peak"] - got["base"]) / data_bytes
                    got["data_bytes"] = data_bytes
                    got["rows"] = n
                    rows[f"{name} | {upload} | {what}"] = got
    return rows


def markdown(rows: dict) -> str:
    lines = [
        f"MNIST-sized uploads ({next(iter(rows.values()))['rows']:,} x {FEATURES}); peaks over the converted "
        "data's size (x + y as stored: float32 for CSV and float NPZ, uint8 for images): allocated "
        "(tracemalloc, numpy included; memory maps not), and resident above the child's imports.",
        "",
        "| tree | upload | step | data MB | peak allocated MB (x the data) | peak resident above imports MB (x) |",
        "|---|---|---|---|---|---|",
    ]
    for key, got in rows.items():
        tree, dtype, what = key.split(" | ")
        step = "API: inspect + convert (sandbox child)" if what == "inspect" else "worker: load_uploaded"
        if "error" in got:
            lines.append(f"| {tree} | {dtype} | {step} | {got['data_bytes'] / 1e6:.0f} | refused: {got['error']} | |")
            continue
        above = (got["peak"] - got["base"]) / 1e6
        lines.append(
            f"| {tree} | {dtype} | {step} | {got['data_bytes'] / 1e6:.0f} | {got['heap'] / 1e6:.0f} "
            f"({got['ratio']:.2f}x) | {above:.0f} ({got['rss_ratio']:.2f}x) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="60000 fits the old 50 M-value cap")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a checkout (default: this one)")
    parser.add_argument("--formats", default="npz-uint8,npz-float32", help=f"of {', '.join(MAKERS)}")
    parser.add_argument("--steps", default="inspect,load", help="inspect (the API), load (the worker)")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this tree": str(ROOT)}
    trees = {k: Path(v).resolve() for k, v in trees.items()}
    rows = measure(trees, args.rows, args.formats.split(","), args.steps.split(","))
    print(markdown(rows))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
