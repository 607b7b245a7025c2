"""Quality bench: REAL jobs through the HTTP API, several seeds each, written to bench/results/quality.md.

    .venv/bin/python bench/quality.py                 # embedded service, every configuration
    .venv/bin/python bench/quality.py --profile quick # smaller budgets (what fits a 2-core CPU in ~30 min)
    .venv/bin/python bench/quality.py --smoke         # 1 seed, 1 epoch, 2 configurations (tests/test_bench_smoke.py)
    .venv/bin/python bench/quality.py --api http://host:8000   # an already running service

Without --api it starts its own embedded service as scripts/demo.sh does (alembic upgrade,
uvicorn, one Celery worker; SQLite and the filesystem broker under a fresh DISTILL_HOME in a
temporary folder, the API on a free port) and stops it at the end.

Every configuration is one job whose `seeds` are the bench's seeds: the job's report already
gives mean and standard deviation over them (and the paired scratch baseline when asked).
Numbers are TEST accuracy; every choice of hyper-parameter was made on VALIDATION accuracy
(see TUNING below and the results file), never on test.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "bin"

# Published figures beside which ours are printed.
GREYDANUS = "Greydanus 2020 (MNIST-1D): logistic 32%, MLP 68%, CNN 94%"

# What was tuned, on validation accuracy, and what was kept. Written into the results file.
TUNING = """\
Every choice is to be made on the VALIDATION split (10% of the training set), never on test.
`--tune` adds validation sweeps (KD T in {2, 8} x alpha in {0.5, 0.9}; DKD beta = 2; attention
beta in {10, 100}) beside the
defaults (KD T=4 alpha=0.9; DKD alpha=1 beta=8 T=4 warm-up 5; FitNets dense -> last hidden,
weight 1; attention beta=1000, CE only; born-again 2 generations; one MLP 256-256 assistant):
compare the `val` column only. The defaults are the papers' (or the service's) values; a row
of this file says whether its sweep ran."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedService:
    """API + one worker on SQLite and the filesystem broker, under a throwaway DISTILL_HOME."""

    def __init__(self, home: Path, data_cache: Path | None) -> None:
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DISTILL_HOME": str(home)}
        if data_cache is not None:
            self.env["DISTILL_DATA_CACHE_DIR"] = str(data_cache)
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "EmbeddedService":
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(VENV / "alembic"), "upgrade", "head"], cwd=ROOT, env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, cmd in (
            ("api", [str(VENV / "uvicorn"), "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)]),
            ("worker", [str(VENV / "celery"), "-A", "worker.celery_app", "worker", "--concurrency", "1",
                        "--loglevel", "INFO"]),
        ):
            log = open(self.home / f"{name}.log", "wb")
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log))
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the embedded service did not start; logs in {self.home}")
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


# --- configurations ---------------------------------------------------------------

