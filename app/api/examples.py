"""The request examples of the OpenAPI document (/docs shows them in a drop-down).

POST /v1/jobs: one example per registered method (its `example`, app/contract/methods.py, over
a base job) and one per way to bring things: an uploaded dataset, a brought ONNX teacher, brought
safetensors weights, an ensemble, a timm/torchvision pair on images, a student's starting weights.
Every example is a valid JobSpec; the methods' examples also pass the submission checks as they
are (tests/api/test_openapi_docs.py submits each one).
"""

from __future__ import annotations

from typing import Any

from app.contract.methods import METHODS
from app.contract.spec import EXAMPLE_SPEC

UPLOADED_DATASET = "4c2f9a1e-5b7d-4e0a-9c3b-8d6e1f2a7b90"  # ids as POST /v1/artifacts returns them
UPLOADED_TEACHER = "9e1d7c3a-2f4b-4a8e-b5c6-0d9f8e7a6b51"
UPLOADED_WEIGHTS = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"

# The base of the methods' examples: MNIST-1D, a CNN teacher trained in the job, an MLP student.
BASE_JOB = {k: v for k, v in EXAMPLE_SPEC.items() if k != "method"}


def _summary(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0].split(": ")[0].rstrip(".")


def method_examples() -> dict[str, dict[str, Any]]:
    """One example job per registered method."""
    return {
        f"method_{name}": {
            "summary": f"method {name}: {_summary(cls.__doc__)}",
            "description": (cls.__doc__ or "").strip(),
            "value": {**BASE_JOB, "name": f"mnist1d, method {name}", **cls.example},
        }
        for name, cls in METHODS.items()
    }


_BROUGHT: dict[str, dict[str, Any]] = {
    "uploaded_dataset": {
        "summary": "your own data: an uploaded dataset, its unlabeled rows as a transfer set",
        "description": "Upload an NPZ, CSV, Parquet or ZIP of class folders first (POST /v1/artifacts, "
        "kind dataset) and name its id. Without a test split of its own, test_fraction is held out.",
        "value": {
            "dataset": {"artifact": UPLOADED_DATASET, "test_fraction": 0.2, "transfer": {"unlabeled": True}},
            "teacher": {"train": {"arch": {"name": "mlp", "hidden": [256, 256]}, "epochs": 60}},
            "student": {"arch": {"name": "mlp", "hidden": [32]}},
            "method": {"name": "kd", "temperature": 4.0, "alpha": 0.9},
        },
    },
    "brought_onnx_teacher": {
        "summary": "a brought teacher: an uploaded ONNX model, with its preprocessing",
        "description": "Upload the ONNX file (POST /v1/artifacts, kind teacher): inspection finds its "
        "class-score output. `preprocess` applies what the model was trained with before it runs; "
        "the student takes the raw data.",
        "value": {
            "dataset": {"artifact": UPLOADED_DATASET},
            "teacher": {
                "artifact": {
                    "id": UPLOADED_TEACHER,
                    "output_kind": "auto",
                    "preprocess": {"scale": 0.00392156862745098, "mean": [0.5], "std": [0.5]},
                }
            },
            "student": {"arch": {"name": "cnn", "channels": [16, 32]}},
            "training": {"epochs": 30},
        },
    },
    "brought_safetensors_teacher": {
        "summary": "a brought teacher: uploaded safetensors weights of one of our architectures",
        "description": "Save the state dict with safetensors.torch.save_file, upload it (kind teacher) "
        "and say which architecture it belongs to: keys, shapes and dtypes are checked at submission.",
        "value": {
            "dataset": {"name": "mnist1d"},
            "teacher": {"artifact": {"id": UPLOADED_WEIGHTS, "arch": {"name": "cnn", "channels": [32, 64, 64]}}},
            "student": {"arch": {"name": "mlp", "hidden": [64, 64]}},
        },
    },
    "ensemble": {
        "summary": "an ensemble teacher: two trained in the job and one brought",
        "description": "The students learn from the members' averaged probabilities (2 to 8 members).",
        "value": {
            "dataset": {"name": "mnist1d"},
            "teacher": {
                "ensemble": [
                    {"arch": {"name": "cnn", "channels": [32, 64, 64]}, "seed": 0},
                    {"arch": {"name": "mlp", "hidden": [256, 256]}, "seed": 1},
                    {"id": UPLOADED_TEACHER},
                ]
            },
            "student": {"arch": {"name": "mlp", "hidden": [64, 64]}},
        },
    },
    "standard_models_on_images": {
        "summary": "timm teacher, torchvision student on Fashion-MNIST, with image augmentation",
        "description": "Any timm or torchvision model by name (GET /v1/catalog lists them); weights are "
        "never downloaded. The input adapter resizes each batch to input_size inside the model.",
        "value": {
            "dataset": {"name": "fashion_mnist"},
            "teacher": {"train": {"arch": {"name": "timm", "model": "resnet18", "input_size": 32}, "epochs": 20}},
            "student": {"arch": {"name": "torchvision", "model": "mobilenet_v3_small", "input_size": 32}},
            "training": {"epochs": 20, "augment": {"crop": "pad", "crop_padding": 2, "flip": True}},
            "seeds": [0, 1],
        },
    },
    "student_from_weights": {
        "summary": "the student starts from uploaded weights of its own architecture",
        "description": "student.init names uploaded safetensors weights (kind teacher); the scratch "
        "baseline starts from them too.",
        "value": {
            "dataset": {"name": "mnist1d"},
            "teacher": {"train": {"arch": {"name": "cnn", "channels": [32, 64, 64]}}},
            "student": {"arch": {"name": "mlp", "hidden": [64, 64]}, "init": {"artifact": UPLOADED_WEIGHTS}},
        },
    },
}


def job_examples() -> dict[str, dict[str, Any]]:
    """The examples of POST /v1/jobs: the methods first (KD, the default, leads)."""
    return {**method_examples(), **_BROUGHT}
