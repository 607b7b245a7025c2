"""Standard architectures from timm and torchvision, built without weights.

`create_network` makes the bare network (input channels and classes from the data, weights
never downloaded); `feature_stages` says where feature methods may tap in (timm's own
`feature_info`; for torchvision, the last block at each spatial resolution, found by a probe);
`min_input_size` finds the smallest square image a network runs on (a probe on the meta
device: no memory, no arithmetic). scripts/make_model_names.py writes these facts, for the
pinned library versions, to app/contract/model_names.json, which the API reads without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

LIBRARIES = ("timm", "torchvision")
# torchvision models whose training-mode output is not a tensor unless told otherwise.
_TORCHVISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "inception_v3": {"aux_logits": False, "init_weights": True},
    "googlenet": {"aux_logits": False, "init_weights": True},
}
_PROBE_LIMIT = 1024  # the largest square side the min-size probe tries


@dataclass(frozen=True)
class Stage:
    name: str  # the module's qualified name inside the network
    channels: int
    reduction: int  # input side / stage side


def model_names(library: str) -> list[str]:
    """Every classification model the installed library can build by name."""
    if library == "timm":
        import timm

        return sorted(timm.list_models())
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def create_network(
    library: str, model: str, *, in_chans: int, num_classes: int, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """The bare network, randomly initialised (pretrained weights are never fetched)."""
    kwargs = dict(kwargs or {})
    if library == "timm":
        import timm

        return timm.create_model(model, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if library == "torchvision":
        import torchvision.models as tvm

        net = tvm.get_model(
            model, weights=None, num_classes=num_classes, **{**_TORCHVISION_DEFAULTS.get(model, {}), **kwargs}
        )
        if in_chans != 3:
            _set_input_channels(net, in_chans)
        return net
    raise ValueError(f"unknown model library {library!r}: use one of {', '.join(LIBRARIES)}")


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's kernel, stride or dilation: a pair (torch types it as any tuple)."""
    return (size[0], size[1])


def _set_input_channels(net: nn.Module, in_chans: int) -> None:
    """torchvision models take 3 channels: rebuild their first convolution for `in_chans`."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            conv = nn.Conv2d(
                in_chans,
                module.out_channels,
                _pair(module.kernel_size),
                _pair(module.stride),
                module.padding if isinstance(module.padding, str) else _pair(module.padding),
                _pair(module.dilation),
                module.groups,
                module.bias is not None,
                module.padding_mode,
                device=module.weight.device,
            )
            setattr(parent, attr, conv)
            return
    raise ValueError("the network has no 2-D convolution to take the input channels")


def logits_of(output: Any) -> torch.Tensor:
    """A network's class scores: the tensor itself, or the `logits` of a named tuple."""
    if torch.is_tensor(output):
        return output
    if hasattr(output, "logits"):
        return output.logits
    return output[0]


def _trace_shapes(net: nn.Module, names: list[str], x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of the named modules, in the order they run on `x`."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = [
        net.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: seen.append((n, tuple(out.shape))) if torch.is_tensor(out) else None
        )
        for n in names
    ]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(x)  # eval: batch norm takes a batch of one
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return seen


def _candidate_modules(net: nn.Module) -> list[str]:
    """Top-level blocks, and the blocks of a top-level `features`/`layers` sequence."""
    names = []
    for name, child in net.named_children():
        if name in ("features", "layers") and isinstance(child, nn.Sequential):
            names += [f"{name}.{sub}" for sub, _ in child.named_children()]
        elif "pool" not in name:
            names.append(name)
    return names


def _is_map(shape: tuple[int, ...]) -> bool:
    """An NCHW map of a square input: (1, C, S, S). Token sequences (ViT) and channels-last
    maps (Swin) are not stages a conv regressor or an attention map can use."""
    return len(shape) == 4 and shape[2] == shape[3] and shape[2] > 1


def feature_stages(library: str, net: nn.Module, probe_size: int = 224) -> list[Stage]:
    """Where a feature method may tap in: NCHW conv maps, shallow to deep. timm declares them
    (`feature_info`); for torchvision, the last block at each spatial resolution. Both are
    checked by one probe forward at `probe_size`."""
    declared: dict[str, int] = {}
    if library == "timm" and hasattr(net, "feature_info"):
        info: Any = net.feature_info  # timm's FeatureInfo (a list of dicts in older timm)
        declared = {i["module"]: int(i["reduction"]) for i in (info.info if hasattr(info, "info") else info)}
    names = list(declared) or _candidate_modules(net)
    x = torch.zeros(1, _input_channels(net), probe_size, probe_size, device=next(net.parameters()).device)
    last_at: dict[int, Stage] = {}
    for name, shape in _trace_shapes(net, names, x):
        if _is_map(shape):
            side = shape[-1]
            last_at.pop(side, None)  # keep the LAST module at each resolution, in run order
            last_at[side] = Stage(name, shape[1], declared.get(name) or round(probe_size / side))
    return list(last_at.values())


def _input_channels(net: nn.Module) -> int:
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def runs_at(net: nn.Module, size: int, in_chans: int) -> bool:
    """Whether the network runs on a (1, in_chans, size, size) input (on its own device)."""
    device = next(net.parameters()).device
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, in_chans, size, size, device=device))
        return True
    except Exception:
        return False
    finally:
        net.train(was_training)


def min_input_size(net: nn.Module, in_chans: int, default: int = 224) -> tuple[int | None, bool]:
    """(smallest square side the network runs on, whether that is the ONLY size it takes).
    (None, False) when it does not even run at its default size."""
    if not runs_at(net, default, in_chans):
        return None, False
    if not runs_at(net, default + 32, in_chans) or not runs_at(net, default - 32, in_chans):
        return default, True  # e.g. a ViT with a fixed patch grid
    lo, hi = 1, default  # runs at hi; find the smallest that runs (sizes above it all run)
    while lo < hi:
        mid = (lo + hi) // 2
        if runs_at(net, mid, in_chans):
            hi = mid
        else:
            lo = mid + 1
    return hi, False


def default_input_size(library: str, net: nn.Module) -> int:
    """The side the network was designed for (timm's pretrained_cfg; 224 for torchvision)."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if library == "timm" else None
    return int(size[-1]) if size else 224
