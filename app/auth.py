"""Who is calling: an API key -> its tenant (FastAPI dependency), a per-key rate limit,
and the admin key of the admin routes.

Keys arrive as `Authorization: Bearer <key>` or `X-API-Key: <key>`. They are hashed
before any lookup and never logged or echoed in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import get_session
from app.problems import Problem
from app.tenants import LOCAL_TENANT, find_tenant, local_tenant, tenant_of_key


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    key_id: str | None  # None when auth is off


class RateLimiter:
    """A token bucket per key: DISTILL_RATE_LIMIT_BURST requests at once, refilled at
    DISTILL_RATE_LIMIT_PER_MINUTE. Kept in the API process (each API replica counts on its own)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)
        self._lock = threading.Lock()

    def wait_seconds(self, key_id: str) -> int:
        """Take a token: 0 if there was one, else how long until there is."""
        settings = get_settings()
        rate, burst = settings.rate_limit_per_minute / 60.0, float(settings.rate_limit_burst)
        if rate <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return 0
            self._buckets[key_id] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / rate))


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "API key required", detail, type_="unauthorized",
                   headers={"WWW-Authenticate": 'Bearer realm="distill"'})


def authenticate(request: Request, session: Annotated[Session, Depends(get_session)]) -> Caller:
    settings = get_settings()
    if settings.auth == "off":
        tenant = find_tenant(session, LOCAL_TENANT) or local_tenant(session)
        session.commit()
        return Caller(tenant.id, None)
    key = presented_key(request)
    if key is None:
        raise _unauthorized("Send your API key as 'Authorization: Bearer <key>' (or X-API-Key). "
                            "An admin creates keys: python -m app.admin create-key TENANT.")
    found = tenant_of_key(session, key)
    if found is None:
        raise _unauthorized("This API key is unknown or revoked. Ask an admin for a new one.")
    tenant, record = found
    wait = request.app.state.rate_limiter.wait_seconds(record.id)
    if wait:
        raise Problem(429, "Too many requests",
                      f"This key is limited to {settings.rate_limit_per_minute} requests per minute "
                      f"(bursts of {settings.rate_limit_burst}); retry in {wait} s.",
                      type_="rate-limited", headers={"Retry-After": str(wait)})
    return Caller(tenant.id, record.id)


CallerDep = Annotated[Caller, Depends(authenticate)]


def require_admin(request: Request) -> None:
    admin = get_settings().admin_key.get_secret_value()
    if not admin:
        raise Problem(403, "Admin routes disabled", "Set DISTILL_ADMIN_KEY to enable them, or use "
                      "the admin command: python -m app.admin --help.", type_="admin-disabled")
    key = presented_key(request) or ""
    digest = hashlib.sha256  # compare digests: constant time whatever the lengths
    if not hmac.compare_digest(digest(key.encode()).digest(), digest(admin.encode()).digest()):
        raise _unauthorized("The admin routes need the admin key (DISTILL_ADMIN_KEY).")
