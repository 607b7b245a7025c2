"""The dashboard's plumbing: templates, security headers, the login redirect, vendored assets."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.problems import PROBLEM_JSON
from app.ui import views
from app.ui.session import PATH, LoginRequired, csrf_token, keys_required

HERE = Path(__file__).parent
STATIC = HERE / "static"
LOGIN = f"{PATH}/login"

# Scripts and styles from this service only (no CDN, nothing inline); no framing (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    when=views.when,
    size=views.size,
    duration=views.duration,
    mean_std=views.mean_std,
    number=views.number,
    config_text=views.config_text,
)


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    context = {"csrf": csrf_token(request), "keys_required": keys_required(), "base": PATH, **(context or {})}
    return templates.TemplateResponse(
        request, name, context, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
    )


def login_redirect(request: Request) -> Response:
    """Where a request without a valid cookie goes: htmx follows HX-Redirect, a script's fetch gets a
    401 it can act on, a page load is sent to the login form."""
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": LOGIN})
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse(
            {
                "type": "about:blank",
                "title": "Log in again",
                "status": 401,
                "detail": f"The dashboard session ended: log in at {LOGIN}.",
                "instance": request.url.path,
            },
            status_code=401,
            media_type=PROBLEM_JSON,
        )
    return RedirectResponse(LOGIN, status_code=303, headers=SECURITY_HEADERS)


class DashboardRoute(APIRoute):
    """A route whose missing or stale login answers with the login page, not a 401 problem."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return login_redirect(request)

        return handle


def _asset_files() -> dict[str, Path]:
    """Every file under static/, by its path there: the only files the asset route serves."""
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}


ASSETS = _asset_files()


def asset_response(path: str) -> Response:
    found = ASSETS.get(path)
    if found is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    media_type = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    # Vendored files carry their version in their folder name: cache them; ours revalidate.
    cache = "public, max-age=31536000, immutable" if path.startswith("vendor/") else "no-cache"
    return FileResponse(
        found, media_type=media_type, headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    )
