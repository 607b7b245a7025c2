"""A colour image ZIP, uploaded over HTTP, through a real job to a timm student whose ONNX file
onnxruntime runs on the raw uint8 images with the reported accuracy (embedded service)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.contract.spec import JobSpec
from tests.support.polling import wait_for_job
from tests.support.services import subprocess_env

pytestmark = pytest.mark.integration


def colour_zip(n_per_class: int = 24, side: int = 10) -> tuple[bytes, dict[str, np.ndarray]]:
    """Three classes, named by the brightest channel; RGB PNGs in class folders."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for c, name in enumerate(("red", "green", "blue")):
            for i in range(n_per_class):
                pixels = rng.integers(0, 100, (side, side, 3)).astype(np.uint8)
                pixels[:, :, c] += 130
                png = io.BytesIO()
                Image.fromarray(pixels, "RGB").save(png, "PNG")
                zf.writestr(f"{name}/{i:03d}.png", png.getvalue())
    return buffer.getvalue()


def test_colour_zip_to_a_deployable_timm_student(tmp_path: Path, make_service):
    svc = make_service(subprocess_env(tmp_path, None, "filesystem://"), workers=1)
    api = svc.client()
    r = api.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": ("colours.zip", colour_zip())})
    assert r.status_code == 201, r.text
    dataset = r.json()
    assert dataset["inspection"]["input_shape"] == [3, 10, 10] and dataset["inspection"]["dtype"] == "uint8"
    spec = {
        "dataset": {"artifact": dataset["id"]},
        "teacher": {"train": {"arch": {"name": "timm", "model": "test_resnet"}, "epochs": 3, "batch_size": 16}},
        "student": {"arch": {"name": "torchvision", "model": "mobilenet_v3_small"}},
        "training": {"epochs": 3, "batch_size": 16, "augment": {"flip": True}},
        "seeds": [0],
        "baseline": False,
    }
    r = api.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job = wait_for_job(api, job_id, timeout=300, what="the job", every=0.5)
    assert job["status"] == "succeeded", (job.get("error"), svc.dump_logs())
    report = job["result"]
    assert report["exported"]["onnx_check"]["argmax_agreement"] == 1.0

    artifacts = {a["filename"]: a for a in api.get(f"/v1/jobs/{job_id}/artifacts").json()}
    assert not any(name.endswith(".data") for name in artifacts)
    path = tmp_path / "student.onnx"
    path.write_bytes(api.get(artifacts["student.onnx"]["content_url"]).content)

    import onnxruntime as ort

    from worker.distill.data import load_uploaded

    arrays = Path(svc.env["DISTILL_HOME"])
    canonical = next(arrays.rglob("*.npz"))  # the upload's canonical arrays, as the worker read them
    splits = load_uploaded(canonical, JobSpec.model_validate(spec).dataset)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    (logits,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(splits.test.x)})
    accuracy = float(np.mean(logits.argmax(1) == splits.test.y))
    assert accuracy == pytest.approx(report["exported"]["test_accuracy"], abs=1e-9)
