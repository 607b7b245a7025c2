"""RFC 9457 problem details for every error the API returns.

A problem says what went wrong in words a person can act on; validation
problems also list each wrong field as a JSON pointer into the request body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.hints import extra_field_hint

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
    """Drop the tags that unions add to a location: a discriminated union's (/method/kd/alpha) and
    a smart union's class name (/teacher/ensemble/0/TeacherTrain/epoks): the client wrote
    /method/alpha. A step that is not a key of its object and not the last one is such a tag
    (pydantic stops at the first missing key)."""
    if not loc or loc[0] != "body":
        return loc
    path, node = [loc[0]], body
    last = len(loc) - 1
    for i, part in enumerate(loc[1:], start=1):
        if isinstance(node, dict) and part not in node and (node.get("name") == part or i < last):
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


def error_detail(error: Mapping[str, Any], root: type[BaseModel] | None, document: Any) -> str:
    """A validation error's message, with a hint for an unknown field (app/hints.py);
    `error["loc"]` is relative to `document`, the body validated against `root`."""
    msg = error.get("msg", "invalid")
    loc = list(error.get("loc", ()))
    if error.get("type") != "extra_forbidden" or root is None or not loc:
        return msg
    client = _client_path(["body", *loc], document)[1:]
    hint = extra_field_hint(root, loc, ".".join(str(p) for p in client[:-1]))
    return f"Unknown field `{client[-1]}`. {hint}" if hint else msg


def _body_model(request: Request) -> type[BaseModel] | None:
    """The pydantic model of the route's JSON body, if it has one."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _validation_errors(exc: RequestValidationError, root: type[BaseModel] | None = None) -> list[dict[str, Any]]:
    errors = []
    for e in exc.errors():
        loc = _client_path(list(e.get("loc", ())), exc.body)
        in_body = loc[:1] == ["body"]
        error = {
            "pointer": pointer(loc),
            "in": loc[0] if loc else "body",
            "detail": error_detail({**e, "loc": e["loc"][1:]}, root, exc.body) if in_body else e["msg"],
            "type": e.get("type", "value_error"),
        }
        if error not in errors:  # a smart union's members may each report the same field
            errors.append(error)
    return errors


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _malformed_json(exc: RequestValidationError) -> Problem | None:
    """400 for a body that is not JSON, saying where the parser stopped (FastAPI gives the offset)."""
    error = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
    if error is None:
        return None
    document = exc.body if isinstance(exc.body, str) else ""
    offset = error["loc"][-1] if isinstance(error["loc"][-1], int) else 0
    line = document.count("\n", 0, offset) + 1
    column = offset - (document.rfind("\n", 0, offset) + 1) + 1
    why = (error.get("ctx") or {}).get("error", "invalid JSON")
    detail = f"The body is not valid JSON: {why} at line {line}, column {column} (character {offset + 1})."
    found = {"pointer": "", "in": "body", "detail": detail, "type": "json_invalid", "line": line, "column": column}
    return Problem(400, "Malformed JSON", detail, type_="malformed-json", errors=[found])


def _wrong_media_type(request: Request, exc: RequestValidationError) -> Problem | None:
    """415 for a JSON route's body sent as another media type (FastAPI then leaves it unparsed):
    curl -d sends application/x-www-form-urlencoded unless told otherwise."""
    sent = request.headers.get("content-type", "")
    if not isinstance(exc.body, bytes) or _is_json(sent):
        return None
    told = f"it was sent as {sent!r}" if sent else "it was sent without one"
    return Problem(
        415,
        "Unsupported media type",
        f"{request.method} {request.url.path} takes a JSON body: send the header "
        f"'Content-Type: application/json' ({told}; with curl: -H 'content-type: application/json').",
        type_="unsupported-media-type",
        errors=[
            {"pointer": "/content-type", "in": "header", "detail": "must be application/json", "type": "media_type"}
        ],
    )


def request_problem(request: Request, exc: RequestValidationError) -> Problem:
    """The problem of a request FastAPI could not validate: its media type, its JSON, or its fields."""
    return (
        _wrong_media_type(request, exc)
        or _malformed_json(exc)
        or invalid_spec(_validation_errors(exc, _body_model(request)))
    )


class DatabaseUnreachable(Exception):
    """The event-loop read (app/async_reads.py) found no live database server."""


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


# The methods an Allow header may name (HEAD and OPTIONS are implied by GET or not served).
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route takes at this path, found by asking the routes themselves (Starlette
    names only the first route that matched the path, and FastAPI's included routers hide theirs)."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(request, request_problem(request, exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "See the API documentation at /docs."
        titles = {404: "Not found", 405: "Method not allowed"}
        headers = dict(exc.headers) if exc.headers is not None else None
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only.
            allowed = _allowed_methods(request)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}."
        return problem_response(
            request,
            Problem(exc.status_code, titles.get(exc.status_code, "HTTP error"), detail, headers=headers),
        )

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
        return problem_response(request, database_problem(request, exc))

    @app.exception_handler(DatabaseUnreachable)  # the event-loop read (app/async_reads.py)
    async def _database_down_async(request: Request, exc: DatabaseUnreachable) -> JSONResponse:
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
