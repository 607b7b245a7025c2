"""Uploads and keys against a real uvicorn server: the upload cap holds while streaming
(with and without Content-Length) and leaves nothing behind; code-carrying files are
refused without being run; the concurrent-job cap holds under parallel submissions on
SQLite and PostgreSQL; keys never reach the database or the logs in clear."""

from __future__ import annotations

import io
import pickle
import threading
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REDIS_URL
from tests.support.services import Service, subprocess_env

pytestmark = pytest.mark.integration
CAP = 100_000
SPEC = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
}


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def uploads_dir(svc: Service) -> Path:
    return Path(svc.env["DISTILL_HOME"]) / "artifacts" / "uploads"


def multipart(kind: str, filename: str, content: bytes, boundary: str = "b0undary") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\n{kind}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.fixture
def uploads_service(make_service, tmp_path: Path) -> Service:
    return make_service(subprocess_env(tmp_path, None, "filesystem://", max_upload_bytes=CAP))


def test_the_upload_cap_holds_with_and_without_content_length(uploads_service: Service):
    svc, api = uploads_service, uploads_service.client()
    too_big = np.zeros(CAP, dtype=np.uint8).tobytes() + b"x"

    # Declared: refused from the header, before the body is read.
    r = api.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": ("big.npz", too_big)})
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json" and str(CAP) in r.json()["detail"]

    # Chunked (no Content-Length): refused while streaming, once the cap is passed.
    body = multipart("dataset", "big.npz", too_big)

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    r = api.post("/v1/artifacts", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413, r.text
    assert files_under(uploads_dir(svc)) == []  # no partial file left behind
    assert api.get("/v1/artifacts").json() == []

    # Under the cap, the same chunked path stores the file.
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(40, dtype=np.float32).reshape(20, 2), y=np.arange(20) % 2)
    small = multipart("dataset", "small.npz", buf.getvalue())
    r = api.post(
        "/v1/artifacts",
        content=iter([small[:100], small[100:]]),
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["inspection"]["rows"] == 20
    assert len(files_under(uploads_dir(svc))) == 2  # the upload and its canonical arrays


class WritesAFile:
    """A pickle whose loading would create a file: it must never be loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pwned"))


def test_code_carrying_uploads_are_refused_and_never_run(uploads_service: Service, tmp_path: Path):
    svc, api = uploads_service, uploads_service.client()
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps(WritesAFile(marker))
    for filename in ("teacher.pt", "teacher.pth", "teacher.onnx", "weights.safetensors"):
        r = api.post("/v1/artifacts", data={"kind": "teacher"}, files={"file": (filename, payload)})
        assert r.status_code == 422, (filename, r.text)
        detail = r.json()["errors"][0]["detail"]
        assert r.json()["errors"][0]["pointer"] == "/file"
        assert "ONNX" in detail and "safetensors" in detail, detail  # how to convert
    assert not marker.exists()
    assert files_under(uploads_dir(svc)) == []


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_zip_slip_and_zip_bomb_are_refused(uploads_service: Service):
    svc, api = uploads_service, uploads_service.client()
    slip = _zip({"a/1.png": b"x", "../../evil.txt": b"x"})
    bomb = _zip({"a/big.png": bytes(5_000_000), "b/big.png": bytes(5_000_000)})
    assert len(bomb) < CAP
    for name, content in (("slip.zip", slip), ("bomb.zip", bomb)):
        r = api.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": (name, content)})
        assert r.status_code == 422, (name, r.text)
    assert files_under(uploads_dir(svc)) == []
    assert not (Path(svc.env["DISTILL_HOME"]).parent / "evil.txt").exists()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_parallel_submissions_at_the_cap_leave_exactly_one_accepted(database, make_service, tmp_path: Path, request):
    if database == "postgresql":
        from tests.conftest import _empty_postgres

        env = subprocess_env(
            tmp_path, _empty_postgres(request.getfixturevalue("postgres_database")), REDIS_URL, max_concurrent_jobs=1
        )
    else:
        env = subprocess_env(tmp_path, None, "filesystem://", max_concurrent_jobs=1)
    svc = make_service(env)  # no worker: accepted jobs stay queued
    api = svc.client()
    for round_ in range(5):
        start = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def submit(start: threading.Barrier = start, answers: list[httpx.Response] = answers) -> None:
            with svc.client() as own:
                start.wait()
                answers.append(own.post("/v1/jobs", json=SPEC))

        threads = [threading.Thread(target=submit) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        codes = sorted(a.status_code for a in answers)
        assert codes == [202, 429], (round_, [a.text for a in answers])
        accepted = next(a for a in answers if a.status_code == 202).json()["id"]
        queued = api.get("/v1/jobs", params={"status": "queued"}).json()["items"]
        assert [j["id"] for j in queued] == [accepted]
        assert api.post(f"/v1/jobs/{accepted}/cancel").status_code == 200


def test_keys_never_reach_the_database_or_the_logs(make_service, tmp_path: Path):
    admin_key = "admin-" + uuid.uuid4().hex
    svc = make_service(subprocess_env(tmp_path, None, "filesystem://", admin_key=admin_key))
    first = (Path(svc.env["DISTILL_HOME"]) / "api-key").read_text().strip()
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=svc.url, timeout=10) as http:
        tenant = http.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin).json()
        made = http.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={}, headers=admin).json()
        for key in (first, made["key"]):
            assert http.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            assert http.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200
        wrong = "dk_" + uuid.uuid4().hex
        assert http.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert http.delete(f"/v1/admin/keys/{made['id']}", headers=admin).status_code == 200
    svc.stop()  # flush the logs and the database files
    home = Path(svc.env["DISTILL_HOME"])
    stored = b"".join(p.read_bytes() for p in home.glob("distill.db*"))
    logs = svc.dump_logs()
    assert "created the tenant 'local'" in logs  # the first start said where its key is
    for secret in (first, made["key"], wrong, admin_key):
        assert secret.encode() not in stored, "a key is stored in clear"
        assert secret not in logs, "a key is in the logs"
    assert made["prefix"].encode() in stored  # what is kept instead: the prefix (and the hash)
