"""Inspection of uploaded files, pure and torch-free: is an uploaded teacher or dataset
acceptable, and what does it hold. The HTTP route streams the upload to a temp file and
calls these; the worker reuses OnnxClassifier.

Only numpy, onnx, onnxruntime, pyarrow, Pillow and the standard library: never torch,
fastapi or worker/. The heavy imports happen inside the functions that need them.
"""

from app.contract.onnx_classifier import OnnxClassifier
from app.uploads.dataset import inspect_dataset
from app.uploads.errors import InspectionError, UploadLimits
from app.uploads.formats import DATASET_FORMATS, TEACHER_FORMATS, guess_format, refuse_code_carrying
from app.uploads.teacher import inspect_teacher

__all__ = [
    "DATASET_FORMATS",
    "TEACHER_FORMATS",
    "InspectionError",
    "OnnxClassifier",
    "UploadLimits",
    "guess_format",
    "inspect_dataset",
    "inspect_teacher",
    "refuse_code_carrying",
]
