"""Quality bench: REAL jobs through the HTTP API, several seeds each, written to bench/results/quality.md.

    .venv/bin/python bench/quality.py --profile quick          # the budget that fits a 2-core CPU
    .venv/bin/python bench/quality.py --profile quick --tune   # + the validation sweeps (KD, DKD, AT)
    .venv/bin/python bench/quality.py --smoke                  # 1 seed, 1 epoch, digits (tests/test_bench_smoke.py)
    .venv/bin/python bench/quality.py --api http://host:8000   # an already running service

Without --api it starts its own embedded service as scripts/demo.sh does (alembic upgrade,
uvicorn, one Celery worker; SQLite and the filesystem broker under a fresh DISTILL_HOME in a
temporary folder, the API on a free port, `DISTILL_AUTH=off`) and stops it at the end. The
service's processes import this file's own tree (PYTHONPATH), so a snapshot of the repository
benches that snapshot. Every HTTP call goes through `api_client`, which sends
`Authorization: Bearer $DISTILL_API_KEY` when that variable is set.

Every configuration is one job whose `seeds` are the bench's seeds: the job's report already
gives mean and standard deviation over them (and the paired scratch baseline when asked).
Numbers are TEST accuracy; every choice of hyper-parameter was made on VALIDATION accuracy
(`--tune`: the sweep tables of the results file), never on test. Every row states the values
it uses.
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
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable  # the service runs under the bench's interpreter (the project's venv)

# Published figures beside which ours are printed.
GREYDANUS = "Greydanus 2020 (MNIST-1D): logistic 32%, MLP 68%, CNN 94%"
HINTON_3PCT = "Hinton 2015 (speech, 3% of the data): soft targets 57.0% vs hard labels 44.5% (full data 58.9%)"

# The hyper-parameters the rows use, chosen on VALIDATION accuracy by the `--tune` sweeps
# (bench/results/quality.md, "Tuning"); each can be overridden on the command line.
CHOSEN = {
    "kd_temperature": 8.0,  # KD (and the KD term of fitnet, adversarial, TA, born-again); was 4
    "kd_alpha": 0.5,  # was 0.9
    "dkd_beta": 0.5,  # DKD alpha = 1, T = 4, warm-up 5 (the paper's); was beta 8
    "at_beta": 10.0,  # attention transfer, CE + AT only; the paper's 1000 is far worse here
}

# The sweeps of --tune (validation decides; the test column is printed, never used).
SWEEP_KD = [(T, a) for T in (2.0, 4.0, 8.0) for a in (0.5, 0.9)] + [(16.0, 0.5)]  # 16: T=8 won at the edge
SWEEP_DKD = [0.0, 0.25, 0.5, 1.0, 2.0, 8.0]  # {1, 2, 8} first; 1, then 0.5, won at the low edge
SWEEP_AT = [1.0, 10.0]  # 10, 100, 1000 were swept at 20 epochs first (results file)


def api_client(base_url: str, timeout: float = 30) -> httpx.Client:
    """The one place the bench makes HTTP clients: adds the API key when there is one."""
    headers = {}
    key = os.environ.get("DISTILL_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(base_url=base_url, timeout=timeout, headers=headers)


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
        path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
        self.env = {
            **os.environ,
            "DISTILL_HOME": str(home),
            "DISTILL_AUTH": "off",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *path]),
        }
        if data_cache is not None:
            self.env["DISTILL_DATA_CACHE_DIR"] = str(data_cache)
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> EmbeddedService:
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [PYTHON, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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
            log = open(self.home / f"{name}.log", "wb")
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log))
        deadline = time.monotonic() + 120
        with api_client(self.url, timeout=2) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
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


def budgets(profile: str) -> dict:
    """Epochs and sizes of a profile. `quick` is what fits a loaded 2-core CPU."""
    if profile == "smoke":
        return {
            "teacher_epochs": 1,
            "teacher_patience": 10,
            "student_epochs": 1,
            "small_batch": 16,
            "small_epochs": 1,
            "transfer": 200,
        }
    if profile == "quick":
        return {
            "teacher_epochs": 15,
            "teacher_patience": 6,
            "student_epochs": 100,
            "small_batch": 16,
            "small_epochs": 200,
            "transfer": 5_000,
        }
    return {
        "teacher_epochs": 40,
        "teacher_patience": 10,
        "student_epochs": 200,
        "small_batch": 16,
        "small_epochs": 400,
        "transfer": 20_000,
    }


def configurations(profile: str, seeds: list[int], hp: dict | None = None) -> list[dict]:
    """Each: {"row": label, "paper": published figure or "", "spec": job spec,
    "read": which part of the report is the row ("student", "baseline", "teacher"),
    "budget": "default" when the row trains on the profile's student budget}."""
    hp = {**CHOSEN, **(hp or {})}
    smoke = profile == "smoke"
    b = budgets(profile)
    teacher = {
        "train": {
            "arch": {"name": "cnn", "channels": [32, 32, 32], "hidden": 64},
            "epochs": b["teacher_epochs"],
            "patience": b["teacher_patience"],
            "lr": 0.01,
        }
    }
    mlp = {"name": "mlp", "hidden": [64, 64]}
    training = {"epochs": b["student_epochs"], "lr": 0.01}
    T, alpha = hp["kd_temperature"], hp["kd_alpha"]
    kd_terms = {"temperature": T, "alpha": alpha}
    kd = {"name": "kd", **kd_terms}
    kdl = f"T={T:g}, alpha={alpha:g}"

    def job(name, method, *, student=None, baseline=False, dataset=None, teacher_=None, training_=None):
        return {
            "name": name,
            "dataset": dataset or {"name": "mnist1d"},
            "teacher": teacher_ or teacher,
            "student": {"arch": student or mlp},
            "method": method,
            "training": copy.deepcopy(training_ or training),
            "seeds": seeds,
            "baseline": baseline,
            "export": {"formats": ["safetensors"]},
        }

    # A job that trains no student from its teacher (method ce) still trains one; a one-epoch
    # logistic regression keeps that cheap. The teacher row is read from the KD job.
    unused_teacher = {"train": {"arch": {"name": "mlp", "hidden": []}, "epochs": 1, "lr": 0.01}}
    digits_teacher = {
        "train": {
            "arch": {"name": "cnn", "channels": [16, 32], "hidden": 64},
            "epochs": b["teacher_epochs"],
            "patience": 10,
            "lr": 0.01,
        }
    }
    tiny = {"name": "mlp", "hidden": [32]}  # 64*32+32 + 32*10+10 = 2410 parameters
    rows = (
        []
        if smoke
        else [
            (
                "mnist1d: CNN teacher [32,32,32] + dense 64 (ours)",
                "CNN 94%",
                "teacher",
                job(f"mnist1d kd {kdl}", kd, baseline=True),
            ),
            ("mnist1d: MLP 64-64 from scratch", "MLP 68%", "baseline", "same"),
            (f"mnist1d: MLP 64-64, KD ({kdl})", "", "student", "same"),
        ]
    )
    rows += [
        (
            f"digits: tiny MLP [32] (2410 params), KD ({kdl})",
            "",
            "student",
            job(
                f"digits tiny kd {kdl}",
                kd,
                student=tiny,
                baseline=True,
                dataset={"name": "digits"},
                teacher_=digits_teacher,
            ),
        ),
        ("digits: tiny MLP [32] from scratch", "", "baseline", "same"),
    ]
    if not smoke:
        small_cnn = {"name": "cnn", "channels": [8, 8], "hidden": 0}
        at_beta = hp["at_beta"]
        dkd_beta = hp["dkd_beta"]
        transfer = b["transfer"]
        few = {"epochs": b["small_epochs"], "lr": 0.01, "batch_size": b["small_batch"]}
        rows += [
            (
                "mnist1d: logistic regression from scratch",
                "logistic 32%",
                "student",
                job("mnist1d logistic", {"name": "ce"}, student={"name": "mlp", "hidden": []}, teacher_=unused_teacher),
            ),
            (
                "mnist1d: MLP 100-100 from scratch (the published MLP's width)",
                "MLP 68%",
                "student",
                job(
                    "mnist1d mlp100",
                    {"name": "ce"},
                    student={"name": "mlp", "hidden": [100, 100]},
                    teacher_=unused_teacher,
                ),
            ),
            (
                f"mnist1d: MLP 64-64, DKD (alpha=1, beta={dkd_beta:g}, T=4, warm-up 5)",
                "",
                "student",
                job(
                    f"mnist1d dkd beta={dkd_beta:g}",
                    {"name": "dkd", "alpha": 1.0, "beta": dkd_beta, "temperature": 4.0},
                ),
            ),
            (
                f"mnist1d: MLP 64-64, FitNets hint dense->hidden1 (weight 1) + KD ({kdl})",
                "",
                "student",
                job(
                    f"mnist1d fitnet {kdl}",
                    {
                        "name": "fitnet",
                        "teacher_stage": "dense",
                        "student_stage": "hidden1",
                        "hint_weight": 1.0,
                        **kd_terms,
                    },
                ),
            ),
            (
                f"mnist1d: MLP 64-64, adversarial KD (adv_weight 0.1, {kdl})",
                "",
                "student",
                job(f"mnist1d adversarial {kdl}", {"name": "adversarial", "adv_weight": 0.1, **kd_terms}),
            ),
            (
                "mnist1d: MLP 64-64, pseudo-labels (teacher argmax, CE)",
                "",
                "student",
                job("mnist1d pseudo", {"name": "pseudo_label"}),
            ),
            (
                f"mnist1d: MLP 64-64, teacher-assistant (MLP 256-256; {kdl})",
                "",
                "student",
                job(
                    f"mnist1d ta {kdl}",
                    {"name": "teacher_assistant", **kd_terms, "assistants": [{"name": "mlp", "hidden": [256, 256]}]},
                ),
            ),
            (
                f"mnist1d: MLP 64-64, born-again (2 generations, teacher = MLP 64-64; {kdl})",
                "",
                "student",
                job(
                    f"mnist1d born-again {kdl}",
                    {"name": "born_again", "generations": 2, **kd_terms},
                    teacher_={"train": {**teacher["train"], "arch": mlp}},
                ),
            ),
            (
                f"mnist1d: small CNN [8,8] (1074 params), attention transfer (beta={at_beta:g}, CE + AT)",
                "",
                "student",
                job(
                    f"mnist1d attention beta={at_beta:g}",
                    {"name": "attention", "beta": at_beta, "alpha": 0.0},
                    student=small_cnn,
                ),
            ),
            (
                "mnist1d: small CNN [8,8] from scratch",
                "",
                "student",
                job("mnist1d small cnn", {"name": "ce"}, student=small_cnn, teacher_=unused_teacher),
            ),
            (
                f"Hinton (1): MLP 64-64 from the teacher alone (alpha=1, T={T:g}), training inputs only",
                "",
                "student",
                job(f"mnist1d teacher-only T={T:g}", {"name": "kd", "temperature": T, "alpha": 1.0}),
            ),
            (
                f"Hinton (1): MLP 64-64 from the teacher alone (alpha=1, T={T:g}), + transfer set of "
                f"{transfer} unlabeled inputs",
                "",
                "student",
                job(
                    f"mnist1d teacher-only transfer={transfer} T={T:g}",
                    {"name": "kd", "temperature": T, "alpha": 1.0},
                    dataset={"name": "mnist1d", "transfer": {"extra_generated": transfer}},
                ),
            ),
            (
                f"Hinton (1): MLP 64-64, KD ({kdl}) + transfer set of {transfer} unlabeled inputs "
                "(teacher alone there)",
                "",
                "student",
                job(
                    f"mnist1d kd transfer={transfer} {kdl}",
                    kd,
                    dataset={"name": "mnist1d", "transfer": {"extra_generated": transfer}},
                ),
            ),
            (
                f"Hinton (2): MLP 64-64 on 3% of the training set, soft targets (KD {kdl}; batch "
                f"{few['batch_size']}, {few['epochs']} epochs)",
                "soft 57.0% (speech)",
                "student",
                job(
                    f"mnist1d 3% kd {kdl}",
                    kd,
                    baseline=True,
                    training_=few,
                    dataset={"name": "mnist1d", "train_fraction": 0.03},
                ),
            ),
            (
                f"Hinton (2): MLP 64-64 on 3% of the training set, hard labels (batch {few['batch_size']}, "
                f"{few['epochs']} epochs)",
                "hard 44.5% (speech)",
                "baseline",
                "same",
            ),
            (
                f"Hinton (2) at 10% (360 examples): MLP 64-64, soft targets (KD {kdl}; batch "
                f"{few['batch_size']}, {few['epochs']} epochs)",
                "",
                "student",
                job(
                    f"mnist1d 10% kd {kdl}",
                    kd,
                    baseline=True,
                    training_=few,
                    dataset={"name": "mnist1d", "train_fraction": 0.1},
                ),
            ),
            (
                f"Hinton (2) at 10% (360 examples): MLP 64-64, hard labels (batch {few['batch_size']}, "
                f"{few['epochs']} epochs)",
                "",
                "baseline",
                "same",
            ),
        ]
    out, last = [], None
    for label, paper, read, spec in rows:
        if spec == "same":
            spec = last
        last = spec
        budget = (
            "default"
            if spec["training"]["epochs"] == b["student_epochs"] and "batch_size" not in spec["training"]
            else "own"
        )
        out.append({"row": label, "paper": paper, "read": read, "spec": spec, "budget": budget})
    return out


def tuning_configurations(seeds: list[int], profile: str) -> list[dict]:
    """Validation sweeps (the `val` column decides): KD T x alpha, DKD beta, attention beta.
    Each row has a `group` (one sweep table per group) and the `setting` it tries."""
    base_cfgs = configurations(profile, seeds)
    base = next(c["spec"] for c in base_cfgs if c["row"].startswith("mnist1d: MLP 64-64, KD"))
    at = next(c["spec"] for c in base_cfgs if "attention transfer" in c["row"])
    rows = []

    def add(group, setting, spec, method):
        s = copy.deepcopy(spec)
        s.update(name=f"tune {group} {setting}", baseline=False, method=method)
        rows.append(
            {
                "row": f"tune: {group} {setting}",
                "paper": "",
                "read": "student",
                "spec": s,
                "budget": "default",
                "group": group,
                "setting": setting,
            }
        )

    for T, a in SWEEP_KD:
        add("KD", f"T={T:g} alpha={a:g}", base, {"name": "kd", "temperature": T, "alpha": a})
    for beta in SWEEP_DKD:
        add(
            "DKD",
            f"beta={beta:g} (alpha=1, T=4)",
            base,
            {"name": "dkd", "alpha": 1.0, "beta": beta, "temperature": 4.0},
        )
    for beta in SWEEP_AT:
        add(
            "attention",
            f"beta={beta:g} (CE + AT, small CNN [8,8])",
            at,
            {"name": "attention", "beta": beta, "alpha": 0.0},
        )
    return rows


# --- running ---------------------------------------------------------------------


def run_all(api: str, configs: list[dict], poll: float, log=print, on_done=None) -> dict[str, dict]:
    """Submit each distinct spec once, wait for all; returns spec name -> job.
    `on_done(jobs so far)` after each job ends (the results file is rewritten as they come)."""
    ids: dict[str, str] = {}
    done: dict[str, dict] = {}
    with api_client(api) as client:
        # The worker takes jobs in submission order: the experiments first, so that
        # a run cut short still has them.
        for c in sorted(configs, key=_priority):
            name = c["spec"]["name"]
            if name in ids:
                continue
            r = client.post("/v1/jobs", json=c["spec"])
            if r.status_code != 202:
                raise RuntimeError(f"{name}: refused {r.status_code}: {r.text}")
            ids[name] = r.json()["id"]
            log(f"submitted {name}: {ids[name]}")
        while len(done) < len(ids):
            for name, job_id in ids.items():
                if name in done:
                    continue
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    done[name] = job
                    log(f"{name}: {job['status']} {job.get('error') or ''} ({_job_minutes(job)} min)")
                    if on_done is not None:
                        on_done(done)
            if len(done) < len(ids):
                time.sleep(poll)
    return done


PRIORITY = (
    "mnist1d: CNN teacher",
    "Hinton (1)",
    "Hinton (2): MLP 64-64 on 3% of the training set, soft targets (KD",
    "mnist1d: small CNN",
    "digits",
    "mnist1d: logistic",
    "mnist1d: MLP 64-64, DKD",
    "mnist1d: MLP 64-64, FitNets",
    "mnist1d: MLP 64-64, pseudo",
    "mnist1d: MLP 64-64, adversarial",
    "mnist1d: MLP 64-64, teacher-assistant",
    "mnist1d: MLP 64-64, born-again",
)


def _priority(c: dict) -> int:
    for rank, key in enumerate(PRIORITY):
        if c["row"].startswith(key):
            return rank
    return len(PRIORITY) + (1 if "group" in c else 0)


def _job_minutes(job: dict) -> str:
    try:
        start = datetime.fromisoformat(job["started_at"])
        end = datetime.fromisoformat(job["finished_at"])
    except (KeyError, TypeError, ValueError):
        return "?"
    return f"{(end - start).total_seconds() / 60:.1f}"


def _fmt(mean, std) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def row_values(c: dict, job: dict | None) -> dict:
    if job is None:
        return {"test": "not run", "val": "", "params": "", "n": 0, "val_mean": None, "test_mean": None}
    if job["status"] != "succeeded":
        return {
            "test": f"{job['status']}: {job.get('error')}",
            "val": "",
            "params": "",
            "n": 0,
            "val_mean": None,
            "test_mean": None,
        }
    rep = job["result"]
    if c["read"] == "teacher":
        t = rep["teacher"]
        return {
            "test": _fmt(t["test_accuracy"], None),
            "val": _fmt(t["val_accuracy"], None),
            "params": t["parameters"],
            "n": 1,
            "val_mean": t["val_accuracy"],
            "test_mean": t["test_accuracy"],
        }
    part = rep[c["read"]]
    mean, std = part["mean"], part.get("std") or {}
    return {
        "test": _fmt(mean["test_accuracy"], std.get("test_accuracy")),
        "val": _fmt(mean["val_accuracy"], std.get("val_accuracy")),
        "params": part["runs"][0]["parameters"],
        "n": len(part["runs"]),
        "val_mean": mean["val_accuracy"],
        "test_mean": mean["test_accuracy"],
        "runs": [
            {k: r.get(k) for k in ("seed", "val_accuracy", "test_accuracy", "best_epoch", "epochs_run")}
            for r in part["runs"]
        ],
    }


def _command(args) -> str:
    parts = [f"bench/quality.py --profile {args.profile}"]
    if args.tune_only:
        parts.append("--tune-only")
    elif args.tune:
        parts.append("--tune")
    if args.student_epochs:
        parts.append(f"--student-epochs {args.student_epochs}")
    for key in CHOSEN:
        if getattr(args, key) != CHOSEN[key]:
            parts.append(f"--{key.replace('_', '-')} {getattr(args, key):g}")
    if args.only:
        parts.append(f'--only "{args.only}"')
    if args.skip:
        parts.append(f'--skip "{args.skip}"')
    return " ".join(parts)


def write_results(
    path: Path, configs: list[dict], jobs: dict[str, dict], args, elapsed: float, unfinished: str = ""
) -> None:
    b = budgets(args.profile)
    s_epochs = args.student_epochs or b["student_epochs"]
    lines = [
        "# Quality bench",
        "",
        f"Generated by `{_command(args)}` ({len(args.seeds)} seed(s): {args.seeds}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed / 60:.1f} min. Every row is a real "
        "job submitted through the HTTP API to an embedded service (API + one Celery worker, CPU).",
        "",
        f"Budgets: teacher at most {b['teacher_epochs']} epochs (patience {b['teacher_patience']}); students "
        f"and scratch baselines {s_epochs} epochs, AdamW lr 0.01 cosine, batch 128, the weights of the best "
        "validation epoch kept, unless the row says otherwise.",
        "",
        "Test accuracy in %, mean ± std over seeds (the job's own aggregate); `val` is the "
        "validation accuracy (10% of the training set) used for every choice. Published: "
        + GREYDANUS
        + "; "
        + HINTON_3PCT
        + ".",
        "",
        "| configuration | test % | val % | params | seeds | job min | published |",
        "|---|---|---|---|---|---|---|",
    ]
    raw = []
    for c in configs:
        if "group" in c:
            continue
        job = jobs.get(c["spec"]["name"])
        v = row_values(c, job)
        minutes = _job_minutes(job) if job else ""
        lines.append(f"| {c['row']} | {v['test']} | {v['val']} | {v['params']} | {v['n']} | {minutes} | {c['paper']} |")
        raw.append(
            {"row": c["row"], "job": c["spec"]["name"], **{k: v.get(k) for k in ("val_mean", "test_mean", "runs")}}
        )
    groups: dict[str, list[dict]] = {}
    for c in configs:
        if "group" in c:
            groups.setdefault(c["group"], []).append(c)
    if groups:
        lines += [
            "",
            "## Tuning sweeps (chosen on validation)",
            "",
            "The setting with the best mean validation accuracy is in bold; test is printed "
            "beside it and was not used.",
            "",
        ]
        for group, cs in groups.items():
            vals = [(c, row_values(c, jobs.get(c["spec"]["name"]))) for c in cs]
            scored = [(v["val_mean"], i) for i, (_, v) in enumerate(vals) if v["val_mean"] is not None]
            best = max(scored)[1] if scored else None
            lines += [f"| {group} | val % | test % | job min |", "|---|---|---|---|"]
            for i, (c, v) in enumerate(vals):
                job = jobs.get(c["spec"]["name"])
                mark = (lambda s: f"**{s}**") if i == best else (lambda s: s)
                lines.append(
                    f"| {mark(c['setting'])} | {mark(v['val'])} | {v['test']} | {_job_minutes(job) if job else ''} |"
                )
                raw.append(
                    {
                        "row": c["row"],
                        "job": c["spec"]["name"],
                        **{k: v.get(k) for k in ("val_mean", "test_mean", "runs")},
                    }
                )
            lines.append("")
    if unfinished:
        lines += ["", "## Not finished", "", unfinished, ""]
    lines += [
        "",
        "## Tuning",
        "",
        "Every choice is made on the VALIDATION split, never on test. The table's rows use: KD "
        f"T={args.kd_temperature:g} alpha={args.kd_alpha:g} (also the KD term of FitNets, adversarial, "
        f"teacher-assistant, born-again); DKD beta={args.dkd_beta:g}; attention beta={args.at_beta:g}.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", help="URL of a running service; default: start an embedded one")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    p.add_argument("--profile", choices=("full", "quick", "smoke"), default="full")
    p.add_argument("--smoke", action="store_true", help="= --profile smoke --seeds 1")
    p.add_argument("--tune", action="store_true", help="also run the validation sweeps")
    p.add_argument("--tune-only", action="store_true", help="run the validation sweeps alone")
    p.add_argument("--only", help="substrings separated by '|': run only the rows whose label contains one")
    p.add_argument("--skip", help="substrings separated by '|': leave out the rows whose label contains one")
    p.add_argument(
        "--student-epochs",
        type=int,
        help="override the profile's student epoch budget (rows with a budget of their own keep it)",
    )
    for key, value in CHOSEN.items():
        p.add_argument(
            f"--{key.replace('_', '-')}", type=float, default=value, help=f"default {value:g} (chosen on validation)"
        )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "quality.md",
        help="the results (markdown); the per-seed figures go beside it as .json",
    )
    p.add_argument("--home", type=Path, help="DISTILL_HOME of the embedded service (default: a temp folder)")
    p.add_argument("--data-cache", type=Path, default=ROOT / "var" / "bench-data")
    p.add_argument("--poll", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.smoke:
        args.profile, args.seeds = "smoke", 1
    args.tune = args.tune or args.tune_only
    # SIGTERM -> SystemExit, so the embedded service is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.seeds = list(range(args.seeds))
    hp = {key: getattr(args, key) for key in CHOSEN}
    configs = [] if args.tune_only else configurations(args.profile, args.seeds, hp)
    if args.tune:
        configs += tuning_configurations(args.seeds, args.profile)
    if args.student_epochs:
        for c in configs:
            if c["budget"] == "default":
                c["spec"]["training"]["epochs"] = args.student_epochs
    if args.only:
        configs = [c for c in configs if any(o in c["row"] for o in args.only.split("|"))]
    if args.skip:
        configs = [c for c in configs if not any(o in c["row"] for o in args.skip.split("|"))]
    start = time.monotonic()

    def partial(done: dict) -> None:
        left = [c["row"] for c in configs if c["spec"]["name"] not in done]
        write_results(
            args.out,
            configs,
            done,
            args,
            time.monotonic() - start,
            unfinished=("Still running or queued when this was written: " + "; ".join(left)) if left else "",
        )

    if args.api:
        jobs = run_all(args.api, configs, args.poll, on_done=partial)
    else:
        home = args.home or Path(tempfile.mkdtemp(prefix="distill-bench-"))
        with EmbeddedService(home, args.data_cache) as svc:
            print(f"embedded service on {svc.url}, DISTILL_HOME={home}, PYTHONPATH={svc.env['PYTHONPATH']}", flush=True)
            jobs = run_all(svc.url, configs, args.poll, log=lambda m: print(m, flush=True), on_done=partial)
    write_results(args.out, configs, jobs, args, time.monotonic() - start)
    print(args.out.read_text())
    return 0 if all(j["status"] == "succeeded" for j in jobs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
