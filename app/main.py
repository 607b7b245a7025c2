"""The HTTP service: `uvicorn app.main:app`. Never imports torch or the worker."""

from __future__ import annotations

from fastapi import FastAPI

from app import problems
from app.api import artifacts, catalog, health, jobs


def create_app() -> FastAPI:
    app = FastAPI(
        title="distill",
        version="1.0",
        summary="Distillation as a service: submit a job, get a small fast student.",
        description="POST a job spec to /v1/jobs, poll it, download the student (ONNX, "
        "safetensors) and a report comparing teacher, student and a scratch baseline. "
        "Errors are RFC 9457 application/problem+json.",
    )
    problems.install(app)
    for module in (jobs, artifacts, catalog, health):
        app.include_router(module.router)
    return app


app = create_app()
