"""Tenants and keys through the HTTP API, on SQLite and PostgreSQL: every /v1 route needs a
key, another tenant's ids answer exactly like ids that do not exist, admin routes and the
admin command manage keys, and keys are stored only as hashes."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid

import numpy as np
import pytest
from sqlalchemy import select

from app import tenants
from app.contract.spec import EXAMPLE_SPEC
from app.db import get_sessionmaker
from app.main import create_app
from app.models import ApiKey, Artifact, Job
from app.storage import get_storage
from tests.conftest import ROOT

ADMIN_KEY = "admin-" + uuid.uuid4().hex


def new_tenant(name: str, **kw) -> str:
    """A tenant and one key, straight in the database; returns the key."""
    with get_sessionmaker()() as session:
        key = tenants.create_key(session, tenants.create_tenant(session, name, **kw)).key
        session.commit()
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def npz_upload(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(size=(20, 4)).astype(np.float32), y=np.arange(20) % 2)
    return {"files": {"file": ("data.npz", buf.getvalue())}, "data": {"kind": "dataset"}}


def test_every_v1_route_needs_a_key(client):
    no_key = {"Authorization": ""}
    paths = create_app().openapi()["paths"]
    routes = [
        (
            m.upper(),
            p.replace("{job_id}", str(uuid.uuid4()))
            .replace("{artifact_id}", str(uuid.uuid4()))
            .replace("{tenant_id}", str(uuid.uuid4()))
            .replace("{key_id}", str(uuid.uuid4())),
        )
        for p, ops in paths.items()
        if p.startswith("/v1/")
        for m in ops
    ]
    assert len(routes) >= 15
    for method, path in routes:
        r = client.request(method, path, headers=no_key)
        # Tenant routes need a tenant's key; admin routes are off without DISTILL_ADMIN_KEY.
        assert r.status_code == (403 if path.startswith("/v1/admin") else 401), (method, path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.status_code == 403 or r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/v1/jobs", headers=bearer("dk_" + "x" * 43))
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    assert (
        client.get(
            "/v1/jobs", headers={"Authorization": "", "X-API-Key": client.headers["Authorization"][7:]}
        ).status_code
        == 200
    )
    assert client.get("/healthz", headers=no_key).status_code == 200  # probes need no key


def _id_routes() -> set[tuple[str, str]]:
    """Every (method, path) of a tenant's route that takes an id, from the OpenAPI document."""
    paths = create_app().openapi()["paths"]
    return {(m.upper(), p) for p, ops in paths.items() if "{" in p and not p.startswith("/v1/admin") for m in ops}


def test_another_tenants_ids_answer_404_like_missing_ones_on_every_route(client):
    # Tenant A ("local", the client's key) owns a job with events, metrics and an output
    # artifact, and an uploaded dataset; tenant B has its own key.
    job = client.post("/v1/jobs", json=EXAMPLE_SPEC).json()
    upload = client.post("/v1/artifacts", **npz_upload()).json()
    with get_sessionmaker()() as session:
        stored = get_storage().path(f"jobs/{job['id']}/report.json")
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text("{}")
        output = Artifact(
            tenant_id=session.get(Job, job["id"]).tenant_id,
            job_id=job["id"],
            kind="report",
            format="json",
            filename="report.json",
            media_type="application/json",
            storage_key=f"jobs/{job['id']}/report.json",
            size_bytes=2,
            sha256="0" * 64,
        )
        session.add(output)
        session.commit()
        output_id = output.id
    other = bearer(new_tenant("tenant-b"))
    sweep = client.post("/v1/sweeps", json={"base": EXAMPLE_SPEC, "axes": {"method.temperature": [2.0, 4.0]}}).json()

    matrix = [
        ("GET", "/v1/jobs/{job_id}", job["id"]),
        ("POST", "/v1/jobs/{job_id}/cancel", job["id"]),
        ("GET", "/v1/jobs/{job_id}/events", job["id"]),
        ("GET", "/v1/jobs/{job_id}/metrics", job["id"]),
        ("GET", "/v1/jobs/{job_id}/artifacts", job["id"]),
        ("GET", "/v1/artifacts/{artifact_id}", output_id),
        ("GET", "/v1/artifacts/{artifact_id}", upload["id"]),
        ("GET", "/v1/artifacts/{artifact_id}/content", output_id),
        ("GET", "/v1/artifacts/{artifact_id}/content", upload["id"]),
        ("GET", "/v1/jobs/{job_id}/stream", job["id"]),
        ("GET", "/v1/sweeps/{sweep_id}", sweep["id"]),
        ("POST", "/v1/sweeps/{sweep_id}/cancel", sweep["id"]),
        ("GET", "/v1/sweeps/{sweep_id}/pareto.png", sweep["id"]),
        ("DELETE", "/v1/jobs/{job_id}", job["id"]),
        ("DELETE", "/v1/artifacts/{artifact_id}", upload["id"]),
        ("DELETE", "/v1/artifacts/{artifact_id}", output_id),
    ]
    # The owner's own look is checked where it answers at once: a queued job's stream stays
    # open until the job ends, and a sweep's Pareto plot exists once the sweep has a result.
    owner_not_checked = {"/v1/jobs/{job_id}/stream", "/v1/sweeps/{sweep_id}/pareto.png"}
    # A route that takes an id and is missing here fails this test: add it to the matrix.
    assert {(m, p) for m, p, _ in matrix} == _id_routes()
    for method, template, id_ in matrix:
        path = template.replace("{job_id}", id_).replace("{artifact_id}", id_).replace("{sweep_id}", id_)
        missing = path.replace(id_, str(uuid.uuid4()))
        theirs = client.request(method, path, headers=other)
        nobodys = client.request(method, missing, headers=other)
        assert theirs.status_code == nobodys.status_code == 404, (path, theirs.text)
        strip = lambda body, i: {k: str(v).replace(i, "ID") for k, v in body.items()}  # noqa: E731
        assert strip(theirs.json(), id_) == strip(nobodys.json(), missing.split("/")[3]), path
        if method == "GET" and template not in owner_not_checked:
            assert client.request(method, path).status_code == 200, path  # the owner sees it
    assert client.get(f"/v1/jobs/{job['id']}").json()["cancel_requested"] is False
    assert client.get("/v1/jobs", headers=other).json()["items"] == []
    # Nor can a spec name another tenant's upload.
    spec = {**EXAMPLE_SPEC, "dataset": {"artifact": upload["id"]}}
    r = client.post("/v1/jobs", json=spec, headers=other)
    assert r.status_code == 422
    assert r.json()["errors"][0]["pointer"] == "/dataset/artifact"


