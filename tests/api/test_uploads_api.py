"""Uploads and the submission checks that use them, in process on SQLite and PostgreSQL:
teacher, data and student must fit together, and the field that does not is named."""

from __future__ import annotations

import io

import numpy as np
import pytest

from app.contract.spec import EXAMPLE_SPEC


def upload(client, kind: str, filename: str, content: bytes, **fields) -> dict:
    r = client.post("/v1/artifacts", data={"kind": kind, **fields}, files={"file": (filename, content)})
    assert r.status_code in (200, 201), r.text
    return r.json()


def weights(arch: dict, input_shape: tuple[int, ...], classes: int) -> bytes:
    """safetensors of one of our models, as a user would save it."""
    from pydantic import TypeAdapter
    from safetensors.torch import save

    from app.contract.architectures import Arch
    from worker.distill.models import build_model

    model = build_model(TypeAdapter(Arch).validate_python(arch), input_shape, classes, seed=0)
    return save(model.state_dict())


def submit(client, **parts) -> dict:
    r = client.post("/v1/jobs", json={**EXAMPLE_SPEC, "seeds": [0], **parts})
    return {"status": r.status_code, "errors": {e["pointer"]: e["detail"] for e in r.json().get("errors", [])}}


def test_safetensors_teachers_are_checked_against_their_architecture(client):
    arch = {"name": "mlp", "hidden": [16]}
    teacher = upload(client, "teacher", "t.safetensors", weights(arch, (40,), 10))
    # The row keeps a summary; the tensor list sits beside the file for the submission checks.
    assert teacher["inspection"]["tensor_count"] == 6 and teacher["inspection"]["dtypes"] == ["F32"]
    assert "tensors" not in teacher["inspection"]

    ok = submit(client, teacher={"artifact": {"id": teacher["id"], "arch": arch}})
    assert ok["status"] == 202, ok
    # A feature method can use it: the architecture, hence its stages, is known.
    assert (
        submit(client, teacher={"artifact": {"id": teacher["id"], "arch": arch}}, method={"name": "fitnet"})["status"]
        == 202
    )

    no_arch = submit(client, teacher={"artifact": {"id": teacher["id"]}})
    assert no_arch["status"] == 422 and "/teacher/artifact/arch" in no_arch["errors"]
    wrong = submit(client, teacher={"artifact": {"id": teacher["id"], "arch": {"name": "mlp", "hidden": [32]}}})
    assert wrong["status"] == 422
    assert "stages.0.0.weight is 16x40 F32, expected 32x40 F32" in wrong["errors"]["/teacher/artifact/arch"]
    digits = submit(client, teacher={"artifact": {"id": teacher["id"], "arch": arch}}, dataset={"name": "digits"})
    assert "expected 16x64" in digits["errors"]["/teacher/artifact/arch"]  # the input does not fit


def test_onnx_teachers_must_take_the_data_and_score_its_classes(client):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 40)).astype(np.float32), np.arange(60) % 3  # 3 classes
    clf = LogisticRegression(max_iter=200).fit(x, y)
    onnx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17).SerializeToString()
    teacher = upload(client, "teacher", "three.onnx", onnx)
    assert teacher["inspection"]["num_classes"] == 3

    classes = submit(client, teacher={"artifact": {"id": teacher["id"]}})  # mnist1d: 40 inputs, 10 classes
    assert "scores 3 classes, the dataset has 10" in classes["errors"]["/teacher/artifact/id"]
    output = submit(client, teacher={"artifact": {"id": teacher["id"], "output": "label"}})
    assert "/teacher/artifact/output" in output["errors"]
    stages = submit(client, teacher={"artifact": {"id": teacher["id"]}}, method={"name": "attention"})
    assert stages["status"] == 422
    arch = submit(client, teacher={"artifact": {"id": teacher["id"], "arch": {"name": "mlp"}}})
    assert "/teacher/artifact/arch" in arch["errors"]

    # The right data: a CSV of the same 40 features and 3 classes, label in its own column.
    rows = "\n".join(",".join([f"{v:.5f}" for v in xi] + [f"c{yi}"]) for xi, yi in zip(x, y, strict=True))
    header = ",".join([f"f{i}" for i in range(40)] + ["target"])
    data = upload(client, "dataset", "d.csv", f"{header}\n{rows}\n".encode(), label_column="target")
    assert (data["inspection"]["rows"], data["inspection"]["columns"], data["inspection"]["classes"]) == (
        60,
        40,
        ["c0", "c1", "c2"],
    )
    fits = submit(client, teacher={"artifact": {"id": teacher["id"]}}, dataset={"artifact": data["id"]})
    assert fits["status"] == 202, fits
    # A kind mix-up is named too.
    swapped = submit(client, teacher={"artifact": {"id": data["id"]}}, dataset={"artifact": teacher["id"]})
    assert set(swapped["errors"]) == {"/dataset/artifact", "/teacher/artifact/id"}


@pytest.mark.parametrize(
    "form, pointer",
    [
        ({"kind": "model"}, "/kind"),
        ({"kind": "dataset", "label_column": "nope"}, "/label_column"),
        ({"kind": "dataset", "colour": "red"}, "/colour"),
    ],
)
def test_bad_form_fields_are_named(client, form, pointer):
    buf = io.StringIO("a,label\n1,x\n2,y\n3,x\n4,y\n")
    r = client.post("/v1/artifacts", data=form, files={"file": ("d.csv", buf.getvalue().encode())})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["pointer"] == pointer
    assert client.get("/v1/artifacts").json() == []


def test_a_malformed_multipart_body_is_a_400_problem(client):
    body = b'--b0\r\nContent-Disposition: form-data; name="kind"\r\nBad[Header\r\n\r\nteacher\r\n--b0--\r\n'
    r = client.post("/v1/artifacts", content=body, headers={"Content-Type": "multipart/form-data; boundary=b0"})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "multipart" in r.json()["title"]
