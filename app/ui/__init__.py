"""The dashboard, served by the API under /ui: the tenant's jobs, a job's live curves, events,
result and downloads, the uploads and an upload form. Log in with the same API key."""

from app.ui.routes import router

__all__ = ["router"]
