"""/v1/artifacts: your uploads, and the metadata and content of any stored file (uploads and job outputs)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from app import deletion
from app.api.jobs import artifact_out, not_found
from app.api.schemas import ArtifactOut, problems
from app.auth import Caller, CallerDep
from app.db import session_scope
from app.models import Artifact
from app.storage import get_storage

router = APIRouter(prefix="/v1", tags=["artifacts"], responses=problems(401, 404, 422, 429, 503))


def artifact_or_404(session, caller: Caller, artifact_id: str) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.tenant_id != caller.tenant_id:
        raise not_found("Artifact", artifact_id)
    return artifact


@router.get("/artifacts", response_model=list[ArtifactOut], summary="Your uploads, newest first")
def list_uploads(
    caller: CallerDep,
    kind: Annotated[Literal["teacher", "dataset"] | None, Query(description="Only this kind.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ArtifactOut]:
    """The tenant's uploads (teachers and datasets), newest first, with what inspection found."""
    query = select(Artifact).where(Artifact.tenant_id == caller.tenant_id, Artifact.job_id.is_(None))
    if kind:
        query = query.where(Artifact.kind == kind)
    with session_scope(readonly=True) as session:
        rows = session.scalars(query.order_by(Artifact.created_at.desc(), Artifact.id.desc()).limit(limit))
        return [artifact_out(a) for a in rows]


@router.get("/artifacts/{artifact_id}", response_model=ArtifactOut, summary="An artifact's metadata")
def get_artifact(artifact_id: str, caller: CallerDep) -> ArtifactOut:
    """An upload's or a job output's metadata: kind, format, size, sha256 and, for an upload,
    what inspection found (a teacher's input shape, outputs and classes; a dataset's rows,
    input shape and classes).
    """
    with session_scope(readonly=True) as session:
        return artifact_out(artifact_or_404(session, caller, artifact_id))


@router.get(
    "/artifacts/{artifact_id}/content",
    summary="Download an artifact",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def artifact_content(artifact_id: str, caller: CallerDep) -> FileResponse:
    """The file itself, as stored (check it against the artifact's sha256)."""
    with session_scope(readonly=True) as session:
        artifact = artifact_or_404(session, caller, artifact_id)
    path = get_storage().path(artifact.storage_key)
    if not path.is_file():
        raise not_found("Artifact content", artifact_id)
    return FileResponse(
        path,
        media_type=artifact.media_type,
        filename=artifact.filename,
        headers={"ETag": f'"{artifact.sha256}"', "X-Content-SHA256": artifact.sha256},
    )


@router.delete(
    "/artifacts/{artifact_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an artifact and its files",
    description="An upload (with the arrays and tensor list stored beside it) or one output file of an "
    "ended job. Refused (409) while a queued or running job, or a running sweep, names it, or while the "
    "job that makes it has not ended. Another tenant's id is 404.",
    responses=problems(409),
)
def delete_artifact(artifact_id: str, caller: CallerDep) -> Response:
    with session_scope() as session:
        paths = deletion.delete_artifact(session, artifact_or_404(session, caller, artifact_id))
    deletion.remove_paths(paths)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
