"""Write a trained model to files a user can run without our code.

- safetensors: the state dict (buffers included, so normalisation travels with
  it) plus, in the header metadata, the config needed to rebuild the model.
  No pickle anywhere.
- ONNX: the fp32 graph, raw input in (float32, or uint8 for images: the model converts),
  logits out, dynamic batch axis; ONE self-contained file (weights inside, never a side
  .onnx.data), checked against the trained model before the job may succeed.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from worker.distill.models import model_from_state

if TYPE_CHECKING:
    from worker.distill.models import Model

M = TypeVar("M", bound=nn.Module)

FORMAT_TAG = "distill.classifier/1"
# The exported graph must give the trained model's logits: beyond this (absolute, on logits
# scaled to at most 1 in magnitude) or below this argmax agreement, the export fails.
PARITY_TOLERANCE = 1e-3
PARITY_AGREEMENT = 0.99


class ExportError(RuntimeError):
    """The exported file does not behave like the trained model."""


@dataclass(frozen=True)
class OutputFile:
    name: str  # file name inside the output folder
    path: Path
    media_type: str
    kind: str  # "safetensors", "onnx" or "report"
    check: dict | None = None  # ONNX: the parity check against the trained model (check_onnx)


def _cpu_copy(model: M) -> M:
    return copy.deepcopy(model).to("cpu").float().eval()


def save_safetensors(model: Model, path: Path) -> Path:
    state = {k: v.detach().contiguous() for k, v in _cpu_copy(model).state_dict().items()}
    meta = {"format": FORMAT_TAG, "config": json.dumps(model.config(), sort_keys=True)}
    save_file(state, str(path), metadata=meta)
    return Path(path)


def load_safetensors(path: Path) -> Model:
    """Rebuild a Classifier from a file written by save_safetensors."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT_TAG:
            raise ValueError(f"{path} was not written by distill (format {meta.get('format')!r})")
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    return model_from_state(json.loads(meta["config"]), state)


def export_onnx(model: Model, path: Path, *, opset: int, input_dtype=torch.float32) -> Path:
    cpu = _cpu_copy(model)
    example = torch.zeros((2, *cpu.input_shape), dtype=input_dtype)
    # The legacy (TorchScript) exporter, on purpose: dynamo=True needs onnxscript,
    # which the worker does not install. Its deprecation warning is known, not news.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        torch.onnx.export(
            cpu,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    _make_self_contained(Path(path))
    return Path(path)


def _make_self_contained(path: Path) -> None:
    """Weights inside the .onnx file: a download without a side .onnx.data file must work."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    graph = onnx.load(str(path), load_external_data=False)
    if not any(uses_external_data(t) for t in graph.graph.initializer):
        return
    side = {
        path.parent / e.value
        for t in graph.graph.initializer
        if uses_external_data(t)
        for e in t.external_data
        if e.key == "location"
    }
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=False)
    for f in side:
        f.unlink(missing_ok=True)


def check_onnx(path: Path, model: nn.Module, x: np.ndarray) -> dict:
    """Run the exported file (onnxruntime) and the trained model (torch, fp32, CPU) on `x`:
    {"max_abs_logit_diff", "argmax_agreement", "examples"}; ExportError when they differ."""
    from worker.distill.inference import predict_logits

    expected = predict_logits(_cpu_copy(model), x).numpy()
    got = onnx_logits(path, x)
    if got.shape != expected.shape:
        raise ExportError(
            f"the exported ONNX file gives logits of shape {got.shape}, the trained model {expected.shape}"
        )
    diff = float(np.max(np.abs(got - expected))) if len(x) else 0.0
    agreement = float(np.mean(got.argmax(1) == expected.argmax(1))) if len(x) else 1.0
    scale = max(1.0, float(np.max(np.abs(expected)))) if len(x) else 1.0
    check = {"max_abs_logit_diff": diff, "argmax_agreement": agreement, "examples": len(x)}
    if not np.isfinite(diff) or diff > PARITY_TOLERANCE * scale or agreement < PARITY_AGREEMENT:
        raise ExportError(
            f"the exported ONNX file does not match the trained model on the test split: max abs "
            f"logit difference {diff:.3g} (allowed {PARITY_TOLERANCE * scale:.3g}), argmax agreement "
            f"{agreement:.4f} (needed {PARITY_AGREEMENT}); the export is refused rather than shipped"
        )
    return check


def export_model(
    model: Model,
    formats: list[str],
    out_dir: Path,
    *,
    stem: str,
    onnx_opset: int,
    check_x: np.ndarray | None = None,
) -> list[OutputFile]:
    """Write the model in each format. With `check_x` (the test split's inputs, as the dataset
    stores them), the ONNX file takes that dtype and is checked against the model on it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        check = None
        if fmt == "safetensors":
            path = save_safetensors(model, out_dir / f"{stem}.safetensors")
        elif fmt == "onnx":
            dtype = torch.uint8 if check_x is not None and check_x.dtype == np.uint8 else torch.float32
            path = export_onnx(model, out_dir / f"{stem}.onnx", opset=onnx_opset, input_dtype=dtype)
            if check_x is not None:
                check = check_onnx(path, model, check_x)
        else:
            raise ValueError(f"unknown export format {fmt!r}")
        # Neither format has a registered media type; octet-stream is the honest one.
        written.append(OutputFile(path.name, path, "application/octet-stream", fmt, check))
    return written


def onnx_logits(path: Path, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # uint8 for a graph that takes images as stored; float32 otherwise
    dtype = np.uint8 if session.get_inputs()[0].type == "tensor(uint8)" else np.float32
    x = np.ascontiguousarray(x, dtype=dtype)
    parts = [session.run(["logits"], {"input": x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of an exported ONNX model, run by onnxruntime on the CPU."""
    return int((onnx_logits(path, x).argmax(1) == np.asarray(y)).sum()) / len(y)
