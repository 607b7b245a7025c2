"""Teachers trained once (issue 12): N student jobs on one (teacher, dataset) through a real
embedded service with the teacher reused and its outputs cached, against the same N jobs on a
second service with the cache off and `teacher.train.reuse: false` (every job trains its
teacher, as before), measured in the same run; then a FitNets job with cached stage features
against one recomputing them every batch. Results to bench/results/teacher-cache.md (and .json).

    nice -n 5 .venv/bin/python bench/teacher_cache.py      # N = 5, MNIST-1D, about 3 min on 2 idle cores

The teacher is the example job's (examples/mnist1d-kd.json: a CNN 32-64-64, 61k parameters) for a
fixed 60 epochs (no early stop), so that training it costs what a teacher costs; the students are small MLPs.
Each service first runs one unrelated tiny job: its runner process is warm (torch imported, the
data cached) before anything is timed, so neither side's first job carries the start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.jobs import TINY, Service, wait  # noqa: E402

TEACHER = {"arch": {"name": "cnn", "channels": [32, 64, 64]}, "epochs": 60, "patience": 60}
SPEC = {
    "dataset": {"name": "mnist1d"},
    "teacher": {"train": TEACHER},
    "student": {"arch": {"name": "mlp", "hidden": [64, 64]}},
    "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
    "training": {"epochs": 20, "lr": 0.01},
    "baseline": False,
    "export": {"formats": ["safetensors"]},
}
PHASES = ("teacher", "soft_targets", "student", "evaluate", "export")


def _items(body):
    return body["items"] if isinstance(body, dict) and "items" in body else body


def phase_seconds(events: list[dict], finished_at: str) -> dict[str, float]:
    """Seconds from each "phase X started" event to the next one (the last to the job's end)."""
    starts = [(e["message"].removeprefix("phase ").removesuffix(" started"), e["at"]) for e in events]
    starts = [(name, at) for name, at in starts if name in PHASES and at]
    ends = [at for _, at in starts[1:]] + [finished_at]
    return {name: _seconds(at, end) for (name, at), end in zip(starts, ends, strict=True)}


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run(client: httpx.Client, spec: dict) -> dict:
    t0 = time.monotonic()
    r = client.post("/v1/jobs", json=spec)
    r.raise_for_status()
    job_id = r.json()["id"]
    job = wait(lambda: _ended(client, job_id), 900, f"job {job_id}", every=0.05)
    wall = time.monotonic() - t0
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
    events = _items(client.get(f"/v1/jobs/{job_id}/events").json())
    messages = [e["message"] for e in events]
    teacher = client.get(f"/v1/jobs/{job_id}/metrics", params={"phase": "teacher"}).json()
    hits = sum("(hit" in m for m in messages)
    return {
        "wall_s": wall,
        "phases_s": phase_seconds(events, job["finished_at"]),
        "teacher_trained": bool(teacher.get("series") if isinstance(teacher, dict) else teacher),
        # the soft targets (or stage features) computed once per job, unless the cache had them
        "teacher_passes": sum(m.startswith("soft targets: cached") for m in messages) - hits,
        "hit": hits > 0,
        "test_accuracy": job["result"]["student"]["mean"]["test_accuracy"],
        "teacher_test_accuracy": job["result"]["teacher"]["test_accuracy"],
    }


def _ended(client: httpx.Client, job_id: str) -> dict | None:
    job = client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


def cache_bytes(home: Path) -> int:
    folder = home / "artifacts" / "teacher-outputs"
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def measure(n: int, workdir: Path) -> dict:
    cached = Service(ROOT, workdir / "cached")
    plain = Service(ROOT, workdir / "plain")
    plain.env["DISTILL_TEACHER_CACHE_BYTES"] = "0"
    for svc in (cached, plain):
        svc.start()
    try:
        with httpx.Client(base_url=cached.url, timeout=30) as c, httpx.Client(base_url=plain.url, timeout=30) as p:
            for client in (c, p):  # warm runners (torch imported, data cached) before timing anything
                run(
                    client,
                    {**TINY, "name": "warm-up", "teacher": {"train": {**TINY["teacher"]["train"], "reuse": False}}},
                )
            disk_before = cache_bytes(cached.home)
            reused, before = [], []
            for i in range(n):  # interleaved: a busy machine weighs on both alike
                reused.append(run(c, {**SPEC, "name": f"reuse {i}", "seeds": [i]}))
                no_reuse = {"train": {**TEACHER, "reuse": False}}
                before.append(run(p, {**SPEC, "name": f"plain {i}", "seeds": [i], "teacher": no_reuse}))
            disk = cache_bytes(cached.home) - disk_before
            fitnet = {**SPEC, "method": {"name": "fitnet"}, "seeds": [0]}
            run(c, {**fitnet, "name": "fitnet warm-up"})  # fills the cache with the stage features
            features_cached = run(c, {**fitnet, "name": "fitnet cached"})
            features_live = run(p, {**fitnet, "name": "fitnet recomputed"})
            disk_all = cache_bytes(cached.home) - disk_before
    finally:
        for svc in (cached, plain):
            svc.stop()
    return {
        "n": n,
        "spec": SPEC,
        "with_reuse": summarize(reused),
        "without_reuse": summarize(before),
        "wall_ratio": sum(r["wall_s"] for r in reused) / sum(r["wall_s"] for r in before),
        "fitnet": fitnet_figures(features_cached, features_live),
        "cache_bytes": disk,
        "cache_bytes_per_job": disk / n,
        "cache_bytes_with_fitnet": disk_all,
    }


def fitnet_figures(cached: dict, live: dict) -> dict:
    """The student phase is where the features are read (or the teacher runs every batch); the
    recomputed job's wall time also holds its teacher's training (its service has no reuse yet)."""
    student = cached["phases_s"]["student"], live["phases_s"]["student"]
    return {
        "cached_wall_s": cached["wall_s"],
        "recomputed_wall_s": live["wall_s"],
        "cached_student_s": student[0],
        "recomputed_student_s": student[1],
        "student_time_ratio": student[0] / student[1],
        "cached_hit": cached["hit"],
        "cached_test_accuracy": cached["test_accuracy"],
        "recomputed_test_accuracy": live["test_accuracy"],
    }


def summarize(jobs: list[dict]) -> dict:
    return {
        "teacher_trainings": sum(j["teacher_trained"] for j in jobs),
        "teacher_passes_over_train": sum(j["teacher_passes"] for j in jobs),
        "wall_s": sum(j["wall_s"] for j in jobs),
        "wall_s_per_job": [round(j["wall_s"], 2) for j in jobs],
        "teacher_phase_s_per_job": [round(j["phases_s"].get("teacher", 0.0), 2) for j in jobs],
        "soft_targets_phase_s_per_job": [round(j["phases_s"].get("soft_targets", 0.0), 3) for j in jobs],
        "student_phase_s_per_job": [round(j["phases_s"].get("student", 0.0), 2) for j in jobs],
        "test_accuracy": [round(j["test_accuracy"], 4) for j in jobs],
        "teacher_test_accuracy": [round(j["teacher_test_accuracy"], 4) for j in jobs],
    }


def markdown(r: dict) -> str:
    w, b, f = r["with_reuse"], r["without_reuse"], r["fitnet"]
    t = r["spec"]["teacher"]["train"]
    rows = [
        ("teacher trainings", w["teacher_trainings"], b["teacher_trainings"]),
        ("teacher passes over the training set", w["teacher_passes_over_train"], b["teacher_passes_over_train"]),
        (f"wall time of the {r['n']} jobs", f"{w['wall_s']:.1f} s", f"{b['wall_s']:.1f} s"),
        ("wall time per job (s)", w["wall_s_per_job"], b["wall_s_per_job"]),
        ("teacher phase per job (s)", w["teacher_phase_s_per_job"], b["teacher_phase_s_per_job"]),
        ("soft-targets phase per job (s)", w["soft_targets_phase_s_per_job"], b["soft_targets_phase_s_per_job"]),
        ("student phase per job (s)", w["student_phase_s_per_job"], b["student_phase_s_per_job"]),
        ("student test accuracy per job", w["test_accuracy"], b["test_accuracy"]),
        ("teacher test accuracy per job", w["teacher_test_accuracy"], b["teacher_test_accuracy"]),
    ]
    load = r.get("load", {})
    return "\n".join(
        [
            "# Teachers trained once: reuse and the teacher-output cache",
            "",
            f"`bench/teacher_cache.py`: {r['n']} student jobs (seeds 0..{r['n'] - 1}, KD into an MLP 64-64, "
            f"{r['spec']['training']['epochs']} epochs) on one teacher (MNIST-1D, the example job's CNN "
            f"{'-'.join(map(str, t['arch']['channels']))}, {t['epochs']} epochs) through a real embedded "
            "service (one worker), interleaved with the same jobs on a second service with the cache off and "
            "`teacher.train.reuse: false`. Both services ran one tiny warm-up job first (the runner process "
            "started, torch imported), so no timed job carries a start-up. Phase times are from the job's "
            "events (the teacher phase includes keeping the teacher: safetensors, ONNX, its facts).",
            "",
            "| | with reuse + cache | without (as before) |",
            "|---|---|---|",
            *[f"| {name} | {a} | {z} |" for name, a, z in rows],
            "",
            f"Wall-time ratio of the {r['n']} jobs (with / without): **{r['wall_ratio']:.2f}**.",
            "",
            f"FitNets, stage features from the cache (hit: {f['cached_hit']}) vs recomputed by the teacher every "
            f"batch: student phase {f['cached_student_s']:.1f} s vs {f['recomputed_student_s']:.1f} s, time ratio "
            f"**{f['student_time_ratio']:.2f}** (whole jobs: {f['cached_wall_s']:.1f} s vs "
            f"{f['recomputed_wall_s']:.1f} s, the latter training its teacher); test accuracy "
            f"{f['cached_test_accuracy']:.4f} vs {f['recomputed_test_accuracy']:.4f}.",
            "",
            f"Cache on disk: {r['cache_bytes']:,} bytes for the {r['n']} KD jobs ({r['cache_bytes_per_job']:,.0f} "
            f"bytes per job: one logits file, written once); {r['cache_bytes_with_fitnet']:,} bytes with the "
            "FitNets stage features.",
            "",
            "Where a reused job's time goes: its teacher phase (the claim row read, the kept teacher's "
            "safetensors loaded) and its soft-targets phase (the cached logits' sha256 checked, then read) take "
            "milliseconds (rows above); the rest is its own student, evaluation and export. The first figures of "
            "this bench (digits, a CNN 16-32 teacher of about a second; ratio 1.32) were the reuse service's first "
            "job waiting for its worker's runner process to start (torch imported: `runner ready in 3.4 s` in the "
            "worker log), while the other service's runner started during that job: a start-up, not a cost of "
            "reuse. The warm-up jobs now take it out of both sides.",
            "",
            f"Load average (1 min) before: {load.get('before', '?')}, after: {load.get('after', '?')}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--teacher-epochs", type=int, default=TEACHER["epochs"], help="smaller for a smoke run")
    parser.add_argument("--student-epochs", type=int, default=SPEC["training"]["epochs"])
    args = parser.parse_args()
    TEACHER.update(epochs=args.teacher_epochs, patience=args.teacher_epochs)
    SPEC["training"]["epochs"] = args.student_epochs
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.jobs, Path(tmp))
    result["load"] = {"before": round(before[0], 2), "after": round(os.getloadavg()[0], 2)}
    out = ROOT / "bench" / "results"
    (out / "teacher-cache.json").write_text(json.dumps(result, indent=2))
    (out / "teacher-cache.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
