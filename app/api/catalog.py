"""/v1/catalog: what a spec may name, with each thing's parameters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.schemas import problems
from app.config import get_settings
from app.contract import standard
from app.contract.architectures import CNNArch, MLPArch
from app.contract.catalog import DATASETS, entry
from app.contract.methods import METHODS
from app.contract.phases import PHASES
from app.contract.report import Catalog
from app.contract.spec import EXAMPLE_SPEC
from app.uploads.formats import DATASET_FORMATS, TEACHER_FORMATS

router = APIRouter(prefix="/v1", tags=["catalog"], responses=problems(401, 429, 503))


@router.get("/catalog", response_model=Catalog, summary="Datasets, architectures and methods a job may use")
def catalog() -> dict[str, Any]:
    """Everything a spec may name: the built-in datasets with their shapes and sizes, the
    architectures (mlp, cnn, and the timm and torchvision model names) and the methods with
    each parameter's range, default and meaning, the feature stages the methods can tap, the
    upload formats, the phases of a job and an example spec.
    """
    return {
        "datasets": {name: info.as_dict() for name, info in DATASETS.items()},
        "architectures": {
            "mlp": entry(MLPArch),
            "cnn": entry(CNNArch),
            **{
                lib: {**entry(cls), **standard.catalog_entry(lib)}
                for lib, cls in (("timm", standard.TimmArch), ("torchvision", standard.TorchvisionArch))
            },
        },
        "methods": {name: entry(model) for name, model in METHODS.items()},
        "stages": {
            "mlp": "hidden0 .. hidden{n-1}: the output of each hidden layer, shape (width,)",
            "cnn": "conv0 .. conv{n-1}: each conv stage's map (channels, *spatial), every stage "
            "halving each spatial axis; then dense (hidden,) when hidden > 0",
            "timm": "the model's feature_info modules (e.g. resnet18: act1, layer1 .. layer4), each "
            "(channels, side / reduction, side / reduction) at the network's input side",
            "torchvision": "the last block at each spatial resolution (e.g. resnet18: relu, layer1 .. "
            "layer4; mobilenet_v3_small: features.0, features.1, ...), each (channels, side / reduction, ...)",
        },
        "uploads": {
            "teacher": list(TEACHER_FORMATS),
            "dataset": list(DATASET_FORMATS),
            "refused": "pickle-based files (.pt .pth .bin .pkl), TorchScript and .pt2: loading them "
            "runs code. Export to ONNX, or save a state dict with safetensors.",
            "max_bytes": get_settings().max_upload_bytes,
        },
        "phases": list(PHASES),
        "example_spec": EXAMPLE_SPEC,
    }
