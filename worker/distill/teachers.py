"""Teachers: a torch Classifier (trained in the job, or brought as safetensors weights), an
ONNX model run with onnxruntime, and an ensemble of any of them.

Every teacher is an nn.Module mapping raw inputs (N, *input_shape) to logits, so the trainer,
the cached soft targets and the metrics treat them alike. A brought teacher is frozen: it is
never trained and has no trainable parameters.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from app.contract.spec import TeacherArtifact
from worker.distill.inputs import BroughtTeacher
from worker.distill.models import ArchSpec, build_model, count_parameters, load_weights
from worker.distill.preprocess import Preprocess

if TYPE_CHECKING:
    from app.contract.onnx_classifier import OnnxClassifier
    from worker.distill.models import Model


def onnx_size(path: Path) -> tuple[int | None, int | None]:
    """(parameters, bytes) of an ONNX model's initializers: parameters count the floating-point
    ones, bytes all of them. (None, None) when the file cannot be read that way."""
    try:
        import onnx
        from onnx.helper import tensor_dtype_to_np_dtype

        model = onnx.load(str(path), load_external_data=False)
        params = size = 0
        for t in model.graph.initializer:
            n = math.prod(t.dims)
            dtype = np.dtype(tensor_dtype_to_np_dtype(t.data_type))
            size += n * dtype.itemsize
            if dtype.kind == "f":
                params += n
        return params, size
    except Exception:
        return None, None


class TeacherDeadlineExceeded(RuntimeError):
    """A batch of the brought ONNX teacher ran past its deadline (teacher_batch_seconds)."""


class DeadlineSession:
    """An onnxruntime session whose every run is stopped after `seconds`: a timer thread sets
    RunOptions.terminate, which onnxruntime checks between nodes and Loop iterations."""

    def __init__(self, session: Any, seconds: float) -> None:
        self.session, self.seconds = session, seconds

    def run(self, output_names: Any, input_feed: dict, run_options: Any = None) -> list:
        import onnxruntime as ort

        options = run_options or ort.RunOptions()
        timer = threading.Timer(self.seconds, setattr, (options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            return self.session.run(output_names, input_feed, options)
        except Exception as exc:
            if options.terminate:
                raise TeacherDeadlineExceeded(
                    f"the brought ONNX teacher took more than {self.seconds:g} s on one batch "
                    "(the worker's teacher_batch_seconds); use a faster teacher"
                ) from exc
            raise
        finally:
            timer.cancel()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


class OnnxTeacher(nn.Module):
    """An uploaded ONNX classifier as a frozen torch module: forward runs onnxruntime on the CPU
    (numpy in, numpy out) and returns float32 logits on the input's device. Probabilities
    (and probability maps) come out as log-probabilities (app.contract.onnx_classifier), which the
    temperature treats as logits.

    It has no torch parameters. The onnxruntime session is opened lazily from `path` and
    shared by deep copies (a session is read-only), never pickled."""

    stage_names: ClassVar[list[str]] = []  # no stages: feature methods are refused at submission
    # Deadline of one batch; the worker's runner process sets it from teacher_batch_seconds.
    batch_seconds: float = 60.0

    def __init__(
        self,
        path: Path,
        *,
        output: str | None = None,
        output_kind: str = "auto",
        input_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
        preprocess=None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        # teacher.artifact.preprocess: what the model was trained with, applied before it runs
        self.preprocess = Preprocess(preprocess) if preprocess is not None else None
        self._requested = (output, output_kind)
        self._clf: OnnxClassifier | None = None
        clf = self.classifier  # open it now: a broken file fails the job here, not mid-training
        self.output = clf.output
        self.output_kind = clf.output_kind
        self.input_shape = tuple(input_shape) if input_shape is not None else tuple(clf.input_shape)
        self.num_classes = int(clf.num_classes)
        if num_classes is not None and int(num_classes) != self.num_classes:
            raise ValueError(
                f"the ONNX teacher's output {self.output!r} scores {self.num_classes} "
                f"classes, the dataset has {num_classes}"
            )
        # Read by count_parameters and metrics.state_bytes: the weights live in the graph.
        self.external_parameters, self.external_bytes = onnx_size(self.path)

    @property
    def classifier(self) -> OnnxClassifier:
        if self._clf is None:
            from app.contract.onnx_classifier import OnnxClassifier

            output, kind = self._requested
            clf = OnnxClassifier(self.path, output=output, output_kind=kind, threads=max(1, torch.get_num_threads()))
            clf.session = DeadlineSession(clf.session, self.batch_seconds)
            self._clf = clf
        return self._clf

    @property
    def log_probabilities(self) -> bool:
        """True when the model gives probabilities, used here as their logarithm."""
        return self.output_kind in ("probabilities", "probability_map")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.preprocess is not None:
                x = self.preprocess(x)
            out = self.classifier.logits(x.detach().cpu().float().numpy(), batch_size=max(1, len(x)))
        return torch.from_numpy(out).to(x.device)

    def forward_features(self, x: torch.Tensor):
        raise TypeError(
            "an ONNX teacher exposes no stage features: feature methods need a teacher "
            "of our architectures (trained in the job, or safetensors weights with arch)"
        )

    def __deepcopy__(self, memo: dict) -> OnnxTeacher:
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = v if k == "_clf" else copy.deepcopy(v, memo)
        return new

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_clf"] = None  # re-opened from the path on first use
        return state

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, output={self.output!r}, output_kind={self.output_kind!r}"


def load_weights_teacher(path: Path, arch: ArchSpec, input_shape: tuple[int, ...], num_classes: int) -> Model:
    """safetensors weights of one of our architectures (mean/std buffers included, as our own
    exported students carry them), loaded strictly, frozen, in eval mode."""
    from safetensors.torch import load_file

    model = build_model(arch, tuple(input_shape), int(num_classes))
    load_weights(model, load_file(str(path)))
    return model.eval().requires_grad_(False)


class EnsembleTeacher(nn.Module):
    """Several teachers as one: output = log of the members' mean softmax probabilities (T = 1).
    A temperature is applied to that output like to any logits, so soft targets are
    softmax(log(mean p) / T): at T = 1 exactly the mean probabilities. A member may be any
    teacher (trained, brought weights, ONNX): its probabilities are softmax of its output, which
    for an ONNX model's log-probabilities gives the probabilities back."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.input_shape = members[0].input_shape
        self.num_classes = members[0].num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


