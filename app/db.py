"""Engine, session factory and the session scope of a unit of work.

The API never holds a session across a thread hop: each unit of work (the key lookup, a
route's queries) opens a session, uses it in one thread and closes it before returning.
So a thread holds at most one pooled connection and never waits for another thread while
holding it, and with the pool as large as the threadpool (`Settings.api_threads`) a
checkout never waits at all. (A sync `yield` dependency held its session from the
dependency's thread, across the wait for the route's thread, to the teardown's thread: at
64 clients the threadpool filled with requests waiting for connections held by requests
waiting for threads, fastapi/fastapi#3205.)

The read pool has no pre-ping (a round trip per checkout, a sixth of a job poll's time):
a pooled PostgreSQL connection whose server went away is dropped at checkout when its
socket already says so (a poll of the socket, no round trip, `_drop_if_closed`), and a
read that still meets a dead connection runs once more on a fresh one (`read_retrying`)."""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings


def _pool_args() -> dict:
    # Connections open lazily: a pool this size costs nothing until the threads need it.
    settings = get_settings()
    return {"pool_size": settings.api_threads, "max_overflow": 8, "pool_timeout": settings.db_pool_timeout_seconds}


T = TypeVar("T")


def make_engine(url: str, *, pre_ping: bool = True, **options: object) -> Engine:
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
    engine = create_engine(url, pool_pre_ping=pre_ping, connect_args=connect_args, **_pool_args(), **options)
    if not pre_ping:
        event.listen(engine, "checkout", _drop_if_closed)
    return engine


def _drop_if_closed(dbapi_connection: Any, _record: object, _proxy: object) -> None:
    """An idle connection has nothing to read, unless its server closed it (a restart, a
    terminated backend: the FATAL message and the end of the stream are waiting). Raising
    DisconnectionError makes the pool discard it and check out another."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return
    try:
        poller = select.poll()
        poller.register(fileno(), select.POLLIN)
        closed = bool(poller.poll(0))
    except Exception:  # a connection psycopg knows is closed has no fileno
        closed = True
    if closed:
        raise exc.DisconnectionError("the server closed this pooled connection")


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
    return make_engine(settings.resolved_database_url, pre_ping=False, isolation_level="AUTOCOMMIT")


@contextmanager
def session_scope(*, readonly: bool = False) -> Iterator[Session]:
    """One unit of work's session, closed (its connection back in the pool) on exit.
    readonly: each statement on its own (autocommit), for routes that only read."""
    factory = get_sessionmaker()
    with factory(bind=get_read_engine()) if readonly else factory() as session:
        yield session


def read_retrying(work: Callable[..., T], *args: object) -> T:
    """`work(connection, *args)` on a connection of the read pool (autocommit: each
    statement on its own), and once more on a fresh one when the first turned out dead (the
    read pool has no pre-ping; SQLAlchemy has then marked every older connection of the pool
    for replacement). A Connection, not a Session: for Core statements a Session's ORM
    execution path costs more than the query. Only for work that just reads."""
    try:
        with get_read_engine().connect() as connection:
            return work(connection, *args)
    except exc.DBAPIError as error:
        if not error.connection_invalidated:
            raise
    with get_read_engine().connect() as connection:
        return work(connection, *args)


def rows_changed(session: Session, statement: Executable) -> int:
    """The rows an UPDATE or INSERT changed. Its result is a CursorResult; Session.execute is
    typed with the base Result, which has no rowcount."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount
