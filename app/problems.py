"""RFC 9457 problem details for every error the API returns.

A problem says what went wrong in words a person can act on; validation
problems also list each wrong field as a JSON pointer into the request body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://distill.dev/problems/"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type_: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.type = type_ if type_ == "about:blank" else PROBLEM_BASE + type_
        self.errors, self.headers = errors, headers


def pointer(loc: tuple | list) -> str:
    """('body', 'method', 'temperature') -> '/method/temperature'."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def invalid_spec(errors: list[dict[str, Any]]) -> Problem:
    fields = ", ".join(e["pointer"] for e in errors)
    return Problem(
        422,
        "The request is not valid",
        f"Fix these fields and submit again: {fields}. GET /v1/catalog lists what exists.",
        type_="invalid-request",
        errors=errors,
    )


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
    }
    if problem.errors:
        body["errors"] = problem.errors
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers)


def _client_path(loc: list, body: Any) -> list:
    """Drop the tags that discriminated unions add to a location (/method/kd/alpha):
    the client wrote /method/alpha."""
    if not loc or loc[0] != "body":
        return loc
    path, node = [loc[0]], body
    for part in loc[1:]:
        if isinstance(node, dict) and part not in node and node.get("name") == part:
            continue  # a union tag, not a key the client wrote
        path.append(part)
        node = (
            node.get(part)
            if isinstance(node, dict)
            else (node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
        )
    return path


def document_pointer(loc: tuple | list, document: Any) -> str:
    """The pointer of a validation error in a JSON document as the client wrote it."""
    return pointer(_client_path(["body", *loc], document))


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for e in exc.errors():
        loc = _client_path(list(e.get("loc", ())), exc.body)
        errors.append(
            {
                "pointer": pointer(loc),
                "in": loc[0] if loc else "body",
                "detail": e.get("msg", "invalid"),
                "type": e.get("type", "value_error"),
            }
        )
    return errors


def database_problem(request: Request, exc: Exception) -> Problem:
    """503 for a database that is down (the pool reconnects on the next request) or that
    has no free connection right now."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    if isinstance(exc, PoolTimeout):
        return Problem(
            503,
            "Service busy",
            "The service has no free database connection right now; nothing was changed. Try again shortly.",
            type_="service-busy",
            headers={"Retry-After": "2"},
        )
    return Problem(
        503,
        "Database unavailable",
        "The database cannot be reached right now; nothing was changed. Try again shortly.",
        type_="database-unavailable",
        headers={"Retry-After": "5"},
    )


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for route in app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(request, invalid_spec(_validation_errors(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "See the API documentation at /docs."
        titles = {404: "Not found", 405: "Method not allowed"}
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only.
            allowed = _allowed_methods(app, request.url.path)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}."
        return problem_response(
            request,
            Problem(exc.status_code, titles.get(exc.status_code, "HTTP error"), detail, headers=headers),
        )

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
        return problem_response(request, database_problem(request, exc))

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(request: Request, exc: PoolTimeout) -> JSONResponse:
        return problem_response(request, database_problem(request, exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            Problem(500, "Internal error", "The server failed; nothing was changed. Try again later."),
        )
