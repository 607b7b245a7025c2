"""An ONNX classifier seen through onnxruntime: numpy in, logits out.

Used twice: by the API to inspect an uploaded teacher (which output holds the class
scores, are they logits or probabilities, how many classes), and by the worker to compute
the teacher's outputs. onnx and onnxruntime are imported when a model is opened, so that
importing this module costs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from app.contract.errors import InspectionError

OUTPUT_KINDS = ("logits", "probabilities", "probability_map")
PROBE_EXAMPLES = 8
_TENSOR_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}
_FLOATS = {"float32", "float64", "float16"}
_LABELS = {"int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "string"}
_SINGLE_FILE = "Save the model as one file: onnx.save_model(model, 'teacher.onnx', save_as_external_data=False)."


def _dims(shape: Any) -> list[int | None]:
    """A NodeArg shape with symbolic or unknown dimensions as None."""
    if not isinstance(shape, (list, tuple)):
        return []
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def _escapes(location: str) -> bool:
    if not location:
        return False
    if location.startswith(("/", "\\")) or PureWindowsPath(location).drive:
        return True
    return ".." in PurePosixPath(location.replace("\\", "/")).parts


def _graph_tensors(graph: Any) -> Any:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Any:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def check_external_data(model: Any) -> None:
    """Refuse any tensor kept outside the file: we store one file, and a location that
    is absolute or climbs out with '..' would read another file of the server."""
    import onnx

    tensors = list(_graph_tensors(model.graph))
    for function in model.functions:
        for node in function.node:
            tensors.extend(_node_tensors(node))
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL and not len(tensor.external_data):
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        if _escapes(location):
            raise InspectionError(
                f"The ONNX model is refused: tensor {tensor.name!r} keeps its data in "
                f"{location!r}, a path outside the model's folder. {_SINGLE_FILE}",
                field="file",
            )
        raise InspectionError(
            f"The ONNX model keeps tensor {tensor.name!r} in a separate file ({location!r}), "
            f"and only the uploaded file is kept. {_SINGLE_FILE}",
            field="file",
        )


def load_checked(path: Path) -> Any:
    """The ModelProto without its external data, refused if it has any."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, and whatever a damaged protobuf raises
        raise InspectionError(
            f"Not an ONNX model ({type(exc).__name__}: {exc}). Export it with "
            "torch.onnx.export(model, example_input, 'teacher.onnx') or skl2onnx.",
            field="file",
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise InspectionError(
            "Not an ONNX model: it has no graph. Export it again with "
            "torch.onnx.export(model, example_input, 'teacher.onnx').",
            field="file",
        )
    check_external_data(model)
    return model


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InspectionError(
            f"onnxruntime cannot load the model: {exc}. Use standard ONNX operators (no custom "
            "ops) and an opset onnxruntime supports.",
            field="file",
        ) from exc


def _looks_like_probabilities(p: np.ndarray, tol: float) -> bool:
    if p.size == 0 or not np.all(np.isfinite(p)):
        return False
    return bool(np.all(p >= -tol) and np.all(p <= 1 + tol) and np.allclose(p.sum(axis=1), 1.0, atol=tol))


def _sort_key(key: Any) -> tuple:
    return (0, key, "") if isinstance(key, (int, np.integer)) else (1, 0, str(key))


def _classify(out: Any, value: Any) -> tuple[str, Any]:
    """What one probed output is: (kind, its classes for a score tensor, its sorted keys for a
    probability map, else None)."""
    dtype = _TENSOR_DTYPES.get(out.type)
    if dtype in _FLOATS:
        arr = np.asarray(value)
        if arr.ndim == 2 and arr.shape[0] == PROBE_EXAMPLES and arr.shape[1] >= 2:
            arr = arr.astype(np.float64)
            probs = _looks_like_probabilities(arr, 1e-3) or (
                "prob" in out.name.lower() and _looks_like_probabilities(arr, 1e-2)
            )
            return ("probabilities" if probs else "logits"), int(arr.shape[1])
    elif dtype in _LABELS:
        arr = np.asarray(value)
        if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
            return "label", None
    elif out.type.startswith("seq(map("):
        rows = list(value)
        if rows and all(isinstance(r, dict) for r in rows):
            keys = sorted(rows[0], key=_sort_key)
            if len(keys) >= 2 and all(sorted(r, key=_sort_key) == keys for r in rows):
                return "probability_map", keys
    return "other", None


def _choose_output(
    output: str | None, described: list[dict], tensors: list[tuple[str, str, int]], maps: list[tuple[str, list]]
) -> str:
    """The output to distill from: the one asked for (checked), else the only score tensor, else
    the only probability map; several or none is refused, listing them."""
    listed = ", ".join(f"{d['name']} ({d['kind']})" for d in described)
    if output is not None:
        chosen = next((d for d in described if d["name"] == output), None)
        if chosen is None:
            raise InspectionError(
                f"The ONNX model has no output {output!r}; its outputs are: {listed}.", field="output"
            )
        if chosen["kind"] not in OUTPUT_KINDS:
            raise InspectionError(
                f"Output {output!r} is a {chosen['kind']}, not per-class scores (an [N, C] float "
                f"tensor or a probability map); the outputs are: {listed}.",
                field="output",
            )
        return output
    if len(tensors) == 1:
        return tensors[0][0]
    if len(tensors) > 1:
        raise InspectionError(
            f"The ONNX model has several outputs that could be class scores: "
            f"{', '.join(t[0] for t in tensors)}. Name the one to distill from as "
            f"`teacher.artifact.output` in the job spec (outputs: {listed}).",
            field="output",
        )
    if len(maps) == 1:
        return maps[0][0]
    if len(maps) > 1:
        raise InspectionError(
            f"The ONNX model has several probability maps: {', '.join(m[0] for m in maps)}. "
            f"Name one as `teacher.artifact.output` in the job spec.",
            field="output",
        )
    raise InspectionError(
        f"No output of the ONNX model gives per-class scores (an [N, C] float tensor with "
        f"C >= 2, or a probability map); its outputs are: {listed}.",
        field="file",
    )


class OnnxClassifier:
    """An ONNX model that maps one input tensor (N, *input_shape) to class scores."""

    def __init__(self, path: Path, output: str | None = None, output_kind: str = "auto", *, threads: int = 1) -> None:
        if output_kind != "auto" and output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be 'auto' or one of {OUTPUT_KINDS}, not {output_kind!r}")
        self.path = Path(path)
        model = load_checked(self.path)
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            max((o.version for o in model.opset_import), default=0),
        )
        self.producer = f"{model.producer_name} {model.producer_version}".strip()
        # What the file says of itself (e.g. a converter's mean/std): shown, never acted on.
        self.metadata = {p.key[:100]: p.value[:300] for p in list(model.metadata_props)[:32]}
        del model
        self.session = _session(self.path, threads)

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            listed = ", ".join(f"{i.name} {_dims(i.shape)}" for i in inputs) or "none"
            raise InspectionError(
                f"The ONNX model must take exactly one input (a batch of examples); it takes "
                f"{len(inputs)}: {listed}. Export it with a single input tensor.",
                field="file",
            )
        inp = inputs[0]
        dtype = _TENSOR_DTYPES.get(inp.type, inp.type)
        if dtype not in ("float32", "float64"):
            raise InspectionError(
                f"The ONNX model's input {inp.name!r} is {dtype}; a teacher must take float32 "
                "(or float64) features. Export it with a float input.",
                field="file",
            )
        dims = _dims(inp.shape)
        if len(dims) < 2:
            raise InspectionError(
                f"The ONNX model's input {inp.name!r} has shape {dims}; it needs a batch axis "
                "first and the example's shape after it, e.g. [N, 64].",
                field="file",
            )
        self.input_name = inp.name
        self.input_dtype = np.dtype(dtype)
        self._fixed_batch = dims[0]
        self.inputs = [{"name": inp.name, "shape": dims, "dtype": dtype}]
        if any(d is None for d in dims[1:]):
            raise InspectionError(
                f"The ONNX model's input {inp.name!r} has shape {dims}: only the batch axis may be "
                "symbolic, the input shape must be fixed. Export it with fixed example dimensions "
                "(dynamic_axes / dynamic_shapes on the batch axis only).",
                field="file",
            )
        self.input_shape: tuple[int, ...] = tuple(d for d in dims[1:] if d is not None)  # all of them
        self._probe(output, output_kind)

    # -- the probe: which output holds the class scores, and what they are --------------
    def _probe(self, output: str | None, output_kind: str) -> None:
        outs = self.session.get_outputs()
        values = self._probe_values([o.name for o in outs])
        described: list[dict] = []
        tensors: list[tuple[str, str, int]] = []  # name, kind, classes
        maps: list[tuple[str, list]] = []  # name, sorted keys
        for out, value in zip(outs, values, strict=True):
            kind, found = _classify(out, value)
            if kind in ("probabilities", "logits"):
                tensors.append((out.name, kind, found))
            elif kind == "probability_map":
                maps.append((out.name, found))
            described.append(
                {
                    "name": out.name,
                    "shape": _dims(out.shape) if out.type.startswith("tensor(") else None,
                    "dtype": _TENSOR_DTYPES.get(out.type) or out.type,
                    "kind": kind,
                }
            )
        self.outputs = described
        self.output = _choose_output(output, described, tensors, maps)
        self._settle_kind(output_kind, described, tensors, maps)

    def _probe_values(self, names: list[str]) -> list:
        """The outputs `names` on a seeded random batch of PROBE_EXAMPLES inputs."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((PROBE_EXAMPLES, *self.input_shape)).astype(self.input_dtype)
        try:
            return self._run(x, names)
        except InspectionError:
            raise
        except Exception as exc:
            raise InspectionError(
                f"The ONNX model fails on a batch of {PROBE_EXAMPLES} inputs of shape {list(self.input_shape)}: {exc}",
                field="file",
            ) from exc

    def _settle_kind(
        self, output_kind: str, described: list[dict], tensors: list[tuple[str, str, int]], maps: list[tuple[str, list]]
    ) -> None:
        """The chosen output's classes and kind, checked against the kind the caller asked for."""
        output = self.output
        self._keys: list | None = None
        self.classes: list[str] | None = None
        detected = next(d["kind"] for d in described if d["name"] == output)
        if detected == "probability_map":
            self._keys = dict(maps)[output]
            self.classes = [str(k) for k in self._keys]
            self.num_classes = len(self._keys)
            if output_kind not in ("auto", "probability_map"):
                raise InspectionError(f"Output {output!r} is a probability map, not {output_kind}.", field="output")
            self.output_kind = "probability_map"
        else:
            self.num_classes = {t[0]: t[2] for t in tensors}[output]
            if output_kind == "probability_map":
                raise InspectionError(f"Output {output!r} is a tensor, not a probability map.", field="output")
            self.output_kind = detected if output_kind == "auto" else output_kind

    # -- running ------------------------------------------------------------------------
    def _run(self, x: np.ndarray, names: list[str], batch_size: int = 1024) -> list:
        n = x.shape[0]
        step = self._fixed_batch or max(1, int(batch_size))
        parts: list[list] = [[] for _ in names]
        for start in range(0, n, step):
            chunk = x[start : start + step]
            real = chunk.shape[0]
            if self._fixed_batch and real < step:
                pad = np.zeros((step - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            results = self.session.run(names, {self.input_name: chunk})
            for i, value in enumerate(results):
                parts[i].append(value[:real] if real < len(value) else value)
        out: list = []
        for chunks in parts:
            if chunks and isinstance(chunks[0], np.ndarray):
                out.append(np.concatenate(chunks))
            else:
                out.append([row for chunk in chunks for row in chunk])
        return out

    def _fit_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise InspectionError(f"Inputs must be numbers, not {x.dtype}.", field="file")
        if x.ndim < 1:
            raise InspectionError("Inputs must be a batch (N, ...).", field="file")
        per = tuple(x.shape[1:])
        if per != self.input_shape:
            if math.prod(per) != math.prod(self.input_shape):
                raise InspectionError(
                    f"Examples of shape {list(per)} do not fit the model's input {list(self.input_shape)}.",
                    field="file",
                )
            x = x.reshape((x.shape[0], *self.input_shape))
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """float32 (N, C): logits as they are; probabilities (and probability maps, in the
        order of the sorted class keys) as log(clip(p, 1e-12)), so that a temperature can
        be applied afterwards."""
        x = self._fit_input(x)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        (value,) = self._run(x, [self.output], batch_size)
        if self._keys is not None:
            scores = np.array([[row[k] for k in self._keys] for row in value], dtype=np.float64)
        else:
            scores = np.asarray(value, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise InspectionError(
                f"Output {self.output!r} has shape {list(scores.shape)}, expected [N, {self.num_classes}].",
                field="output",
            )
        if self.output_kind in ("probabilities", "probability_map"):
            scores = np.log(np.clip(scores, 1e-12, None))
        return scores.astype(np.float32)

    def describe(self) -> dict:
        """The inspection result of an ONNX teacher (JSON-able)."""
        out = {
            "format": "onnx",
            "opset": int(self.opset),
            "producer": self.producer,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "output": self.output,
            "output_kind": self.output_kind,
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
        }
        if self.classes is not None:
            out["classes"] = self.classes
        if self.metadata:
            out["metadata"] = self.metadata
        if len(self.input_shape) == 3:  # an image: say which layout the dimensions suggest
            c_first, c_last = self.input_shape[0] in (1, 3, 4), self.input_shape[-1] in (1, 3, 4)
            out["layout"] = "NCHW" if c_first and not c_last else "NHWC" if c_last and not c_first else "unknown"
        return out
