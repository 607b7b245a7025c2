"""The `distill` command ([project.scripts] distill = "app.cli:main"); built on app.client."""

from app.cli.main import app, main

__all__ = ["app", "main"]
