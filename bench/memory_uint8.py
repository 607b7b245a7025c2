"""Peak memory of a job on a large uint8 image dataset: no float32 copy of it may exist.

    .venv/bin/python bench/memory_uint8.py [--rows 50000] [--side 64]   # writes bench/results/memory-uint8.md

Writes an uploaded-style canonical npz of rows x 3 x side x side uint8 images (614 MB at the
defaults), then runs ONE real job on it in a fresh process (run_job: load, train one epoch of a
small MLP student without a teacher, evaluate, export, the ONNX check) and reads that process's
peak resident set (ru_maxrss, which counts the memory-mapped pages it touched). A float32 copy
of the data alone would be 4x the uint8 size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = {
    "dataset": {"artifact": "bench"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [8]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [32]}},
    "method": {"name": "ce"},
    "training": {"epochs": 1, "batch_size": 512, "device": "cpu"},
    "seeds": [0],
    "baseline": False,
}


def write_dataset(path: Path, rows: int, side: int) -> int:
    """Class k's images are brighter in channel k % 3; written block by block (never whole)."""
    y = np.arange(rows) % 10
    shape = (rows, 3, side, side)
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            rng = np.random.default_rng(0)
            for i in range(0, rows, 2000):
                block = rng.integers(0, 128, (min(2000, rows - i), 3, side, side), dtype=np.uint8)
                for j, k in enumerate(y[i : i + len(block)]):
                    block[j, k % 3] += 100
                f.write(block.tobytes())
        with zf.open("y.npy", "w") as f:
            np.lib.format.write_array(f, y.astype(np.int64))
    return rows * 3 * side * side


def run_job_here(npz: Path, work: Path) -> dict:
    """In THIS process: the job, then the peak RSS."""
    from app.contract.spec import JobSpec
    from worker.distill.inputs import JobInputs
    from worker.distill.pipeline import run_job
    from worker.distill.reporting import MemoryReporter

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the imports alone
    result = run_job(
        JobSpec.model_validate(SPEC),
        MemoryReporter(checkpoint_dir=None),
        work,
        work / "cache",
        JobInputs(dataset_npz=npz),
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_rss_bytes": peak,
        "rss_before_job_bytes": before,
        "test_accuracy": result.report["exported"]["test_accuracy"],
        "onnx_check": result.report["exported"]["onnx_check"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory-uint8.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_job_here(Path(args.child[0]), Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "images.npz"
        size = write_dataset(npz, args.rows, args.side)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(npz), tmp], check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    peak, before = found["peak_rss_bytes"], found["rss_before_job_bytes"]
    text = (
        f"# Peak memory of a job on uint8 images\n\n`bench/memory_uint8.py --rows {args.rows} --side {args.side}`: "
        f"{args.rows:,} x 3 x {args.side} x {args.side} uint8 images, one epoch of an MLP student, "
        f"evaluation, export and the ONNX check, in one process.\n\n"
        f"| data as uint8 | as float32 would be | peak RSS of the job | of which imports (before the job) | "
        f"(peak - imports) / uint8 |\n|---|---|---|---|---|\n"
        f"| {size / 1e6:,.0f} MB | {4 * size / 1e6:,.0f} MB | {peak / 1e6:,.0f} MB | {before / 1e6:,.0f} MB | "
        f"{(peak - before) / size:.2f} |\n\n"
        f"Test accuracy {found['test_accuracy']:.3f}; ONNX check {found['onnx_check']}.\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
