"""Checks that a job spec can run, beyond what its fields say alone.

Each check needs something outside the spec: the built-in catalog's shapes, or the
inspection of an uploaded artifact the spec names (an ONNX teacher's input shape
and classes, a safetensors file's tensors, a dataset's shape). The API runs them at
submission and answers 422 with the JSON pointer of each wrong field, so a worker
never discovers an impossible job an hour later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from app.contract import standard
from app.contract.architectures import Arch, CNNArch
from app.contract.base import FieldError
from app.contract.catalog import DATASETS
from app.contract.methods import METHODS
from app.contract.packaged import PACKAGED
from app.contract.spec import JobSpec, TeacherArtifact
from app.contract.stages import state_shapes


@dataclass(frozen=True)
class ArtifactFacts:
    """What the API knows of an uploaded artifact: its kind, format and inspection."""

    kind: str  # teacher | dataset
    format: str
    inspection: dict


@dataclass(frozen=True)
class DataFacts:
    input_shape: tuple[int, ...]
    num_classes: int
    unlabeled_rows: int = 0


def artifact_refs(spec: JobSpec) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Every uploaded artifact the spec names: (location in the spec, id, expected kind)."""
    refs: list[tuple[tuple[str | int, ...], str, str]] = []
    if spec.dataset.artifact is not None:
        refs.append((("dataset", "artifact"), spec.dataset.artifact, "dataset"))
    if spec.teacher.artifact is not None:
        refs.append((("teacher", "artifact", "id"), spec.teacher.artifact.id, "teacher"))
    if spec.student.init is not None:  # model files are uploaded as kind teacher
        refs.append((("student", "init", "artifact"), spec.student.init.artifact, "teacher"))
    for i, member in enumerate(spec.teacher.ensemble or []):
        if isinstance(member, TeacherArtifact):
            refs.append((("teacher", "ensemble", i, "id"), member.id, "teacher"))
    return refs


def data_facts(spec: JobSpec, artifacts: Mapping[str, ArtifactFacts]) -> DataFacts:
    if spec.dataset.name is not None:
        info = DATASETS[spec.dataset.name]
        return DataFacts(tuple(info.input_shape), info.num_classes)
    assert spec.dataset.artifact is not None  # a DatasetSpec names a dataset or an artifact
    found = artifacts[spec.dataset.artifact].inspection
    return DataFacts(tuple(found["input_shape"]), int(found["num_classes"]), int(found.get("unlabeled_rows", 0)))


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def _arch_fit(arch: Arch, input_shape: tuple[int, ...], loc: tuple) -> list[FieldError]:
    if isinstance(arch, (standard.TimmArch, standard.TorchvisionArch)):
        return [FieldError(loc=(*loc, where), msg=msg) for where, msg in standard.fit_messages(arch, input_shape)]
    if isinstance(arch, CNNArch) and len(input_shape) > 3:
        return [
            FieldError(
                loc=(*loc, "name"),
                msg=f"a cnn takes 1-D, 2-D or channels x height x width inputs, but the input is "
                f"{_shape(input_shape)}: use an mlp.",
            )
        ]
    if isinstance(arch, CNNArch):
        spatial = input_shape[-2:] if len(input_shape) >= 2 else input_shape
        need = 2 ** len(arch.channels)
        if min(spatial) < need:
            deepest = max(0, min(spatial).bit_length() - 1)
            return [
                FieldError(
                    loc=(*loc, "channels"),
                    msg=f"{len(arch.channels)} conv stages halve the input {len(arch.channels)} "
                    f"times, but the input is {'x'.join(map(str, input_shape))}; "
                    f"use at most {deepest} stages.",
                )
            ]
    return []


