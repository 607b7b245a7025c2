"""GET /v1/jobs/{id}/stream: a job's events, per-epoch metrics and state as server-sent events.

Messages (each `data:` is one JSON object):
  event: event   an EventOut (a phase began, an early stop, a warning)
  event: metric  one metric value {id, phase, run, epoch, name, value}
  event: job     the job (JobOut) after the messages before it; sent when anything changed
  event: end     the job has ended and everything was sent; the stream closes

Every message carries `id: <last event id>.<last metric id>`; a client that reconnects sends it back
as `Last-Event-ID` and gets only what it has not seen (then the job as it is now). A quiet stream
sends a comment every `stream_heartbeat_seconds`, and ends after `stream_max_seconds` (the client
resumes it). While it waits the stream holds no database session and no thread: each look is one
short read in the threadpool (app/db.py), then an async sleep. A client that leaves cancels it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from anyio import to_thread
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from app.api.jobs import get_job_or_404, job_out_now
from app.api.schemas import EventOut, JobOut, problems
from app.auth import Caller, CallerDep
from app.config import get_settings
from app.db import session_scope
from app.models import JobEvent, JobMetric
from app.problems import Problem

router = APIRouter(prefix="/v1", tags=["jobs"], responses=problems(401, 429))

PAGE = 500  # rows of each kind per look; a backlog drains over several looks without waiting


@dataclass(frozen=True)
class Cursor:
    """What the client has seen: the last event id and the last metric id."""

    event: int = 0
    metric: int = 0

    @classmethod
    def parse(cls, value: str | None) -> Cursor:
        """A Last-Event-ID this API sent; anything else starts from the beginning."""
        try:
            event, metric = (value or "").split(".")
            return cls(max(0, int(event)), max(0, int(metric)))
        except ValueError:
            return cls()

    def __str__(self) -> str:
        return f"{self.event}.{self.metric}"


@dataclass
class News:
    job: JobOut
    events: list[EventOut] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)

    @property
    def backlog(self) -> bool:
        """A page came back full: there is more to read at once."""
        return len(self.events) >= PAGE or len(self.metrics) >= PAGE


def read_news(caller: Caller, job_id: str, cursor: Cursor) -> News:
    """One look (blocking, one short session): the job first, then what came after the cursor, so
    the look that sees the job ended also sees its last events."""
    with session_scope(readonly=True) as session:
        job = job_out_now(session, get_job_or_404(session, caller, job_id))
        events = session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > cursor.event)
            .order_by(JobEvent.id)
            .limit(PAGE)
        )
        news = News(job, [EventOut(id=e.id, at=e.at, phase=e.phase, level=e.level, message=e.message) for e in events])
        metrics = session.execute(
            select(JobMetric.id, JobMetric.phase, JobMetric.run, JobMetric.epoch, JobMetric.name, JobMetric.value)
            .where(JobMetric.job_id == job_id, JobMetric.id > cursor.metric)
            .order_by(JobMetric.id)
            .limit(PAGE)
        )
        news.metrics = [dict(m._mapping) for m in metrics]
    return news


def message(kind: str, data: str, cursor: Cursor) -> str:
    return f"id: {cursor}\nevent: {kind}\ndata: {data}\n\n"


def _state(job: JobOut) -> tuple:
    """What makes a job message worth sending: not the ETA, which moves with the clock (a client
    counts it down), but the epochs, which come with a new estimate of it."""
    error = job.error.code if job.error else None
    return (
        job.status,
        job.status_detail,
        job.phase,
        job.progress,
        job.epochs,
        job.cancel_requested,
        error,
        job.attempts,
    )


class StreamSlots:
    """Open streams in this API process, at most `max_streams` (the event loop is single-threaded)."""

    def __init__(self) -> None:
        self.open = 0

    def full(self) -> bool:
        return self.open >= get_settings().max_streams


class JobStream:
    """The messages of one client's stream, from its cursor to the job's end."""

    def __init__(self, caller: Caller, job_id: str, cursor: Cursor, slots: StreamSlots) -> None:
        self.caller, self.job_id, self.cursor, self.slots = caller, job_id, cursor, slots
        self.sent_state: tuple | None = None

    def _messages(self, news: News) -> list[str]:
        out = []
        for event in news.events:
            self.cursor = Cursor(event.id, self.cursor.metric)
            out.append(message("event", event.model_dump_json(), self.cursor))
        for metric in news.metrics:
            self.cursor = Cursor(self.cursor.event, metric["id"])
            out.append(message("metric", json.dumps(metric), self.cursor))
        if out or _state(news.job) != self.sent_state:
            self.sent_state = _state(news.job)
            out.append(message("job", news.job.model_dump_json(), self.cursor))
        return out

    async def __aiter__(self) -> AsyncIterator[str]:
        settings = get_settings()
        self.slots.open += 1
        try:
            started = last_sent = time.monotonic()
            yield f"retry: {int(settings.stream_poll_seconds * 1000) + 1000}\n\n"
            while time.monotonic() - started < settings.stream_max_seconds:
                try:
                    news = await to_thread.run_sync(read_news, self.caller, self.job_id, self.cursor)
                except Problem:  # the job was deleted meanwhile
                    return
                for text in self._messages(news):
                    last_sent = time.monotonic()
                    yield text
                if news.job.status in ("succeeded", "failed", "cancelled") and not news.backlog:
                    yield message("end", "{}", self.cursor)
                    return
                if news.backlog:
                    continue
                if time.monotonic() - last_sent >= settings.stream_heartbeat_seconds:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                await anyio.sleep(settings.stream_poll_seconds)
        finally:
            self.slots.open -= 1


def open_stream(request: Request, caller: Caller, job_id: str, last_event_id: str | None) -> StreamingResponse:
    """The response of a stream route (the API's and the dashboard's): 404 before anything is
    sent for an unknown job, 503 when this process has as many streams open as it takes."""
    slots: StreamSlots = request.app.state.stream_slots
    if slots.full():
        raise Problem(
            503,
            "Too many open streams",
            "This API process has as many job streams open as it takes; poll GET /v1/jobs/{id} or retry.",
            type_="streams-full",
            headers={"Retry-After": "10"},
        )
    return StreamingResponse(
        aiter(JobStream(caller, job_id, Cursor.parse(last_event_id), slots)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def check_job(caller: Caller, job_id: str) -> None:
    """404 as a problem for an unknown (or another tenant's) job, before the stream starts."""
    with session_scope(readonly=True) as session:
        get_job_or_404(session, caller, job_id)


@router.get(
    "/jobs/{job_id}/stream",
    summary="Follow a job live (server-sent events)",
    description=__doc__.split("\n\n", 1)[1],
    responses={
        200: {
            "description": "A text/event-stream of event, metric, job and end messages.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": 'id: 3.12\nevent: metric\ndata: {"id": 12, "phase": "teacher", "run": "teacher", '
                    '"epoch": 2, "name": "val_accuracy", "value": 0.61}\n\n',
                }
            },
        },
        **problems(404, 503),
    },
)
async def stream_job(
    job_id: str,
    request: Request,
    caller: CallerDep,
    last_event_id: str | None = Header(
        None, description="The id of the last message received: resume after it.", examples=["3.12"]
    ),
) -> StreamingResponse:
    await to_thread.run_sync(check_job, caller, job_id)
    return open_stream(request, caller, job_id, last_event_id)
