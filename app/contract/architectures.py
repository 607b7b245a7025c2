"""Architecture specs (the names the API accepts and their parameters); worker/distill/models.py
builds them, app/contract/stages.py knows their stage shapes without torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from app.contract.base import Strict
from app.contract.standard import TimmArch, TorchvisionArch


class MLPArch(Strict):
    name: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default_factory=lambda: [256, 256],
        max_length=16,
        description="Width of each hidden layer; [] is logistic regression.",
        examples=[[64, 64]],
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")


class CNNArch(Strict):
    name: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32, 64],
        min_length=1,
        max_length=8,
        description="Channels of each conv stage. A stage is conv -> batch norm -> ReLU -> "
        "2x max-pool, 1-D or 2-D as the input shape says (colour images, C x H x W: 2-D over their "
        "C channels), so every stage halves each "
        "spatial size: the input must have at least 2**len(channels) along each axis.",
        examples=[[32, 64, 64]],
    )
    kernel_size: int = Field(3, ge=1, le=15, description="Odd convolution kernel size.")
    hidden: int = Field(128, ge=0, le=8192, description="Width of the dense layer before the head; 0 for none.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head.")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("kernel_size must be odd so that 'same' padding keeps the length")
        return v


Arch = Annotated[MLPArch | CNNArch | TimmArch | TorchvisionArch, Field(discriminator="name")]
"""Ours (mlp, cnn) or a standard one by name (timm, torchvision: app/contract/standard.py)."""
