"""ETA bench: how right is a running job's `eta_seconds` (issue 14 item 7)?

    nice -n 5 .venv/bin/python bench/eta.py            # the three jobs; results to bench/results/eta.md + .json
    .venv/bin/python bench/eta.py --smoke              # one tiny job, results to a temporary folder
    .venv/bin/python bench/eta.py --replay bench/results/eta.json   # no jobs: see below

Each job runs through a real embedded service (bench/quality.py's EmbeddedService: alembic, uvicorn,
one Celery worker, SQLite and the filesystem broker). GET /v1/jobs/{id} is sampled every 0.25 s;
once the job has ended, its true duration is known (first sample seen running to the first seen
ended), and every sample taken after the first 10% of it gives the relative error
(eta - true_remaining) / true_remaining. Reported per job: median and worst (by absolute value)
over the samples in 10%..90% of the job, and over 10%..100% (in the last tenth the time left is a
few seconds, where the poll interval alone is a large share of it).

Each run also records every call the jobs' Estimators got (worker/distill/eta.py, TRACE_FILE: the
runner's epochs, runs and tail, on the same monotonic clock as the samples). `--replay` feeds those
calls to worker/distill/eta.py as it is now and gives the figures it would have reached on the
same jobs: a change to the estimator is judged on recorded jobs without running them again (the
estimate shows at once in a replay, after the reporter's next flush in a real run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVERY = 0.25
ENDED = {"succeeded", "failed", "cancelled"}
CNN_DIGITS = {"name": "cnn", "channels": [16, 32], "hidden": 64}
MLP = {"name": "mlp", "hidden": [32]}


def _quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jobs(smoke: bool) -> list[tuple[str, dict]]:
    """(label, spec): the demo, a digits CNN-teacher job, a teacher-assistant chain."""
    if smoke:
        tiny = {
            "dataset": {"name": "digits"},
            "teacher": {"train": {"arch": CNN_DIGITS, "epochs": 3, "patience": 2}},
            "student": {"arch": MLP},
            "training": {"epochs": 3},
            "seeds": [0],
        }
        return [("smoke", tiny)]
    demo = json.loads((ROOT / "examples" / "mnist1d-kd.json").read_text())
    # Jobs a user would watch the ETA of: a minute or more. (Session 6's digits job took 4 s here;
    # its ETA was mostly the poll interval and the tail.)
    fashion = {
        "name": "Fashion-MNIST CNN -> MLP",
        "dataset": {"name": "fashion_mnist", "train_fraction": 0.25},
        "teacher": {"train": {"arch": {"name": "cnn", "channels": [16, 32], "hidden": 64}, "epochs": 8, "patience": 2}},
        "student": {"arch": {"name": "mlp", "hidden": [128]}},
        "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
        "training": {"epochs": 10},
        "seeds": [0, 1],
        "baseline": True,
    }
    assistant = {
        "name": "mnist1d teacher assistant",
        "dataset": {"name": "mnist1d"},
        "teacher": {"train": {"arch": {"name": "cnn", "channels": [32, 64]}, "epochs": 60, "patience": 10}},
        "student": {"arch": {"name": "mlp", "hidden": [32]}},
        "method": {"name": "teacher_assistant", "assistants": [{"name": "mlp", "hidden": [256, 128]}]},
        "training": {"epochs": 40, "lr": 0.01},
        "seeds": [0, 1, 2],
        "baseline": True,
    }
    return [
        ("demo (examples/mnist1d-kd.json)", demo),
        ("Fashion-MNIST CNN teacher", fashion),
        ("teacher assistant", assistant),
    ]


def sample(client, job_id: str) -> list[dict]:
    """GET the job every EVERY seconds until it ends: (monotonic time, status, eta, epochs)."""
    samples = []
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        samples.append(
            {
                "at": time.monotonic(),
                "status": job["status"],
                "phase": job.get("phase"),
                "eta": job["eta_seconds"],
                "epochs": job.get("epochs"),
            }
        )
        if job["status"] in ENDED:
            return samples
        time.sleep(EVERY)


def errors(samples: list[dict]) -> dict:
    """The relative errors after the first 10% of the job (from the first sample seen running)."""
    running = [s for s in samples if s["status"] == "running"]
    start, end = running[0]["at"], next(s["at"] for s in samples if s["status"] in ENDED)
    duration = end - start
    rows = []
    for s in running:
        share, left = (s["at"] - start) / duration, end - s["at"]
        if share >= 0.1 and left > 0:
            rows.append((share, None if s["eta"] is None else (s["eta"] - left) / left))
    return {"duration_s": round(duration, 1), "rows": rows}


def summary(rows: list[tuple[float, float | None]], upto: float) -> dict:
    kept = [e for share, e in rows if share <= upto]
    known = [e for e in kept if e is not None]
    return {
        "samples": len(kept),
        "unknown": len(kept) - len(known),
        "median": round(statistics.median(known), 3) if known else None,
        "worst": round(max(known, key=abs), 3) if known else None,
        "within_30pct": round(sum(abs(e) <= 0.3 for e in known) / len(known), 3) if known else None,
    }


def run(label: str, spec: dict, url: str, quality) -> dict:
    with quality.api_client(url) as client:
        r = client.post("/v1/jobs", json=spec)
        r.raise_for_status()
        job_id = r.json()["id"]
        samples = sample(client, job_id)
        final = client.get(f"/v1/jobs/{job_id}").json()
        events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 500}).json()
    found = errors(samples)
    first = samples[0]["at"]
    return {
        "job": label,
        "status": final["status"],
        "duration_s": found["duration_s"],
        "epochs": final.get("epochs"),
        "teacher_epochs_run": ((final.get("result") or {}).get("teacher") or {}).get("epochs_run"),
        "to_90pct": summary(found["rows"], 0.9),
        "to_end": summary(found["rows"], 1.0),
        "errors": [[round(s, 3), None if e is None else round(e, 3)] for s, e in found["rows"]],
        # where each error comes from: what the job was doing at each sample, and its events' times
        "samples": [_where(s, first) for s in samples],
        "events": [{"at": e["at"], "phase": e["phase"], "message": e["message"]} for e in events],
    }


def _where(sample: dict, first: float) -> dict:
    run = (sample["epochs"] or {}).get("run") or {}
    return {
        "at": sample["at"],  # monotonic, as the trace's calls
        "t": round(sample["at"] - first, 2),
        "status": sample["status"],
        "phase": sample["phase"],
        "run": run.get("name"),
        "epoch": run.get("epoch"),
        "eta": sample["eta"],
    }


def traces(path: Path) -> list[list[dict]]:
    """The recorded Estimator calls, one list per job (each starts with its plan's runs)."""
    jobs: list[list[dict]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        call = json.loads(line)
        if call["call"] == "runs":
            jobs.append([])
        jobs[-1].append(call)
    return jobs


def replay(result: dict) -> list[dict]:
    """Each recorded job's figures with the ETA worker/distill/eta.py gives now on its calls."""
    from worker.distill import eta

    clock, replayed = Clock(), []
    for job in result["jobs"]:
        estimator, ends_at, calls, samples = None, None, list(job["trace"]), []
        for s in job["samples"]:
            while calls and calls[0]["at"] <= s["at"]:
                call = calls.pop(0)
                clock.now = call["at"]
                if call["call"] == "runs":
                    estimator = eta.Estimator([_planned(r) for r in call["args"][0]], clock)
                else:
                    getattr(estimator, call["call"])(*[tuple(a) if isinstance(a, list) else a for a in call["args"]])
                left = estimator.seconds_left()
                ends_at = None if left is None else clock.now + left
            running = s["status"] == "running" and ends_at is not None
            samples.append({**s, "eta": max(0.0, ends_at - s["at"]) if running else None})
        found = errors(samples)
        replayed.append({"job": job["job"], "to_90pct": summary(found["rows"], 0.9), "recorded": job["to_90pct"]})
    return replayed


class Clock:
    """The recorded calls' time, as the replayed estimator reads it."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def _planned(run: dict):
    from worker.distill.eta import PlannedRun, StepProbe

    return PlannedRun(**{**run, "probe": StepProbe(**run["probe"]) if run["probe"] else None})


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def markdown(result: dict) -> str:
    lines = [
        "# ETA bench (bench/eta.py)",
        "",
        f"{result['when']}, {os.cpu_count()} CPUs. `uptime` before: `{result['load_before']}`; "
        f"after: `{result['load_after']}`. The machine was shared: the figures are one run's.",
        "",
        "GET /v1/jobs/{id} sampled every 0.25 s; error = (eta_seconds - true time left) / true time left, "
        "for every sample after the first 10% of the job (its true duration: first sample running to "
        "first sample ended). Goal: within ±30%.",
        "",
        "| job | duration | teacher epochs run | epochs done / planned | samples 10-90% | median | worst | within ±30% | worst 10-100% |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for j in result["jobs"]:
        a, b, e = j["to_90pct"], j["to_end"], j["epochs"] or {}
        lines.append(
            f"| {j['job']} | {j['duration_s']} s | {j['teacher_epochs_run']} | {e.get('done')} / {e.get('planned')} "
            f"| {a['samples']} ({a['unknown']} unknown) | {_pct(a['median'])} | {_pct(a['worst'])} "
            f"| {_pct(a['within_30pct'], sign=False)} | {_pct(b['worst'])} |"
        )
    lines += [
        "",
        "How the ETA is made: worker/distill/eta.py (each run at the median of its measured epochs; runs not "
        "started from the same architecture measured, else from their probed step plus the trainer's extra "
        "as a measured run shows it; early stops expected from patience and how many of its last patience epochs improved). "
        "Per-sample errors: eta.json.",
    ]
    return "\n".join(lines) + "\n"


def _pct(value: float | None, sign: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.0f}%" if sign else f"{100 * value:.0f}%"


def print_replay(path: Path) -> None:
    print("| job | recorded: within ±30% (median) | replayed now: within ±30% (median, worst) |")
    print("|---|---:|---:|")
    for j in replay(json.loads(path.read_text())):
        a, b = j["recorded"], j["to_90pct"]
        print(
            f"| {j['job']} | {_pct(a['within_30pct'], sign=False)} ({_pct(a['median'])}) "
            f"| {_pct(b['within_30pct'], sign=False)} ({_pct(b['median'])}, {_pct(b['worst'])}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="one tiny job; results to a temporary folder")
    parser.add_argument("--out", type=Path, default=None, help="folder of eta.md and eta.json")
    parser.add_argument("--replay", type=Path, help="an eta.json: its recorded calls through today's estimator")
    args = parser.parse_args()
    if args.replay:
        print_replay(args.replay)
        return
    from worker.distill import eta

    quality = _quality()
    out = args.out or (Path(tempfile.mkdtemp(prefix="eta-")) if args.smoke else ROOT / "bench" / "results")
    result = {"when": datetime.now().isoformat(timespec="seconds"), "load_before": uptime(), "jobs": []}
    with tempfile.TemporaryDirectory(prefix="distill-eta-") as home:
        cache, trace = ROOT / "var" / "bench-cache", Path(home) / "eta-trace.jsonl"
        os.environ[eta.TRACE_FILE] = str(trace)  # the service's runner inherits it
        with quality.EmbeddedService(Path(home) / "home", cache) as service:
            for label, spec in jobs(args.smoke):
                result["jobs"].append(run(label, spec, service.url, quality))
                print(json.dumps({k: result["jobs"][-1][k] for k in ("job", "duration_s", "to_90pct")}), flush=True)
        for job, calls in zip(result["jobs"], traces(trace), strict=True):
            job["trace"] = calls
    result["load_after"] = uptime()
    out.mkdir(parents=True, exist_ok=True)
    (out / "eta.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "eta.md").write_text(markdown(result))
    print(f"written: {out / 'eta.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
