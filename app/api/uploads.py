"""POST /v1/artifacts: upload a teacher model or a dataset.

The body is multipart/form-data, parsed as it streams: the file part goes straight to
a temp file in the artifact store while it is hashed and counted, so an upload is
never held whole in memory and the size cap holds with or without Content-Length.
Then the file is inspected (app/uploads) and only an accepted file is kept, once per
tenant and content: the same bytes uploaded again return the artifact stored before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, Request, Response, status
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app.api.jobs import artifact_out
from app.api.schemas import ArtifactOut, problems
from app.api.upload_limits import disk_full_is_507, safetensors_summary
from app.auth import Caller, CallerDep
from app.bodies import body_timeout
from app.config import get_settings
from app.db import session_scope
from app.models import Artifact
from app.problems import Problem, invalid_spec
from app.storage import (
    INCOMING,
    TENSORS_FILE,
    dataset_arrays_key,
    get_storage,
    upload_key,
)
from app.uploads import (
    InspectionError,
    UploadLimits,
    guess_format,
    refuse_code_carrying,
)
from app.uploads.sandbox import InspectRequest, SandboxLimits, inspect_isolated

router = APIRouter(prefix="/v1", tags=["artifacts"], responses=problems(400, 401, 422, 429, 503))

FIELDS = {"kind", "name", "format", "label_column", "output", "image_size"}
MAX_FIELD_BYTES = 1000
MAX_NAME_CHARS = 200  # the column's size
MEDIA_TYPES = {
    "onnx": "application/onnx",
    "safetensors": "application/octet-stream",
    "npz": "application/octet-stream",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "zip": "application/zip",
}
UPLOAD_FORM = {
    "required": ["kind", "file"],
    "properties": {
        "kind": {"type": "string", "enum": ["teacher", "dataset"], "examples": ["teacher"]},
        "file": {
            "type": "string",
            "format": "binary",
            "description": "ONNX or safetensors (teacher); "
            "NPZ, CSV, Parquet or a ZIP of images in class folders (dataset).",
        },
        "name": {
            "type": "string",
            "maxLength": 200,
            "description": "A label for people.",
            "examples": ["resnet teacher"],
        },
        "format": {
            "type": "string",
            "enum": ["onnx", "safetensors", "npz", "csv", "parquet", "zip"],
            "description": "Default: from the file name's extension.",
        },
        "label_column": {
            "type": "string",
            "default": "label",
            "description": "CSV/Parquet: the label column.",
            "examples": ["label"],
        },
        "output": {"type": "string", "description": "ONNX: the output holding class scores, when it has several."},
        "image_size": {
            "type": "integer",
            "minimum": 1,
            "maximum": 4096,
            "description": "ZIP of images: "
            "resize every image to image_size x image_size (needed when their sizes differ).",
        },
    },
}


def _field_error(field: str, detail: str, type_: str = "value_error") -> Problem:
    return invalid_spec([{"pointer": f"/{field}", "in": "body", "detail": detail, "type": type_}])


def _too_large(cap: int) -> Problem:
    return Problem(
        413,
        "Upload too large",
        f"The service accepts uploads up to {cap} bytes (DISTILL_MAX_UPLOAD_BYTES); nothing was kept.",
        type_="upload-too-large",
    )


class StreamedForm:
    """Multipart callbacks: small fields collected, the one `file` part written to `target`."""

    def __init__(self, boundary: bytes, target: Path, cap: int) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.sha256 = hashlib.sha256()
        self._target, self._cap = target, cap
        self._out: BinaryIO | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._disposition: dict[str, str] = {}
        self._value = bytearray()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self._disposition, self._value = {}, bytearray()

    def _header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._header_value))
            self._disposition = {k.decode(): v.decode("utf-8", "replace") for k, v in options.items()}
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        name = self._disposition.get("name", "")
        if name == "file":
            if self._out is not None:
                raise _field_error("file", "send one file per upload")
            self.filename = self._disposition.get("filename") or ""
            self._out = self._target.open("wb")
        elif name not in FIELDS:
            raise _field_error(
                name or "(unnamed)",
                f"unknown form field {name!r}; the fields are: file, {', '.join(sorted(FIELDS))}",
                "extra_forbidden",
            )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._disposition.get("name") != "file":
            self._value.extend(chunk)
            if len(self._value) > MAX_FIELD_BYTES:
                raise _field_error(self._disposition.get("name", ""), f"longer than {MAX_FIELD_BYTES} bytes")
            return
        self.size += len(chunk)
        if self.size > self._cap:
            raise _too_large(self._cap)
        self.sha256.update(chunk)
        assert self._out is not None  # the file part's headers opened it
        self._out.write(chunk)

    def _part_end(self) -> None:
        name = self._disposition.get("name")
        if name == "file":  # fsync happens in _store, off the event loop
            assert self._out is not None  # the file part's headers opened it
            self._out.close()
        elif name:
            self.fields[name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()


def _safe_filename(filename: str, fmt: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename.replace("\\", "/")).name).lstrip(".")[:100]
    return base or f"upload.{fmt}"


@router.post(
    "/artifacts",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtifactOut,
    summary="Upload a teacher model or a dataset",
    description="multipart/form-data with `kind` (teacher | dataset) and `file`, e.g. "
    "`curl -H 'Authorization: Bearer KEY' -F kind=teacher -F file=@teacher.onnx URL/v1/artifacts` or "
    "`-F kind=dataset -F file=@data.npz`; optional `name`, "
    "`format` (else from the extension), `label_column` (CSV/Parquet), `output` (ONNX). Pickle-based "
    "files (.pt, .pth, .bin, .pkl), TorchScript and .pt2 are refused: loading them runs code. "
    "201 with what inspection found; 200 with the earlier artifact when this tenant uploaded the "
    "same content with the same options before.",
    responses={
        200: {"description": "The same content was uploaded before: that artifact.", "model": ArtifactOut},
        **problems(408, 413, 415, 507),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {"type": "object", **UPLOAD_FORM}}},
        }
    },
)
async def upload_artifact(request: Request, response: Response, caller: CallerDep) -> ArtifactOut:
    """The caller is known before a byte is read (its dependency); no database session is
    open while the body streams or while the file is inspected (in a child process)."""
    cap = get_settings().max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + 64 * 1024:  # + room for the form
        raise _too_large(cap)
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise Problem(
            415,
            "Send multipart/form-data",
            "Upload with multipart/form-data: fields kind and file (e.g. curl -F kind=teacher -F file=@teacher.onnx).",
            type_="unsupported-media-type",
        )
    incoming = get_storage().path(f"{INCOMING}/{uuid.uuid4().hex}")
    with request.app.state.upload_slots.take(caller), disk_full_is_507():
        incoming.parent.mkdir(parents=True, exist_ok=True)
        form = StreamedForm(options[b"boundary"], incoming.with_suffix(".part"), cap)
        try:
            await _receive(request, form)
            artifact, created = await _accept(caller, form, incoming)
        finally:
            form.close()
            for leftover in incoming.parent.glob(incoming.name + "*"):
                leftover.unlink(missing_ok=True)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/artifacts/{artifact.id}"
    return artifact_out(artifact)


async def _receive(request: Request, form: StreamedForm) -> None:
    """Stream the body into the form; a body idle for body_timeout_seconds ends with 408."""
    timeout = get_settings().body_timeout_seconds
    chunks = request.stream().__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise body_timeout(timeout) from None
            form.parser.write(chunk)
        form.parser.finalize()
    except FormParserError as exc:
        raise Problem(
            400,
            "The multipart body cannot be parsed",
            f"{exc}. Send multipart/form-data "
            "as a client library writes it (e.g. curl -F kind=teacher -F file=@teacher.onnx).",
            type_="malformed-multipart",
        ) from exc
    form.close()


def _form_fields(form: StreamedForm) -> tuple[str, str, dict[str, Any]]:
    if form.filename is None:
        raise _field_error("file", "no file part: send the file as the form field 'file'", "missing")
    if form.size == 0:
        raise _field_error("file", "the file is empty")
    kind = form.fields.get("kind")
    if kind not in ("teacher", "dataset"):
        raise _field_error("kind", "kind must be 'teacher' or 'dataset'", "missing" if kind is None else "enum")
    for field, value in form.fields.items():
        if "\x00" in value:
            raise _field_error(field, "holds a NUL character; send plain text")
    if len(form.fields.get("name") or "") > MAX_NAME_CHARS:
        raise _field_error("name", f"longer than {MAX_NAME_CHARS} characters", "string_too_long")
    fmt = form.fields.get("format") or guess_format(kind, form.filename)
    options: dict[str, Any] = {k: form.fields[k] for k in ("label_column", "output") if form.fields.get(k)}
    if form.fields.get("image_size"):
        size = form.fields["image_size"]
        if not size.isdigit() or not 1 <= int(size) <= 4096:
            raise _field_error("image_size", "image_size is a side in pixels, 1..4096")
        options["image_size"] = int(size)
    return kind, fmt, options


def _options_sha256(kind: str, fmt: str, options: dict[str, str]) -> str:
    """The options an upload was inspected with: the same bytes with another label column
    (or output, or format) are another artifact."""
    canonical = json.dumps({"kind": kind, "format": fmt, **options}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sandbox_limits() -> SandboxLimits:
    settings = get_settings()
    return SandboxLimits(
        memory_bytes=settings.inspect_memory_bytes,
        seconds=settings.inspect_seconds,
        output_bytes=settings.max_upload_bytes + UploadLimits().max_cells * 8,
    )


async def _accept(caller: Caller, form: StreamedForm, incoming: Path) -> tuple[Artifact, bool]:
    """Inspect the streamed file in a child process; keep it (once per tenant, content and
    options) or refuse it."""
    upload = incoming.with_suffix(".part")
    arrays = incoming.with_suffix(".npz")
    try:
        kind, fmt, options = _form_fields(form)
        filename = form.filename or ""  # never None here: _form_fields refuses a form without a file
        refuse_code_carrying(upload, filename)
    except InspectionError as exc:
        raise _field_error(exc.field, str(exc), "refused") from exc
    digest, options_digest = form.sha256.hexdigest(), _options_sha256(kind, fmt, options)
    existing = await run_in_threadpool(_existing, caller, kind, digest, options_digest)
    if existing is not None:
        return existing, False
    request = InspectRequest(
        kind=kind,
        path=str(upload),
        fmt=fmt,
        output=options.get("output"),
        label_column=options.get("label_column", "label"),
        canonical_out=str(arrays),
        image_size=options.get("image_size"),
    )
    try:
        inspection = await inspect_isolated(request, _sandbox_limits())
    except InspectionError as exc:
        raise _field_error(exc.field, str(exc), "refused") from exc
    stored = Artifact(
        tenant_id=caller.tenant_id,
        job_id=None,
        kind=kind,
        format=fmt,
        name=form.fields.get("name"),
        filename=_safe_filename(filename, fmt),
        media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"),
        size_bytes=form.size,
        sha256=digest,
        options_sha256=options_digest,
        inspection=inspection,
        storage_key=upload_key(caller.tenant_id, f"{digest}-{options_digest[:16]}", _safe_filename(filename, fmt)),
    )
    return await run_in_threadpool(_store, stored, upload, arrays)


def _store(artifact: Artifact, upload: Path, arrays: Path) -> tuple[Artifact, bool]:
    """Move the files into the store, then commit the row; if the row cannot be written,
    the files go too (no orphans). A concurrent twin that won keeps the same files."""
    storage = get_storage()
    final = storage.path(artifact.storage_key)
    final.parent.mkdir(parents=True, exist_ok=True)
    moved = [final]
    if artifact.kind == "dataset":
        moved.append(storage.path(dataset_arrays_key(artifact.storage_key)))
        os.replace(arrays, moved[-1])
    if artifact.format == "safetensors" and artifact.inspection is not None:  # the full tensor list beside
        moved.append(final.with_name(TENSORS_FILE))  # the file; the row holds a summary
        moved[-1].write_text(json.dumps(artifact.inspection["tensors"]))
        artifact.inspection = safetensors_summary(artifact.inspection)
    with upload.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(upload, final)
    with session_scope() as session:
        session.add(artifact)
        try:
            session.commit()
        except IntegrityError:  # the same content and options, uploaded at the same moment
            session.rollback()
            twin = _existing(artifact.tenant_id, artifact.kind, artifact.sha256, artifact.options_sha256)
            assert twin is not None  # the row that won the unique constraint
            return twin, False
        except BaseException:
            for path in moved:
                path.unlink(missing_ok=True)
            raise
        return artifact, True


def _existing(caller: Caller | str, kind: str, digest: str, options_digest: str) -> Artifact | None:
    tenant_id = caller if isinstance(caller, str) else caller.tenant_id
    with session_scope(readonly=True) as session:
        return session.scalars(
            select(Artifact).where(
                Artifact.tenant_id == tenant_id,
                Artifact.kind == kind,
                Artifact.sha256 == digest,
                Artifact.options_sha256 == options_digest,
                Artifact.job_id.is_(None),
            )
        ).first()
