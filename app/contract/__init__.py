"""What the API, the engine and clients agree on: pydantic and the standard library (never
torch, FastAPI or the database). The engine imports nothing else from `app`. One module also
needs numpy: onnx_classifier, the ONNX runner both sides use (onnx and onnxruntime load when a
model is opened)."""
