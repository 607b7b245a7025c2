"""A timm or torchvision network behind an input adapter, with the Classifier's interface.

The adapter takes the data as the dataset stores it ((N, H, W) grey or (N, C, H, W), uint8 or
float), turns it into float, normalises it with the training split's mean and std (buffers,
as our own models do) and resizes it to the network's square input side, all inside the
graph: the exported model takes raw data. Feature stages are read with forward hooks on the
stage modules (zoo.feature_stages names them), so forward stays the library's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from app.contract.standard import StandardArch, image_layout, network_side
from worker.distill import zoo


class InputAdapter(nn.Module):
    mean: torch.Tensor  # buffers (register_buffer)
    std: torch.Tensor

    def __init__(self, input_shape: tuple[int, ...], side: int, mean: float, std: float) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError("std must be > 0")
        layout = image_layout(tuple(input_shape))
        if layout is None:
            raise ValueError(f"a standard architecture takes images, (H, W) or (C, H, W), not {input_shape}")
        self.channels, spatial = layout
        self.grey = len(input_shape) == 2  # (N, H, W): one channel axis to add
        self.size = None if tuple(spatial) == (side, side) else (side, side)
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        if self.grey:
            x = x.unsqueeze(1)
        if self.size is not None:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


class StandardClassifier(nn.Module):
    def __init__(
        self, arch: StandardArch, input_shape: tuple[int, ...], num_classes: int, mean: float = 0.0, std: float = 1.0
    ) -> None:
        super().__init__()
        self.arch = arch
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        side = network_side(arch, self.input_shape)
        self.adapter = InputAdapter(self.input_shape, side, mean, std)
        self.net = zoo.create_network(
            arch.library, arch.model, in_chans=self.adapter.channels, num_classes=self.num_classes, kwargs=arch.kwargs
        )
        if not zoo.runs_at(self.net, side, self.adapter.channels):
            raise ValueError(
                f"{arch.library} {arch.model} does not run on {side}x{side} images: choose another input_size"
            )
        # The stages the API listed (model_names.json, pinned to the library by a test).
        self.stage_names = [name for name, _, _ in arch.facts["stages"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return zoo.logits_of(self.net(self.adapter(x)))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        captured: dict[str, torch.Tensor] = {}
        handles = [
            self.net.get_submodule(name).register_forward_hook(
                lambda _m, _i, out, name=name: captured.__setitem__(name, out)
            )
            for name in self.stage_names
        ]
        try:
            logits = self.forward(x)
        finally:
            for h in handles:
                h.remove()
        return logits, [captured[name] for name in self.stage_names]

    def config(self) -> dict:
        """What models.build_model needs to rebuild this model (mean/std travel as buffers)."""
        return {"arch": self.arch.model_dump(), "input_shape": list(self.input_shape), "num_classes": self.num_classes}

    def load_network_state(self, state: dict[str, torch.Tensor]) -> None:
        """Weights of the bare network (what a user saves from timm/torchvision), or of this
        whole model (what our export writes: adapter buffers and `net.` keys), loaded strictly."""
        if any(k.startswith("net.") for k in state):
            self.load_state_dict(state, strict=True)
        else:
            self.net.load_state_dict(state, strict=True)
