"""Bring your own teacher and data, over HTTP to a real uvicorn server and a real Celery
worker (embedded: SQLite + filesystem broker): a scikit-learn model converted to ONNX
(it outputs probabilities) and an NPZ dataset are uploaded, and the teacher is distilled
into one of our MLPs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support.polling import wait_for_job
from tests.support.services import Service, subprocess_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sklearn_teacher():
    """An MLPClassifier on 64 digit pixels, as ONNX (label + probabilities), and its data."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(x[train], y[train])
    onnx_model = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    return {
        "onnx": onnx_model.SerializeToString(),
        "accuracy": float((clf.predict(x[test]) == y[test]).mean()),
        "x": x[train],
        "y": y[train],
        "x_test": x[test],
        "y_test": y[test],
    }


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_an_onnx_teacher_from_another_framework_is_distilled_into_an_mlp(make_service, tmp_path: Path, sklearn_teacher):
    svc: Service = make_service(subprocess_env(tmp_path, None, "filesystem://"), workers=1)
    api = svc.client()
    t = sklearn_teacher

    teacher = api.post(
        "/v1/artifacts", data={"kind": "teacher", "name": "sklearn mlp"}, files={"file": ("digits-mlp.onnx", t["onnx"])}
    )
    assert teacher.status_code == 201, teacher.text
    found = teacher.json()["inspection"]
    assert (found["output_kind"], found["num_classes"], found["input_shape"]) == ("probabilities", 10, [64])
    assert {o["kind"] for o in found["outputs"]} == {"label", "probabilities"}
    again = api.post("/v1/artifacts", data={"kind": "teacher"}, files={"file": ("again.onnx", t["onnx"])})
    assert again.status_code == 200 and again.json()["id"] == teacher.json()["id"]  # stored once

    data = api.post(
        "/v1/artifacts",
        data={"kind": "dataset"},
        files={"file": ("digits.npz", npz_bytes(x=t["x"], y=t["y"], x_test=t["x_test"], y_test=t["y_test"]))},
    )
    assert data.status_code == 201, data.text
    assert data.json()["inspection"]["test_rows"] == len(t["y_test"])

    spec = {
        "dataset": {"artifact": data.json()["id"]},
        "teacher": {"artifact": {"id": teacher.json()["id"]}},
        "student": {"arch": {"name": "mlp", "hidden": [32]}},
        "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
        "training": {"epochs": 8},
        "seeds": [0],
        "baseline": True,
    }
    # A teacher that does not take the dataset's inputs is refused at submission.
    wrong = api.post("/v1/jobs", json={**spec, "dataset": {"name": "mnist1d"}})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["pointer"] == "/teacher/artifact/id"
    assert "64" in wrong.json()["errors"][0]["detail"]

    r = api.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    job = wait_for_job(api, job_id, timeout=240, what="the job to finish", every=0.5)
    assert job["status"] == "succeeded", (job["error"], svc.dump_logs())
    report = job["result"]
    # The teacher ran in onnxruntime on the uploaded test split: exactly scikit-learn's accuracy.
    assert report["teacher"]["test_accuracy"] == pytest.approx(t["accuracy"], abs=1e-9)
    assert report["teacher"]["source"] == "artifact"
    assert report["dataset"]["test_size"] == len(t["y_test"])
    events = " ".join(e["message"] for e in api.get(f"/v1/jobs/{job_id}/events").json())
    assert "probabilities" in events
    student = report["student"]["mean"]["test_accuracy"]
    assert student > 0.8, report["summary"]

    # The exported student, run on the raw test inputs, gives the report's accuracy.
    files = {a["filename"]: a for a in api.get(f"/v1/jobs/{job_id}/artifacts").json()}
    onnx_bytes = api.get(files["student.onnx"]["content_url"]).content
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: t["x_test"]})[0]
    assert float((logits.argmax(1) == t["y_test"]).mean()) == pytest.approx(
        report["exported"]["test_accuracy"], abs=1e-9
    )
