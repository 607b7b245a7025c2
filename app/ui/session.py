"""Who is looking at the dashboard: the login cookie, the caller it stands for, and CSRF.

The cookie holds the API key the person typed into the login form (auth=off: a random value,
since there is no key). It is HttpOnly (page scripts never see it), SameSite=Strict, scoped to
/ui (the API routes never receive it and keep taking keys in headers only), Secure when the
page came over https, and lives until the browser closes. The key is checked on every request
like a header's key (app/auth.py: its own short session, the same cache and rate limit), so a
revoked key logs the dashboard out at once (within auth_cache_seconds when revoked elsewhere).

CSRF: every state-changing request (upload, cancel, logout) must carry a token, as the header
X-CSRF-Token (htmx sends it on every request, from hx-headers on <body>) or the form field
`csrf`. The token is HMAC-SHA256(cookie value, "distill-ui-csrf"): a per-session synchronizer
token that needs no server-side store; another site can neither read the cookie nor the page
that holds the token, so it cannot forge it. A cross-site Origin header is refused as well
(the login form included: no logging a browser into someone else's tenant). SameSite=Strict
alone would not be enough for browsers that ignore it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response

from app.auth import Caller, check_key, key_cache, rate_limited
from app.config import get_settings
from app.db import session_scope
from app.problems import Problem
from app.tenants import key_owner

COOKIE = "distill_ui"
PATH = "/ui"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
_CSRF_CONTEXT = b"distill-ui-csrf"


class LoginRequired(Exception):
    """No cookie, or one whose key is unknown or revoked: the route answers with the login page."""


def keys_required() -> bool:
    return get_settings().auth != "off"


def cookie_value_for(key: str | None) -> str:
    """What the cookie holds after a login: the key, or (auth=off) a fresh random value."""
    return key if key else secrets.token_urlsafe(32)


def set_login_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_login_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https")


def caller_of_key(request: Request, key: str) -> Caller | None:
    """The caller a key stands for, None for an unknown or revoked key; the key's rate limit
    applies. Its own short session, closed before the route runs (app/db.py). Blocking: call
    it from a thread (FastAPI runs the sync routes and dependencies below in its threadpool)."""
    caller = key_cache.get(key)
    if caller is None:
        with session_scope(readonly=True) as session:
            owner = key_owner(session, key)
        if owner is None:
            return None
        caller = Caller(owner.tenant_id, owner.key_id)
        key_cache.put(key, caller)
    rate_limited(request, caller)
    return caller


def dashboard_caller(request: Request) -> Caller:
    """FastAPI dependency of every dashboard route but the login page's."""
    value = request.cookies.get(COOKIE)
    if not value:
        raise LoginRequired
    if not keys_required():
        return check_key(request)  # auth=off: every caller is the tenant 'local'
    caller = caller_of_key(request, value)
    if caller is None:
        raise LoginRequired
    return caller


DashboardCaller = Annotated[Caller, Depends(dashboard_caller)]


def csrf_token(request: Request) -> str:
    """The token the pages of this session embed (empty without a cookie: the login page)."""
    value = request.cookies.get(COOKIE, "")
    if not value:
        return ""
    digest = hmac.new(value.encode(), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def check_same_origin(request: Request) -> None:
    """Refuse a request that a browser says came from another site."""
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        raise Problem(
            403,
            "Cross-site request refused",
            "This form can only be sent from the dashboard's own pages.",
            type_="csrf",
        )


def check_csrf(request: Request, form_token: str | None = None) -> None:
    """A state-changing request must carry this session's token (header or form field)."""
    check_same_origin(request)
    expected = csrf_token(request)
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Problem(403, "Missing or wrong CSRF token", "Reload the page and send the form again.", type_="csrf")
