"""What a refused file raises, on either side: the API's upload inspection (app/uploads) and
the engine's ONNX teacher (app/contract/onnx_classifier.py) report the same error."""

from __future__ import annotations


class InspectionError(ValueError):
    """The file is refused. ``str(exc)`` is a message a person can act on: what is
    wrong and how to fix it. ``field`` names the multipart field that is wrong:
    ``"file"`` (the content), ``"format"``, ``"label_column"`` or ``"output"``."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.field = field
