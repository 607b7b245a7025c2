"""Stage names and output shapes of an architecture, without torch.

A feature method (fitnet, attention) names a teacher stage and a student stage;
the API must refuse a spec whose stages do not exist or cannot be matched before
a worker sees it, so the shapes are computed here from the arch spec alone.
worker/distill/models.py builds the same stages; tests/distill/test_stages.py
builds the torch models and pins names AND per-stage output shapes to this.

Shapes are per example, without the batch axis:
- MLP: hidden0..n-1, each (width,);
- CNN: conv0..n-1, each (channels, *spatial) where every stage floor-halves each
  spatial axis of the input; then "dense" (hidden,) when hidden > 0.
"""

from __future__ import annotations

from app.contract import standard
from app.contract.architectures import Arch, CNNArch, MLPArch
from app.contract.base import FieldError


def stage_shapes(arch: Arch, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    if isinstance(arch, (standard.TimmArch, standard.TorchvisionArch)):
        return standard.stage_shapes(arch, input_shape)
    if isinstance(arch, MLPArch):
        return {f"hidden{i}": (h,) for i, h in enumerate(arch.hidden)}
    shapes: dict[str, tuple[int, ...]] = {}
    for i, c in enumerate(arch.channels):
        shapes[f"conv{i}"] = (c, *[s >> (i + 1) for s in input_shape])
    if arch.hidden > 0:
        shapes["dense"] = (arch.hidden,)
    return shapes


def is_conv(shape: tuple[int, ...]) -> bool:
    """A conv map has a channel axis and at least one spatial axis."""
    return len(shape) >= 2


def state_shapes(
    arch: MLPArch | CNNArch, input_shape: tuple[int, ...], num_classes: int
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every entry of the state dict of worker/distill/models.py's Classifier for this
    architecture: key -> (shape, safetensors dtype). Brought safetensors teachers are checked
    against it at submission; tests/distill/test_stages.py pins it to the torch models."""
    import math

    f32 = "F32"
    state: dict[str, tuple[tuple[int, ...], str]] = {"mean": ((), f32), "std": ((), f32)}
    if isinstance(arch, MLPArch):
        width = math.prod(input_shape)
        for i, h in enumerate(arch.hidden):
            state[f"stages.{i}.0.weight"] = ((h, width), f32)
            state[f"stages.{i}.0.bias"] = ((h,), f32)
            width = h
        state["head.weight"] = ((num_classes, width), f32)
        state["head.bias"] = ((num_classes,), f32)
        return state
    c_in, kernel = 1, (arch.kernel_size,) * len(input_shape)
    for i, c in enumerate(arch.channels):
        state[f"stages.{i}.0.weight"] = ((c, c_in, *kernel), f32)
        state[f"stages.{i}.0.bias"] = ((c,), f32)
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"stages.{i}.1.{name}"] = ((c,), f32)
        state[f"stages.{i}.1.num_batches_tracked"] = ((), "I64")
        c_in = c
    n = len(arch.channels)
    width = c_in * math.prod(s >> n for s in input_shape)
    if arch.hidden > 0:
        state[f"stages.{n}.1.weight"] = ((arch.hidden, width), f32)
        state[f"stages.{n}.1.bias"] = ((arch.hidden,), f32)
        width = arch.hidden
    linear = 2 if arch.dropout > 0 else 1  # head = Flatten, [Dropout], Linear
    state[f"head.{linear}.weight"] = ((num_classes, width), f32)
    state[f"head.{linear}.bias"] = ((num_classes,), f32)
    return state


def stage_error(loc: tuple, which: str, stage: str, shapes: dict, need_conv: bool) -> FieldError | None:
    def listing() -> str:
        return ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items()) or "none"

    if stage not in shapes:
        return FieldError(
            loc=loc, msg=f"the {which} has no stage {stage!r}; its stages (name and output shape) are: {listing()}."
        )
    if need_conv and not is_conv(shapes[stage]):
        conv = [k for k, v in shapes.items() if is_conv(v)]
        return FieldError(
            loc=loc,
            msg=f"attention transfer needs conv stages, but the {which}'s "
            f"{stage!r} is flat ({shapes[stage][0]} features); its conv stages are: "
            f"{', '.join(conv) or 'none (use a cnn)'}. All stages: {listing()}.",
        )
    return None
