"""Methods at submission: every method is in the catalog, and a feature method whose stages
do not exist or cannot be matched is refused with 422 naming the field and listing the stages."""

from __future__ import annotations

import pytest

from tests.api.test_jobs_api import PROBLEM, spec, submit

MLP_STUDENT = {"arch": {"name": "mlp", "hidden": [64, 64]}}


@pytest.mark.parametrize(
    "changes, pointer, listed",
    [
        ({"method": {"name": "fitnet", "student_stage": "conv0"}}, "/method/student_stage", "hidden0 64, hidden1 64"),
        (
            {"method": {"name": "fitnet", "teacher_stage": "conv7"}},
            "/method/teacher_stage",
            "conv0 32x20, conv1 64x10, conv2 64x5, dense 128",
        ),
        ({"method": {"name": "attention"}}, "/method/student_stages", "hidden0, hidden1"),
        (
            {
                "method": {"name": "attention", "student_stages": ["conv0"], "teacher_stages": ["dense"]},
                "student": {"arch": {"name": "cnn", "channels": [8]}},
            },
            "/method/teacher_stages/0",
            "conv0, conv1, conv2",
        ),
        (
            {
                "method": {"name": "attention", "student_stages": ["conv0"], "teacher_stages": ["conv0", "conv1"]},
                "student": {"arch": {"name": "cnn", "channels": [8]}},
            },
            "/method/student_stages",
            "paired",
        ),
        ({"method": {"name": "born_again"}}, "/teacher/train/arch", "equal"),
        (
            {"method": {"name": "teacher_assistant", "assistants": [{"name": "cnn", "channels": [8] * 7}]}},
            "/method/assistants/0/channels",
            "at most",
        ),
        ({"method": {"name": "dkd", "beta": -1}}, "/method/beta", ""),
        (
            {"training": {"augment": {"noise_std": 0.1}, "soft_targets": "cached"}},
            "/training/soft_targets",
            "cannot be cached",
        ),
    ],
)
def test_unmatchable_feature_method_is_422_naming_the_field(client, changes, pointer, listed):
    r = submit(client, spec(**{"student": MLP_STUDENT, **changes}))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    errors = {e["pointer"]: e["detail"] for e in r.json()["errors"]}
    assert pointer in errors, errors
    assert listed in errors[pointer]
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    "method",
    [
        {"name": "dkd"},
        {"name": "fitnet", "teacher_stage": "conv1", "student_stage": "hidden0"},
        {"name": "pseudo_label"},
        {"name": "adversarial", "adv_weight": 0.2},
        {"name": "teacher_assistant", "assistants": [{"name": "mlp", "hidden": [128, 128]}]},
    ],
)
def test_matchable_methods_are_accepted(client, method):
    r = submit(client, spec(method=method))
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["method"]["name"] == method["name"]


def test_attention_with_conv_student_is_accepted(client):
    body = spec(method={"name": "attention"}, student={"arch": {"name": "cnn", "channels": [8, 8], "hidden": 0}})
    assert submit(client, body).status_code == 202


def test_catalog_lists_every_method_with_parameters(client):
    methods = client.get("/v1/catalog").json()["methods"]
    assert set(methods) == {
        "ce",
        "kd",
        "dkd",
        "fitnet",
        "attention",
        "adversarial",
        "pseudo_label",
        "born_again",
        "teacher_assistant",
    }
    assert methods["dkd"]["parameters"]["warmup_epochs"]["minimum"] == 0
    assert "student_stage" in methods["fitnet"]["parameters"]
    assert (
        methods["attention"]["parameters"]["beta"]["default"] == 10.0
    )  # tuned on validation (bench/results/quality.md)
    assert all(m["description"] for m in methods.values())
