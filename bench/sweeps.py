"""Sweeps through the HTTP API, with 1 and with 2 workers: the leaderboard, the wall time of
each (and their ratio), how many teacher trainings the sweep made; and a budgeted sweep over
a ladder of student widths with its Pareto plot. Writes bench/results/sweeps.md (+ .json and
the budgeted sweep's pareto png).

    .venv/bin/python bench/sweeps.py --profile tiny    # digits, 4 trials, 1 seed, 3 epochs: what was run here
    .venv/bin/python bench/sweeps.py --profile quick   # digits, 8 trials, 2 seeds, 10 epochs; budgeted:
                                                        # Fashion-MNIST MLP widths under 0.02 ms, 2 seeds
    .venv/bin/python bench/sweeps.py --profile full    # the issue's: MNIST-1D (kd, dkd, fitnet; T 2/4/8;
                                                        # alpha 0.5/0.9; 3 seeds) and Fashion-MNIST widths
                                                        # under a latency budget: hours on 2 CPU cores

Each run is its own embedded service (SQLite, filesystem broker) with N worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.quality import PYTHON, EmbeddedService, api_client  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def grid_sweep(profile: str) -> dict:
    if profile == "full":
        base = json.loads((ROOT / "examples" / "mnist1d-kd.json").read_text())
        methods = [{"name": "kd"}, {"name": "dkd"}, {"name": "fitnet"}]
        return {
            "name": "mnist1d methods x T x alpha",
            "base": base | {"name": None},
            "axes": {"method": methods, "method.temperature": [2.0, 4.0, 8.0], "method.alpha": [0.5, 0.9]},
            "max_parallel": 2,
        }
    quick = profile == "quick"
    base = {
        "dataset": {"name": "digits"},
        "teacher": {"train": {"arch": {"name": "mlp", "hidden": [64]}, "epochs": 10 if quick else 3}},
        "student": {"arch": {"name": "mlp", "hidden": [16]}},
        "training": {"epochs": 10 if quick else 3},
        "seeds": [0, 1] if quick else [0],
        "baseline": True,
    }
    methods = [{"name": "kd"}, {"name": "dkd"}] if quick else [{"name": "kd"}]
    return {
        "name": f"digits {'/'.join(m['name'] for m in methods)} x T x alpha ({profile})",
        "base": base,
        "axes": {"method": methods, "method.temperature": [2.0, 8.0], "method.alpha": [0.5, 0.9]},
        "max_parallel": 2,
    }


def budget_sweep(profile: str) -> dict:
    if profile == "full":
        widths = [[32], [64], [128], [256], [256, 128]]
        base = {
            "dataset": {"name": "fashion_mnist"},
            "teacher": {"train": {"arch": {"name": "cnn", "channels": [32, 64], "hidden": 128}, "epochs": 15}},
            "method": {"name": "kd"},
            "training": {"epochs": 20},
            "seeds": [0, 1, 2],
            "baseline": True,
        }
        budget = {"latency_ms": 0.2}
    elif profile == "quick":  # Fashion-MNIST on two CPU cores: a few minutes
        widths = [[32], [64], [128], [256], [256, 128]]
        base = {
            "dataset": {"name": "fashion_mnist", "train_fraction": 0.25},
            "teacher": {"train": {"arch": {"name": "cnn", "channels": [32, 64], "hidden": 128}, "epochs": 3}},
            "method": {"name": "kd"},
            "training": {"epochs": 5},
            "seeds": [0, 1],
            "baseline": True,
        }
        budget = {"latency_ms": 0.02}
    else:
        epochs = 3
        widths = [[8], [32], [128]]
        base = {
            "dataset": {"name": "digits"},
            "teacher": {"train": {"arch": {"name": "mlp", "hidden": [64]}, "epochs": epochs}},
            "method": {"name": "kd"},
            "training": {"epochs": epochs},
            "seeds": [0],
            "baseline": True,
        }
        budget = {"params": 1500}
    return {
        "name": f"student widths under {budget}",
        "base": base,
        "axes": {"student.arch": [{"name": "mlp", "hidden": w} for w in widths]},
        "controls": ["pseudo_label"] if profile != "tiny" else [],
        "budget": budget,
        "max_parallel": 2,
    }


def run_sweep(body: dict, workers: int, home: Path, data_cache: Path, poll: float) -> tuple[dict, float, bytes]:
    """One sweep on a fresh embedded service with `workers` workers: (sweep, seconds, pareto png).
    The cores are split between the workers (DISTILL_TORCH_THREADS): two workers of two torch
    threads each on two cores ran 18 trials several times slower than one worker (the threads of
    a parallel region wait on each other when another process holds a core)."""
    os.environ["DISTILL_TORCH_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
    with EmbeddedService(home, data_cache) as service:
        extra = [
            subprocess.Popen(
                [PYTHON, "-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency", "1", "-n", f"w{i}@%h"],
                cwd=ROOT,
                env=service.env,
                stdout=(home / f"worker{i}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for i in range(1, workers)
        ]
        service.procs += extra
        with api_client(service.url, timeout=60) as api:
            started = time.monotonic()
            r = api.post("/v1/sweeps", json=body)
            r.raise_for_status()
            sweep_id = r.json()["id"]
            while (sweep := api.get(f"/v1/sweeps/{sweep_id}").json())["status"] == "running":
                time.sleep(poll)
            seconds = time.monotonic() - started
            deadline = time.monotonic() + 30  # the figure is drawn just after the result is written
            while "pareto_png_url" not in (sweep["result"] or {}) and time.monotonic() < deadline:
                time.sleep(poll)
                sweep = api.get(f"/v1/sweeps/{sweep_id}").json()
            png = api.get(sweep["result"]["pareto_png_url"]).content if "pareto_png_url" in sweep["result"] else b""
            sweep["teacher_passes"] = teacher_passes(api, sweep)
    return sweep, seconds, png


def teacher_passes(api, sweep: dict) -> dict[str, int]:
    """How often the teacher ran over the students' training set, from the events of the sweep's
    teacher job and trials: once per kind of output (logits; stage features for feature methods)
    is the goal, every other trial reading them from the cache."""
    job_ids = [sweep["result"].get("teacher_job_id"), *(t["job_id"] for t in sweep["trials"])]
    passes: dict[str, int] = {}
    for job_id in filter(None, job_ids):
        for event in api.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json():
            message = event["message"]
            if message.startswith("teacher outputs: ") and "computed and cached" in message:
                what = message.removeprefix("teacher outputs: ").split(" of ")[0]
                passes[what] = passes.get(what, 0) + 1
    return passes


def _acc(v: dict | None) -> str:
    return "-" if v is None else f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else format(value, ".3g")  # tiny students: microseconds


def board_lines(result: dict) -> list[str]:
    lines = [
        "| trial | config | val % | test % | scratch test % | pseudo-label test % | gap closed | params | bytes "
        "| ms batch 1 | ms batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["leaderboard"]:
        config = ", ".join(f"{k}={json.dumps(v)}" for k, v in r["config"].items())
        gap = "-" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}"
        lines.append(
            f"| {r['trial']}{' (winner)' if r.get('winner') else ''} | {config}{' (control)' if r['control'] else ''} "
            f"| {_acc(r['val_accuracy'])} | {_acc(r['test_accuracy'])} | {_acc(r['scratch_test_accuracy'])} "
            f"| {_acc(r.get('pseudo_label_test_accuracy'))} | {gap} | {r['parameters'] or '-'} "
            f"| {r.get('bytes') or '-'} | {_ms(r['latency_ms'])} | {_ms(r.get('latency_batch_ms'))} |"
        )
    note = result.get("latency") or {}
    lines.append("")
    lines.append(
        f"Latency: {note.get('runtime', 'onnxruntime')}, intra-op threads {note.get('intra_op_threads')}, "
        f"batch 1 and a batch of {note.get('batch_size')} (the whole batch's ms); a latency budget is held "
        "to batch 1."
    )
    winner = result["winner"]
    lines.append("")
    lines.append(
        f"Winner (on validation): trial {winner['trial']} {winner['config']}" if winner else "Winner: none fits"
    )
    if result.get("budget"):
        lines.append(f"Budget: {json.dumps(result['budget'])}")
    lines.append(
        f"Teacher trainings in the sweep: {result['teacher_trainings']} (of {len(result['leaderboard'])} trials)"
    )
    lines.append(f"Pareto fronts (trial ids): {json.dumps(result['pareto'])}")
    return lines


def passes_line(sweep: dict) -> str:
    found = sweep.get("teacher_passes") or {}
    return "Teacher passes over the training set (events 'computed and cached'): " + (
        ", ".join(f"{what} {n}" for what, n in found.items()) or "none recorded"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=("tiny", "quick", "full"), default="quick")
    p.add_argument("--data-cache", type=Path, default=ROOT / "var" / "bench-data")
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--skip-budget", action="store_true")
    p.add_argument(
        "--budget-profile", choices=("tiny", "quick", "full"), help="the budgeted sweep's (default: --profile)"
    )
    p.add_argument("--workers", default="1,2", help="the grid's runs: numbers of workers, comma-separated")
    p.add_argument(
        "--one-worker-seconds", type=float, help="the 1-worker grid's time from an earlier run of the same code"
    )
    args = p.parse_args(argv)
    out: dict = {"profile": args.profile, "grid": {}, "budget": None}
    if args.one_worker_seconds:
        out["grid"][1] = {"seconds": args.one_worker_seconds, "sweep": None}
    with tempfile.TemporaryDirectory(prefix="distill-sweeps-") as tmp:
        for workers in (int(w) for w in args.workers.split(",")):
            sweep, seconds, _ = run_sweep(
                grid_sweep(args.profile), workers, Path(tmp) / f"g{workers}", args.data_cache, args.poll
            )
            out["grid"][workers] = {"seconds": seconds, "sweep": sweep}
            print(f"grid with {workers} worker(s): {seconds:.0f} s, {sweep['status']}", flush=True)
        if not args.skip_budget:
            sweep, seconds, png = run_sweep(
                budget_sweep(args.budget_profile or args.profile), 2, Path(tmp) / "b", args.data_cache, args.poll
            )
            out["budget"] = {"seconds": seconds, "sweep": sweep}
            (RESULTS / f"sweeps-{args.profile}-pareto.png").write_bytes(png)
            print(f"budget sweep: {seconds:.0f} s, {sweep['status']}", flush=True)
    (RESULTS / f"sweeps-{args.profile}.json").write_text(json.dumps(out, indent=1, default=str))
    write_markdown(out, args)
    return 0


def write_markdown(out: dict, args) -> None:
    one, two = out["grid"][1], out["grid"][2]
    lines = [
        f"# Sweeps (`bench/sweeps.py --profile {args.profile}`)",
        "",
        f"Grid sweep: `{two['sweep']['name']}`, {two['sweep']['progress']['total']} trials, max_parallel 2.",
        f"Wall time: 1 worker {one['seconds']:.0f} s, 2 workers {two['seconds']:.0f} s "
        f"(ratio 2/1 = {two['seconds'] / one['seconds']:.2f}), on the same machine"
        + (" in the same run." if one["sweep"] else " (the 1-worker time from an earlier run of the same code)."),
        "Torch threads per worker: the machine's cores divided by the workers.",
        "",
        "Leaderboard (the 2-worker run):",
        "",
        *board_lines(two["sweep"]["result"]),
        passes_line(two["sweep"]) + " (2 workers)",
    ]
    if out["budget"]:
        lines += [
            "",
            f"## Budgeted sweep: `{out['budget']['sweep']['name']}` ({out['budget']['seconds']:.0f} s, 2 workers)",
            "",
            *board_lines(out["budget"]["sweep"]["result"]),
            passes_line(out["budget"]["sweep"]),
            "",
            f"![pareto](sweeps-{args.profile}-pareto.png)",
        ]
    (RESULTS / f"sweeps-{args.profile}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
