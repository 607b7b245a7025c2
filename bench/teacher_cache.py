"""Teachers trained once (issue 12): N student jobs on one (teacher, dataset) through a real
embedded service with the teacher reused and its outputs cached, against the same N jobs on a
second service with the cache off and `teacher.train.reuse: false` (every job trains its
teacher, as before), measured in the same run; then a FitNets job with cached stage features
against one recomputing them every batch. Results to bench/results/teacher-cache.md (and .json).

    .venv/bin/python bench/teacher_cache.py            # N = 5, digits, a few epochs (2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.jobs import Service, wait  # noqa: E402

TEACHER = {"arch": {"name": "cnn", "channels": [16, 32], "hidden": 32}, "epochs": 12, "patience": 12}
SPEC = {
    "dataset": {"name": "digits"},
    "teacher": {"train": TEACHER},
    "student": {"arch": {"name": "mlp", "hidden": [32]}},
    "method": {"name": "kd"},
    "training": {"epochs": 8, "batch_size": 64},
    "baseline": False,
    "export": {"formats": ["safetensors"]},
}


def _items(body):
    return body["items"] if isinstance(body, dict) and "items" in body else body


def run(client: httpx.Client, spec: dict) -> dict:
    r = client.post("/v1/jobs", json=spec)
    r.raise_for_status()
    job_id = r.json()["id"]
    job = wait(lambda: _ended(client, job_id), 900, f"job {job_id}")
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
    events = [e["message"] for e in _items(client.get(f"/v1/jobs/{job_id}/events").json())]
    teacher = client.get(f"/v1/jobs/{job_id}/metrics", params={"phase": "teacher"}).json()
    hits = sum("(hit" in m for m in events)
    return {
        "teacher_trained": bool(teacher.get("series") if isinstance(teacher, dict) else teacher),
        # the soft targets (or stage features) computed once per job, unless the cache had them
        "teacher_passes": sum(m.startswith("soft targets: cached") for m in events) - hits,
        "hit": hits > 0,
        "test_accuracy": job["result"]["student"]["mean"]["test_accuracy"],
    }


def _ended(client: httpx.Client, job_id: str) -> dict | None:
    job = client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


def timed(client: httpx.Client, spec: dict) -> dict:
    t0 = time.monotonic()
    out = run(client, spec)
    out["wall_s"] = time.monotonic() - t0
    return out


def cache_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "artifacts" / "teacher-outputs").rglob("*") if p.is_file())


def measure(n: int, workdir: Path) -> dict:
    cached = Service(ROOT, workdir / "cached")
    plain = Service(ROOT, workdir / "plain")
    plain.env["DISTILL_TEACHER_CACHE_BYTES"] = "0"
    for svc in (cached, plain):
        svc.start()
    try:
        with httpx.Client(base_url=cached.url, timeout=30) as c, httpx.Client(base_url=plain.url, timeout=30) as p:
            reused, before = [], []
            for i in range(n):  # interleaved: a busy machine weighs on both alike
                reused.append(timed(c, {**SPEC, "name": f"reuse {i}", "seeds": [i]}))
                no_reuse = {"train": {**TEACHER, "reuse": False}}
                before.append(timed(p, {**SPEC, "name": f"plain {i}", "seeds": [i], "teacher": no_reuse}))
            fitnet = {**SPEC, "method": {"name": "fitnet"}, "seeds": [0]}
            timed(c, {**fitnet, "name": "fitnet warm-up"})  # fills the cache with the stage features
            features_cached = timed(c, {**fitnet, "name": "fitnet cached"})
            features_live = timed(p, {**fitnet, "name": "fitnet recomputed", "teacher": {"train": TEACHER}})
            disk = cache_bytes(cached.home)
    finally:
        for svc in (cached, plain):
            svc.stop()
    return {
        "n": n,
        "with_reuse": summarize(reused),
        "without_reuse": summarize(before),
        "wall_ratio": sum(r["wall_s"] for r in reused) / sum(r["wall_s"] for r in before),
        "fitnet": {
            "cached_s": features_cached["wall_s"],
            "recomputed_s": features_live["wall_s"],
            "time_ratio": features_cached["wall_s"] / features_live["wall_s"],
            "cached_hit": features_cached["hit"],
            "cached_test_accuracy": features_cached["test_accuracy"],
            "recomputed_test_accuracy": features_live["test_accuracy"],
        },
        "cache_bytes": disk,
        "cache_bytes_per_job": disk / (n + 2),
    }


def summarize(jobs: list[dict]) -> dict:
    return {
        "teacher_trainings": sum(j["teacher_trained"] for j in jobs),
        "teacher_passes_over_train": sum(j["teacher_passes"] for j in jobs),
        "wall_s": sum(j["wall_s"] for j in jobs),
        "test_accuracy": [round(j["test_accuracy"], 4) for j in jobs],
    }


def markdown(r: dict) -> str:
    w, b, f = r["with_reuse"], r["without_reuse"], r["fitnet"]
    return "\n".join(
        [
            "# Teachers trained once: reuse and the teacher-output cache",
            "",
            f"`bench/teacher_cache.py`: {r['n']} student jobs (seeds 0..{r['n'] - 1}) on one teacher "
            "(digits, CNN 16-32, 12 epochs) and one dataset, each through a real embedded service "
            "(one worker), interleaved with the same jobs on a second service with the cache off and "
            "`teacher.train.reuse: false`.",
            "",
            "| | with reuse + cache | without (as before) |",
            "|---|---|---|",
            f"| teacher trainings | {w['teacher_trainings']} | {b['teacher_trainings']} |",
            f"| teacher passes over the training set | {w['teacher_passes_over_train']} | "
            f"{b['teacher_passes_over_train']} |",
            f"| wall time of the {r['n']} jobs | {w['wall_s']:.1f} s | {b['wall_s']:.1f} s |",
            f"| student test accuracy per job | {w['test_accuracy']} | {b['test_accuracy']} |",
            "",
            f"Wall-time ratio (with / without): **{r['wall_ratio']:.2f}**.",
            "",
            f"FitNets, stage features from the cache (hit: {f['cached_hit']}) vs recomputed every batch: "
            f"{f['cached_s']:.1f} s vs {f['recomputed_s']:.1f} s, time ratio **{f['time_ratio']:.2f}**; "
            f"test accuracy {f['cached_test_accuracy']:.4f} vs {f['recomputed_test_accuracy']:.4f}.",
            "",
            f"Cache on disk: {r['cache_bytes']:,} bytes after {r['n'] + 2} jobs "
            f"({r['cache_bytes_per_job']:,.0f} bytes per job).",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.jobs, Path(tmp))
    out = ROOT / "bench" / "results"
    (out / "teacher-cache.json").write_text(json.dumps(result, indent=2))
    (out / "teacher-cache.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
