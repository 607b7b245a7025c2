"""Fashion-MNIST quality bench: real jobs through the HTTP API, beside the dataset's published
figures, written to bench/results/quality-fashion.md (+ .json).

    .venv/bin/python bench/quality_fashion.py --profile quick   # 2 CPU cores: hours (see below), 3 seeds
    .venv/bin/python bench/quality_fashion.py --profile full    # a GPU worker (training.device auto)
    .venv/bin/python bench/quality_fashion.py --profile smoke --seeds 1   # one epoch each, to see it run

Same machinery as bench/quality.py (its embedded service, its job runner): every configuration
is one job over the bench's seeds, the scratch baseline beside every distilled row (the same
job's paired baseline), test accuracy of the seed chosen on VALIDATION, mean ± std over seeds.
Published figures: the dataset's own benchmark table, shipped in the Debian package's README
(dataset-fashion-mnist): MLP 256-128-100 88.33%, two conv + pooling 91.6%, ResNet-18 94.9%,
WRN-28-10 95.9%, human 83.5%.

Cost on 2 CPU cores, measured (bench/results/quality-fashion.md): ResNet-18 0.4 s per training
step of 128 at 28x28, timm MobileNetV3-small 0.44 s (idle machine); one teacher is trained for
the four jobs (the later ones read its cached logits). `quick` (teacher 2 epochs, students and
baselines 3 epochs on a stratified quarter of the training set) took 105.7 min on a machine
loaded by other work, about 35-40 min idle; `full` (teacher 40, students 60 epochs, all the
data, pad-crop + flip) is for a GPU and has not been run.
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import EmbeddedService, _job_minutes, row_values, run_all  # noqa: E402

PUBLISHED = {
    "mlp": "MLP 256-128-100 88.33%",
    "cnn": "2 conv + pooling 91.6%",
    "resnet": "ResNet-18 94.9%",
    "human": "human 83.5%",
    "wrn": "WRN-28-10 95.9%",
}
KD = {"name": "kd", "temperature": 4.0, "alpha": 0.9}


def budgets(profile: str) -> dict:
    """Epochs of a profile. quick: what two CPU cores do in a couple of hours; full: a GPU's."""
    if profile == "smoke":
        return {"teacher_epochs": 1, "student_epochs": 1, "train_fraction": 0.05, "augment": None}
    if profile == "quick":
        return {"teacher_epochs": 2, "student_epochs": 3, "train_fraction": 0.25, "augment": None}
    return {
        "teacher_epochs": 40,
        "student_epochs": 60,
        "train_fraction": 1.0,
        "augment": {"crop": "pad", "crop_padding": 2, "flip": True},
    }


