"""Speed and memory of the engine against minimal hand-written code, measured side by side in
one run. Results to bench/results/perf.md (and .json).

    .venv/bin/python bench/perf.py                  # the CPU figures (a few minutes on 2 cores)
    .venv/bin/python bench/perf.py --jobs           # + the tiny-job fixed cost (bench/jobs.py)
    .venv/bin/python bench/perf.py --gpu            # the GPU figures (needs a CUDA device)

What it measures (CPU):
- the trainer (worker/distill/trainer.py `train`, checkpoints into a temp folder every
  `checkpoint_seconds` as the worker's default, and every epoch) against a minimal KD loop
  written by hand: MNIST-1D, MLP 64-64 student, batch 128, AdamW with the same cosine step
  schedule, cached teacher logits, a validation pass per epoch. Interleaved repeats; per
  repeat the ratio of seconds per epoch; median (min-max);
- a checkpoint's cost at epoch 1 and at epoch 10,000 (the history appended, not rewritten),
  beside the version-1 layout that pickled the whole history into every checkpoint;
- memory peaks (bench/memory.py): an MNIST-sized (70,000 x 784) dataset upload inspected
  and converted in the sandbox child, and loaded by the worker;
- torchdistill's DistillationBox on the same loop (bench/perf_torchdistill.py), teacher every
  batch and fed cached logits, interleaved with the others, when torchdistill is installed;
- with --compile: `training.compile` on against off, seconds per epoch once compiled (and the
  compile's own cost), for the MLP student and a small CNN student, interleaved repeats;
- with --jobs: bench/jobs.py's tiny job, submit -> done against its warm compute.

--gpu (written for a session that has a GPU; see bench/perf_gpu.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from app.contract.architectures import CNNArch, MLPArch  # noqa: E402
from app.contract.spec import DatasetSpec, OptimSpec  # noqa: E402
from bench import perf_torchdistill  # noqa: E402
from worker.distill import checkpoint  # noqa: E402
from worker.distill.checkpoint import RunState  # noqa: E402
from worker.distill.data import input_stats, load_dataset  # noqa: E402
from worker.distill.inference import predict_logits  # noqa: E402
from worker.distill.models import build_model  # noqa: E402
from worker.distill.objectives import KD, kd_loss  # noqa: E402
from worker.distill.reporting import MemoryReporter  # noqa: E402
from worker.distill.signals import CachedLogits  # noqa: E402
from worker.distill.trainer import lr_at, train  # noqa: E402

CPU = torch.device("cpu")
T, ALPHA = 4.0, 0.9


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _fmt(s: dict, unit: str = "", digits: int = 3) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


# --- the loops ---------------------------------------------------------------------------------


class Setup:
    """MNIST-1D, a fixed teacher's logits, the student's architecture and settings."""

    def __init__(self, cache_dir: Path, epochs: int) -> None:
        self.splits = load_dataset(DatasetSpec(name="mnist1d"), cache_dir)
        train_x = self.splits.train.x
        teacher = build_model(
            CNNArch(channels=[16, 32], hidden=64),
            self.splits.input_shape,
            self.splits.num_classes,
            *input_stats(train_x),
            seed=0,
        )
        self.teacher = teacher.eval()  # torchdistill's "teacher every batch" runs it
        self.logits = predict_logits(teacher, train_x) * 3  # any fixed logits: speed is what counts
        self.optim = OptimSpec(epochs=epochs, batch_size=128, lr=3e-3)

    def student(self, arch=None):
        arch = arch or MLPArch(hidden=[64, 64])
        s = self.splits
        return build_model(arch, s.input_shape, s.num_classes, *input_stats(s.train.x), seed=0)


STUDENTS = {"MLP 64-64": MLPArch(hidden=[64, 64]), "CNN 16-32 (1-d conv)": CNNArch(channels=[16, 32], hidden=64)}


def engine_epoch_seconds(setup: Setup, checkpoint_seconds: float | None, arch=None, compile: bool = False):
    """Seconds per epoch of the engine's `train`; with `compile`, (first epoch, median of the others):
    the first one pays the compile."""
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        reporter = MemoryReporter(checkpoint_dir=None if checkpoint_seconds is None else Path(folder))
        reporter.checkpoint_seconds = checkpoint_seconds or 0.0
        model = setup.student(arch)
        t0 = time.perf_counter()
        train(
            model,
            KD(T, ALPHA),
            setup.splits.train,
            setup.splits.val,
            setup.optim,
            seed=0,
            device=CPU,
            reporter=reporter,
            phase="student",
            run="seed=0",
            signal=CachedLogits(setup.logits),
            on_epoch=lambda epoch: ends.append(time.perf_counter()),
            compile=compile,
        )
        if arch is not None:
            epochs = [b - a for a, b in zip([t0, *ends[:-1]], ends, strict=True)]
            return epochs[0], statistics.median(epochs[1:])
        return (time.perf_counter() - t0) / setup.optim.epochs


def hand_epoch_seconds(setup: Setup) -> float:
    """The minimal KD loop a person would write: shuffle, step, validate."""
    model, optim = setup.student(), setup.optim
    x, y = torch.as_tensor(setup.splits.train.x), torch.as_tensor(setup.splits.train.y)
    xv, yv = torch.as_tensor(setup.splits.val.x), torch.as_tensor(setup.splits.val.y)
    logits_t = setup.logits
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    n, bs = len(y), optim.batch_size
    total, step = optim.epochs * math.ceil(n / bs), 0
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(optim.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, optim)
            loss = kd_loss(model(x[idx]), logits_t[idx], y[idx], T, ALPHA)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            out = model(xv)
            F.cross_entropy(out, yv).item(), (out.argmax(1) == yv).float().mean().item()
    return (time.perf_counter() - t0) / optim.epochs


def measure_loops(setup: Setup, repeats: int) -> dict:
    """Interleaved: every repeat runs each variant once, in the same order."""
    variants = {
        "hand loop": lambda: hand_epoch_seconds(setup),
        "engine, checkpoints every 30 s (the worker's default)": lambda: engine_epoch_seconds(setup, 30.0),
        "engine, a checkpoint every epoch": lambda: engine_epoch_seconds(setup, 0.0),
        "engine, no checkpoints": lambda: engine_epoch_seconds(setup, None),
    }
    if perf_torchdistill.available():
        variants["torchdistill, teacher every batch"] = lambda: perf_torchdistill.epoch_seconds(setup, "teacher")
        variants["torchdistill, fed cached logits"] = lambda: perf_torchdistill.epoch_seconds(setup, "cached")
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            times[name].append(run())
    hand = times["hand loop"]
    return {
        name: {
            "ms_per_epoch": summary([t * 1e3 for t in ts]),
            "vs_hand": summary([t / h for t, h in zip(ts, hand, strict=True)]),
        }
        for name, ts in times.items()
    }


def measure_compile(setup: Setup, repeats: int) -> dict:
    """training.compile on against off, per student: interleaved, a fresh compile every repeat
    (dynamo's caches reset), steady epochs (all but the first) compared; the first epoch's excess
    is the compile's cost."""
    out = {}
    for name, arch in STUDENTS.items():
        eager, compiled, overhead = [], [], []
        for _ in range(repeats):
            eager.append(engine_epoch_seconds(setup, None, arch)[1])
            torch._dynamo.reset()
            first, steady = engine_epoch_seconds(setup, None, arch, compile=True)
            compiled.append(steady)
            overhead.append(first - steady)
        out[name] = {
            "eager_ms": summary([t * 1e3 for t in eager]),
            "compiled_ms": summary([t * 1e3 for t in compiled]),
            "vs_eager": summary([c / e for c, e in zip(compiled, eager, strict=True)]),
            "compile_s": summary(overhead),
        }
    return out


# --- checkpoints -------------------------------------------------------------------------------


def _state_at(epoch: int, setup: Setup) -> RunState:
    model = setup.student()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.as_tensor(setup.splits.train.x[:2])).sum().backward()
    opt.step()
    row = {"train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7, "lr": 1e-3}
    state = RunState("student", "seed=0", "sig", epoch=epoch, step=epoch * 32)
    state.history = [{"epoch": e, **row} for e in range(1, epoch + 1)]
    state.best = checkpoint.Best(0.7, 0.6, 1, {k: v.clone() for k, v in model.state_dict().items()})
    state.model, state.objective, state.optimizer = model.state_dict(), {}, opt.state_dict()
    state.shuffle_rng, state.cpu_rng = torch.Generator().get_state(), torch.get_rng_state()
    return state


def checkpoint_ms(setup: Setup, epoch: int, repeats: int, layout: str) -> dict:
    """One checkpoint's cost at `epoch`, after the epochs before it were saved."""
    times = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "student-seed=0.pt"
        state = _state_at(epoch, setup)
        for _ in range(repeats):
            if layout == "v1 (history inside)":
                obj = {**state.to_dict(), "history": state.history, "version": 1}
                t0 = time.perf_counter()
                checkpoint.save(obj, path)
            else:
                state.history_bytes, state.saved_epochs = 0, 0
                last = state.history.pop()
                state.save(path)  # every epoch before this one is in the history file
                state.history.append(last)
                t0 = time.perf_counter()
                state.save(path)
            times.append((time.perf_counter() - t0) * 1e3)
    return summary(times)


def measure_checkpoints(setup: Setup, repeats: int) -> dict:
    out = {}
    for layout in ("v1 (history inside)", "v2 (history appended)"):
        out[layout] = {str(e): checkpoint_ms(setup, e, repeats, layout) for e in (1, 10_000)}
    return out


# --- report ------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    lines = [
        "# Engine speed against a hand loop (bench/perf.py)",
        "",
        f"{result['when']}; torch {result['torch']}, {result['threads']} threads; {result['cpus']} CPUs "
        "shared with other work. MNIST-1D (4,000 train), MLP 64-64 student, batch 128, KD (T=4, "
        f"alpha=0.9) on cached logits, {result['epochs']} epochs per measurement, "
        f"{result['repeats']} interleaved repeats; median (min-max).",
        "",
        "| loop | ms per epoch | vs the hand loop |",
        "|---|---|---|",
    ]
    for name, row in result.get("loops", {}).items():
        lines.append(f"| {name} | {_fmt(row['ms_per_epoch'], digits=1)} | {_fmt(row['vs_hand'], 'x', 2)} |")
    if "checkpoints" in result:
        lines += ["", "A checkpoint (model, optimizer, best weights, RNG states; two fsyncs), ms:", ""]
        lines += ["| layout | at epoch 1 | at epoch 10,000 |", "|---|---|---|"]
        for layout, row in result["checkpoints"].items():
            lines.append(f"| {layout} | {_fmt(row['1'], digits=2)} | {_fmt(row['10000'], digits=2)} |")
    if "compile" in result:
        lines += ["", "`training.compile` (torch.compile, inductor) against eager, ms per epoch once compiled:", ""]
        lines += ["| student | eager | compiled | compiled / eager | compile s |", "|---|---|---|---|---|"]
        for name, row in result["compile"].items():
            lines.append(
                f"| {name} | {_fmt(row['eager_ms'], digits=1)} | {_fmt(row['compiled_ms'], digits=1)} "
                f"| {_fmt(row['vs_eager'], 'x', 2)} | {_fmt(row['compile_s'], digits=1)} |"
            )
    if "memory" in result:
        lines += ["", "Memory peaks (bench/memory.py):", "", result["memory"]]
    if "jobs" in result:
        lines += ["", "Tiny job (bench/jobs.py):", "", result["jobs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the worker sets them deliberately too)")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-cache")
    parser.add_argument("--memory", action="store_true", help="also the memory peaks (bench/memory.py)")
    parser.add_argument("--jobs", action="store_true", help="also the tiny-job fixed cost (bench/jobs.py)")
    parser.add_argument("--compile", action="store_true", help="also training.compile on against off")
    parser.add_argument("--no-loops", action="store_true", help="skip the loops and checkpoints (e.g. --compile alone)")
    parser.add_argument("--gpu", action="store_true", help="the GPU bench instead (bench/perf_gpu.py)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "perf")
    args = parser.parse_args()
    if args.gpu:
        from bench import perf_gpu

        perf_gpu.main()
        return
    torch.set_num_threads(args.threads)
    setup = Setup(args.cache, args.epochs)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "epochs": args.epochs,
        "repeats": args.repeats,
    }
    if not args.no_loops:
        result["loops"] = measure_loops(setup, args.repeats)
        result["checkpoints"] = measure_checkpoints(setup, max(3, args.repeats))
    if args.compile:
        result["compile"] = measure_compile(setup, args.repeats)
    if args.memory:
        from bench import memory

        result["memory"] = memory.markdown(memory.measure({"this tree": ROOT}))
    if args.jobs:
        from bench import jobs

        measured = jobs.measure({"this tree": ROOT}, jobs=5, rounds=2)
        result["jobs"] = jobs.markdown(measured, {"this tree": ROOT})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
