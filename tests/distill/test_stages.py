"""app.contract.stages (no torch) agrees with the torch models: stage names and per-stage output shapes."""

from __future__ import annotations

import pytest
import torch

from app.contract.architectures import CNNArch, MLPArch
from app.contract.stages import stage_shapes, state_shapes
from worker.distill.models import build_model

ARCHS = [
    MLPArch(hidden=[]),
    MLPArch(hidden=[7]),
    MLPArch(hidden=[16, 8, 4], dropout=0.1),
    CNNArch(channels=[4]),
    CNNArch(channels=[4, 6], hidden=0),
    CNNArch(channels=[3, 5, 2], kernel_size=5, hidden=9, dropout=0.2),
]
SHAPES = [(40,), (8, 8), (13,), (9, 7)]


@pytest.mark.parametrize("input_shape", SHAPES)
@pytest.mark.parametrize("arch", ARCHS, ids=repr)
def test_stage_names_and_shapes_match_the_torch_models(arch, input_shape):
    if isinstance(arch, CNNArch) and min(input_shape) < 2 ** len(arch.channels):
        pytest.skip("does not fit (refused at submission)")
    model = build_model(arch, input_shape, 10).eval()
    _, feats = model.forward_features(torch.zeros(2, *input_shape))
    expected = stage_shapes(arch, input_shape)
    assert model.stage_names == list(expected)
    assert [tuple(f.shape[1:]) for f in feats] == list(expected.values())


DTYPES = {torch.float32: "F32", torch.int64: "I64"}


@pytest.mark.parametrize("input_shape", SHAPES)
@pytest.mark.parametrize("arch", ARCHS, ids=repr)
def test_state_dict_keys_shapes_and_dtypes_match_the_torch_models(arch, input_shape):
    # Brought safetensors teachers are checked against state_shapes at submission.
    if isinstance(arch, CNNArch) and min(input_shape) < 2 ** len(arch.channels):
        pytest.skip("does not fit (refused at submission)")
    state = build_model(arch, input_shape, 7).state_dict()
    actual = {k: (tuple(v.shape), DTYPES[v.dtype]) for k, v in state.items()}
    assert actual == state_shapes(arch, input_shape, 7)
