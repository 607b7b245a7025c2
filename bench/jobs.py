"""Fixed costs of a small job: a tiny digits job, submit -> running and submit -> done through
a real embedded service with a warm (idle) worker, against the same pipeline's compute in a
warm process. Results to bench/results/jobs.md (and .json).

    .venv/bin/python bench/jobs.py                              # this tree only
    .venv/bin/python bench/jobs.py --tree before=/tmp/old --tree after=.   # side by side

Each --tree is a checkout of the project (e.g. `git archive <commit> | tar -x -C /tmp/old`);
its service (alembic, uvicorn, one Celery worker as scripts/demo.sh starts it; SQLite, the
filesystem broker, DISTILL_AUTH=off) imports that tree's code. Trees are measured in
interleaved rounds, so a busy machine weighs on all of them alike. The compute baseline is
`worker.distill.pipeline.run_job` on the same spec in this process, after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "training": {"epochs": 1},
    "seeds": [0],
    "baseline": False,
    "export": {"formats": ["safetensors"]},
}
POLL = 0.005  # the client's poll interval: a bound on the latency it can see
IDLE = 0.3  # pause between jobs, so that each finds the worker idle (done with the last one)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """API + one worker of `tree`, on SQLite and the filesystem broker under `home`."""

    def __init__(self, tree: Path, home: Path) -> None:
        self.tree, self.home, self.port = tree, home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
        self.env |= {
            "DISTILL_HOME": str(home),
            "DISTILL_AUTH": "off",
            "PYTHONPATH": str(tree),
            "DISTILL_DATA_CACHE_DIR": str(ROOT / "var" / "bench-cache"),
            "DISTILL_RATE_LIMIT_PER_MINUTE": "0",
        }
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [PYTHON, "-m", "alembic", "upgrade", "head"], cwd=self.tree, env=self.env, check=True, capture_output=True
        )
        for name, cmd in (
            ("api", [PYTHON, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)]),
            (
                "worker",
                [
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "worker.celery_app",
                    "worker",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "INFO",
                ],
            ),
        ):
            log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - kept open by the child
            self.procs.append(subprocess.Popen(cmd, cwd=self.tree, env=self.env, stdout=log, stderr=log))
        wait(lambda: _ok(self.url), 120, "the API")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait(condition, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)
    return value


def one_job(client: httpx.Client) -> tuple[float, float, float]:
    """Seconds from POST to `running` and to `succeeded`, seen by a client polling fast, and
    from the job's row written to its claim by a worker (the server's own clock)."""
    t0 = time.perf_counter()
    r = client.post("/v1/jobs", json=TINY)
    r.raise_for_status()
    job_id, running = r.json()["id"], None
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        now = time.perf_counter() - t0
        if job["status"] != "queued" and running is None:
            running = now
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}")
            claimed = (
                datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(job["created_at"])
            ).total_seconds()
            return running, now, claimed
        time.sleep(POLL)


class WarmCompute:
    """The same spec's pipeline in this process, warmed up by one run: with checkpoints (in
    a scratch folder, as a worker runs it) and without (the compute alone)."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        from app.contract.spec import JobSpec
        from worker.distill.pipeline import run_job
        from worker.distill.reporting import MemoryReporter

        self.run_job, self.reporter = run_job, MemoryReporter
        self.spec, self.cache = JobSpec.model_validate(TINY), ROOT / "var" / "bench-cache"
        self.scratch = Path(tempfile.mkdtemp(prefix="bench-compute-"))
        self.runs = 0
        self.once(checkpoints=True)

    def once(self, *, checkpoints: bool) -> float:
        self.runs += 1
        folder = self.scratch / str(self.runs)
        t0 = time.perf_counter()
        self.run_job(self.spec, self.reporter(folder / "ckpt" if checkpoints else None), folder / "work", self.cache)
        return time.perf_counter() - t0


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def measure(trees: dict[str, Path], jobs: int, rounds: int) -> dict:
    services = {}
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        try:
            for name, tree in trees.items():
                services[name] = Service(tree, Path(tmp) / name)
                services[name].start()
            samples: dict[str, dict[str, list[float]]] = {n: {"running": [], "done": [], "claimed": []} for n in trees}
            for svc in services.values():  # one warm-up job each: imports, data cache
                with httpx.Client(base_url=svc.url, timeout=30) as client:
                    one_job(client)
            compute = WarmCompute()
            samples["compute"] = {"with checkpoints": [], "without": []}
            for _ in range(rounds):
                for _ in range(jobs):
                    samples["compute"]["with checkpoints"].append(compute.once(checkpoints=True))
                    samples["compute"]["without"].append(compute.once(checkpoints=False))
                for name, svc in services.items():
                    with httpx.Client(base_url=svc.url, timeout=30) as client:
                        for _ in range(jobs):
                            running, done, claimed = one_job(client)
                            samples[name]["running"].append(running)
                            samples[name]["done"].append(done)
                            samples[name]["claimed"].append(claimed)
                            time.sleep(IDLE)
        finally:
            for svc in services.values():
                svc.stop()
    compute = samples.pop("compute")
    return {
        "compute": {k: summary(v) for k, v in compute.items()},
        "trees": {n: {k: summary(v) for k, v in s.items()} for n, s in samples.items()},
    }


def markdown(result: dict, trees: dict[str, Path]) -> str:
    span = lambda v: f"{v['median']:.3f} ({v['min']:.3f}-{v['max']:.3f})"  # noqa: E731
    with_ck, without = result["compute"]["with checkpoints"], result["compute"]["without"]
    lines = [
        "# Small jobs: fixed costs (bench/jobs.py)",
        "",
        f"A tiny digits job (`TINY` in bench/jobs.py) through an embedded service with a warm, idle "
        f"worker; the client polls every {POLL * 1000:.0f} ms. Medians (min-max) over "
        f"{next(iter(result['trees'].values()))['done']['n']} jobs per tree, in rounds interleaved "
        f"with the warm compute, one run, {os.cpu_count()} CPUs shared with other work. Warm compute: "
        f"the same spec's pipeline in a warm process, {span(with_ck)} s with checkpoints (as a "
        f"worker runs it), {span(without)} s without.",
        "",
        "| tree | row written -> claimed (s, server clock) | submit -> running (s, client) | "
        "submit -> done (s) | done / compute with checkpoints | done / compute without |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in result["trees"].items():
        done = t["done"]["median"]
        lines.append(
            f"| {name} (`{trees[name]}`) | {span(t['claimed'])} | {span(t['running'])} | "
            f"{span(t['done'])} | {done / with_ck['median']:.2f}x | {done / without['median']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a checkout to bench (repeat); default: this tree",
    )
    parser.add_argument("--jobs", type=int, default=5, help="jobs per tree per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "jobs")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(ROOT)}
    trees = {n: Path(p).resolve() for n, p in trees.items()}
    result = measure(trees, args.jobs, args.rounds)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = markdown(result, trees)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
