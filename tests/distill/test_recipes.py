"""Every method and recipe end to end on a tiny digits job: phases in order, every run reported."""

from __future__ import annotations

import pytest

from tests.support.engine import TIMING, run_tiny_job
from tests.support.specs import tiny_spec
from worker.distill.reporting import MemoryReporter

CNN_TEACHER = {"train": {"arch": {"name": "cnn", "channels": [8], "hidden": 16}, "epochs": 3, "patience": 2}}


def _runs(reporter):
    runs = []
    for p, r, _, _ in reporter.metrics:
        if (p, r) not in runs:
            runs.append((p, r))
    return runs


def test_born_again_reports_every_generation(tmp_path, data_cache):
    arch = {"name": "mlp", "hidden": [16]}
    spec = tiny_spec(
        teacher={"train": {"arch": arch, "epochs": 3}},
        student={"arch": arch},
        method={"name": "born_again", "generations": 3},
        seeds=[0, 1],
        training={"epochs": 1, "batch_size": 64},
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    assert reporter.phases == ["teacher", "soft_targets", "generation", "baseline", "evaluate", "export"]
    assert _runs(reporter) == [("teacher", "teacher")] + [
        ("generation", f"gen={g} seed={s}") for g in (1, 2, 3) for s in (0, 1)
    ] + [("baseline", "seed=0"), ("baseline", "seed=1")]
    gens = result.report["generations"]
    assert [g["generation"] for g in gens] == [1, 2, 3]
    assert all(len(g["runs"]) == 2 and "test_accuracy" in g["mean"] for g in gens)
    assert result.report["student"] == {k: v for k, v in gens[-1].items() if k != "generation"}
    assert reporter.progresses[-1] == 1.0


def test_born_again_needs_the_student_arch_as_teacher():
    from app.contract.fit import fit_errors

    errors = fit_errors(tiny_spec(method={"name": "born_again"}))
    assert [e.loc for e in errors] == [("teacher", "train", "arch")]


def test_teacher_assistant_chain_reports_every_link(tmp_path, data_cache):
    spec = tiny_spec(
        method={
            "name": "teacher_assistant",
            "assistants": [{"name": "mlp", "hidden": [32]}, {"name": "mlp", "hidden": [24]}],
        },
        seeds=[0],
        baseline=False,
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    assert reporter.phases == ["teacher", "assistant", "soft_targets", "student", "evaluate", "export"]
    assert _runs(reporter) == [
        ("teacher", "teacher"),
        ("assistant", "link=1"),
        ("assistant", "link=2"),
        ("student", "seed=0"),
    ]
    links = result.report["assistants"]
    assert [a["link"] for a in links] == [1, 2]
    assert [a["arch"]["hidden"] for a in links] == [[32], [24]]
    assert all(0 < a["test_accuracy"] <= 1 and 0 <= a["test_agreement"] <= 1 for a in links)
    assert any("learned from the assistant link=1" in e[1] for e in reporter.events)


@pytest.mark.parametrize(
    "method",
    [
        {"name": "dkd", "warmup_epochs": 2},
        {"name": "fitnet", "teacher_stage": "conv0", "student_stage": "hidden0"},
        {"name": "adversarial"},
        {"name": "pseudo_label"},
    ],
)
def test_each_method_runs_a_tiny_job(tmp_path, data_cache, method):
    spec = tiny_spec(method=method, seeds=[0], baseline=False)
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    assert reporter.phases == ["teacher", "soft_targets", "student", "evaluate", "export"]
    assert result.report["method"]["name"] == method["name"]
    assert 0 < result.report["student"]["mean"]["test_accuracy"] <= 1
    # the exported student is the bare model: no regressor or discriminator weights
    assert result.report["student"]["runs"][0]["parameters"] == 64 * 16 + 16 + 16 * 10 + 10
    if method["name"] == "fitnet":
        assert result.report["soft_targets"] == "recomputed"


def test_attention_with_a_cnn_student(tmp_path, data_cache):
    spec = tiny_spec(
        method={"name": "attention"},
        student={"arch": {"name": "cnn", "channels": [4], "hidden": 0}},
        seeds=[0],
        baseline=False,
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    assert result.report["soft_targets"] == "recomputed"
    assert any("stage features" in e[1] for e in reporter.events)


@pytest.mark.parametrize(
    "method",
    [
        {"name": "adversarial"},
        {"name": "fitnet"},
    ],
)
def test_feature_and_adversarial_methods_resume_to_the_same_numbers(tmp_path, data_cache, method):
    """Killed after the first student epoch and restarted: the same report as an uninterrupted run."""
    spec = tiny_spec(method=method, seeds=[0], baseline=False)
    whole, _ = run_tiny_job(spec, tmp_path / "a", data_cache)

    class Crash(Exception):
        pass

    class Crashing(MemoryReporter):
        def metric(self, phase, run, epoch, values):
            super().metric(phase, run, epoch, values)
            if phase == "student" and epoch == 2:
                raise Crash

    ck = tmp_path / "b" / "ck"
    with pytest.raises(Crash):
        run_tiny_job(spec, tmp_path / "b", data_cache, reporter=Crashing(checkpoint_dir=ck))
    resumed, reporter = run_tiny_job(spec, tmp_path / "b", data_cache, reporter=MemoryReporter(checkpoint_dir=ck))
    assert any("resumed student seed=0" in e[1] for e in reporter.events)
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING}  # noqa: E731
    assert [strip(r) for r in resumed.report["student"]["runs"]] == [strip(r) for r in whole.report["student"]["runs"]]


def test_train_fraction_students_learn_from_a_share_the_teacher_from_all(tmp_path, data_cache):
    spec = tiny_spec(dataset={"name": "digits", "train_fraction": 0.1}, seeds=[0], training={"epochs": 2})
    result, _reporter = run_tiny_job(spec, tmp_path, data_cache)
    d = result.report["dataset"]
    assert d["train_size"] == 130 and d["teacher_train_size"] == 1293
    assert result.report["baseline"]["runs"][0]["test_accuracy"] > 0


def test_ensemble_teacher_trains_every_member_and_averages_probabilities(tmp_path, data_cache):
    import numpy as np
    import torch

    from app.contract.architectures import MLPArch
    from worker.distill.models import build_model
    from worker.distill.teachers import EnsembleTeacher

    members = [{"arch": {"name": "mlp", "hidden": [16]}, "epochs": 2, "seed": s} for s in (0, 1)]
    spec = tiny_spec(teacher={"ensemble": members}, seeds=[0], baseline=False)
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    assert _runs(reporter)[:2] == [("teacher", "member=1"), ("teacher", "member=2")]
    t = result.report["teacher"]
    assert [m["member"] for m in t["members"]] == [1, 2] and 0 < t["test_accuracy"] <= 1
    assert t["parameters"] == sum(m["parameters"] for m in t["members"])
    # the convention: output = log(mean of the members' softmax)
    a, b = (build_model(MLPArch(hidden=[4]), (3,), 5, seed=s) for s in (0, 1))
    x = torch.randn(6, 3)
    pa, pb = (torch.softmax(m(x), 1).detach().numpy() for m in (a, b))
    got = EnsembleTeacher([a, b])(x).detach().numpy()
    assert np.allclose(got, np.log((pa + pb) / 2), atol=1e-6)


def test_ensemble_spec_rules():
    import pydantic

    from app.contract.fit import fit_errors

    member = {"arch": {"name": "cnn", "channels": [8]}}
    with pytest.raises(pydantic.ValidationError):
        tiny_spec(teacher={"train": member, "ensemble": [member, member]})
    with pytest.raises(pydantic.ValidationError):
        tiny_spec(teacher={})
    bad = tiny_spec(teacher={"ensemble": [member, member]}, method={"name": "fitnet"})
    assert [e.loc for e in fit_errors(bad)] == [("teacher", "ensemble")]


def test_transfer_set_is_generated_deterministically_and_unlabeled(tmp_path, data_cache):
    import numpy as np

    from app.contract.fit import fit_errors
    from worker.distill.data import mnist1d_transfer

    a = mnist1d_transfer(50, data_cache)
    assert a.shape == (50, 40) and np.array_equal(a, mnist1d_transfer(50, data_cache))
    spec = tiny_spec(
        dataset={"name": "mnist1d", "transfer": {"extra_generated": 200}, "train_fraction": 0.1},
        teacher={"train": {"arch": {"name": "mlp", "hidden": [32]}, "epochs": 2}},
        seeds=[0],
        training={"epochs": 1},
    )
    result, reporter = run_tiny_job(spec, tmp_path, data_cache)
    d = result.report["dataset"]
    assert d["transfer_size"] == 200 and d["train_size"] == 360
    assert any("transfer set: 200" in m for _, m in reporter.events)
    assert [e.loc for e in fit_errors(tiny_spec(dataset={"name": "digits", "transfer": {"extra_generated": 5}}))] == [
        ("dataset", "transfer", "extra_generated")
    ]
    assert [
        e.loc
        for e in fit_errors(
            tiny_spec(dataset={"name": "mnist1d", "transfer": {"extra_generated": 5}}, method={"name": "dkd"})
        )
    ] == [("method", "name")]