def _unknown_artifacts(spec: JobSpec, artifacts: Mapping[str, ArtifactFacts]) -> list[FieldError]:
    errors = []
    for loc, id_, kind in artifact_refs(spec):
        found = artifacts.get(id_)
        if found is None:
            errors.append(
                FieldError(
                    loc=loc,
                    msg=f"no {kind} artifact {id_!r} among this tenant's "
                    "uploads: upload it first (POST /v1/artifacts) and use the id it returns.",
                )
            )
        elif found.kind != kind:
            errors.append(FieldError(loc=loc, msg=f"artifact {id_!r} is a {found.kind}, not a {kind}."))
    return errors


def _onnx_classes(inspection: dict, output: str) -> int | None:
    for o in inspection["outputs"]:
        if o["name"] == output:
            if o.get("kind") == "probability_map":
                return len(inspection.get("classes") or []) or None
            last = (o.get("shape") or [None])[-1]
            return last if isinstance(last, int) else None
    return None


def _onnx_teacher_errors(member: TeacherArtifact, found: dict, data: DataFacts, loc: tuple) -> list[FieldError]:
    if member.arch is not None:
        return [
            FieldError(
                loc=(*loc, "arch"),
                msg="arch is for safetensors weights; an ONNX model carries its own graph: leave arch out.",
            )
        ]
    usable = {o["name"]: o for o in found["outputs"] if o.get("kind") in ("logits", "probabilities", "probability_map")}
    output = member.output or found["output"]
    if output not in usable:
        return [
            FieldError(
                loc=(*loc, "output"),
                msg=f"the model has no usable output {output!r}; "
                f"outputs with class scores: {', '.join(usable) or 'none'}.",
            )
        ]
    errors = []
    shape = tuple(found["input_shape"])
    given = data.input_shape
    if member.preprocess is not None:
        if why := member.preprocess.problem(data.input_shape):
            return [FieldError(loc=(*loc, "preprocess"), msg=why)]
        given = member.preprocess.output_shape(data.input_shape)
    if shape != given and math.prod(shape) != math.prod(given):
        errors.append(
            FieldError(
                loc=(*loc, "id"),
                msg=f"the teacher takes inputs of shape "
                f"{_shape(shape)} per example, the dataset's are {_shape(data.input_shape)}"
                + (f" ({_shape(given)} after preprocess)" if given != data.input_shape else "")
                + ": they must match (or differ only by flattening); teacher.artifact.preprocess "
                "can resize (input_size) and reorder (layout) images.",
            )
        )
    classes = _onnx_classes(found, output)
    if classes is not None and classes != data.num_classes:
        errors.append(
            FieldError(
                loc=(*loc, "id"),
                msg=f"the teacher's output {output!r} scores {classes} classes, the dataset has {data.num_classes}.",
            )
        )
    return errors


def _weights_errors(member: TeacherArtifact, found: dict, data: DataFacts, loc: tuple) -> list[FieldError]:
    """safetensors weights: every key, shape and dtype of the architecture's state dict."""
    if member.preprocess is not None:
        return [
            FieldError(
                loc=(*loc, "preprocess"),
                msg="preprocess is for ONNX teachers; a model "
                "built from weights normalises inside its own graph: leave preprocess out.",
            )
        ]
    if member.arch is None:
        return [
            FieldError(
                loc=(*loc, "arch"),
                msg="safetensors weights need the architecture they "
                "belong to: give teacher.artifact.arch (GET /v1/catalog lists them).",
            )
        ]
    if errors := _arch_fit(member.arch, data.input_shape, (*loc, "arch")):
        return errors
    return _state_errors(member.arch, found, data, (*loc, "arch"))