def configurations(profile: str, seeds: list[int]) -> list[dict]:
    """Each: {"row": label, "paper": published figure or "", "spec": job spec,
    "read": which part of the report is the row ("student", "baseline", "teacher")}."""
    smoke = profile == "smoke"
    quick = profile == "quick"
    t_epochs = 1 if smoke else (15 if quick else 40)
    s_epochs = 1 if smoke else (20 if quick else 40)
    teacher = {"train": {"arch": {"name": "cnn", "channels": [32, 32, 32], "hidden": 64},
                         "epochs": t_epochs, "patience": 6 if quick else 10, "lr": 0.01}}
    mlp = {"name": "mlp", "hidden": [64, 64]}
    training = {"epochs": s_epochs, "lr": 0.01}

    def job(name, method, *, student=None, baseline=False, dataset=None, teacher_=None, training_=None):
        return {
            "name": name,
            "dataset": dataset or {"name": "mnist1d"},
            "teacher": teacher_ or teacher,
            "student": {"arch": student or mlp},
            "method": method,
            "training": training_ or training,
            "seeds": seeds,
            "baseline": baseline,
            "export": {"formats": ["safetensors"]},
        }

    digits_teacher = {"train": {"arch": {"name": "cnn", "channels": [16, 32], "hidden": 64},
                                "epochs": t_epochs, "patience": 10, "lr": 0.01}}
    tiny = {"name": "mlp", "hidden": [32]}  # 64*32+32 + 32*10+10 = 2410 parameters
    kd = {"name": "kd", "temperature": 4.0, "alpha": 0.9}
    rows = [] if smoke else [
        ("mnist1d: CNN teacher (ours)", "CNN 94% (Greydanus)", "teacher",
         job("mnist1d kd", kd, baseline=True)),
        ("mnist1d: MLP 64-64 from scratch", "MLP 68% (Greydanus)", "baseline", "same"),
        ("mnist1d: MLP 64-64, KD (T=4, alpha=0.9)", "", "student", "same"),
    ]
    rows += [
        ("digits: tiny MLP [32] (2410 params), KD", "", "student",
         job("digits tiny kd", kd, student=tiny, baseline=True,
             dataset={"name": "digits"}, teacher_=digits_teacher)),
        ("digits: tiny MLP [32] from scratch", "", "baseline", "same"),
    ]
    if not smoke:
        small_cnn = {"name": "cnn", "channels": [8, 8], "hidden": 0}
        rows += [
            ("mnist1d: logistic regression from scratch", "logistic 32% (Greydanus)", "student",
             job("mnist1d logistic", {"name": "ce"}, student={"name": "mlp", "hidden": []})),
            ("mnist1d: MLP 64-64, DKD (alpha=1, beta=8, T=4)", "", "student",
             job("mnist1d dkd", {"name": "dkd"})),
            ("mnist1d: MLP 64-64, FitNets hint dense->hidden1 + KD", "", "student",
             job("mnist1d fitnet", {"name": "fitnet", "teacher_stage": "dense", "student_stage": "hidden1"})),
            ("mnist1d: MLP 64-64, adversarial KD", "", "student",
             job("mnist1d adversarial", {"name": "adversarial"})),
            ("mnist1d: MLP 64-64, pseudo-labels (teacher argmax, CE)", "", "student",
             job("mnist1d pseudo", {"name": "pseudo_label"})),
            ("mnist1d: MLP 64-64, teacher-assistant (MLP 256-256)", "", "student",
             job("mnist1d ta", {"name": "teacher_assistant", "assistants": [{"name": "mlp", "hidden": [256, 256]}]})),
            ("mnist1d: MLP 64-64, born-again (2 generations, teacher = MLP 64-64)", "", "student",
             job("mnist1d born-again", {"name": "born_again", "generations": 2},
                 teacher_={"train": {**teacher["train"], "arch": mlp}})),
            ("mnist1d: small CNN [8,8] student, attention transfer (CNN student: AT needs conv maps)", "",
             "student", job("mnist1d attention", {"name": "attention"}, student=small_cnn, baseline=True)),
            ("mnist1d: small CNN [8,8] from scratch", "", "baseline", "same"),
            ("Hinton (1) analogue: MLP, teacher's soft targets only (alpha=1, labels unused)", "", "student",
             job("mnist1d teacher-only", {"name": "kd", "temperature": 4.0, "alpha": 1.0})),
            ("Hinton (2): MLP on 3% of the training set, soft targets (KD)", "", "student",
             job("mnist1d 3% kd", kd, baseline=True, dataset={"name": "mnist1d", "train_fraction": 0.03})),
            ("Hinton (2): MLP on 3% of the training set, hard labels", "", "baseline", "same"),
        ]
    out, last = [], None
    for label, paper, read, spec in rows:
        if spec == "same":
            spec = last
        last = spec
        out.append({"row": label, "paper": paper, "read": read, "spec": spec})
    return out


def tuning_configurations(seeds: list[int], profile: str) -> list[dict]:
    """Validation sweeps (the `val` column decides): KD temperature/alpha and DKD beta."""
    base = next(c["spec"] for c in configurations(profile, seeds) if c["row"].startswith("mnist1d: MLP 64-64, KD"))
    rows = []
    for T in (2.0, 8.0):
        for alpha in (0.5, 0.9):
            s = copy.deepcopy(base)
            s.update(name=f"tune kd T={T} alpha={alpha}", baseline=False,
                     method={"name": "kd", "temperature": T, "alpha": alpha})
            rows.append({"row": f"tune: KD T={T:g} alpha={alpha}", "paper": "", "read": "student", "spec": s})
    s = copy.deepcopy(base)
    s.update(name="tune dkd beta=2", baseline=False, method={"name": "dkd", "beta": 2.0})
    rows.append({"row": "tune: DKD beta=2", "paper": "", "read": "student", "spec": s})
    at = next(c["spec"] for c in configurations(profile, seeds) if "attention transfer" in c["row"])
    for beta in (10.0, 100.0):
        s = copy.deepcopy(at)
        s.update(name=f"tune attention beta={beta:g}", baseline=False, method={"name": "attention", "beta": beta})
        rows.append({"row": f"tune: AT beta={beta:g}", "paper": "", "read": "student", "spec": s})
    return rows


# --- running ---------------------------------------------------------------------

