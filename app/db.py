"""Engine, session factory and the session scope of a unit of work.

The API never holds a session across a thread hop: each unit of work (the key lookup, a
route's queries) opens a session, uses it in one thread and closes it before returning.
So a thread holds at most one pooled connection and never waits for another thread while
holding it, and with the pool as large as the threadpool (`Settings.api_threads`) a
checkout never waits at all. (A sync `yield` dependency held its session from the
dependency's thread, across the wait for the route's thread, to the teardown's thread: at
64 clients the threadpool filled with requests waiting for connections held by requests
waiting for threads, fastapi/fastapi#3205.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings


def _pool_args() -> dict:
    # Connections open lazily: a pool this size costs nothing until the threads need it.
    settings = get_settings()
    return {"pool_size": settings.api_threads, "max_overflow": 8, "pool_timeout": settings.db_pool_timeout_seconds}


def make_engine(url: str, **options: object) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **_pool_args(), **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # pre_ping: a restarted PostgreSQL costs one failed checkout, not a broken request.
    # No server-side prepared statements: after a connection dies mid-statement psycopg's
    # prepared-statement cache can disagree with the server (DuplicatePreparedStatement).
    connect_args = {"prepare_threshold": None} if "+psycopg" in url else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **_pool_args(), **options)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.resolved_database_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.resolved_database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@lru_cache
def get_read_engine() -> Engine:
    """A pool of autocommit connections for the routes that only read: no BEGIN and no
    ROLLBACK round trips (a switch of isolation level per checkout would cost two more)."""
    settings = get_settings()
    return make_engine(settings.resolved_database_url, isolation_level="AUTOCOMMIT")


@contextmanager
def session_scope(*, readonly: bool = False) -> Iterator[Session]:
    """One unit of work's session, closed (its connection back in the pool) on exit.
    readonly: each statement on its own (autocommit), for routes that only read."""
    factory = get_sessionmaker()
    with factory(bind=get_read_engine()) if readonly else factory() as session:
        yield session