def _state_errors(arch: Arch, found: dict, data: DataFacts, loc: tuple) -> list[FieldError]:
    """A safetensors file's tensors against the state dict of `arch` for this data (an error at `loc`)."""
    if isinstance(arch, (standard.TimmArch, standard.TorchvisionArch)):
        return _standard_weights_errors(arch, found, data, loc)
    expected = state_shapes(arch, data.input_shape, data.num_classes)
    got = {k: (tuple(v["shape"]), v["dtype"]) for k, v in found["tensors"].items()}
    problems = [f"missing {k} {_shape(v[0])}" for k, v in expected.items() if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in expected]
    problems += [
        f"{k} is {_shape(got[k][0])} {got[k][1]}, expected {_shape(v[0])} {v[1]}"
        for k, v in expected.items()
        if k in got and got[k] != v
    ]
    if not problems:
        return []
    more = f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""
    return [
        FieldError(
            loc=loc,
            msg=f"the weights do not fit a {arch.name} of this "
            f"shape for {_shape(data.input_shape)} inputs and {data.num_classes} classes: "
            f"{'; '.join(problems[:6])}{more}. Save the state dict of the model built with "
            "this arch (buffers included) with safetensors.",
        )
    ]


def _standard_weights_errors(arch, found: dict, data: DataFacts, loc: tuple) -> list[FieldError]:
    """A timm/torchvision state dict, without torch: its entry count, integer entries and
    floating-point elements against the architecture's for these channels and classes
    (model_names.json's facts). Our own exported students (adapter buffers, `net.` keys) too."""
    keys, integer, elements = standard.state_size(arch, data.input_shape, data.num_classes)
    tensors = found["tensors"]
    ours = {k: v for k, v in tensors.items() if not k.startswith("adapter.")}
    net = {k.removeprefix("net."): v for k, v in ours.items()}
    got_integer = sum(1 for v in net.values() if not v["dtype"].startswith(("F", "BF")))
    got_elements = sum(math.prod(v["shape"]) for v in net.values() if v["dtype"].startswith(("F", "BF")))
    if (len(net), got_integer, got_elements) == (keys, integer, elements):
        return []
    return [
        FieldError(
            loc=loc,
            msg=f"the weights do not fit {arch.library} {arch.model} for "
            f"{_shape(data.input_shape)} inputs and {data.num_classes} classes: it has {keys} "
            f"state-dict entries ({integer} integer) holding {elements:,} floating-point values; "
            f"the file has {len(net)} ({got_integer} integer) holding {got_elements:,}. Save "
            "the state dict of the model built with this arch (in_chans and num_classes from the "
            "data) with safetensors.",
        )
    ]


def _brought_teacher_errors(spec: JobSpec, artifacts: Mapping[str, ArtifactFacts], data: DataFacts) -> list[FieldError]:
    errors: list[FieldError] = []
    members: list[tuple[tuple[str | int, ...], TeacherArtifact]] = (
        [(("teacher", "artifact"), spec.teacher.artifact)] if spec.teacher.artifact else []
    )
    members += [
        (("teacher", "ensemble", i), m)
        for i, m in enumerate(spec.teacher.ensemble or [])
        if isinstance(m, TeacherArtifact)
    ]
    for loc, member in members:
        found = artifacts[member.id]
        check = _onnx_teacher_errors if found.format == "onnx" else _weights_errors
        errors += check(member, found.inspection, data, loc)
    return errors


def _student_init_errors(spec: JobSpec, artifacts: Mapping[str, ArtifactFacts], data: DataFacts) -> list[FieldError]:
    """student.init: safetensors weights of the student's own arch, checked as brought teacher weights are."""
    if spec.student.init is None:
        return []
    loc = ("student", "init", "artifact")
    found = artifacts[spec.student.init.artifact]
    if found.format != "safetensors":
        return [
            FieldError(
                loc=loc,
                msg=f"a student starts from safetensors weights of its arch, not from a {found.format} "
                "file: save the state dict with safetensors and upload that.",
            )
        ]
    return _state_errors(spec.student.arch, found.inspection, data, loc)