def run_all(api: str, configs: list[dict], poll: float, log=print, on_done=None) -> dict[str, dict]:
    """Submit each distinct spec once, wait for all; returns spec name -> job.
    `on_done(jobs so far)` after each job ends (the results file is rewritten as they come)."""
    client = httpx.Client(base_url=api, timeout=30)
    ids: dict[str, str] = {}
    for c in configs:
        name = c["spec"]["name"]
        if name in ids:
            continue
        r = client.post("/v1/jobs", json=c["spec"])
        if r.status_code != 202:
            raise RuntimeError(f"{name}: refused {r.status_code}: {r.text}")
        ids[name] = r.json()["id"]
        log(f"submitted {name}: {ids[name]}")
    done: dict[str, dict] = {}
    while len(done) < len(ids):
        for name, job_id in ids.items():
            if name in done:
                continue
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                done[name] = job
                log(f"{name}: {job['status']} {job.get('error') or ''}")
                if on_done is not None:
                    on_done(done)
        if len(done) < len(ids):
            time.sleep(poll)
    return done


def _fmt(mean, std) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def row_values(c: dict, job: dict) -> dict:
    if job["status"] != "succeeded":
        return {"test": f"{job['status']}: {job.get('error')}", "val": "", "params": "", "n": 0}
    rep = job["result"]
    if c["read"] == "teacher":
        t = rep["teacher"]
        return {"test": _fmt(t["test_accuracy"], None), "val": _fmt(t["val_accuracy"], None),
                "params": t["parameters"], "n": 1}
    part = rep[c["read"]]
    mean, std = part["mean"], part.get("std") or {}
    return {"test": _fmt(mean["test_accuracy"], std.get("test_accuracy")),
            "val": _fmt(mean["val_accuracy"], std.get("val_accuracy")),
            "params": part["runs"][0]["parameters"], "n": len(part["runs"])}


def write_results(path: Path, configs: list[dict], jobs: dict[str, dict], args, elapsed: float,
                  unfinished: str = "") -> None:
    lines = [
        "# Quality bench",
        "",
        f"Generated by `bench/quality.py --profile {args.profile}"
        + (f" --student-epochs {args.student_epochs}" if args.student_epochs else "") + "` "
        f"({len(args.seeds)} seed(s): {args.seeds}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{elapsed / 60:.1f} min. Every row is a real job submitted through the HTTP API to an "
        "embedded service (API + one Celery worker, CPU).",
        "",
        "Test accuracy in %, mean ± std over seeds (the job's own aggregate); `val` is the "
        "validation accuracy used for every choice. Published: " + GREYDANUS + ".",
        "",
        "| configuration | test % | val % | params | seeds | published |",
        "|---|---|---|---|---|---|",
    ]
    for c in configs:
        job = jobs.get(c["spec"]["name"])
        v = row_values(c, job) if job else {"test": "not run", "val": "", "params": "", "n": 0}
        lines.append(f"| {c['row']} | {v['test']} | {v['val']} | {v['params']} | {v['n']} | {c['paper']} |")
    lines += ["", "## Tuning", "", TUNING, ""]
    if unfinished:
        lines += ["## Not finished", "", unfinished, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", help="URL of a running service; default: start an embedded one")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    p.add_argument("--profile", choices=("full", "quick", "smoke"), default="full")
    p.add_argument("--smoke", action="store_true", help="= --profile smoke --seeds 1")
    p.add_argument("--tune", action="store_true", help="also run the validation sweeps")
    p.add_argument("--only", help="substrings separated by '|': run only the rows whose label contains one")
    p.add_argument("--student-epochs", type=int, help="override the profile's student epoch budget")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.md")
    p.add_argument("--home", type=Path, help="DISTILL_HOME of the embedded service (default: a temp folder)")
    p.add_argument("--data-cache", type=Path, default=ROOT / "var" / "bench-data")
    p.add_argument("--poll", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.smoke:
        args.profile, args.seeds = "smoke", 1
    # SIGTERM -> SystemExit, so the embedded service is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.seeds = list(range(args.seeds))
    configs = configurations(args.profile, args.seeds)
    if args.tune:
        configs += tuning_configurations(args.seeds, args.profile)
    if args.student_epochs:
        for c in configs:
            c["spec"]["training"]["epochs"] = args.student_epochs
    if args.only:
        configs = [c for c in configs if any(o in c["row"] for o in args.only.split("|"))]
    start = time.monotonic()

    def partial(done: dict) -> None:
        left = [c["row"] for c in configs if c["spec"]["name"] not in done]
        write_results(args.out, configs, done, args, time.monotonic() - start,
                      unfinished=("Still running or queued when this was written: " + "; ".join(left)) if left else "")

    if args.api:
        jobs = run_all(args.api, configs, args.poll, on_done=partial)
    else:
        home = args.home or Path(tempfile.mkdtemp(prefix="distill-bench-"))
        with EmbeddedService(home, args.data_cache) as svc:
            print(f"embedded service on {svc.url}, DISTILL_HOME={home}", flush=True)
            jobs = run_all(svc.url, configs, args.poll, log=lambda m: print(m, flush=True), on_done=partial)
    write_results(args.out, configs, jobs, args, time.monotonic() - start)
    print(args.out.read_text())
    return 0 if all(j["status"] == "succeeded" for j in jobs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
