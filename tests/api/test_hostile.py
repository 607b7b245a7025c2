"""Attacks of issue 10 against a real API process (uvicorn, PostgreSQL): uploads that
allocate or loop when run, stalled and oversized bodies, many concurrent clients, wrong
keys, a full disk. Every attack is bounded here: the caps under test are set low, memory
growth is measured, never exhausted."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.hostile import (
    api_process,
    children,
    constant_of_shape_bomb,
    endless_loop,
    incoming_files,
    is_root,
    rss_bytes,
)
from tests.conftest import _empty_postgres
from tests.support.polling import poll_until

EXAMPLE = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "training": {"epochs": 1},
    "seeds": [0],
}


@pytest.fixture
def pg(postgres_database: str) -> str:
    return _empty_postgres(postgres_database)


def _upload(api: httpx.Client, name: str, content: bytes, kind: str = "teacher") -> httpx.Response:
    return api.post("/v1/artifacts", data={"kind": kind}, files={"file": (name, content)}, timeout=60)


def test_uploads_that_allocate_or_loop_are_refused_naming_the_limit(tmp_path, pg):
    with api_process(tmp_path, pg, inspect_memory_bytes=str(1 << 30), inspect_seconds="3") as svc:
        api = svc.client()
        pid = svc.processes[0].pid
        before = rss_bytes(pid)
        bomb = _upload(api, "bomb.onnx", constant_of_shape_bomb())  # 2 GiB on the probe batch
        assert bomb.status_code == 422, bomb.text
        assert "memory" in bomb.json()["errors"][0]["detail"]
        loop = _upload(api, "loop.onnx", endless_loop())
        assert loop.status_code == 422, loop.text
        assert "took longer than the 3 s" in loop.json()["errors"][0]["detail"]
        assert rss_bytes(pid) - before < 150 << 20  # the API itself never ran the graphs
        assert children(pid) == []  # the inspection processes are gone
        assert api.get("/healthz").status_code == 200 and api.get("/v1/artifacts").json() == []
        assert incoming_files(svc) == []


def _stalled_upload(port: int, key: str) -> socket.socket:
    """An upload that sends its headers and a first part, then nothing."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="kind"\r\n\r\nteacher\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.onnx"\r\n\r\n' + b"x" * 1000
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /v1/artifacts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key.encode()
        + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        + body
    )
    return sock


def _status_of(sock: socket.socket) -> int:
    data = sock.recv(4096)
    return int(data.split(b" ", 2)[1]) if data else 0


def test_stalled_uploads_do_not_take_other_requests_down(tmp_path, pg):
    with api_process(tmp_path, pg, body_timeout_seconds="4", max_concurrent_uploads_per_key="40") as svc:
        api = svc.client()
        key = api.headers["Authorization"][7:]
        stalled = [_stalled_upload(svc.port, key) for _ in range(20)]
        poll_until(lambda: len(incoming_files(svc)) == 20, timeout=10, what="20 uploads streaming")
        # While they stall: reads, writes, wrong keys and probes all answer.
        assert api.get("/v1/jobs").status_code == 200
        assert api.post("/v1/jobs", json=EXAMPLE).status_code == 202
        assert api.get("/v1/jobs", headers={"Authorization": "Bearer dk_wrong"}).status_code == 401
        assert httpx.get(f"{svc.url}/readyz", timeout=5).status_code == 200
        assert [_status_of(s) for s in stalled] == [408] * 20
        for s in stalled:
            s.close()
        poll_until(lambda: incoming_files(svc) == [], timeout=10, what="partial files removed")


def test_one_key_streams_a_bounded_number_of_uploads(tmp_path, pg):
    with api_process(tmp_path, pg, body_timeout_seconds="5", max_concurrent_uploads_per_key="2") as svc:
        key = svc.client().headers["Authorization"][7:]
        first = [_stalled_upload(svc.port, key) for _ in range(2)]
        poll_until(lambda: len(incoming_files(svc)) == 2, timeout=10, what="2 uploads streaming")
        third = _stalled_upload(svc.port, key)
        assert _status_of(third) == 429
        assert [_status_of(s) for s in first] == [408, 408]


def _chunked(port: int, headers: bytes, chunks: list[bytes]) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n" + headers + b"\r\n"
    )
    try:
        for chunk in chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the end: the status line says why
    status = _status_of(sock)
    sock.close()
    return status


