"""The HTTP service: `uvicorn app.main:app`. Never imports torch or the worker."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from sqlalchemy.exc import SQLAlchemyError

from app import problems, tenants, ui
from app.api import admin, artifacts, catalog, docs, health, jobs, stream, sweeps, uploads
from app.api.rendered import RecentBodies
from app.api.upload_limits import UploadSlots
from app.async_reads import AsyncConnectionPool, CompiledRead
from app.auth import RateLimiter, authenticate
from app.bodies import BodyGuard
from app.config import get_settings
from app.db import get_engine, get_sessionmaker
from app.schema import SchemaBehind, ensure_schema
from app.storage import remove_stale_incoming

log = logging.getLogger(__name__)


def _first_start() -> None:
    """Zero set-up for the embedded default: with keys on and none created yet, make the
    tenant 'local' and one key, write it to $DISTILL_HOME/api-key and print it to a terminal
    (the only time a key is ever printed)."""
    settings = get_settings()
    try:
        with get_sessionmaker()() as session:
            if settings.auth == "off":
                tenants.local_tenant(session)
                session.commit()
                return
            key = tenants.ensure_local_key(session)
    except SQLAlchemyError as exc:  # not migrated yet, or the database is down: next start
        log.warning("first-start set-up skipped: %s", exc)
        return
    if key is None:
        return
    where = f"{settings.local_key_file} (mode 0600)"
    if sys.stdout.isatty():  # a person at a terminal sees it; a log file never holds it
        print(f"distill: created the tenant 'local' and its API key, also in {where}:\n  {key}", flush=True)
    else:
        print(f"distill: created the tenant 'local' and its API key: it is in {where}", flush=True)


def _check_schema() -> None:
    """SQLite (the embedded default) is migrated here; a PostgreSQL schema that is behind stops
    the start with what to run (app/schema.py). A database that is down is checked next start."""
    try:
        if migrated := ensure_schema(get_engine()):
            print(f"distill: {migrated}", flush=True)
    except SchemaBehind as exc:
        log.error("distill cannot start: %s", exc)
        raise
    except SQLAlchemyError as exc:
        log.warning("database schema not checked (the database does not answer): %s", exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # As many threads as pooled connections (app/db.py): no thread waits for a connection.
    anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().api_threads
    _check_schema()
    _first_start()
    if removed := remove_stale_incoming(get_settings().stale_upload_seconds):
        log.warning("removed %d partial upload files left by a stopped API process", removed)
    _open_async_reads(app)
    try:
        yield
    finally:
        if app.state.async_reads is not None:
            await app.state.async_reads.close()


def _open_async_reads(app: FastAPI) -> None:
    """On PostgreSQL with keys on, the polled job read runs in the event loop (app/async_reads.py)."""
    settings = get_settings()
    url = settings.resolved_database_url
    if settings.auth != "keys" or not url.startswith("postgresql"):
        return
    app.state.key_and_job = CompiledRead(jobs.KEY_AND_JOB)
    app.state.job_bodies = RecentBodies()  # the JSON of the jobs polled lately (app/api/rendered.py)
    app.state.async_reads = AsyncConnectionPool(url, settings.async_read_connections, settings.db_pool_timeout_seconds)


def create_app() -> FastAPI:
    app = FastAPI(
        title="distill",
        version="1.0",
        summary="Distillation as a service: submit a job, get a small fast student.",
        description="POST a job spec to /v1/jobs, poll it, download the student (ONNX, "
        "safetensors) and a report comparing teacher, student and a scratch baseline. "
        "Every /v1 route needs an API key (Authorization: Bearer <key>). "
        "Errors are RFC 9457 application/problem+json.",
        lifespan=lifespan,
        docs_url=None,  # app/api/docs.py serves /docs with local assets
        redoc_url=None,
    )
    app.state.rate_limiter = RateLimiter()
    app.state.async_reads = None  # set at start-up on PostgreSQL
    app.state.upload_slots = UploadSlots()
    app.state.stream_slots = stream.StreamSlots()
    problems.install(app)
    app.add_middleware(BodyGuard)
    # First: the route clients poll is matched before all others. It checks the key in its own
    # unit of work (app/api/jobs.py), so it does not take the authenticate dependency.
    app.include_router(jobs.polled)
    for module in (jobs, stream, sweeps, uploads, artifacts, catalog):
        app.include_router(module.router, dependencies=[Depends(authenticate)])
    app.include_router(admin.router)  # the admin key, not a tenant's
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(ui.router)  # the dashboard, /ui: its own login cookie (app/ui/session.py)
    return app


app = create_app()
