"""student.init: a student's starting weights, checked at submission like brought teacher
weights (keys, shapes, dtypes against the student's arch), in process on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.api.test_standard_models_api import _weights
from tests.api.test_tenants import bearer, new_tenant
from tests.api.test_uploads_api import submit, upload, weights

MLP = {"name": "mlp", "hidden": [16]}


def _init(artifact: str, arch: dict = MLP) -> dict:
    return {"arch": arch, "init": {"artifact": artifact}}


def test_student_init_weights_are_checked_against_the_students_arch(client):
    ours = upload(client, "teacher", "student.safetensors", weights(MLP, (40,), 10))  # mnist1d: 40 inputs
    ok = submit(client, student=_init(ours["id"]))
    assert ok["status"] == 202, ok

    wrong = submit(client, student=_init(ours["id"], {"name": "mlp", "hidden": [32]}))
    assert wrong["status"] == 422
    assert "stages.0.0.weight is 16x40 F32, expected 32x40 F32" in wrong["errors"]["/student/init/artifact"]

    timm = upload(client, "teacher", "resnet.safetensors", _weights("timm", "test_resnet", 1, 10))
    other_arch = submit(client, student=_init(timm["id"]))
    assert other_arch["status"] == 422 and "do not fit a mlp" in other_arch["errors"]["/student/init/artifact"]


def test_student_init_names_an_upload_of_this_tenant(client):
    data = upload(client, "dataset", "d.npz", _npz())
    not_weights = submit(client, student=_init(data["id"]))
    assert "is a dataset, not a teacher" in not_weights["errors"]["/student/init/artifact"]

    theirs = client.post(
        "/v1/artifacts",
        data={"kind": "teacher"},
        files={"file": ("s.safetensors", weights(MLP, (40,), 10))},
        headers=bearer(new_tenant("tenant-b")),
    )
    assert theirs.status_code == 201, theirs.text
    foreign = submit(client, student=_init(theirs.json()["id"]))
    assert foreign["status"] == 422
    assert "among this tenant's uploads" in foreign["errors"]["/student/init/artifact"]


def _npz() -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, x=rng.normal(size=(40, 40)).astype(np.float32), y=np.arange(40) % 10)
    return buf.getvalue()