def configurations(profile: str, seeds: list[int]) -> list[dict]:
    b = budgets(profile)
    training = {
        "epochs": b["student_epochs"],
        "batch_size": 128,
        "lr": 0.003,
        **({"augment": b["augment"]} if b["augment"] else {}),
    }
    teacher = {
        "train": {
            "arch": {"name": "timm", "model": "resnet18"},
            "epochs": b["teacher_epochs"],
            "patience": 10,
            "batch_size": 128,
            "lr": 0.003,
            **({"weight_decay": 0.05} if profile == "full" else {}),
        }
    }
    mlp = {"name": "mlp", "hidden": [256, 128, 100]}
    small_cnn = {"name": "cnn", "channels": [32, 64], "hidden": 128}
    mobile = {"name": "timm", "model": "mobilenetv3_small_100"}

    def job(name, student, method, *, baseline=True):
        dataset = {
            "name": "fashion_mnist",
            **({"train_fraction": b["train_fraction"]} if b["train_fraction"] < 1 else {}),
        }
        return {
            "name": f"fashion {name}",
            "dataset": dataset,
            "teacher": copy.deepcopy(teacher),
            "student": {"arch": student},
            "method": method,
            "training": copy.deepcopy(training),
            "seeds": seeds,
            "baseline": baseline,
            "export": {"formats": ["onnx"]},
        }

    kd_mlp = job("mlp kd", mlp, KD)
    kd_cnn = job("cnn kd", small_cnn, KD)
    kd_mobile = job("mobilenetv3 kd", mobile, KD)
    fit_mobile = job(
        "mobilenetv3 fitnet",
        mobile,
        {**KD, "name": "fitnet", "teacher_stage": "layer3", "student_stage": "blocks.3"},
        baseline=False,
    )
    rows = [
        ("ResNet-18 teacher (timm, 1 input channel, 28x28)", PUBLISHED["resnet"], "teacher", kd_mlp),
        ("MLP 256-128-100 from scratch", PUBLISHED["mlp"], "baseline", kd_mlp),
        ("MLP 256-128-100, KD (T=4, alpha=0.9)", PUBLISHED["mlp"], "student", kd_mlp),
        ("small CNN [32,64] + dense 128 from scratch", PUBLISHED["cnn"], "baseline", kd_cnn),
        ("small CNN [32,64] + dense 128, KD (T=4, alpha=0.9)", PUBLISHED["cnn"], "student", kd_cnn),
        ("timm mobilenetv3_small_100 from scratch", "", "baseline", kd_mobile),
        ("timm mobilenetv3_small_100, KD (T=4, alpha=0.9)", "", "student", kd_mobile),
        ("timm mobilenetv3_small_100, FitNets layer3 -> blocks.3 + KD", "", "student", fit_mobile),
    ]
    return [{"row": r, "paper": p, "read": read, "spec": spec, "budget": "default"} for r, p, read, spec in rows]


def write_results(path: Path, configs: list[dict], jobs: dict, args, elapsed: float) -> None:
    b = budgets(args.profile)
    lines = [
        "# Fashion-MNIST quality bench",
        "",
        f"`bench/quality_fashion.py --profile {args.profile} --seeds {len(args.seeds)}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed / 60:.1f} min. Teacher at most "
        f"{b['teacher_epochs']} epochs (all the training set); students and baselines {b['student_epochs']} "
        f"epochs on {b['train_fraction']:g} of it (stratified), AdamW lr 0.003 "
        f"cosine, batch 128; augmentation {b['augment'] or 'none'}. Test accuracy in %, mean ± std over "
        "seeds; the exported seed is chosen on validation.",
        "",
        "| configuration | test % | val % | params | seeds | job min | published |",
        "|---|---|---|---|---|---|---|",
    ]
    raw = []
    for c in configs:
        job = jobs.get(c["spec"]["name"])
        v = row_values(c, job)
        lines.append(
            f"| {c['row']} | {v['test']} | {v['val']} | {v['params']} | {v['n']} | "
            f"{_job_minutes(job) if job else ''} | {c['paper']} |"
        )
        raw.append(
            {"row": c["row"], "job": c["spec"]["name"], **{k: v.get(k) for k in ("val_mean", "test_mean", "runs")}}
        )
    lines += ["", "Published (the dataset's README): " + "; ".join(PUBLISHED.values()) + "."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", help="URL of a running service; default: start an embedded one")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--profile", choices=("quick", "full", "smoke"), default="quick")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality-fashion.md")
    p.add_argument("--data-cache", type=Path, default=ROOT / "var" / "bench-data")
    p.add_argument("--poll", type=float, default=5.0)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.seeds = list(range(args.seeds))
    configs = configurations(args.profile, args.seeds)
    unique = list({c["spec"]["name"]: c for c in configs}.values())
    start = time.monotonic()
    if args.api:
        jobs = run_all(args.api, unique, args.poll)
    else:
        with EmbeddedService(Path(tempfile.mkdtemp(prefix="distill-fashion-")), args.data_cache) as svc:
            jobs = run_all(svc.url, unique, args.poll, log=lambda m: print(m, flush=True))
    write_results(args.out, configs, jobs, args, time.monotonic() - start)
    print(args.out.read_text())
    return 0 if all(j["status"] == "succeeded" for j in jobs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
