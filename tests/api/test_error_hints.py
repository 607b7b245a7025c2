"""Issue 14 item 8, in process over SQLite and PostgreSQL: the common mistakes get problems that
say what to do (a JSON body sent as another media type, malformed JSON, a field one level off,
a near-miss field name), and a 405 names the methods the path takes in its Allow header."""

from __future__ import annotations

import json

import pytest

SPEC = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "training": {"epochs": 1},
    "seeds": [0],
}


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def field_details(r) -> dict[str, str]:
    return {e["pointer"]: e["detail"] for e in problem(r, 422)["errors"]}


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_spec_sent_without_the_json_media_type_is_a_415_naming_the_header(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/jobs", content=json.dumps(SPEC), headers=headers)
    body = problem(r, 415)
    assert "Content-Type: application/json" in body["detail"]
    assert (content_type or "without one") in body["detail"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing stored
    assert client.post("/v1/jobs", json=SPEC).status_code == 202  # the same body with the header


def test_malformed_json_is_a_400_with_its_line_and_column(client):
    text = '{\n  "dataset": {"name": "digits"},\n  "seeds": [0,]\n}'
    r = client.post("/v1/jobs", content=text, headers={"content-type": "application/json"})
    body = problem(r, 400)
    (error,) = body["errors"]
    assert (error["line"], error["column"]) == (3, 15)  # the ']' after the trailing comma
    assert "line 3, column 15" in body["detail"] and "Expecting value" in body["detail"]


def test_a_teacher_without_train_is_told_to_put_arch_under_teacher_train(client):
    details = field_details(client.post("/v1/jobs", json={**SPEC, "teacher": {"arch": {"name": "mlp"}}}))
    assert "put it under teacher.train" in details["/teacher/arch"]


@pytest.mark.parametrize(
    "change, pointer, hint",
    [
        ({"method": {"name": "kd", "temprature": 4}}, "/method/temprature", "Did you mean `temperature`?"),
        ({"trainig": {"epochs": 3}}, "/trainig", "Did you mean `training`?"),
        ({"student": {"arch": {"name": "mlp", "hiden": [8]}}}, "/student/arch/hiden", "Did you mean `hidden`?"),
        ({"epochs": 3}, "/epochs", "put it under training"),
        ({"student": {"hidden": [8]}}, "/student/hidden", "put it under student.arch"),
        ({"method": {"name": "dkd", "bogus": 1}}, "/method/bogus", "takes: name, temperature, alpha, beta"),
    ],
)
def test_an_unknown_field_gets_a_hint(client, change, pointer, hint):
    details = field_details(client.post("/v1/jobs", json={**SPEC, **change}))
    assert hint in details[pointer], details


def test_a_smart_union_member_leaves_no_class_name_in_the_pointer(client):
    members = [{"arch": {"name": "mlp", "hidden": [16]}, "epoks": 2}, {"arch": {"name": "mlp", "hidden": [8]}}]
    details = field_details(client.post("/v1/jobs", json={**SPEC, "teacher": {"ensemble": members}}))
    assert "Did you mean `epochs`?" in details["/teacher/ensemble/0/epoks"]
    assert not any("TeacherTrain" in p or "TeacherArtifact" in p for p in details)


def test_a_sweep_trial_gets_the_same_hints(client):
    sweep = {"base": {**SPEC, "method": {"name": "kd", "temprature": 4}}, "axes": {"seeds": [[0], [1]]}}
    details = field_details(client.post("/v1/sweeps", json=sweep))
    assert "Did you mean `temperature`?" in details["/base/method/temprature"]


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("PUT", "/v1/jobs", "GET, POST"),
        ("DELETE", "/v1/catalog", "GET"),
        ("GET", "/v1/jobs/some-id/cancel", "POST"),
        ("PATCH", "/v1/artifacts", "GET, POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_405_names_the_allowed_methods(client, method, path, allowed):
    r = client.request(method, path)
    body = problem(r, 405)
    assert r.headers["allow"] == allowed
    assert body["detail"] == f"{method} is not allowed here; use {allowed}."
