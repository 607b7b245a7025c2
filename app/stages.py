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

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # app.spec imports this module: no import cycle at run time
    from app.spec import CNNArch, MLPArch


def stage_shapes(arch: "MLPArch | CNNArch", input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    if arch.name == "mlp":
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
