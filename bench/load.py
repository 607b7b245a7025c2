"""Load on the read routes: req/s, p50/p99 and errors at several connection counts, and
how long /healthz takes while (and right after) each load runs.

    PYTHONPATH=$PWD .venv/bin/python bench/load.py --code DIR --label after \
        [--connections 8,64,256] [--seconds 5] [--metric-rows 300000] [--workers 2]

`--code DIR` is the checkout whose API is measured (e.g. an export of main for "before"),
run as `uvicorn app.main:app` over a fresh PostgreSQL database migrated with that
checkout's migrations. The load generator is a small asyncio HTTP/1.1 keep-alive client
(no dependency): every connection sends its next request as soon as the answer arrived.
A request unanswered after --timeout seconds counts as an error (a jam). Each row also gives
the API processes' CPU time per request (from /proc): on a shared machine, where req/s and
latencies move with everything else running, the figure that holds still."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROUTES = ("healthz", "job", "list", "events", "metrics", "prometheus")
SEED_LAST_EPOCH = """
from app.db import get_sessionmaker
from app.jobs import add_metrics
with get_sessionmaker()() as s:
    add_metrics(s, "{job}", "student", "seed0", {epoch}, {{"val_accuracy": 0.9, "loss": 0.1}})
    s.commit()
"""


def _paths(job_id: str) -> dict[str, str]:
    return {
        "healthz": "/healthz",
        "job": f"/v1/jobs/{job_id}",
        "list": "/v1/jobs?limit=20",
        "events": f"/v1/jobs/{job_id}/events",
        "metrics": f"/v1/jobs/{job_id}/metrics?name=loss",
        "prometheus": "/metrics",
    }


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        (int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length"), 0
    )
    await reader.readexactly(length)
    return status


class Load:
    """Connections that each send the same GET back to back until the end time."""

    def __init__(self, port: int, path: str, headers: str, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
        self.latencies: list[float] = []
        self.errors = 0

    async def connection(self, until: float) -> None:
        reader = writer = None
        while time.monotonic() < until:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                start = time.monotonic()
                writer.write(self.request)
                status = await asyncio.wait_for(_read_response(reader), self.timeout)
                self.latencies.append(time.monotonic() - start)
                if status >= 400:
                    self.errors += 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                self.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()


async def probe_healthz(port: int, until: float, worst: list[float], connects: list[float] | None = None) -> None:
    """One fresh connection per probe, every 0.2 s: the slowest answer (timeout: 5 s), and in
    `connects` how long each TCP connect took of it (a SYN the kernel answers late is not the API)."""
    while time.monotonic() < until:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            if connects is not None:
                connects.append(time.monotonic() - start)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await asyncio.wait_for(_read_response(reader), 5)
            writer.close()
            worst.append(time.monotonic() - start)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            worst.append(5.0)
        await asyncio.sleep(0.2)


def _cpu_seconds(pid: int) -> float:
    """CPU time of the API: the process and its children (uvicorn --workers), from /proc.
    Per request, it is what a route costs whatever else the machine is doing."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    port: int, path: str, headers: str, connections: int, seconds: float, timeout: float, server_pid: int
) -> dict:
    load = Load(port, path, headers, timeout)
    cpu_before = _cpu_seconds(server_pid)
    during: list[float] = []
    connects: list[float] = []
    after: list[float] = []
    start = time.monotonic()
    until = start + seconds
    # The probe runs on an event loop of its own (a thread): on the load's loop, 256 busy
    # connections delayed the probe's own reads by seconds, which is the load generator's time,
    # not the server's.
    probe = asyncio.to_thread(asyncio.run, probe_healthz(port, until, during, connects))
    await asyncio.gather(probe, *(load.connection(until) for _ in range(connections)))
    elapsed = time.monotonic() - start
    cpu = _cpu_seconds(server_pid) - cpu_before
    await probe_healthz(port, time.monotonic() + 1.0, after)
    recovered = time.monotonic()
    while max(after[-1:], default=0) > 1.0 and time.monotonic() - recovered < 10:
        await probe_healthz(port, time.monotonic() + 0.1, after)  # a jam: wait it out
    return {
        "connections": connections,
        "requests": len(load.latencies),
        "rps": round(len(load.latencies) / elapsed, 1),
        "errors": load.errors,
        "p50_ms": round(1000 * _pct(load.latencies, 0.5), 1),
        "p99_ms": round(1000 * _pct(load.latencies, 0.99), 1),
        "server_cpu_ms_per_request": round(1000 * cpu / max(1, len(load.latencies)), 3),
        "healthz_worst_during_s": round(max(during, default=0), 2),
        "healthz_worst_connect_during_s": round(max(connects, default=0), 2),
        "healthz_worst_after_s": round(max(after, default=0), 2),
        "recovery_s": round(time.monotonic() - recovered, 1),
    }


