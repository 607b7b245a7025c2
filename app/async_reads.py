"""The route clients poll most, `GET /v1/jobs/{id}`, read in the event loop on PostgreSQL.

Under load a poll's cost was the thread hop (the route waited for a threadpool thread), two
round trips (the key, then the job) and the ORM's result handling. Here one statement checks
the key and reads the job (a LEFT JOIN: no key row is a 401, a key row without a job a 404),
on an asyncpg connection: no thread, one round trip, a statement prepared once per connection.
asyncpg, not psycopg's async connection: 74 against 138 us of CPU per query here under uvloop
(bench/results/load.md, round 5). The statement is built from the same columns as the threaded
path (`app.api.jobs`), compiled once for asyncpg's $n parameters, and its values pass through the
project's column types' result processors, so both paths answer the same JSON (a test compares
them). SQLite (the embedded default) keeps the threaded path."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import asyncpg
from sqlalchemy import JSON, ColumnElement, Select, and_, bindparam, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator

from app.models import ApiKey, Job
from app.problems import DatabaseUnreachable, Problem

# What a connection that died says (a restarted or stopped server): retried once on a fresh one.
CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    # A backend terminated while its connection sat idle: asyncpg may read the server's FATAL
    # before the socket's close, and then refuses the next query with this, not a lost connection.
    asyncpg.exceptions.InternalClientError,
    OSError,
)


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
    """A statement as asyncpg runs it (its SQL text with $n parameters, their names in order)
    and how its row's values become Python values (each column's result processor)."""

    def __init__(self, statement: Select[Any]) -> None:
        dialect = asyncpg_dialect()
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.params: list[str] = list(compiled.positiontup or [])
        self.names: list[str] = []
        for column in statement.selected_columns:
            if column.key is None:  # every column a select() selects has one; a row needs the names
                raise ValueError(f"the read selects a column without a name: {column}")
            self.names.append(column.key)
        # asyncpg gives the values SQLAlchemy gives for plain types (str, float, bool); json as
        # its text, decoded here, and the project's own types convert further (UTCDateTime:
        # naive UTC -> aware).
        self._processors = [_processor(column.type, dialect) for column in statement.selected_columns]

    def args(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] for name in self.params]

    def row(self, values: Sequence[Any]) -> SimpleNamespace:
        converted = (p(v) if p and v is not None else v for p, v in zip(self._processors, values, strict=True))
        return SimpleNamespace(**dict(zip(self.names, converted, strict=True)))


def _processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(column_type, JSON):
        return json.loads
    if isinstance(column_type, TypeDecorator):
        return column_type.result_processor(dialect, None)
    return None


class AsyncConnectionPool:
    """A few asyncpg connections shared by the event loop. Opened lazily; a connection that
    fails is closed and the read runs once more on a fresh one (a restarted server)."""

    def __init__(self, url: str, size: int, timeout: float) -> None:
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._size, self._timeout = size, timeout
        self._idle: asyncio.LifoQueue[asyncpg.Connection] = asyncio.LifoQueue()
        self._opened = 0

    async def fetch_one(self, read: CompiledRead, values: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            return await self._fetch_once(read, values)
        except CONNECTION_LOST:
            # The server went away (a restart): its other idle connections are dead too.
            await self.close()
        try:
            return await self._fetch_once(read, values)
        except CONNECTION_LOST as exc:
            raise DatabaseUnreachable(str(exc)) from exc

    async def _fetch_once(self, read: CompiledRead, values: dict[str, Any]) -> tuple[Any, ...] | None:
        connection = await self._checkout()
        try:
            # asyncpg prepares the statement once per connection (planning was half a poll's
            # time); a connection that fails is discarded with its prepared statements.
            row = await connection.fetchrow(read.sql, *read.args(values))
        except BaseException:
            await self._discard(connection)
            raise
        self._idle.put_nowait(connection)
        return None if row is None else tuple(row)

    async def _checkout(self) -> asyncpg.Connection:
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._idle.get_nowait()  # the usual case: no task, no timer
        if self._opened < self._size:
            self._opened += 1  # counted before the await: the event loop runs one coroutine at a time
            try:
                return await asyncpg.connect(self._dsn, timeout=self._timeout)
            except BaseException:
                self._opened -= 1
                raise
        try:
            async with asyncio.timeout(self._timeout):  # a timer, not a task per waiter (wait_for)
                return await self._idle.get()
        except TimeoutError:
            raise Problem(503, "Database busy", "No database connection was free in time; retry.") from None

    async def _discard(self, connection: asyncpg.Connection) -> None:
        self._opened -= 1
        connection.terminate()  # no goodbye to a server that may be gone

    async def close(self) -> None:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            self._opened -= 1
            with contextlib.suppress(*CONNECTION_LOST):
                await connection.close(timeout=2)
