"""What the report says about a trained model: quality, calibration, size, speed.

Final metrics are computed on a CPU copy of the model in fp32, whatever device
trained it, so the numbers match what the exported (fp32, CPU) files give.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.distill.data import Splits
from worker.distill.inference import predict_logits
from worker.distill.models import Classifier, count_parameters, plus_external

ONNX_OPSET = 17


def accuracy(logits: torch.Tensor, y: torch.Tensor | np.ndarray) -> float:
    # count / n in Python floats: exactly what onnx_accuracy computes from the same counts
    return (logits.argmax(1) == torch.as_tensor(y)).sum().item() / len(logits)


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Share of examples where student and teacher predict the same class (top-1)."""
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).sum().item() / len(student_logits)


def nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true class (cross-entropy)."""
    return F.cross_entropy(logits.float(), torch.as_tensor(y)).item()


def expected_calibration_error(logits: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins (lo, hi] of
    |B|/n * |accuracy(B) - mean confidence(B)|, confidence = max softmax probability."""
    probs = torch.softmax(logits.double(), dim=1)
    top, pred = probs.max(1)
    conf, correct = top.numpy(), (pred == torch.as_tensor(y)).numpy()
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def state_bytes(model: nn.Module) -> int | None:
    """Bytes of the state dict's tensors (parameters + buffers), i.e. the
    safetensors payload without its small header; plus a brought ONNX teacher's
    initializers (`external_bytes`), None when those are unknown."""
    n = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return plus_external(model, n, "external_bytes")


# Latency is measured for a fixed, small wall-clock budget (after a few warm-up calls), not a
# fixed number of runs: a large model costs its job no more than this per measurement.
LATENCY_BUDGET_SECONDS = 0.15
LATENCY_MAX_RUNS = 200
LATENCY_WARMUP = 5
# onnxruntime runs on this many threads (intra- and inter-op): what a deployed single-request
# server uses, and a figure that does not change with the machine's core count.
ONNX_LATENCY_THREADS = 1
# A batch as a throughput server sees it; measured with one warm-up call and the same budget
# (at least one timed call), so a big model costs its job two batch passes, not hundreds.
ONNX_LATENCY_BATCH = 64


def _median_ms(call: Callable[[], object], max_runs: int, warmup: int = LATENCY_WARMUP, min_runs: int = 3) -> float:
    for _ in range(warmup):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_BUDGET_SECONDS
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


@torch.inference_mode()
def latency_ms(model: nn.Module, runs: int = LATENCY_MAX_RUNS) -> float:
    """Median wall time of one single-example forward pass in PyTorch on the CPU, in ms
    (at most `runs` runs within LATENCY_BUDGET_SECONDS)."""
    model = copy.deepcopy(model).to("cpu").eval()
    # Every model the worker evaluates keeps its raw input shape (ours, zoo, ONNX and ensemble teachers).
    input_shape = cast(tuple[int, ...], model.input_shape)
    x = torch.zeros((1, *input_shape), dtype=torch.float32)
    return _median_ms(lambda: model(x), runs)


def onnx_latencies(model: nn.Module, runs: int = LATENCY_MAX_RUNS) -> dict[str, float] | None:
    """The same in onnxruntime (the runtime a user deploys the exported file with), on the CPU
    with ONNX_LATENCY_THREADS threads: one example (`latency_onnx_ms`) and one batch of
    ONNX_LATENCY_BATCH (`latency_onnx_batch_ms`, the whole batch); None for a model that is not
    ours to export (a brought ONNX teacher, an ensemble)."""
    import onnxruntime as ort

    from worker.distill.export import export_onnx
    from worker.distill.zoo_model import StandardClassifier

    if not isinstance(model, (Classifier, StandardClassifier)):
        return None
    with tempfile.TemporaryDirectory(prefix="latency-") as folder:
        path = export_onnx(model, Path(folder) / "model.onnx", opset=ONNX_OPSET)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = ONNX_LATENCY_THREADS
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    one = {"input": np.zeros((1, *model.input_shape), dtype=np.float32)}
    batch = {"input": np.zeros((ONNX_LATENCY_BATCH, *model.input_shape), dtype=np.float32)}
    return {
        "latency_onnx_ms": _median_ms(lambda: session.run(["logits"], one), runs),
        "latency_onnx_batch_ms": _median_ms(lambda: session.run(["logits"], batch), runs, warmup=1, min_runs=1),
        "latency_onnx_batch_size": ONNX_LATENCY_BATCH,
        "latency_onnx_threads": ONNX_LATENCY_THREADS,
    }


def onnx_latency_ms(model: nn.Module, runs: int = LATENCY_MAX_RUNS) -> float | None:
    """onnxruntime's single-example figure alone (None where onnx_latencies has none)."""
    return (onnx_latencies(model, runs) or {}).get("latency_onnx_ms")


def evaluate(
    model: nn.Module,
    splits: Splits,
    teacher_test_logits: torch.Tensor | None = None,
    *,
    latency_runs: int = 200,
) -> dict[str, float | None]:
    """Report metrics of one trained model (fp32, CPU); None where a figure is unknown (the
    parameters and bytes of a brought ONNX teacher whose initializers could not be read)."""
    cpu = copy.deepcopy(model).to("cpu").float().eval()
    train_logits = predict_logits(cpu, splits.train.x)
    val_logits = predict_logits(cpu, splits.val.x)
    test_logits = predict_logits(cpu, splits.test.x)
    y_test = torch.as_tensor(splits.test.y)
    test_accuracy = accuracy(test_logits, y_test)
    val_accuracy = accuracy(val_logits, splits.val.y)
    train_accuracy = accuracy(train_logits, splits.train.y)
    out: dict[str, float | None] = {
        "test_accuracy": test_accuracy,
        "val_accuracy": val_accuracy,
        "train_accuracy": train_accuracy,
        "generalization_gap": train_accuracy - test_accuracy,
    }
    if teacher_test_logits is not None:
        out["test_agreement"] = agreement(test_logits, teacher_test_logits.cpu())
    out["test_ece"] = expected_calibration_error(test_logits, y_test)
    out["test_nll"] = nll(test_logits, y_test)
    out["parameters"] = count_parameters(cpu)
    out["bytes"] = state_bytes(cpu)
    out["latency_ms"] = latency_ms(cpu, runs=latency_runs)
    out.update(onnx_latencies(cpu, runs=latency_runs) or {})
    return out
