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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from app.config import get_settings
from app.db import read_retrying, session_scope
from app.problems import Problem
from app.tenants import (
    LOCAL_TENANT,
    find_tenant,
    key_owner,
    key_sha256,
    local_tenant,
)

T = TypeVar("T")

# The security schemes of the OpenAPI document (the Authorize button of /docs). They only
# describe what `authenticate` and `require_admin` check: auto_error=False, they refuse nothing.
API_KEY_SCHEME = "ApiKey"
api_key_scheme = HTTPBearer(
    scheme_name=API_KEY_SCHEME,
    description="A tenant's API key, `dk_...` (also accepted as an X-API-Key header). The embedded "
    "service writes one to $DISTILL_HOME/api-key on its first start; an admin makes more: "
    "python -m app.admin create-key TENANT.",
    auto_error=False,
)
admin_key_scheme = HTTPBearer(
    scheme_name="AdminKey",
    description="The admin key of the /v1/admin routes: DISTILL_ADMIN_KEY, set on the server.",
    auto_error=False,
)
Bearer = HTTPAuthorizationCredentials | None


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

    def wait_seconds(self, key_id: str, per_minute: int | None = None, burst: int | None = None) -> int:
        """Take a token: 0 if there was one, else how long until there is."""
        settings = get_settings()
        rate = (settings.rate_limit_per_minute if per_minute is None else per_minute) / 60.0
        capacity = float(settings.rate_limit_burst if burst is None else burst)
        if rate <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate)
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
    return Problem(
        401, "API key required", detail, type_="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="distill"'}
    )


def _too_many(detail: str, wait: int) -> Problem:
    return Problem(429, "Too many requests", detail, type_="rate-limited", headers={"Retry-After": str(wait)})


def count_wrong_key(request: Request) -> None:
    """Wrong keys are counted per client address, so guessing keys is slow."""
    settings = get_settings()
    address = request.client.host if request.client else "unknown"
    wait = request.app.state.rate_limiter.wait_seconds(
        f"address:{address}", settings.auth_failures_per_minute, settings.auth_failures_burst
    )
    if wait:
        raise _too_many(
            f"Too many requests with a wrong API key from this address "
            f"({settings.auth_failures_per_minute} a minute); retry in {wait} s.",
            wait,
        )


def check_key(request: Request) -> Caller:
    """The caller of a request, from its key: its own short session, closed before the
    route runs (see app/db.py). Blocking: call it from a thread."""
    if get_settings().auth == "off":
        with session_scope() as session:
            tenant = find_tenant(session, LOCAL_TENANT) or local_tenant(session)
            session.commit()
            return Caller(tenant.id, None)
    return read_retrying(caller_of_key_in, request)


def required_key(request: Request) -> str:
    key = presented_key(request)
    if key is None:
        raise _unauthorized(
            "Send your API key as 'Authorization: Bearer <key>' (or X-API-Key). "
            "An admin creates keys: python -m app.admin create-key TENANT."
        )
    return key


def unknown_key(request: Request) -> Problem:
    """The 401 of a key no tenant has (counted against the client address first)."""
    count_wrong_key(request)
    return _unauthorized("This API key is unknown or revoked. Ask an admin for a new one.")


def caller_of_key_in(connection: Connection, request: Request) -> Caller:
    """The caller of a request's key (auth=keys), looked up on the given connection: a
    route that checks the key in its own unit of work needs one thread and one connection."""
    key = required_key(request)
    caller = key_cache.get(key)
    if caller is None:
        owner = key_owner(connection, key)
        if owner is None:
            raise unknown_key(request)
        caller = Caller(owner.tenant_id, owner.key_id)
        key_cache.put(key, caller)
    rate_limited(request, caller)
    return caller


def read_as_caller(request: Request, work: Callable[..., T], *args: object) -> T:
    """`work(connection, caller, *args)` for the caller of the request, the key checked on
    the same read connection (one thread, one checkout): for the routes that clients poll,
    which do not take the `authenticate` dependency. Blocking: call it from a thread."""
    if get_settings().auth == "off":
        return read_retrying(work, check_key(request), *args)
    return read_retrying(_read_as_key, request, work, *args)


def _read_as_key(connection: Connection, request: Request, work: Callable[..., T], *args: object) -> T:
    return work(connection, caller_of_key_in(connection, request), *args)


class KeyCache:
    """Recently seen keys -> their caller, for `auth_cache_seconds`: a poll of a job costs
    one database read, not two. A key revoked through this process leaves at once; one
    revoked elsewhere (the admin command, another replica) within the cache time."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Caller | None:
        with self._lock:
            hit = self._entries.get(key_sha256(key))
        return hit[0] if hit and hit[1] > time.monotonic() else None

    def put(self, key: str, caller: Caller) -> None:
        seconds = get_settings().auth_cache_seconds
        if seconds > 0:
            with self._lock:
                if len(self._entries) > 10_000:  # bounded: forget them all, they come back
                    self._entries.clear()
                self._entries[key_sha256(key)] = (caller, time.monotonic() + seconds)

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[0].key_id != key_id}


key_cache = KeyCache()


def rate_limited(request: Request, caller: Caller) -> None:
    settings = get_settings()
    wait = request.app.state.rate_limiter.wait_seconds(caller.key_id)
    if wait:
        raise _too_many(
            f"This key is limited to {settings.rate_limit_per_minute} requests per minute "
            f"(bursts of {settings.rate_limit_burst}); retry in {wait} s.",
            wait,
        )


async def authenticate(request: Request, _scheme: Annotated[Bearer, Security(api_key_scheme)] = None) -> Caller:
    """FastAPI dependency: the caller. A request whose body was guarded (app/bodies.py) was
    authenticated before its body was read; that answer is reused, not counted twice. A key
    seen in the last auth_cache_seconds needs no thread and no database."""
    caller = request.scope.get("state", {}).get("caller")
    if caller is not None:
        return caller
    key = presented_key(request)
    if key is not None and get_settings().auth == "keys" and (caller := key_cache.get(key)):
        rate_limited(request, caller)
        return caller
    return await run_in_threadpool(check_key, request)


CallerDep = Annotated[Caller, Depends(authenticate)]


def require_admin(request: Request, _scheme: Annotated[Bearer, Security(admin_key_scheme)] = None) -> None:
    admin = get_settings().admin_key.get_secret_value()
    if not admin:
        raise Problem(
            403,
            "Admin routes disabled",
            "Set DISTILL_ADMIN_KEY to enable them, or use the admin command: python -m app.admin --help.",
            type_="admin-disabled",
        )
    key = presented_key(request) or ""
    digest = hashlib.sha256  # compare digests: constant time whatever the lengths
    if not hmac.compare_digest(digest(key.encode()).digest(), digest(admin.encode()).digest()):
        raise _unauthorized("The admin routes need the admin key (DISTILL_ADMIN_KEY).")
