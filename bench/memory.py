"""Memory peaks in proportion to the data: an MNIST-sized dataset (70,000 x 784) uploaded as
NPZ, uint8 and float32, (a) inspected and converted as the API's sandbox child does
(app/uploads/dataset.py inspect_dataset) and (b) loaded by the worker (worker/distill/data.py
load_uploaded). Each in a fresh child process: its peak of allocated memory (tracemalloc,
which counts numpy's arrays; a read-only memory map of the file is not allocated memory: the
kernel pages it in and drops it as it likes) and its peak resident memory (VmHWM, memory-mapped
pages included) above what it held after its imports, over the data's size.

    .venv/bin/python bench/memory.py                    # this tree
    .venv/bin/python bench/memory.py --tree before=/work/main --tree after=.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROWS, FEATURES = 70_000, 784

CHILD = r"""
import json, sys
from pathlib import Path

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

what, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
import numpy as np
if what == "inspect":
    from app.uploads.dataset import inspect_dataset
else:
    from app.contract.spec import DatasetSpec
    from worker.distill.data import load_uploaded
import tracemalloc
base = rss("VmRSS:")
tracemalloc.start()
if what == "inspect":
    inspect_dataset(path, "npz", out)
else:
    splits = load_uploaded(path, DatasetSpec(artifact="bench"))
print(json.dumps({"base": base, "peak": rss("VmHWM:"), "heap": tracemalloc.get_traced_memory()[1]}))
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


def peak(tree: Path, what: str, path: Path, out: Path) -> dict:
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(out.parent)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(path), str(out)], env=env, capture_output=True, text=True, cwd=tree
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(trees: dict[str, Path], n: int = ROWS) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for dtype in ("uint8", "float32"):
            path, data_bytes = make_npz(folder, dtype, n)
            # what the worker loads is the API's canonical npz: write it once with this tree
            canonical = folder / f"canonical-{dtype}.npz"
            peak(ROOT, "inspect", path, canonical)
            for name, tree in trees.items():
                for what, source in (("inspect", path), ("load", canonical)):
                    got = peak(tree, what, source, folder / f"out-{name}.npz")
                    if "error" not in got:
                        got["ratio"] = got["heap"] / data_bytes
                        got["rss_ratio"] = (got["peak"] - got["base"]) / data_bytes
                    got["data_bytes"] = data_bytes
                    got["rows"] = n
                    rows[f"{name} | {dtype} | {what}"] = got
    return rows


def markdown(rows: dict) -> str:
    lines = [
        f"MNIST-sized NPZ upload ({next(iter(rows.values()))['rows']:,} x {FEATURES}); peaks over the data's size (x + y): "
        "allocated (tracemalloc, numpy included; memory maps not), and resident above the child's imports.",
        "",
        "| tree | x dtype | step | data MB | peak allocated MB (x the data) | peak resident above imports MB (x) |",
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
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this tree": str(ROOT)}
    rows = measure({k: Path(v).resolve() for k, v in trees.items()}, args.rows)
    print(markdown(rows))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
