"""Write a trained model to files a user can run without our code.

- safetensors: the state dict (buffers included, so normalisation travels with
  it) plus, in the header metadata, the config needed to rebuild the model.
  No pickle anywhere.
- ONNX: the fp32 graph, raw input in, logits out, dynamic batch axis.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from worker.distill.models import Classifier, model_from_state

FORMAT_TAG = "distill.classifier/1"


@dataclass(frozen=True)
class OutputFile:
    name: str  # file name inside the output folder
    path: Path
    media_type: str
    kind: str  # "safetensors", "onnx" or "report"


def _cpu_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("cpu").float().eval()


def save_safetensors(model: Classifier, path: Path) -> Path:
    state = {k: v.detach().contiguous() for k, v in _cpu_copy(model).state_dict().items()}
    meta = {"format": FORMAT_TAG, "config": json.dumps(model.config(), sort_keys=True)}
    save_file(state, str(path), metadata=meta)
    return Path(path)


def load_safetensors(path: Path) -> Classifier:
    """Rebuild a Classifier from a file written by save_safetensors."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT_TAG:
            raise ValueError(f"{path} was not written by distill (format {meta.get('format')!r})")
        state = {k: f.get_tensor(k) for k in f.keys()}
    return model_from_state(json.loads(meta["config"]), state)


def export_onnx(model: Classifier, path: Path, *, opset: int) -> Path:
    cpu = _cpu_copy(model)
    example = torch.zeros((2, *cpu.input_shape), dtype=torch.float32)
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
    return Path(path)


def export_model(
    model: Classifier, formats: list[str], out_dir: Path, *, stem: str, onnx_opset: int
) -> list[OutputFile]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt == "safetensors":
            path = save_safetensors(model, out_dir / f"{stem}.safetensors")
        elif fmt == "onnx":
            path = export_onnx(model, out_dir / f"{stem}.onnx", opset=onnx_opset)
        else:
            raise ValueError(f"unknown export format {fmt!r}")
        # Neither format has a registered media type; octet-stream is the honest one.
        written.append(OutputFile(path.name, path, "application/octet-stream", fmt))
    return written


def onnx_logits(path: Path, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts = [
        session.run(["logits"], {"input": x[i : i + batch_size]})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of an exported ONNX model, run by onnxruntime on the CPU."""
    return int((onnx_logits(path, x).argmax(1) == np.asarray(y)).sum()) / len(y)
