"""timm and torchvision architectures: the names file, the input adapter, stages, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from app.contract import standard
from app.contract.standard import TimmArch, TorchvisionArch
from worker.distill import zoo
from worker.distill.models import build_model, count_parameters, model_from_config


def test_names_file_matches_the_installed_libraries():
    import timm
    import torchvision

    names = standard.model_names()
    assert names["versions"] == {
        "torch": torch.__version__.split("+")[0],
        "timm": timm.__version__,
        "torchvision": torchvision.__version__.split("+")[0],
    }
    for library in zoo.LIBRARIES:
        assert set(names[library]) <= set(zoo.model_names(library))
    # the families the bench and the README use are all there
    for library, model in (
        ("timm", "resnet18"),
        ("timm", "mobilenetv3_small_100"),
        ("timm", "efficientnet_b0"),
        ("torchvision", "resnet18"),
        ("torchvision", "mobilenet_v3_small"),
    ):
        assert model in names[library]


@pytest.mark.parametrize(
    "library,model", [("timm", "test_resnet"), ("timm", "test_vit"), ("torchvision", "squeezenet1_1")]
)
def test_names_file_facts_are_what_the_libraries_build(library, model):
    from scripts.make_model_names import facts

    assert standard.model_facts(library, model) == facts(library, model)


def _arch(library: str, model: str, **extra):
    cls = TimmArch if library == "timm" else TorchvisionArch
    return cls.model_validate({"name": library, "model": model, **extra})


@pytest.mark.parametrize(
    "library,model,shape",
    [
        ("timm", "test_resnet", (16, 16)),  # grey, stored (H, W)
        ("torchvision", "mobilenet_v3_small", (3, 20, 20)),  # colour, stored (C, H, W)
    ],
)
def test_standard_model_takes_raw_uint8_and_its_stages_match_the_api(library, model, shape):
    arch = _arch(library, model)
    m = build_model(arch, shape, 5, mean=100.0, std=50.0, seed=0).eval()
    x = torch.randint(0, 256, (2, *shape), dtype=torch.uint8)
    logits, feats = m.forward_features(x)
    assert logits.shape == (2, 5) and logits.dtype == torch.float32
    assert torch.equal(logits, m(x))
    api = standard.stage_shapes(arch, shape)
    assert list(api) == m.stage_names and m.stage_names
    for (name, want), got in zip(api.items(), feats, strict=True):
        assert got.shape[1] == want[0], name  # channels exact; sides within one of the API's
        assert all(abs(g - w) <= 1 for g, w in zip(got.shape[2:], want[1:], strict=True)), name


def test_state_size_of_the_api_is_the_built_models():
    arch = _arch("timm", "test_resnet")
    net = build_model(arch, (3, 16, 16), 7).net
    state = net.state_dict()
    keys, integer, elements = standard.state_size(arch, (3, 16, 16), 7)
    assert keys == len(state)
    assert integer == sum(not v.is_floating_point() for v in state.values())
    assert elements == sum(v.numel() for v in state.values() if v.is_floating_point())
    assert count_parameters(build_model(arch, (16, 16), 7)) < standard.model_facts("timm", "test_resnet")["parameters"]


def test_input_adapter_resizes_to_input_size_and_the_seed_decides_the_weights():
    arch = _arch("timm", "test_resnet", input_size=32)
    a = build_model(arch, (3, 8, 8), 4, seed=3)
    b = model_from_config(a.config())
    assert a.adapter.size == (32, 32)
    assert build_model(arch, (3, 8, 8), 4, seed=3).state_dict().keys() == b.state_dict().keys()
    assert all(
        torch.equal(v, build_model(arch, (3, 8, 8), 4, seed=3).state_dict()[k]) for k, v in a.state_dict().items()
    )
    x = torch.rand(2, 3, 8, 8) * 255
    a.eval()(x)  # runs: the network sees 32x32


def test_spec_refuses_unknown_names_with_the_closest_ones():
    with pytest.raises(ValidationError) as exc:
        _arch("timm", "resnet_18")
    assert "resnet18" in str(exc.value)
    with pytest.raises(ValidationError) as exc:
        _arch("torchvision", "mobilenet_v3_smal")
    assert "mobilenet_v3_small" in str(exc.value)


@pytest.mark.parametrize(
    "extra,words",
    [
        ({"pretrained": True}, "never downloaded"),
        ({"kwargs": {"checkpoint_path": "/etc/passwd"}}, "checkpoint_path"),
        ({"kwargs": {"pretrained_cfg_overlay": "x"}}, "pretrained_cfg_overlay"),
        ({"kwargs": {"num_classes": 3}}, "num_classes"),
    ],
)
def test_spec_refuses_downloads_and_what_the_data_decides(extra, words):
    with pytest.raises(ValidationError) as exc:
        _arch("timm", "resnet18", **extra)
    assert words in str(exc.value)


def test_fit_messages_give_the_size_a_model_needs():
    vit = _arch("timm", "test_vit")
    size = standard.model_facts("timm", "test_vit")["min_input_size"]
    [(where, msg)] = standard.fit_messages(vit, (28, 28))
    assert where == "input_size" and f"{size}x{size}" in msg
    assert standard.fit_messages(_arch("timm", "test_vit", input_size=size), (28, 28)) == []
    [(where, msg)] = standard.fit_messages(_arch("timm", "resnet18"), (40,))
    assert where == "name" and "images" in msg
    convnext = _arch("timm", "convnext_tiny")
    need = standard.model_facts("timm", "convnext_tiny")["min_input_size"]
    assert need > 8 and standard.fit_messages(convnext, (3, 8, 8))[0][0] == "input_size"


def test_min_input_size_probe_finds_the_smallest_side():
    net = zoo.create_network("timm", "convnext_tiny", in_chans=1, num_classes=3)
    side, fixed = zoo.min_input_size(net, 1)
    assert not fixed and zoo.runs_at(net, side, 1) and not zoo.runs_at(net, side - 1, 1)


def test_uint8_and_float_inputs_give_the_same_logits():
    arch = _arch("torchvision", "squeezenet1_1")
    m = build_model(arch, (3, 24, 24), 3, mean=120.0, std=60.0, seed=0).eval()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 24, 24), dtype=np.uint8))
    assert torch.allclose(m(x), m(x.float()))
