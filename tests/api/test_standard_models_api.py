"""Submission-time checks of timm/torchvision architectures and Fashion-MNIST (issue 11)."""

from __future__ import annotations

import pytest

from app.contract.spec import EXAMPLE_SPEC


def submit(client, **parts) -> dict:
    body = {
        **EXAMPLE_SPEC,
        "dataset": {"name": "fashion_mnist"},
        "seeds": [0],
        "teacher": {"train": {"arch": {"name": "timm", "model": "resnet18"}, "epochs": 1}},
        **parts,
    }
    r = client.post("/v1/jobs", json=body)
    errors = {e["pointer"]: e["detail"] for e in r.json().get("errors", [])} if r.status_code == 422 else {}
    return {"status": r.status_code, "errors": errors, "detail": r.json().get("detail", "")}


def _one(errors: dict, prefix: str) -> str:
    found = [d for p, d in errors.items() if p.startswith(prefix)]
    assert found, errors
    return found[0]


def test_standard_architectures_are_accepted(client):
    ok = submit(client, student={"arch": {"name": "torchvision", "model": "mobilenet_v3_small"}})
    assert ok["status"] == 202, ok


def test_unknown_model_name_gets_the_closest_names(client):
    r = submit(client, student={"arch": {"name": "timm", "model": "resnet_18"}})
    assert r["status"] == 422
    assert "resnet18" in _one(r["errors"], "/student/arch")


def test_pretrained_is_refused_saying_how_to_bring_weights(client):
    r = submit(client, student={"arch": {"name": "timm", "model": "resnet18", "pretrained": True}})
    assert r["status"] == 422
    assert "safetensors" in _one(r["errors"], "/student/arch")


def test_too_small_an_image_gets_the_minimum_size(client):
    r = submit(client, student={"arch": {"name": "timm", "model": "convnext_tiny"}})
    assert r["status"] == 422
    assert "32x32" in r["errors"]["/student/arch/input_size"]
    assert (
        submit(client, student={"arch": {"name": "timm", "model": "convnext_tiny", "input_size": 32}})["status"] == 202
    )


def test_missing_package_is_named(client, monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_FASHION_MNIST_DIR", str(tmp_path))
    r = submit(client, student={"arch": {"name": "mlp", "hidden": [8]}})
    assert r["status"] == 422
    assert "dataset-fashion-mnist" in r["errors"]["/dataset/name"]


def _weights(library: str, model: str, in_chans: int, classes: int) -> bytes:
    from safetensors.torch import save

    from worker.distill.zoo import create_network

    return save(create_network(library, model, in_chans=in_chans, num_classes=classes).state_dict())


@pytest.mark.parametrize("model,fits", [("test_resnet", True), ("test_efficientnet", False)])
def test_safetensors_of_a_timm_arch_are_checked(client, model, fits):
    from tests.api.test_uploads_api import upload

    teacher = upload(client, "teacher", f"{model}.safetensors", _weights("timm", model, 1, 10))
    r = submit(
        client,
        teacher={"artifact": {"id": teacher["id"], "arch": {"name": "timm", "model": "test_resnet"}}},
        student={"arch": {"name": "mlp", "hidden": [8]}},
    )
    if fits:
        assert r["status"] == 202, r
    else:
        assert r["status"] == 422
        assert "test_resnet" in r["errors"]["/teacher/artifact/arch"]


def test_catalog_lists_fashion_mnist(client):
    body = client.get("/v1/catalog").json()
    assert "fashion_mnist" in str(body)
