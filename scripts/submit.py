"""Submit a job spec to a distill API, watch it, print the result table, download the files.

    python scripts/submit.py examples/mnist1d-kd.json --api http://127.0.0.1:8000 --wait

Only HTTP: this is what any client of the service does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}
COLUMNS = [  # (report key, header, format)
    ("test_accuracy", "test acc", "{:.4f}"),
    ("train_accuracy", "train acc", "{:.4f}"),
    ("generalization_gap", "gap", "{:+.4f}"),
    ("test_agreement", "agree", "{:.4f}"),
    ("test_ece", "ECE", "{:.4f}"),
    ("test_nll", "NLL", "{:.4f}"),
    ("parameters", "params", "{:,.0f}"),
    ("bytes", "bytes", "{:,.0f}"),
    ("latency_ms", "latency ms", "{:.3f}"),
]


def _cell(mean: dict, std: dict | None, key: str, fmt: str) -> str:
    value = mean.get(key)
    if value is None:
        return "-"
    text = fmt.format(value)
    spread = (std or {}).get(key)
    if spread is not None and key not in {"parameters", "bytes"}:
        text += " ± " + fmt.format(spread).lstrip("+")
    return text


def result_table(report: dict) -> str:
    rows = [("teacher", report["teacher"], None)]
    seeds = len(report["student"]["runs"])
    rows.append((f"student ({report['method']['name']}, {seeds} seeds)",
                 report["student"]["mean"], report["student"]["std"]))
    if report.get("baseline"):
        rows.append((f"baseline (scratch, {seeds} seeds)",
                     report["baseline"]["mean"], report["baseline"]["std"]))
    table = [["model"] + [h for _, h, _ in COLUMNS]]
    table += [[name] + [_cell(m, s, k, f) for k, _, f in COLUMNS] for name, m, s in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    summary = report.get("summary") or {}
    lines.append("")
    lines += [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()]
    exported = report.get("exported") or {}
    if exported:
        lines.append(f"exported student: seed {exported.get('seed')} (selected by "
                     f"{exported.get('selected_by')}), test accuracy {exported.get('test_accuracy'):.4f}")
    return "\n".join(lines)


def watch(api: httpx.Client, job_id: str, poll: float) -> dict:
    last_event = None
    while True:
        job = api.get(f"/v1/jobs/{job_id}").json()
        params = {"after": last_event} if last_event is not None else {}
        for event in api.get(f"/v1/jobs/{job_id}/events", params=params).json():
            last_event = event["id"]
            print(f"  [{event['phase'] or '-':>12}] {event['message']}")
        if job["status"] in TERMINAL:
            return job
        eta = f", ETA {job['eta_seconds']:.0f}s" if job.get("eta_seconds") is not None else ""
        metrics = job.get("latest_metrics") or {}
        val = metrics.get("values", {}).get("val_accuracy")
        detail = f", {metrics['phase']} {metrics['run']} epoch {metrics['epoch']} val acc {val:.3f}" if val is not None else ""
        print(f"{job['status']} {job['phase'] or ''} {100 * job['progress']:.0f}%{eta}{detail}", flush=True)
        time.sleep(poll)


def wait_until_ready(api: httpx.Client, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if api.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the API at {api.base_url} was not ready within {seconds:.0f}s")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--wait", action="store_true", help="poll until the job ends")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--download", type=Path, help="folder for the student and report")
    parser.add_argument("--ready-timeout", type=float, default=60,
                        help="seconds to wait for the API's /readyz first")
    parser.add_argument("--key-file", type=Path, default=Path(os.environ.get("DISTILL_HOME", "var")) / "api-key",
                        help="file holding the API key when DISTILL_API_KEY is not set (default: the "
                        "key the embedded service created on first start, $DISTILL_HOME/api-key)")
    args = parser.parse_args()

    api = httpx.Client(base_url=args.api, timeout=30)
    wait_until_ready(api, args.ready_timeout)
    key = os.environ.get("DISTILL_API_KEY") or (args.key_file.read_text().strip() if args.key_file.is_file() else "")
    if key:
        api.headers["Authorization"] = f"Bearer {key}"
    r = api.post("/v1/jobs", json=json.loads(args.spec.read_text()))
    if r.status_code != 202:
        print(json.dumps(r.json(), indent=2), file=sys.stderr)
        return 1
    job = r.json()
    print(f"submitted job {job['id']} ({r.headers['location']})")
    if not args.wait:
        return 0
    job = watch(api, job["id"], args.poll)
    if job["status"] != "succeeded":
        print(f"job {job['status']}: {job.get('error') or ''}", file=sys.stderr)
        return 1
    print()
    print(result_table(job["result"]))
    if args.download:
        args.download.mkdir(parents=True, exist_ok=True)
        for artifact in api.get(f"/v1/jobs/{job['id']}/artifacts").json():
            target = args.download / artifact["filename"]
            target.write_bytes(api.get(artifact["content_url"]).content)
            print(f"downloaded {target} ({artifact['size_bytes']:,} bytes, sha256 {artifact['sha256'][:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
