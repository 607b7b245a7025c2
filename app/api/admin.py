"""/v1/admin: tenants and API keys, behind the admin key (DISTILL_ADMIN_KEY).
The same operations without HTTP: python -m app.admin."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import tenants
from app.api.jobs import not_found
from app.api.schemas import KeyIn, KeyOut, NewKeyOut, TenantIn, TenantOut, problems
from app.auth import key_cache, require_admin
from app.db import session_scope
from app.models import ApiKey, Tenant
from app.problems import Problem

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=problems(400, 401, 403, 404, 422, 503),
)


def _tenant_or_404(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise not_found("Tenant", tenant_id)
    return tenant


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantOut,
    summary="Create a tenant",
    responses=problems(409),
)
def create_tenant(body: TenantIn) -> Tenant:
    """A tenant owns jobs and uploads; its keys see only its own. Needs the admin key."""
    with session_scope() as session:
        try:
            tenant = tenants.create_tenant(session, body.name, body.max_concurrent_jobs)
        except tenants.TenantExists as exc:
            raise Problem(409, "Tenant exists", f"{exc}; tenant names are unique.", type_="tenant-exists") from exc
        session.commit()
        return tenant


@router.get("/tenants", response_model=list[TenantOut], summary="List tenants")
def list_tenants() -> list[Tenant]:
    """Every tenant, oldest first. Needs the admin key."""
    with session_scope() as session:
        return list(session.scalars(select(Tenant).order_by(Tenant.created_at)))


@router.post(
    "/tenants/{tenant_id}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=NewKeyOut,
    summary="Create an API key (shown once)",
)
def create_key(tenant_id: str, body: KeyIn) -> NewKeyOut:
    """A new API key for the tenant: the answer holds the key itself, shown this once (only
    its hash is stored). Needs the admin key.
    """
    with session_scope() as session:
        new = tenants.create_key(session, _tenant_or_404(session, tenant_id), body.name)
        session.commit()
    return NewKeyOut.model_validate({**KeyOut.model_validate(new.record).model_dump(), "key": new.key})


@router.get("/tenants/{tenant_id}/keys", response_model=list[KeyOut], summary="A tenant's keys (prefixes only)")
def list_keys(tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, by prefix and name, revoked ones too. Needs the admin key."""
    with session_scope() as session:
        _tenant_or_404(session, tenant_id)
        return list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)))


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke an API key")
def revoke_key(key_id: str) -> ApiKey:
    """The key stops working at once in this API process (within DISTILL_AUTH_CACHE_SECONDS
    in others). Needs the admin key.
    """
    with session_scope() as session:
        record = tenants.revoke_key(session, key_id)
        if record is None:
            raise not_found("API key", key_id)
        session.commit()
    key_cache.forget(key_id)  # this process stops trusting it at once
    return record
