"""/docs (Swagger UI), served with its assets by the API itself: no CDN, so the page works on a
machine without internet. The assets are vendored from npm under static/vendor/ (VENDOR.md
there: versions, hashes, how to update). No /redoc: ReDoc 2.5.4 loads its attribution logo
from its own CDN (a browser without internet caught it)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/docs/assets"
SWAGGER = "vendor/swagger-ui-dist-5.35.0"
# Every file the asset route serves, by its path under static/ (nothing else is reachable).
ASSETS = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}

router = APIRouter(include_in_schema=False)


def _asset(path: str) -> str:
    return f"{ASSETS_PATH}/{path}"


@router.get("/docs")
def swagger_ui() -> Response:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="distill - API",
        swagger_js_url=_asset(f"{SWAGGER}/swagger-ui-bundle.js"),
        swagger_css_url=_asset(f"{SWAGGER}/swagger-ui.css"),
        swagger_favicon_url=_asset(f"{SWAGGER}/favicon-32x32.png"),
        # validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True, "displayRequestDuration": True},
    )


@router.get(ASSETS_PATH + "/{path:path}")
def docs_asset(path: str) -> Response:
    found = ASSETS.get(path)
    if found is None or not path.startswith("vendor/"):
        return Response("Not found", status_code=404, media_type="text/plain")
    media_type = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    # The folder names carry the versions: a file's content never changes under its path.
    headers = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
    return FileResponse(found, media_type=media_type, headers=headers)
