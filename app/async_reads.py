"""The route clients poll most, `GET /v1/jobs/{id}`, read in the event loop on PostgreSQL.

Under load a poll's cost was the thread hop (the route waited for a threadpool thread), two
round trips (the key, then the job) and the ORM's result handling. Here one statement checks
the key and reads the job (a LEFT JOIN: no key row is a 401, a key row without a job a 404),
on an autocommit async psycopg connection: no thread, one round trip. The statement is built
from the same columns as the threaded path (`app.api.jobs`), compiled once, and its values
pass through the project's column types' result processors, so both paths answer the same
JSON (a test compares them). SQLite (the embedded default) keeps the threaded path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, Select, and_, bindparam, select
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator

from app.models import ApiKey, Job
from app.problems import Problem


def key_and_job_statement(job_columns: Sequence[ColumnElement[Any]]) -> Select[Any]:
    """The key's owner and, when it is theirs, the job: one row per live key."""
    jobs = Job.__table__
    owned = and_(jobs.c.id == bindparam("job_id"), jobs.c.tenant_id == ApiKey.tenant_id)
    return (
        select(ApiKey.tenant_id.label("key_tenant_id"), ApiKey.id.label("key_id"), *job_columns)
        .select_from(ApiKey.__table__.outerjoin(jobs, owned))
        .where(ApiKey.key_sha256 == bindparam("sha256"), ApiKey.revoked_at.is_(None))
    )


class CompiledRead:
    """A statement as psycopg runs it (its SQL text, named parameters) and how its row's
    values become Python values (each column's SQLAlchemy result processor)."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names: list[str] = []
        for column in statement.selected_columns:
            if column.key is None:  # every column a select() selects has one; a row needs the names
                raise ValueError(f"the read selects a column without a name: {column}")
            self.names.append(column.key)
        # psycopg's own loaders already give the values SQLAlchemy's psycopg dialect gives for
        # plain types (str, float, bool, json); only the project's own types convert further
        # (UTCDateTime: naive UTC -> aware).
        self._processors: list[Callable[[Any], Any] | None] = [
            column.type.result_processor(dialect, None) if isinstance(column.type, TypeDecorator) else None
            for column in statement.selected_columns
        ]

    def row(self, values: Sequence[Any]) -> SimpleNamespace:
        converted = (p(v) if p else v for p, v in zip(self._processors, values, strict=True))
        return SimpleNamespace(**dict(zip(self.names, converted, strict=True)))


class AsyncConnectionPool:
    """A few autocommit connections shared by the event loop. Opened lazily; a connection
    that fails is closed and the read runs once more on a fresh one (a restarted server)."""

    def __init__(self, url: str, size: int, timeout: float) -> None:
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._size, self._timeout = size, timeout
        self._idle: asyncio.LifoQueue[psycopg.AsyncConnection[Any]] = asyncio.LifoQueue()
        self._opened = 0

    async def fetch_one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            return await self._fetch_once(sql, params)
        except psycopg.OperationalError:
            # The server went away (a restart): its other idle connections are dead too.
            await self.close()
            return await self._fetch_once(sql, params)

    async def _fetch_once(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        connection = await self._checkout()
        try:
            # Prepared once per connection (planning was half a poll's time); a connection that
            # fails is discarded with its prepared statements, so they never disagree with the server.
            cursor = await connection.execute(sql, params, prepare=True)
            row = await cursor.fetchone()
        except BaseException:
            await self._discard(connection)
            raise
        self._idle.put_nowait(connection)
        return row

    async def _checkout(self) -> psycopg.AsyncConnection[Any]:
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._idle.get_nowait()  # the usual case: no task, no timer
        if self._opened < self._size:
            self._opened += 1  # counted before the await: the event loop runs one coroutine at a time
            try:
                return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except BaseException:
                self._opened -= 1
                raise
        try:
            async with asyncio.timeout(self._timeout):  # a timer, not a task per waiter (wait_for)
                return await self._idle.get()
        except TimeoutError:
            raise Problem(503, "Database busy", "No database connection was free in time; retry.") from None

    async def _discard(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._opened -= 1
        await connection.close()

    async def close(self) -> None:
        while not self._idle.empty():
            await self._discard(self._idle.get_nowait())