def test_json_bodies_are_read_after_the_key_and_capped(tmp_path, pg):
    with api_process(tmp_path, pg, max_json_body_bytes=str(1 << 20), body_timeout_seconds="3") as svc:
        api = svc.client()
        pid = svc.processes[0].pid
        before = rss_bytes(pid)
        big = b'{"name": "' + b"x" * (50 << 20) + b'"}'
        stranger = httpx.post(
            f"{svc.url}/v1/jobs", content=big, timeout=60, headers={"Content-Type": "application/json"}
        )
        assert stranger.status_code == 401
        assert api.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"}).status_code == 413
        key = b"Authorization: " + api.headers["Authorization"].encode() + b"\r\n"
        assert _chunked(svc.port, key, [b"x" * (256 << 10)] * 8) == 413  # no Content-Length
        assert _chunked(svc.port, b"", [b"x" * (256 << 10)] * 8) == 401
        assert rss_bytes(pid) - before < 100 << 20
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=30)
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + key
            + b'Content-Length: 1000\r\n\r\n{"name"'
        )
        assert _status_of(sock) == 408
        sock.close()
        assert api.post("/v1/jobs", json=EXAMPLE).status_code == 202


def _read_many(url: str, key: str, paths: list[str], rounds: int, statuses: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
        for _ in range(rounds):
            for path in paths:
                try:
                    statuses.append(c.get(path).status_code)
                except httpx.HTTPError:
                    statuses.append(0)


def test_many_concurrent_readers_get_answers_and_healthz_stays_live(tmp_path, pg):
    with api_process(tmp_path, pg) as svc:
        api = svc.client()
        job = api.post("/v1/jobs", json=EXAMPLE).json()["id"]
        paths = [f"/v1/jobs/{job}", "/v1/jobs", f"/v1/jobs/{job}/events", f"/v1/jobs/{job}/metrics", "/metrics"]
        statuses: list[int] = []
        clients = [
            threading.Thread(target=_read_many, args=(svc.url, api.headers["Authorization"][7:], paths, 4, statuses))
            for _ in range(64)
        ]
        for t in clients:
            t.start()
        probes = []
        while any(t.is_alive() for t in clients):
            try:
                probes.append(httpx.get(f"{svc.url}/healthz", timeout=5).status_code)
            except httpx.HTTPError:
                probes.append(0)
        for t in clients:
            t.join()
        assert len(statuses) == 64 * 4 * len(paths)
        assert sorted(set(statuses)) == [200], {s: statuses.count(s) for s in set(statuses)}
        assert probes and set(probes) == {200}
        assert httpx.get(f"{svc.url}/healthz", timeout=5).status_code == 200


def test_wrong_keys_are_rate_limited_per_address(tmp_path, pg):
    with api_process(tmp_path, pg, auth_failures_per_minute="6", auth_failures_burst="3") as svc:
        wrong = [
            httpx.get(f"{svc.url}/v1/jobs", headers={"Authorization": f"Bearer dk_guess{i}"}).status_code
            for i in range(6)
        ]
        assert wrong[:3] == [401] * 3 and 429 in wrong[3:]
        assert svc.client().get("/v1/jobs").status_code == 200  # the right key still works


@pytest.mark.skipif(not is_root(), reason="mounting a small tmpfs needs root")
def test_a_full_store_answers_507_and_keeps_nothing(tmp_path, pg):
    store = tmp_path / "store"
    store.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[:200]}")
    try:
        with api_process(tmp_path, pg, artifact_dir=str(store)) as svc:
            r = _upload(svc.client(), "big.npz", b"PK" + b"\0" * (3 << 20), kind="dataset")
            assert r.status_code == 507, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert not any(p.is_file() for p in Path(store).rglob("*"))
            assert svc.client().get("/healthz").status_code == 200
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def test_partial_files_of_killed_uploads_are_removed_at_start(tmp_path, pg):
    incoming = tmp_path / "home" / "artifacts" / "uploads" / ".incoming"
    incoming.mkdir(parents=True)
    old, fresh = incoming / "dead.part", incoming / "streaming.part"
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y")
    an_hour_ago = time.time() - 7200
    import os

    os.utime(old, (an_hour_ago, an_hour_ago))
    with api_process(tmp_path, pg):
        assert not old.exists() and fresh.exists()  # another replica may still be writing it
