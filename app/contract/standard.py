"""Standard architectures by name (timm, torchvision): their specs and what the API knows of
them without torch.

What a name may be, and each model's facts (reference parameter count, smallest input side,
feature stages with channels and reduction, the state dict's size as a function of input
channels and classes), come from model_names.json, written by scripts/make_model_names.py for
the pinned library versions (tests/distill/test_zoo.py checks it against them).

The worker builds the model with input channels and classes from the data, weights never
downloaded, behind an input adapter: uint8 or float inputs become float, are normalised and
resized to the model's input side (`input_size`, default: the data's own size), so the
exported model takes the data as the dataset gives it.
"""

from __future__ import annotations

import difflib
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

NAMES_FILE = Path(__file__).with_name("model_names.json")
# kwargs that would fetch or read weights, or that the data decides: never from a spec.
_RESERVED_KWARGS = ("num_classes", "in_chans", "features_only", "out_indices", "weights", "progress")
_RESERVED_WORDS = ("pretrained", "weight", "checkpoint", "path", "file", "cache", "url", "hub")
HOW_TO_BRING_WEIGHTS = (
    "weights are never downloaded (the worker has no network). To start from trained weights, "
    "save the network's state dict with safetensors.torch.save_file, upload it (POST /v1/artifacts, "
    "kind teacher) and name it as teacher.artifact with this arch, or as student.init to start the "
    "student from it; or export the model to ONNX."
)
KwargValue = bool | int | float | str | None


@lru_cache(maxsize=1)
def model_names() -> dict:
    """The names file: {"versions", "reference", "timm": {name: facts}, "torchvision": {...}}."""
    return json.loads(NAMES_FILE.read_text())


def model_facts(library: str, model: str) -> dict:
    return model_names()[library][model]


def closest_names(library: str, model: str, n: int = 5) -> list[str]:
    return difflib.get_close_matches(model, list(model_names()[library]), n=n, cutoff=0.5)


class _StandardArch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(max_length=200, description="The library's model name (GET /v1/catalog lists them).")
    kwargs: dict[str, KwargValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra keyword arguments of the library's constructor (e.g. drop_rate). Input "
        "channels and classes come from the data; weights are never downloaded.",
    )
    pretrained: bool = Field(False, description="Must stay false: " + HOW_TO_BRING_WEIGHTS)
    input_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Side of the square image the network sees; the input adapter "
        "resizes every batch to it inside the model (so the exported model takes the data as it is). "
        "Default: the data's own size.",
    )

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        library = cls.model_fields["name"].default
        if v not in model_names()[library]:
            close = closest_names(library, v)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise ValueError(
                f"{library} has no classification model {v!r} (in {library} "
                f"{model_names()['versions'][library]}).{hint} GET /v1/catalog lists them."
            )
        return v

    @field_validator("kwargs")
    @classmethod
    def _allowed(cls, v: dict) -> dict:
        for key in v:
            if key in _RESERVED_KWARGS or any(w in key.lower() for w in _RESERVED_WORDS):
                raise ValueError(
                    f"kwargs may not set {key!r}: input channels and classes come from the "
                    f"data, and {HOW_TO_BRING_WEIGHTS}"
                )
        return v

    @field_validator("pretrained")
    @classmethod
    def _no_download(cls, v: bool) -> bool:
        if v:
            raise ValueError(f"pretrained: true is not possible: {HOW_TO_BRING_WEIGHTS}")
        return v

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        data = handler(self)
        for key, default in (("kwargs", {}), ("pretrained", False), ("input_size", None)):
            if data.get(key) == default:
                data.pop(key)
        return data

    @property
    def library(self) -> str:
        return self.name  # type: ignore[attr-defined]

    @property
    def facts(self) -> dict:
        return model_facts(self.library, self.model)


class TimmArch(_StandardArch):
    """A timm model by name: {"name": "timm", "model": "resnet18"}."""

    name: Literal["timm"] = "timm"


class TorchvisionArch(_StandardArch):
    """A torchvision classification model by name: {"name": "torchvision", "model": "mobilenet_v3_small"}."""

    name: Literal["torchvision"] = "torchvision"


StandardArch = TimmArch | TorchvisionArch


def catalog_entry(library: str) -> dict:
    """What GET /v1/catalog says of a library: its version and the model names it accepts."""
    names = model_names()
    return {"version": names["versions"][library], "models": sorted(names[library])}


def image_layout(input_shape: tuple[int, ...]) -> tuple[int, tuple[int, int]] | None:
    """(channels, (height, width)) of an image example stored as (H, W) or (C, H, W); None
    for anything else (1-D signals, tables)."""
    if len(input_shape) == 2:
        return 1, (int(input_shape[0]), int(input_shape[1]))
    if len(input_shape) == 3 and input_shape[0] in (1, 3, 4):
        return int(input_shape[0]), (int(input_shape[1]), int(input_shape[2]))
    return None


def network_side(arch: StandardArch, input_shape: tuple[int, ...]) -> int:
    """The side of the square image the network sees: input_size, else the data's larger side."""
    layout = image_layout(input_shape)
    return arch.input_size or (max(layout[1]) if layout else 0)


def fit_messages(arch: StandardArch, input_shape: tuple[int, ...]) -> list[tuple[str, str]]:
    """(field under the arch, message) for each reason this model cannot run on the data."""
    if image_layout(input_shape) is None:
        return [
            (
                "name",
                f"a {arch.library} model takes images, (H, W) or (C, H, W), but the input is "
                f"{'x'.join(map(str, input_shape))}: use an mlp or cnn.",
            )
        ]
    facts = arch.facts
    side = network_side(arch, input_shape)
    if facts["fixed_input_size"] and side != facts["min_input_size"]:
        size = facts["min_input_size"]
        return [
            (
                "input_size",
                f"{arch.model} takes exactly {size}x{size} images, and would see "
                f"{side}x{side}: set input_size to {size} (the model resizes its input).",
            )
        ]
    if side < facts["min_input_size"]:
        size = facts["min_input_size"]
        return [
            (
                "input_size",
                f"{arch.model} needs images of at least {size}x{size}, and would see "
                f"{side}x{side}: set input_size to {size} or more (the model resizes its input).",
            )
        ]
    return []


def stage_shapes(arch: StandardArch, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Feature stages, (channels, side, side) each, at the network's input side. Sides are
    ceil(side / reduction), which padding-free models miss by a little: the losses pool
    every map adaptively, so only the channels must be exact."""
    side = network_side(arch, input_shape)
    return {name: (channels, math.ceil(side / r), math.ceil(side / r)) for name, channels, r in arch.facts["stages"]}


def state_size(arch: StandardArch, input_shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
    """(entries, integer entries, floating-point elements) of the bare network's state dict."""
    layout = image_layout(input_shape)
    channels = layout[0] if layout else 3
    state = arch.facts["state"]
    a, b, c = state["elements"]
    return state["keys"], state["integer"], a + b * channels + c * num_classes
