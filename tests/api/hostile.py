"""Hostile inputs and a real API process for the tests of issue 10: a uvicorn started as the
README starts it (PostgreSQL, the filesystem broker), and ONNX graphs that allocate or loop
without bound when they are run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tests.support.services import Service, running_service, subprocess_env


@contextmanager
def api_process(tmp_path: Path, database_url: str, **settings: str) -> Iterator[Service]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    with running_service(subprocess_env(tmp_path, database_url, "filesystem://", **settings), logs) as service:
        yield service


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def incoming_files(service: Service) -> list[Path]:
    folder = Path(service.env["DISTILL_HOME"]) / "artifacts" / "uploads" / ".incoming"
    return sorted(folder.glob("*")) if folder.exists() else []


def _classifier_head(graph_nodes: list, extra: str) -> tuple[list, list]:
    """x [N, 4] -> logits [N, 2] = x @ W + extra (a scalar or [N, 1] the attack computes)."""
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    nodes = [
        *graph_nodes,
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", extra], ["logits"]),
    ]
    return nodes, [weight]


def _model(nodes: list, initializers: list) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "attack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def constant_of_shape_bomb(scale: int = 1 << 24) -> bytes:
    """A tensor of shape(x) * [1, scale] floats, made from the input's own shape (nothing to
    fold at load time): on the 8 x 4 probe batch, 8 x 2**26 x 4 bytes = 2 GiB."""
    from onnx import numpy_helper

    factor = numpy_helper.from_array(np.array([1, scale], np.int64), "scale")
    nodes = [
        _node("Shape", ["x"], ["shape"]),
        _node("Mul", ["shape", "scale"], ["huge_shape"]),
        _node("ConstantOfShape", ["huge_shape"], ["huge"]),
        _node("ReduceSum", ["huge", "axis1"], ["row_sums"], keepdims=1),
    ]
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis1")
    nodes, inits = _classifier_head(nodes, "row_sums")
    return _model(nodes, [*inits, factor, axis])


def endless_loop(trip_count: int = 2**62) -> bytes:
    """A Loop of 2**62 steps that adds 1 to a counter: never finishes on the probe batch."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [_node("Identity", ["cond_in"], ["cond_out"]), _node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    inits = [
        numpy_helper.from_array(np.array(trip_count, np.int64), "M"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.array(0.0, np.float32), "v0"),
    ]
    nodes = [helper.make_node("Loop", ["M", "cond", "v0"], ["v_final"], body=body)]
    nodes, head = _classifier_head(nodes, "v_final")
    return _model(nodes, head + inits)


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: object):
    from onnx import helper

    return helper.make_node(op, inputs, outputs, **attrs)


def is_root() -> bool:
    return os.geteuid() == 0