def test_concurrent_job_cap_and_rate_limit_answer_429(client, monkeypatch):
    capped = bearer(new_tenant("capped", max_concurrent_jobs=2))
    ids = [client.post("/v1/jobs", json=EXAMPLE_SPEC, headers=capped).json()["id"] for _ in range(2)]
    r = client.post("/v1/jobs", json=EXAMPLE_SPEC, headers=capped)
    assert r.status_code == 429 and r.json()["type"].endswith("concurrent-job-cap")
    assert "2 queued or running" in r.json()["detail"] and int(r.headers["retry-after"]) > 0
    assert len(client.get("/v1/jobs", headers=capped).json()["items"]) == 2  # nothing stored
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=capped)
    assert client.post("/v1/jobs", json=EXAMPLE_SPEC, headers=capped).status_code == 202

    from app.config import get_settings

    monkeypatch.setenv("DISTILL_RATE_LIMIT_PER_MINUTE", "6")  # one token every 10 s
    monkeypatch.setenv("DISTILL_RATE_LIMIT_BURST", "3")
    get_settings.cache_clear()
    limited = bearer(new_tenant("limited"))
    codes = [client.get("/v1/jobs", headers=limited).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.get("/v1/jobs", headers=limited)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10
    assert client.get("/v1/jobs").status_code == 200  # another key has its own bucket


@pytest.fixture
def admin_env(monkeypatch):
    monkeypatch.setenv("DISTILL_ADMIN_KEY", ADMIN_KEY)


def test_admin_routes_create_list_and_revoke_keys(admin_env, client):
    admin = bearer(ADMIN_KEY)
    assert client.post("/v1/admin/tenants", json={"name": "acme"}).status_code == 401  # a tenant key
    tenant = client.post("/v1/admin/tenants", json={"name": "acme", "max_concurrent_jobs": 3}, headers=admin)
    assert tenant.status_code == 201, tenant.text
    assert client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin).status_code == 409
    made = client.post(f"/v1/admin/tenants/{tenant.json()['id']}/keys", json={"name": "ci"}, headers=admin).json()
    key = made["key"]
    assert key.startswith(made["prefix"]) and len(key) > 40
    listed = client.get(f"/v1/admin/tenants/{tenant.json()['id']}/keys", headers=admin).json()
    assert [k["prefix"] for k in listed] == [made["prefix"]] and "key" not in listed[0]
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 200
    assert client.delete(f"/v1/admin/keys/{made['id']}", headers=admin).json()["revoked_at"] is not None
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 401
    # The database holds the hash and the prefix, never the key.
    with get_sessionmaker()() as session:
        rows = session.scalars(select(ApiKey)).all()
        assert all(key not in (r.key_sha256, r.prefix, r.name) for r in rows)
        assert tenants.key_sha256(key) in {r.key_sha256 for r in rows}


def test_admin_routes_are_off_without_an_admin_key(client):
    r = client.post("/v1/admin/tenants", json={"name": "x"}, headers=bearer("anything"))
    assert r.status_code == 403 and "DISTILL_ADMIN_KEY" in r.json()["detail"]


def test_admin_command_creates_and_revokes_keys(client, in_process_env):
    def admin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app.admin", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
        )

    made = admin("create-key", "cli-tenant", "--name", "laptop")
    key = made.stdout.strip()
    assert key.startswith("dk_") and "shown once" in made.stderr
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 200
    listing = admin("list-keys", "cli-tenant").stdout
    assert key[:11] in listing and key not in listing
    admin("revoke-key", listing.split()[0])
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 401


def test_auth_off_serves_everyone_as_the_local_tenant(in_process_env, database_url, monkeypatch):
    from fastapi.testclient import TestClient

    from tests.conftest import clear_caches

    monkeypatch.setenv("DISTILL_DATABASE_URL", database_url)
    monkeypatch.setenv("DISTILL_AUTH", "off")
    clear_caches()
    with TestClient(create_app()) as c:
        job = c.post("/v1/jobs", json=EXAMPLE_SPEC)
        assert job.status_code == 202
        assert c.get(f"/v1/jobs/{job.json()['id']}").status_code == 200
    with get_sessionmaker()() as session:
        assert session.get(Job, job.json()["id"]).tenant_id == tenants.find_tenant(session, "local").id
        assert session.scalars(select(ApiKey)).first() is None  # no key was made