def fit_errors(spec: JobSpec, artifacts: Mapping[str, ArtifactFacts] | None = None) -> list[FieldError]:
    """Everything that must hold before a worker sees the job: the uploaded artifacts it names
    exist and are of the right kind (`artifacts`: what the caller found for artifact_refs);
    each model fits the data's shape; a brought teacher takes the data's inputs and scores its
    classes; a student's starting weights (student.init) fit its arch; a feature method's
    stages exist on both models and can be matched."""
    artifacts = artifacts or {}
    if errors := _unknown_artifacts(spec, artifacts):
        return errors
    package = PACKAGED.get(spec.dataset.name or "")
    if package is not None and package.missing():
        return [FieldError(loc=("dataset", "name"), msg=f"{spec.dataset.name}: {package.install_hint()}")]
    data = data_facts(spec, artifacts)
    if errors := _model_errors(spec, artifacts, data):
        return errors
    return _transfer_errors(spec, data) + _augment_errors(spec) + _method_errors(spec, data.input_shape)


def _model_errors(spec: JobSpec, artifacts: Mapping[str, ArtifactFacts], data: DataFacts) -> list[FieldError]:
    """Each model fits the data's shape; the student's starting weights and the brought teachers too."""
    shape = data.input_shape
    errors = _arch_fit(spec.student.arch, shape, ("student", "arch"))
    errors = errors or _student_init_errors(spec, artifacts, data)
    if spec.teacher.train is not None:
        errors += _arch_fit(spec.teacher.train.arch, shape, ("teacher", "train", "arch"))
    for i, member in enumerate(spec.teacher.ensemble or []):
        if not isinstance(member, TeacherArtifact):
            errors += _arch_fit(member.arch, shape, ("teacher", "ensemble", i, "arch"))
    for loc, arch in spec.method.extra_archs():
        errors += _arch_fit(arch, shape, loc)
    return errors + _brought_teacher_errors(spec, artifacts, data)


def _transfer_errors(spec: JobSpec, data: DataFacts) -> list[FieldError]:
    """A transfer set: generated only for mnist1d, unlabeled rows that exist, a method that learns from it."""
    transfer = spec.dataset.transfer
    if transfer is None:
        return []
    errors = []
    if transfer.extra_generated is not None and spec.dataset.name != "mnist1d":
        errors.append(
            FieldError(
                loc=("dataset", "transfer", "extra_generated"),
                msg="extra_generated needs a dataset with a generator: mnist1d.",
            )
        )
    if transfer.unlabeled and data.unlabeled_rows == 0:
        errors.append(
            FieldError(
                loc=("dataset", "transfer", "unlabeled"),
                msg="the dataset has no "
                "unlabeled rows (an uploaded dataset's x_unlabeled, empty labels, or "
                "unlabeled/ folder).",
            )
        )
    m = spec.method
    if not m.takes_transfer_set:
        suited = " or ".join(name for name, cls in METHODS.items() if cls.takes_transfer_set)
        errors.append(
            FieldError(loc=("method", "name"), msg=f"a transfer set has no labels: use {suited}, not {m.name}.")
        )
    return errors


def _augment_errors(spec: JobSpec) -> list[FieldError]:
    aug = spec.training.augment
    if aug is not None and aug.active() and spec.training.soft_targets == "cached":
        return [
            FieldError(
                loc=("training", "soft_targets"),
                msg="augmentation changes the "
                "inputs every batch, so the teacher's outputs cannot be cached: use "
                '"auto" or "recomputed".',
            )
        ]
    return []


def _method_errors(spec: JobSpec, shape: tuple[int, ...]) -> list[FieldError]:
    """The method's own checks, once it has the single teacher of known architecture it may need."""
    m = spec.method
    if m.needs_teacher_arch:
        if spec.teacher.ensemble is not None:
            return [
                FieldError(
                    loc=("teacher", "ensemble"),
                    msg=f"{m.name} needs a single teacher (its stages or its architecture): use teacher.train.",
                )
            ]
        if spec.teacher.arch is None:
            return [
                FieldError(
                    loc=("teacher", "artifact"),
                    msg=f"{m.name} needs the teacher's "
                    "architecture (its stages), and an ONNX teacher exposes none: bring "
                    "safetensors weights with their arch, or use kd, dkd or adversarial.",
                )
            ]
    return m.fit_errors(spec, shape)
