"""Point 8 of issue 10 and the admission checks, in process over SQLite and PostgreSQL: each
bad input is a 4xx problem naming the field, with nothing left behind."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from app.config import get_settings

SMALL = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "training": {"epochs": 1},
    "seeds": [0],
}


def stored_files() -> list[Path]:
    root = get_settings().resolved_artifact_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def refused(r, pointer: str) -> str:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    errors = {e["pointer"]: e["detail"] for e in r.json()["errors"]}
    assert pointer in errors, errors
    return errors[pointer]


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def test_an_upload_name_over_the_column_size_is_refused_and_nothing_is_kept(client):
    rng = np.random.default_rng(0)
    r = client.post(
        "/v1/artifacts",
        data={"kind": "dataset", "name": "n" * 201},
        files={"file": ("d.npz", npz(x=rng.normal(size=(20, 3)), y=np.arange(20) % 2))},
    )
    assert "200 characters" in refused(r, "/name")
    assert stored_files() == [] and client.get("/v1/artifacts").json() == []


def test_nul_characters_are_refused_in_job_specs_and_form_fields(client):
    assert "NUL" in refused(client.post("/v1/jobs", json={**SMALL, "name": "a\x00b"}), "/name")
    r = client.post(
        "/v1/artifacts",
        data={"kind": "dataset", "label_column": "la\x00bel"},
        files={"file": ("d.csv", b"a,label\n1,x\n2,y\n3,x\n4,y\n")},
    )
    assert "NUL" in refused(r, "/label_column")


@pytest.mark.parametrize("seeds, pointer", [({"seeds": [2**64]}, "/seeds/0"), ({"seeds": [0, 2**32]}, "/seeds/1")])
def test_seeds_the_worker_cannot_use_are_refused(client, seeds, pointer):
    r = client.post("/v1/jobs", json={**SMALL, **seeds})
    assert r.status_code == 422, r.text
    assert any(e["pointer"] == pointer for e in r.json()["errors"])


@pytest.mark.parametrize(
    "header, why",
    [
        (b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', "JSON readers refuse"),
        (b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests too deeply"),
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "trailing bytes"),
    ],
)
def test_safetensors_headers_that_would_fail_later_are_refused(client, header, why):
    data = b"\0" * 8  # 4 bytes of w, then 4 the header does not account for
    r = client.post(
        "/v1/artifacts", data={"kind": "teacher"}, files={"file": ("t.safetensors", safetensors(header, data))}
    )
    assert why in refused(r, "/file")
    assert stored_files() == []


def test_a_test_split_without_rows_is_refused_at_upload(client):
    rng = np.random.default_rng(0)
    content = npz(
        x=rng.normal(size=(20, 3)), y=np.arange(20) % 2, x_test=np.zeros((0, 3)), y_test=np.zeros(0, np.int64)
    )
    r = client.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": ("d.npz", content)})
    assert "x_test has no rows" in refused(r, "/file")


def test_the_same_bytes_with_other_options_are_another_artifact(client):
    table = b"a,b,label\n" + b"".join(b"%d,%d,%d\n" % (i, i % 3, i % 2) for i in range(12))
    first = client.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": ("t.csv", table)})
    other = client.post(
        "/v1/artifacts", data={"kind": "dataset", "label_column": "b"}, files={"file": ("t.csv", table)}
    )
    again = client.post(
        "/v1/artifacts", data={"kind": "dataset", "label_column": "b"}, files={"file": ("t.csv", table)}
    )
    assert (first.status_code, other.status_code, again.status_code) == (201, 201, 200)
    assert first.json()["id"] != other.json()["id"] == again.json()["id"]
    assert first.json()["inspection"]["num_classes"] == 2 and other.json()["inspection"]["num_classes"] == 3


def test_the_nan_error_names_the_row_of_the_file(client):
    rows = [b"%d,%d,%d" % (i, i, i % 2) for i in range(10)]
    rows[3] = b"nan,1,1"
    rows[1] = b"1,1,"  # unlabeled: the row numbers of the file still count it
    r = client.post(
        "/v1/artifacts", data={"kind": "dataset"}, files={"file": ("t.csv", b"a,b,label\n" + b"\n".join(rows) + b"\n")}
    )
    assert "first in row 3" in refused(r, "/file")


def test_wide_and_long_tables_are_refused_before_they_are_decoded(client):
    wide = (",".join(f"c{i}" for i in range(20_000)) + ",label\n").encode()
    assert "columns" in refused(
        client.post(
            "/v1/artifacts", data={"kind": "dataset"}, files={"file": ("w.csv", wide + b"0," * 20_000 + b"1\n")}
        ),
        "/file",
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"a": np.zeros(2_000_000, np.int8), "label": np.zeros(2_000_000, np.int8)}), buf)
    r = client.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": ("l.parquet", buf.getvalue())})
    assert "rows" in refused(r, "/file")


def test_no_server_path_reaches_the_client(client):
    r = client.post("/v1/artifacts", data={"kind": "teacher"}, files={"file": ("t.onnx", b"\x08\x07garbage")})
    body = json.dumps(r.json())
    assert r.status_code == 422
    assert str(get_settings().resolved_artifact_dir) not in body and "/tmp" not in body
    assert "Traceback" not in body and ".incoming" not in body


def test_a_student_over_the_parameter_budget_is_refused_with_the_estimate(client):
    huge = {**SMALL, "student": {"arch": {"name": "mlp", "hidden": [8192] * 8}}}  # ~470M parameters
    detail = refused(client.post("/v1/jobs", json=huge), "/student/arch")
    assert "470,433,804 parameters" in detail and "50,000,000" in detail
    epochs = {
        **SMALL,
        "training": {"epochs": 10_000},
        "seeds": list(range(10)),
        "student": {"arch": {"name": "mlp", "hidden": [4096, 4096]}},
    }
    assert "floating-point operations" in refused(client.post("/v1/jobs", json=epochs), "/training/epochs")


def test_every_job_gets_a_time_limit(client):
    job = client.post("/v1/jobs", json=SMALL)
    assert job.status_code == 202, job.text
    assert job.json()["spec"]["limits"]["time_limit_seconds"] == get_settings().default_time_limit_seconds
    own = client.post("/v1/jobs", json={**SMALL, "limits": {"time_limit_seconds": 60}})
    assert own.json()["spec"]["limits"]["time_limit_seconds"] == 60