def _database() -> str:
    name = f"distill_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def _drop(url: str) -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def _seed_metrics(url: str, env: dict, code: Path, job_id: str, rows: int) -> None:
    """`rows` metric rows in bulk, then the last epoch written the way a worker writes it."""
    epochs = rows // 2
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO job_metrics (job_id, phase, run, epoch, name, value, at) "
                "SELECT :job, 'student', 'seed0', g / 2, CASE WHEN g % 2 = 0 THEN 'loss' "
                "ELSE 'val_accuracy' END, random(), now() FROM generate_series(0, :n - 1) g"
            ),
            {"job": job_id, "n": rows - 2},
        )
        conn.execute(
            text(
                "INSERT INTO job_events (job_id, at, level, message) SELECT :job, now(), "
                "'info', 'event ' || g FROM generate_series(1, 50) g"
            ),
            {"job": job_id},
        )
    engine.dispose()
    subprocess.run(
        [sys.executable, "-c", SEED_LAST_EPOCH.format(job=job_id, epoch=epochs)], cwd=code, env=env, check=True
    )


def _serve(code: Path, env: dict, port: int, log: Path, workers: int) -> subprocess.Popen:
    import socket

    with socket.socket() as probe:  # an old server on the port would answer for this one
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--workers",
            str(workers),
        ],
        cwd=code,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the API did not start; see {log}")


def run(
    code: Path,
    label: str,
    connections: list[int],
    seconds: float,
    metric_rows: int,
    timeout: float,
    port: int,
    routes: list[str],
    extra_env: list[str],
    workers: int = 1,
) -> list[dict]:
    import httpx

    url = _database()
    home = Path(f"/tmp/distill-bench-{uuid.uuid4().hex[:6]}")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")},
        "PYTHONPATH": str(code),
        "DISTILL_DATABASE_URL": url,
        "DISTILL_HOME": str(home),
        "DISTILL_BROKER_URL": "filesystem://",
        "DISTILL_RATE_LIMIT_PER_MINUTE": "0",
        "DISTILL_MAX_CONCURRENT_JOBS": "1000",
        **dict(e.split("=", 1) for e in extra_env),
    }
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=code, env=env, check=True, capture_output=True
    )
    home.mkdir(parents=True)
    proc = _serve(code, env, port, home / "api.log", workers)
    results = []
    try:
        key = (home / "api-key").read_text().strip()
        headers = f"Authorization: Bearer {key}\r\n"
        spec = json.loads((ROOT / "examples" / "mnist1d-kd.json").read_text())
        made = httpx.post(
            f"http://127.0.0.1:{port}/v1/jobs", json=spec, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )
        made.raise_for_status()
        job_id = made.json()["id"]
        _seed_metrics(url, env, code, job_id, metric_rows)
        for route in routes:
            path = _paths(job_id)[route]
            for n in connections:
                row = asyncio.run(measure(port, path, headers, n, seconds, timeout, proc.pid))
                row |= {"label": label, "route": route, "metric_rows": metric_rows, "workers": workers}
                print(json.dumps(row), flush=True)
                results.append(row)
                if row["healthz_worst_after_s"] > 1.0:  # jammed: the next figure gets a fresh server
                    proc.kill()
                    proc.wait(timeout=30)
                    time.sleep(0.5)  # the port is free once the killed server's socket is closed
                    proc = _serve(code, env, port, home / "api.log", workers)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        _drop(url)
    return results


def report(rows: list[dict]) -> str:
    """A markdown table per metric-row count: before and after side by side."""
    lines = []
    for metric_rows in sorted({r["metric_rows"] for r in rows}):
        lines += [
            f"### {metric_rows:,} metric rows on the job",
            "",
            "| route | conns | before req/s | before p50/p99 ms | before errors | before /healthz worst (during/after) s "
            "| after req/s | after p50/p99 ms | after errors | after /healthz worst (during/after) s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        keyed = {(r["label"], r["route"], r["connections"]): r for r in rows if r["metric_rows"] == metric_rows}
        for route in ROUTES:
            for n in sorted({r["connections"] for r in rows}):
                cells = []
                for label in ("before", "after"):
                    r = keyed.get((label, route, n))
                    cells += (
                        ["-"] * 4
                        if r is None
                        else [
                            f"{r['rps']:.0f}",
                            f"{r['p50_ms']}/{r['p99_ms']}",
                            str(r["errors"]),
                            f"{r['healthz_worst_during_s']}/{r['healthz_worst_after_s']}",
                        ]
                    )
                if any(c != "-" for c in cells):
                    lines.append(f"| {route} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--label", default="after")
    parser.add_argument("--connections", default="8,64,256")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--metric-rows", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=18777)
    parser.add_argument("--out", type=Path, help="append the rows as JSON lines here")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--env", action="append", default=[], help="DISTILL_X=value for the API")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn --workers (API processes)")
    parser.add_argument("--report", type=Path, help="print the markdown tables of these JSON lines")
    args = parser.parse_args()
    if args.report:
        print(report([json.loads(line) for line in args.report.read_text().splitlines()]))
        return
    rows = run(
        args.code.resolve(),
        args.label,
        [int(c) for c in args.connections.split(",")],
        args.seconds,
        args.metric_rows,
        args.timeout,
        args.port,
        args.routes.split(","),
        args.env,
        args.workers,
    )
    if args.out:
        with args.out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
