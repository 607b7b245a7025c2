"""Request bodies: read only after the caller is known, bounded in size and in idle time.

A pure ASGI middleware in front of every route with a JSON body (everything but the
streamed uploads, the API's and the dashboard's form, which apply the same rules themselves,
app/api/uploads.py):

1. the API key (or the admin key) is checked before one byte of the body is read, so a
   stranger's 400 MB body costs nothing (the route's dependency reuses that answer);
2. a declared Content-Length over `max_json_body_bytes` is refused at once (413), and the
   bytes are counted while they arrive, so a body without Content-Length is cut off at the
   same size;
3. a body that sends nothing for `body_timeout_seconds` ends with 408.

No database session is open while the body streams: the key check closes its own.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import check_key, require_admin
from app.config import get_settings
from app.problems import Problem, database_problem, problem_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# These stream their bodies and apply these rules themselves (/ui/upload hands its body to the
# API's upload as it is); buffered here, an upload would be cut off at the JSON cap.
STREAMED = frozenset({("POST", "/v1/artifacts"), ("POST", "/ui/upload")})


def too_large(cap: int, what: str, setting: str) -> Problem:
    return Problem(
        413,
        "Body too large",
        f"{what} may have up to {cap} bytes ({setting}); nothing was kept.",
        type_="body-too-large",
    )


def body_timeout(seconds: float) -> Problem:
    return Problem(
        408,
        "Body too slow",
        f"The request body sent nothing for {seconds:g} s "
        "(DISTILL_BODY_TIMEOUT_SECONDS); nothing was kept. Send it again.",
        type_="body-timeout",
        headers={"Connection": "close"},
    )


async def next_message(receive: Receive, timeout: float) -> Message:
    try:
        return await asyncio.wait_for(receive(), timeout)
    except TimeoutError:
        raise body_timeout(timeout) from None


async def read_capped(receive: Receive, cap: int, timeout: float) -> bytes | None:
    """The whole body, or Problem (413/408); None when the client went away."""
    body = bytearray()
    while True:
        message = await next_message(receive, timeout)
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > cap:
            raise too_large(cap, "A JSON body", "DISTILL_MAX_JSON_BODY_BYTES")
        if not message.get("more_body", False):
            return bytes(body)


async def authorize(request: Request) -> None:
    """The caller first: admin routes need the admin key, the others a tenant's key."""
    path = request.url.path
    if path.startswith("/v1/admin"):
        require_admin(request)
    elif path.startswith("/v1/"):
        request.scope.setdefault("state", {})["caller"] = await run_in_threadpool(check_key, request)


def routed(scope: Scope) -> bool:
    """A route takes this method at this path (else the app answers 404/405 unread)."""
    return any(route.matches(scope)[0] == Match.FULL for route in scope["app"].routes)


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in BODY_METHODS
            or (scope["method"], scope["path"]) in STREAMED
            or not routed(scope)
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        settings = get_settings()
        try:
            await authorize(request)
            declared = declared_length(scope)
            if declared is not None and declared > settings.max_json_body_bytes:
                raise too_large(settings.max_json_body_bytes, "A JSON body", "DISTILL_MAX_JSON_BODY_BYTES")
            body = await read_capped(receive, settings.max_json_body_bytes, settings.body_timeout_seconds)
        except Problem as problem:
            await problem_response(request, problem)(scope, receive, send)
            return
        except (OperationalError, PoolTimeout) as exc:  # the key check met a database outage
            await problem_response(request, database_problem(request, exc))(scope, receive, send)
            return
        if body is None:
            return  # the client left; nobody to answer
        await self.app(scope, Replay(body, receive), send)


class Replay:
    """The ASGI receive of a body read already: the body once, then the client's messages."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Message:
        if self.body is None:
            return await self.receive()
        body, self.body = self.body, None
        return {"type": "http.request", "body": body, "more_body": False}