@dataclass(frozen=True)
class LoadedTeacher:
    model: nn.Module  # frozen, eval mode, on the CPU
    facts: dict[str, Any]  # for the report: source, artifact, format, arch, (ONNX) output and kind
    description: str  # for the job's events


def _onnx_output_kind(member: TeacherArtifact, inspection: dict) -> str:
    """The spec's output_kind for onnx_model: 'probabilities' also covers a probability map."""
    if member.output_kind != "probabilities":
        return member.output_kind
    output = member.output or inspection.get("output")
    for o in inspection.get("outputs") or []:
        if o.get("name") == output and o.get("kind") == "probability_map":
            return "auto"
    return member.output_kind


def load_brought_teacher(
    member: TeacherArtifact, brought: BroughtTeacher, input_shape: tuple[int, ...], num_classes: int
) -> LoadedTeacher:
    facts: dict[str, Any] = {"source": "artifact", "artifact": member.id, "format": brought.format}
    model: nn.Module
    if brought.format == "onnx":
        model = OnnxTeacher(
            brought.path,
            output=member.output,
            output_kind=_onnx_output_kind(member, dict(brought.inspection)),
            input_shape=input_shape,
            num_classes=num_classes,
            preprocess=member.preprocess,
        ).eval()
        facts.update(arch=None, output=model.output, output_kind=model.output_kind)
        if member.preprocess is not None:  # what the worker applied before every run of the model
            facts["preprocess"] = member.preprocess.model_dump()
        used = "probabilities, used as log-probabilities" if model.log_probabilities else "logits, used as they are"
        n = model.external_parameters
        description = (
            f"an ONNX model (output {model.output!r}: {used}; {model.num_classes} classes"
            + (f", {n:,} parameters" if n is not None else "")
            + ")"
        )
    elif brought.format == "safetensors":
        if member.arch is None:
            raise ValueError(f"teacher artifact {member.id!r}: safetensors weights need their arch")
        model = load_weights_teacher(brought.path, member.arch, input_shape, num_classes)
        facts.update(arch=member.arch.model_dump())
        description = f"safetensors weights of a {member.arch.name} ({count_parameters(model):,} parameters)"
    else:
        raise ValueError(
            f"teacher artifact {member.id!r} has format {brought.format!r}: "
            "a teacher is an ONNX model or safetensors weights"
        )
    return LoadedTeacher(model, facts, f"brought teacher {member.id}: {description}; loaded, not trained")
