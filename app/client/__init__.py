"""The Python client of the distill API (no torch, no server packages):

from app.client import Client
job = Client("http://127.0.0.1:8000").submit(spec).wait()
print(job.status, job.result.summary)
"""

from app.client.client import DEFAULT_URL, Client, JobHandle
from app.client.errors import ApiError, AuthError, ChecksumMismatch, DistillError, FieldError, Unreachable
from app.client.feed import JobUpdate, PollingFeed
from app.client.keys import ApiKey, find_key
from app.client.models import (
    Artifact,
    Catalog,
    Event,
    Job,
    JobError,
    JobPage,
    Metrics,
    MetricSeries,
    Report,
    Sweep,
)
from app.client.specs import SpecError, apply_overrides, load_spec

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "ApiKey",
    "Artifact",
    "AuthError",
    "Catalog",
    "ChecksumMismatch",
    "Client",
    "DistillError",
    "Event",
    "FieldError",
    "Job",
    "JobError",
    "JobHandle",
    "JobPage",
    "JobUpdate",
    "MetricSeries",
    "Metrics",
    "PollingFeed",
    "Report",
    "SpecError",
    "Sweep",
    "Unreachable",
    "apply_overrides",
    "find_key",
    "load_spec",
]
