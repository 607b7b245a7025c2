"""The dashboard, served by the API under /ui: the tenant's jobs, a job's live curves, events,
result and downloads, the sweeps with their leaderboards, the uploads and an upload form. Log in
with the same API key."""

from fastapi import APIRouter

from app.ui import routes, sweep_routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(sweep_routes.router)

__all__ = ["router"]
