"""Catalog, health, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from app.contract.catalog import DATASETS


def test_catalog_lists_datasets_architectures_and_methods(client):
    body = client.get("/v1/catalog").json()
    assert body["datasets"]["mnist1d"]["input_shape"] == [40]
    assert body["datasets"]["digits"]["input_shape"] == list(DATASETS["digits"].input_shape)
    assert set(body["architectures"]) == {"mlp", "cnn", "timm", "torchvision"}
    assert "resnet18" in body["architectures"]["timm"]["models"]
    assert "channels" in body["architectures"]["cnn"]["parameters"]
    kd = body["methods"]["kd"]["parameters"]
    assert kd["temperature"]["exclusiveMinimum"] == 0
    assert kd["alpha"]["minimum"] == 0 and kd["alpha"]["maximum"] == 1


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert (ready["database"], ready["broker"]) == ("ok", "ok")
    assert ready["workers"] == "none: no worker seen in the last 30 s; queued jobs wait for one"


def test_prometheus_metrics_count_jobs_by_status_behind_the_metrics_key(client, monkeypatch):
    from app.config import get_settings

    monkeypatch.setenv("DISTILL_METRICS_KEY", "scrape-me")
    monkeypatch.setenv("DISTILL_METRICS_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    client.post("/v1/jobs", json=client.get("/v1/catalog").json()["example_spec"])
    text = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).text
    assert 'distill_jobs{status="queued"} 1.0' in text
    assert 'distill_jobs{status="running"} 0.0' in text
    # Without the key: the process's own figures, nothing about anyone's jobs.
    for key in ("", "Bearer wrong", client.headers["Authorization"]):
        anonymous = client.get("/metrics", headers={"Authorization": key})
        assert anonymous.status_code == 200 and "process_" in anonymous.text
        assert "distill_jobs" not in anonymous.text


def test_openapi_describes_every_spec_field(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    undocumented = []
    for name in ("JobSubmission", "JobError", "TrainingSpec", "KDMethod", "JobOut", "ArtifactOut"):
        for field, prop in components[name]["properties"].items():
            documented = "description" in prop or "examples" in prop or "$ref" in prop
            if not documented and field not in {"name", "created_at"}:
                undocumented.append(f"{name}.{field}")
    assert components["JobSubmission"]["examples"], "the spec has a worked example"
    assert not undocumented, undocumented
