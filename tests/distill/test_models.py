"""Architectures: shapes, stages, built-in normalisation, seeded init, rebuild."""

from __future__ import annotations

import pytest
import torch

from app.contract.architectures import CNNArch, MLPArch
from worker.distill.models import (
    build_model,
    count_parameters,
    model_from_config,
    model_from_state,
)


def test_mlp_shapes_and_stages():
    m = build_model(MLPArch(hidden=[16, 8], dropout=0.1), (8, 8), 10, mean=5.0, std=2.0)
    x = torch.rand(3, 8, 8)
    logits, feats = m.forward_features(x)
    assert logits.shape == (3, 10)
    assert m.stage_names == ["hidden0", "hidden1"]
    assert [f.shape for f in feats] == [(3, 16), (3, 8)]
    assert count_parameters(m) == (64 * 16 + 16) + (16 * 8 + 8) + (8 * 10 + 10)


def test_logistic_regression_mlp():
    m = build_model(MLPArch(hidden=[]), (40,), 10)
    assert m.forward(torch.rand(2, 40)).shape == (2, 10)
    assert m.stage_names == []


def test_cnn_1d_stages():
    m = build_model(CNNArch(channels=[4, 8, 8], hidden=32), (40,), 10)
    logits, feats = m.forward_features(torch.rand(5, 40))
    assert logits.shape == (5, 10)
    assert m.stage_names == ["conv0", "conv1", "conv2", "dense"]
    assert [f.shape for f in feats] == [(5, 4, 20), (5, 8, 10), (5, 8, 5), (5, 32)]
    assert isinstance(m.stages, torch.nn.ModuleList)


def test_cnn_2d_stages_without_dense():
    m = build_model(CNNArch(channels=[4, 6], hidden=0, dropout=0.2), (8, 8), 10)
    logits, feats = m.forward_features(torch.rand(2, 8, 8))
    assert logits.shape == (2, 10)
    assert m.stage_names == ["conv0", "conv1"]
    assert [f.shape for f in feats] == [(2, 4, 4, 4), (2, 6, 2, 2)]
    m.eval()  # eval: dropout off, so both paths are the same function
    x = torch.rand(2, 8, 8)
    assert torch.equal(m(x), m.forward_features(x)[0])


def test_cnn_keeps_the_channels_of_colour_images():
    m = build_model(CNNArch(channels=[4, 6], hidden=8), (3, 8, 8), 5)
    assert m.stages[0][0].in_channels == 3
    logits, feats = m.forward_features(torch.rand(2, 3, 8, 8))
    assert logits.shape == (2, 5)
    assert [f.shape for f in feats] == [(2, 4, 4, 4), (2, 6, 2, 2), (2, 8)]
    x = torch.rand(2, 3, 8, 8)
    changed = x.clone()
    changed[:, 2] = 0  # the last channel matters: it is not averaged away or dropped
    m.eval()
    assert not torch.equal(m(x), m(changed))


def test_cnn_too_deep_is_refused():
    with pytest.raises(ValueError):
        build_model(CNNArch(channels=[4, 4, 4, 4]), (8, 8), 10)


def test_normalisation_is_inside_the_model():
    m = build_model(MLPArch(hidden=[4]), (3,), 2, mean=10.0, std=4.0).eval()
    assert {"mean", "std"} <= set(m.state_dict())
    ref = build_model(MLPArch(hidden=[4]), (3,), 2).eval()
    ref.load_state_dict({**m.state_dict(), "mean": torch.tensor(0.0), "std": torch.tensor(1.0)})
    x = torch.tensor([[14.0, 6.0, 10.0]])
    assert torch.allclose(m(x), ref((x - 10.0) / 4.0))


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = build_model(CNNArch(channels=[4]), (40,), 10, seed=3)
    assert torch.equal(torch.rand(1), before)
    b = build_model(CNNArch(channels=[4]), (40,), 10, seed=3)
    c = build_model(CNNArch(channels=[4]), (40,), 10, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_rebuild_from_config_and_state():
    m = build_model(CNNArch(channels=[4], hidden=8), (8, 8), 10, mean=3.0, std=2.0, seed=0).eval()
    with torch.no_grad():
        m.stages[0][1].running_mean.add_(0.5)  # buffers must travel too
    again = model_from_state(m.config(), m.state_dict())
    x = torch.rand(4, 8, 8) * 16
    assert torch.equal(m(x), again(x))
    assert model_from_config(m.config()).config() == m.config()


def test_a_cnn_fits_colour_images_and_refuses_more_axes():
    from app.contract.fit import ArtifactFacts, fit_errors
    from app.contract.spec import JobSpec

    spec = JobSpec.model_validate(
        {
            "dataset": {"artifact": "d"},
            "teacher": {"train": {"arch": {"name": "cnn", "channels": [4, 8]}, "epochs": 1}},
            "student": {"arch": {"name": "mlp", "hidden": [8]}},
        }
    )
    colour = {"d": ArtifactFacts("dataset", "npz", {"input_shape": [3, 8, 8], "num_classes": 3})}
    assert fit_errors(spec, colour) == []
    video = {"d": ArtifactFacts("dataset", "npz", {"input_shape": [2, 3, 8, 8], "num_classes": 3})}
    [error] = fit_errors(spec, video)
    assert error.loc[-1] == "name" and "use an mlp" in error.msg
