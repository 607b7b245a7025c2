"""Architectures: an arch spec + the dataset's shape -> a Classifier.

Every model takes RAW inputs of shape (N, *input_shape) and normalises them
itself (buffers `mean`/`std`, fitted by the caller on the training split), so
the exported ONNX graph is usable on the data a user actually has.

A Classifier is a list of named stages followed by a head.  Stages are where
feature-distillation methods (hints, attention transfer) will tap in, so
`forward_features` returns every stage's output alongside the logits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import nn

from app.contract.architectures import CNNArch, MLPArch
from app.contract.standard import StandardArch, TimmArch, TorchvisionArch

if TYPE_CHECKING:
    from worker.distill.zoo_model import StandardClassifier

ArchSpec = MLPArch | CNNArch | TimmArch | TorchvisionArch
# A stage list, its names and the head: what the builders of our own architectures give.
Layers: TypeAlias = tuple[list[nn.Module], list[str], nn.Module]


class Classifier(nn.Module):
    mean: torch.Tensor  # buffers (register_buffer)
    std: torch.Tensor

    def __init__(
        self,
        *,
        arch: ArchSpec,
        input_shape: tuple[int, ...],
        num_classes: int,
        mean: float,
        std: float,
        stages: list[nn.Module],
        stage_names: list[str],
        head: nn.Module,
    ) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError("std must be > 0")
        # Kept so the same model can be rebuilt from a safetensors file (see `config`).
        self.arch = arch
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float32))
        self.stages = nn.ModuleList(stages)
        self.stage_names = list(stage_names)
        self.head = head

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if isinstance(self.arch, CNNArch):
            # (N, C, H, W) images keep their channels; 1-D and 2-D inputs get one channel
            return x if len(self.input_shape) == 3 else x.unsqueeze(1)
        return x.flatten(1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self._prepare(x)
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return self.head(h), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._prepare(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)

    def config(self) -> dict:
        """What `build_model` needs to rebuild this model (mean/std travel as buffers)."""
        return {
            "arch": self.arch.model_dump(),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }


# What build_model makes: a Classifier (our architectures) or a StandardClassifier (timm,
# torchvision), which has the same interface (input_shape, num_classes, stage_names,
# forward_features, config). For annotations only: zoo_model imports timm.
if TYPE_CHECKING:
    Model: TypeAlias = Classifier | StandardClassifier


def _mlp(arch: MLPArch, input_shape: tuple[int, ...], num_classes: int) -> Layers:
    width = math.prod(input_shape)
    stages: list[nn.Module] = []
    names: list[str] = []
    for i, h in enumerate(arch.hidden):
        layers: list[nn.Module] = [nn.Linear(width, h), nn.ReLU()]
        if arch.dropout > 0:
            layers.append(nn.Dropout(arch.dropout))
        stages.append(nn.Sequential(*layers))
        names.append(f"hidden{i}")
        width = h
    return stages, names, nn.Linear(width, num_classes)


def _cnn(arch: CNNArch, input_shape: tuple[int, ...], num_classes: int) -> Layers:
    c_in, axes = (input_shape[0], input_shape[1:]) if len(input_shape) == 3 else (1, input_shape)
    conv: type[nn.Conv1d | nn.Conv2d]
    bn: type[nn.BatchNorm1d | nn.BatchNorm2d]
    pool: type[nn.MaxPool1d | nn.MaxPool2d]
    if len(axes) == 1:
        conv, bn, pool = nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d
    elif len(axes) == 2:
        conv, bn, pool = nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d
    else:
        raise ValueError(f"cnn takes 1-D, 2-D or (C, H, W) inputs, not shape {input_shape}")
    n = len(arch.channels)
    spatial = [s >> n for s in axes]  # each MaxPool(2) floor-halves every axis
    if min(spatial) < 1:
        raise ValueError(f"{n} conv stages are too many for input shape {input_shape}")
    stages: list[nn.Module] = []
    names: list[str] = []
    for i, c in enumerate(arch.channels):
        stages.append(
            nn.Sequential(
                conv(c_in, c, arch.kernel_size, padding=arch.kernel_size // 2),
                bn(c),
                nn.ReLU(),
                pool(2),
            )
        )
        names.append(f"conv{i}")
        c_in = c
    width = c_in * math.prod(spatial)
    if arch.hidden > 0:
        stages.append(nn.Sequential(nn.Flatten(), nn.Linear(width, arch.hidden), nn.ReLU()))
        names.append("dense")
        width = arch.hidden
    head: list[nn.Module] = [nn.Flatten()]
    if arch.dropout > 0:
        head.append(nn.Dropout(arch.dropout))
    head.append(nn.Linear(width, num_classes))
    return stages, names, nn.Sequential(*head)


def build_model(
    arch: ArchSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    mean: float = 0.0,
    std: float = 1.0,
    *,
    seed: int | None = None,
) -> Model:
    """Build a Classifier (or, for timm/torchvision, a zoo_model.StandardClassifier, which has
    the same interface). With `seed`, the initial weights depend on it alone
    (the global RNG is forked, so nobody else's random stream moves)."""
    input_shape = tuple(input_shape)

    def make() -> Model:
        if isinstance(arch, (TimmArch, TorchvisionArch)):
            from worker.distill.zoo_model import StandardClassifier  # imports timm: only when asked

            return StandardClassifier(arch, input_shape, num_classes, mean, std)
        if isinstance(arch, MLPArch):
            stages, names, head = _mlp(arch, input_shape, num_classes)
        else:
            stages, names, head = _cnn(arch, input_shape, num_classes)
        return Classifier(
            arch=arch,
            input_shape=input_shape,
            num_classes=num_classes,
            mean=mean,
            std=std,
            stages=stages,
            stage_names=names,
            head=head,
        )

    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def model_from_config(config: Mapping) -> Model:
    """Inverse of Classifier.config(): an untrained model of the same shape."""
    from pydantic import TypeAdapter

    from app.contract.architectures import Arch

    cfg = json.loads(config) if isinstance(config, str) else config
    standard = cfg["arch"].get("name") in ("timm", "torchvision")
    arch = TypeAdapter(StandardArch if standard else Arch).validate_python(cfg["arch"])
    return build_model(arch, tuple(cfg["input_shape"]), int(cfg["num_classes"]))


def model_from_state(config: Mapping, state: Mapping[str, torch.Tensor]) -> Model:
    """Rebuild a trained model: its config plus its state dict (buffers included)."""
    model = model_from_config(config)
    model.load_state_dict(dict(state), strict=True)
    return model.eval()


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Weights from a safetensors file into a built model, every key matched (strict): ours with
    their mean/std buffers; a timm/torchvision model's bare network state dict, or our own export
    of it (adapter buffers and `net.` keys)."""
    load_network_state = getattr(model, "load_network_state", None)  # a StandardClassifier's
    if load_network_state is not None:
        load_network_state(dict(state))
    else:
        model.load_state_dict(dict(state), strict=True)


def plus_external(model: nn.Module, n: int, attribute: str) -> int | None:
    """n plus what submodules keep outside torch under `attribute` (a brought ONNX teacher's
    initializers: external_parameters, external_bytes); None when one of those is unknown."""
    for m in model.modules():
        external = getattr(m, attribute, 0)
        if external is None:
            return None
        n += external
    return n


def count_parameters(model: nn.Module) -> int | None:
    """Parameters of the model, a brought ONNX teacher's included (None when unknown)."""
    return plus_external(model, sum(p.numel() for p in model.parameters()), "external_parameters")
