"""GPU speed of the engine (bench/perf.py --gpu): a ResNet-18 teacher and a small student
(timm resnet10t) on 32 x 32 colour uint8 images (CIFAR-10-shaped, synthetic: nothing is
downloaded), trained by the engine's own Loop on one CUDA device. Prepared for a session
with a GPU; NOT run yet (no GPU was lent when it was written).

Per model and batch size: samples/s of training steps (bf16 autocast, channels-last, data on
the device once as uint8, cached teacher logits for the student), the FLOPs of one step
counted by torch.utils.flop_counter (forward + backward), achieved TFLOP/s against the
H200's ~790 dense bf16 TFLOP/s, optionally with torch.compile; then the same teacher job's
seconds per epoch on the CPU for comparison. Writes bench/results/perf-gpu.md (and .json).

    .venv/bin/python bench/perf.py --gpu             # about 5 minutes on an H200
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from app.contract.spec import OptimSpec  # noqa: E402
from app.contract.standard import TimmArch  # noqa: E402
from worker.distill.data import ArraySplit, input_stats  # noqa: E402
from worker.distill.models import build_model  # noqa: E402
from worker.distill.objectives import CE, KD  # noqa: E402
from worker.distill.signals import CachedLogits, NoTeacher  # noqa: E402
from worker.distill.trainer import Loop  # noqa: E402

PEAK_TFLOPS = 790.0  # H200 SXM, dense bf16
N_TRAIN, N_VAL, SHAPE, CLASSES = 50_000, 1_000, (3, 32, 32), 10
BATCHES = (128, 256, 512, 1024, 2048)
STEPS = int(os.environ.get("PERF_GPU_STEPS", "50"))


def data() -> tuple[ArraySplit, ArraySplit]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N_TRAIN + N_VAL, *SHAPE), dtype=np.uint8)
    y = rng.integers(0, CLASSES, size=N_TRAIN + N_VAL).astype(np.int64)
    return ArraySplit(x[:N_TRAIN], y[:N_TRAIN]), ArraySplit(x[N_TRAIN:], y[N_TRAIN:])


def model(name: str, train: ArraySplit):
    return build_model(TimmArch(model=name), SHAPE, CLASSES, *input_stats(train.x), seed=0)


def loop(net, train, val, batch, device, signal, compile_model: bool) -> Loop:
    objective = KD(4.0, 0.9) if not isinstance(signal, NoTeacher) else CE()
    lp = Loop(
        net,
        objective,
        train,
        val,
        OptimSpec(epochs=1, batch_size=batch),
        seed=0,
        device=device,
        signal=signal,
        augment=None,
        compile=compile_model,
    )
    from worker.distill.checkpoint import RunState

    lp.state = RunState("bench", "bench", lp.signature())
    return lp


def step_flops(lp: Loop, batch: int) -> float:
    idx = torch.arange(batch, device=lp.device)
    with FlopCounterMode(display=False) as counter:
        lp.step(idx)
    return float(counter.get_total_flops())


def samples_per_second(lp: Loop, batch: int) -> float:
    gen = torch.Generator(device=lp.device).manual_seed(0)
    idxs = [torch.randint(0, lp.n, (batch,), device=lp.device, generator=gen) for _ in range(STEPS)]
    for idx in idxs[:5]:  # warm-up (and compile)
        lp.step(idx)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for idx in idxs:
        lp.step(idx)
    torch.cuda.synchronize()
    return STEPS * batch / (time.perf_counter() - t0)


def measure(device: torch.device) -> list[dict]:
    train, val = data()
    rows = []
    teacher_logits = torch.randn(N_TRAIN, CLASSES)
    for name, signal_of in (("resnet18", NoTeacher), ("resnet10t", lambda: CachedLogits(teacher_logits))):
        for compile_model in (False, True):
            for batch in BATCHES:
                net = model(name, train)
                lp = loop(net, train, val, batch, device, signal_of(), compile_model)
                try:
                    flops = step_flops(lp, batch)
                    sps = samples_per_second(lp, batch)
                except torch.OutOfMemoryError:
                    rows.append({"model": name, "compile": compile_model, "batch": batch, "error": "out of memory"})
                    continue
                tflops = flops * sps / batch / 1e12
                rows.append(
                    {
                        "model": name,
                        "compile": compile_model,
                        "batch": batch,
                        "samples_per_s": sps,
                        "step_gflop": flops / 1e9,
                        "tflops": tflops,
                        "roofline_share": tflops / PEAK_TFLOPS,
                    }
                )
                print(rows[-1], flush=True)
                del lp, net
                torch.cuda.empty_cache()
    return rows


def cpu_epoch_seconds(batch: int = 256, steps: int = 5) -> float:
    """The teacher's training on the CPU, for the same job's CPU time (an epoch, extrapolated)."""
    train, val = data()
    lp = loop(model("resnet18", train), train, val, batch, torch.device("cpu"), NoTeacher(), False)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        lp.step(torch.arange(i * batch, (i + 1) * batch))
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * N_TRAIN / batch


def markdown(rows: list[dict], cpu_epoch: float) -> str:
    lines = [
        "# GPU speed (bench/perf.py --gpu)",
        "",
        f"{torch.cuda.get_device_name()}; torch {torch.__version__}; {N_TRAIN:,} synthetic 32x32 colour uint8 "
        f"images; bf16 autocast, channels-last; {STEPS} steps per row. Roofline: {PEAK_TFLOPS} dense bf16 TFLOP/s.",
        "",
        "| model | compile | batch | samples/s | GFLOP/step | TFLOP/s | of the roofline |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['compile']} | {r['batch']} | {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['model']} | {r['compile']} | {r['batch']} | {r['samples_per_s']:,.0f} | {r['step_gflop']:.1f} "
                f"| {r['tflops']:.1f} | {100 * r['roofline_share']:.1f}% |"
            )
    lines += [
        "",
        f"The ResNet-18 teacher's epoch on this machine's CPU: {cpu_epoch:.0f} s (extrapolated from 4 steps).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/perf.py --gpu needs a CUDA device")
    rows = measure(torch.device("cuda"))
    cpu_epoch = cpu_epoch_seconds()
    out = ROOT / "bench" / "results" / "perf-gpu"
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "cpu_epoch_s": cpu_epoch}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, cpu_epoch))
    print(markdown(rows, cpu_epoch))


if __name__ == "__main__":
    main()
