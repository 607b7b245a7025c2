"""The Python client of the distill API: Client(url, key).submit(spec).wait() -> a typed Job.

Only HTTP (httpx) and the typed answers of app.client.models: it runs without the server's packages.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
from pydantic import BaseModel, TypeAdapter

from app.client.errors import ApiError, ChecksumMismatch, Unreachable
from app.client.feed import JobUpdate, PollingFeed, StreamFeed
from app.client.keys import ApiKey, find_key
from app.client.models import Artifact, Catalog, Event, Job, JobPage, Metrics, Sweep

DEFAULT_URL = "http://127.0.0.1:8000"
ENV_URL = "DISTILL_URL"
_EVENTS = TypeAdapter(list[Event])
_ARTIFACTS = TypeAdapter(list[Artifact])
_SWEEPS = TypeAdapter(list[Sweep])


def default_url(env: Mapping[str, str] = os.environ) -> str:
    return env.get(ENV_URL) or DEFAULT_URL


class JobHandle:
    """A submitted job: `submitted` is the API's first answer; wait() follows it to its end."""

    def __init__(self, client: Client, submitted: Job) -> None:
        self.client, self.submitted, self.id = client, submitted, submitted.id

    def wait(self, *, every: float = 1.0, timeout: float | None = None, poll: bool = False) -> Job:
        """Follow the job until it ends (succeeded, failed or cancelled) and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for update in self.client.follow(self.id, every=every, poll=poll):
            if update.job.ended:
                return update.job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {update.job.status} after {timeout} s")
        raise AssertionError("unreachable: a feed ends with an ended job")

    def get(self) -> Job:
        return self.client.get(self.id)

    def cancel(self) -> Job:
        return self.client.cancel(self.id)


class Client:
    def __init__(self, url: str | None = None, key: str | ApiKey | None = None, *, timeout: float = 30.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.key = key if isinstance(key, ApiKey) else find_key(key)
        headers = {"Authorization": f"Bearer {self.key.value}"} if self.key.value else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, exc) from exc
        if response.is_error:
            raise ApiError.from_response(response, self.key)
        return response

    @contextmanager
    def stream(self, path: str, *, last_event_id: str | None = None) -> Iterator[Iterator[str]]:
        """The lines of a text/event-stream; a connection that fails (at once or midway) is Unreachable."""
        headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_event_id} if last_event_id else {})
        try:
            with self._http.stream("GET", path, headers=headers) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response, self.key)
                yield response.iter_lines()
        except httpx.TransportError as exc:
            raise Unreachable(self.url, exc) from exc

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any] | BaseModel, *, idempotency_key: str | None = None) -> JobHandle:
        """POST the spec. With an idempotency_key, submitting again (after a lost answer, say) returns
        the same job instead of a second one."""
        body = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else dict(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        job = Job.model_validate(self._request("POST", "/v1/jobs", json=body, headers=headers).json())
        return JobHandle(self, job)

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._request("GET", f"/v1/jobs/{job_id}").json())

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(self, self.get(job_id))

    def list(
        self,
        *,
        status: list[str] | None = None,
        limit: int = 20,
        cursor: str | None = None,
        metadata: Mapping[str, str] | None = None,
        expand: list[str] | None = None,
    ) -> JobPage:
        """A page of jobs, newest first: those with every label of `metadata`; each without its spec and
        result unless `expand` names them ("spec", "result")."""
        params: dict[str, Any] = {"limit": limit, "status": status or []}
        params["metadata"] = [f"{k}:{v}" for k, v in (metadata or {}).items()]
        params["expand"] = list(expand or [])
        if cursor:
            params["cursor"] = cursor
        return JobPage.model_validate(self._request("GET", "/v1/jobs", params=params).json())

    def iter_jobs(
        self,
        *,
        status: builtins.list[str] | None = None,
        page_size: int = 50,
        metadata: Mapping[str, str] | None = None,
    ) -> Iterator[Job]:
        """Every job, newest first, page after page (cursor pagination)."""
        cursor = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor, metadata=metadata)
            yield from page.items
            if not (cursor := page.next_cursor):
                return

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def delete(self, job_id: str) -> None:
        """Delete an ended job with its files (ApiError 409 while it is queued or running)."""
        self._request("DELETE", f"/v1/jobs/{job_id}")

    def events(self, job_id: str, *, after: int | None = None, limit: int = 500) -> builtins.list[Event]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after is not None else {})
        return _EVENTS.validate_python(self._request("GET", f"/v1/jobs/{job_id}/events", params=params).json())

    def follow(
        self, job_id: str, *, every: float = 1.0, after: int | None = None, poll: bool = False
    ) -> Iterator[JobUpdate]:
        """The job and its new events until it ends: from its live stream, or with poll=True by asking
        every `every` seconds (see app.client.feed)."""
        if poll:
            return iter(PollingFeed(self, job_id, every=every, after=after))
        return iter(StreamFeed(self, job_id, after=after))

    def metrics(self, job_id: str, *, phase: str | None = None, name: str | None = None) -> Metrics:
        params = {k: v for k, v in {"phase": phase, "name": name}.items() if v}
        return Metrics.model_validate(self._request("GET", f"/v1/jobs/{job_id}/metrics", params=params).json())

    # --- sweeps -------------------------------------------------------------------------------

    def submit_sweep(self, spec: Mapping[str, Any]) -> Sweep:
        """POST /v1/sweeps: a base spec and axes; its trials run as ordinary jobs."""
        return Sweep.model_validate(self._request("POST", "/v1/sweeps", json=dict(spec)).json())

    def sweep(self, sweep_id: str) -> Sweep:
        return Sweep.model_validate(self._request("GET", f"/v1/sweeps/{sweep_id}").json())

    def sweeps(self, *, limit: int = 20) -> builtins.list[Sweep]:
        return _SWEEPS.validate_python(self._request("GET", "/v1/sweeps", params={"limit": limit}).json())

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        return Sweep.model_validate(self._request("POST", f"/v1/sweeps/{sweep_id}/cancel").json())

    def wait_sweep(self, sweep_id: str, *, every: float = 2.0, timeout: float | None = None) -> Sweep:
        """Poll until the sweep ends and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (sweep := self.sweep(sweep_id)).ended:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} is still running after {timeout} s")
            time.sleep(every)
        return sweep

    # --- artifacts ---------------------------------------------------------------------------

    def artifacts(self, job_id: str) -> builtins.list[Artifact]:
        return _ARTIFACTS.validate_python(self._request("GET", f"/v1/jobs/{job_id}/artifacts").json())

    def uploads(self, *, kind: str | None = None) -> builtins.list[Artifact]:
        params = {"kind": kind} if kind else {}
        return _ARTIFACTS.validate_python(self._request("GET", "/v1/artifacts", params=params).json())

    def artifact(self, artifact_id: str) -> Artifact:
        return Artifact.model_validate(self._request("GET", f"/v1/artifacts/{artifact_id}").json())

    def delete_artifact(self, artifact_id: str) -> None:
        """Delete an upload (or an ended job's file) and its stored files (ApiError 409 while a job uses it)."""
        self._request("DELETE", f"/v1/artifacts/{artifact_id}")

    def download(self, artifact: Artifact, directory: Path) -> Path:
        """Stream one artifact into `directory`, checking its sha256; a mismatch keeps nothing."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / Path(artifact.filename).name  # never a path the server chose
        partial = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", artifact.content_url) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response, self.key)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        out.write(chunk)
            if digest.hexdigest() != artifact.sha256:
                raise ChecksumMismatch(artifact.filename, artifact.sha256, digest.hexdigest())
            os.replace(partial, target)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, exc) from exc
        finally:
            partial.unlink(missing_ok=True)
        return target

    def download_job(self, job_id: str, directory: Path) -> builtins.list[Path]:
        return [self.download(a, directory) for a in self.artifacts(job_id)]

    def upload(
        self,
        path: Path,
        kind: str,
        *,
        name: str | None = None,
        format: str | None = None,
        label_column: str | None = None,
        output: str | None = None,
    ) -> tuple[Artifact, bool]:
        """Upload a teacher or dataset file, streamed from disk. Returns (artifact, created):
        created is False when this tenant had uploaded the same content before."""
        fields = {"kind": kind, "name": name, "format": format, "label_column": label_column, "output": output}
        with path.open("rb") as file:
            response = self._request(
                "POST",
                "/v1/artifacts",
                data={k: v for k, v in fields.items() if v},
                files={"file": (path.name, file, "application/octet-stream")},
            )
        return Artifact.model_validate(response.json()), response.status_code == 201

    # --- the service -------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        return Catalog.model_validate(self._request("GET", "/v1/catalog").json())

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 60.0, every: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise Unreachable(self.url, TimeoutError(f"/readyz did not answer 200 within {timeout:.0f} s"))
            time.sleep(every)
