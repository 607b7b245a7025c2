"""Tenants and their API keys, for the API, the admin routes and the admin command.

A key is `dk_` + 43 random URL-safe characters (256 bits). Only its SHA-256 is stored,
with a short visible prefix to tell keys apart; the key itself is shown once, when it is
created, and never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import get_settings
from app.jobs import ACTIVE
from app.models import ApiKey, Job, Tenant, utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "dk_"
PREFIX_LENGTH = 11  # "dk_" + 8 characters: enough to tell keys apart, useless to guess one
LOCAL_TENANT = "local"


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once
    record: ApiKey


class TenantExists(ValueError):
    pass


def create_tenant(session: Session, name: str, max_concurrent_jobs: int | None = None) -> Tenant:
    if session.scalars(select(Tenant).where(Tenant.name == name)).first() is not None:
        raise TenantExists(f"a tenant named {name!r} exists")
    tenant = Tenant(name=name, max_concurrent_jobs=max_concurrent_jobs, submissions=0)
    session.add(tenant)
    session.flush()
    return tenant


def find_tenant(session: Session, name_or_id: str) -> Tenant | None:
    return session.scalars(select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == name_or_id))).first()


def of(session: Session, tenant_id: str) -> Tenant:
    """The tenant of a key, job or sweep: it exists (they are deleted with it)."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"tenant {tenant_id} does not exist")
    return tenant


def create_key(session: Session, tenant: Tenant, name: str | None = None) -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(tenant_id=tenant.id, name=name, prefix=key[:PREFIX_LENGTH], key_sha256=key_sha256(key))
    session.add(record)
    session.flush()
    return NewKey(key, record)


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    record = session.get(ApiKey, key_id)
    if record is not None and record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()
    return record


@dataclass(frozen=True)
class KeyOwner:
    tenant_id: str
    key_id: str


# Built once: a key is looked up on every request, and building the statement costs more
# than running it.
_KEY_OWNER = select(ApiKey.tenant_id, ApiKey.id).where(
    ApiKey.key_sha256 == bindparam("sha256"), ApiKey.revoked_at.is_(None)
)


def key_owner(session: Session | Connection, key: str) -> KeyOwner | None:
    """Whose a presented key is; None for unknown or revoked keys."""
    row = session.execute(_KEY_OWNER, {"sha256": key_sha256(key)}).first()
    return KeyOwner(row.tenant_id, row.id) if row else None


def local_tenant(session: Session) -> Tenant:
    """The tenant of the embedded default (and of every request when auth is off)."""
    tenant = find_tenant(session, LOCAL_TENANT)
    if tenant is None:
        try:
            with session.begin_nested():
                tenant = create_tenant(session, LOCAL_TENANT)
        except (IntegrityError, TenantExists):  # another process created it first
            tenant = find_tenant(session, LOCAL_TENANT)
    assert tenant is not None  # found, created, or created by the other process
    return tenant


def ensure_local_key(session: Session) -> str | None:
    """Zero set-up for the embedded default: when no API key exists at all, create the tenant
    'local' with one key, write it to $DISTILL_HOME/api-key (mode 0600) and return it so the
    caller can print it once. None when keys exist already."""
    if session.scalar(select(func.count()).select_from(ApiKey)):
        return None
    new = create_key(session, local_tenant(session), name="created on first start")
    session.commit()
    path = get_settings().local_key_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new.key + "\n")
    return new.key


# --- the concurrent-job cap -------------------------------------------------------------


def lock_for_submission(session: Session, tenant_id: str) -> None:
    """Before a submission counts anything: a write to the tenant's row, which
    holds its row lock (PostgreSQL) or the database's write lock (SQLite) until commit, so
    two submissions of one tenant count active jobs one after the other."""
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(submissions=Tenant.submissions + 1))


def active_jobs(session: Session, tenant_id: str) -> int:
    return (
        session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE)))
        or 0
    )


def job_cap(tenant: Tenant) -> int:
    return tenant.max_concurrent_jobs or get_settings().max_concurrent_jobs
