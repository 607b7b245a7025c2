"""Following a job as it runs: a sequence of JobUpdate (the job now, and its events since the last one).

StreamFeed reads the server-sent events of GET /v1/jobs/{id}/stream (the server waits, the client
only reads; a dropped connection resumes with Last-Event-ID). PollingFeed asks GET /v1/jobs/{id},
then GET /v1/jobs/{id}/events?after=, every few seconds. Callers (wait, `distill watch`,
`distill events --follow`) only iterate, whichever feed it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.client.errors import Unreachable
from app.client.models import Event, Job

if TYPE_CHECKING:
    from app.client.client import Client


@dataclass(frozen=True)
class JobUpdate:
    job: Job
    events: list[Event] = field(default_factory=list)  # new since the previous update, oldest first


class PollingFeed:
    """Every `every` seconds: the job, then every event newer than the last one seen.

    The job is read before its events, so the update that shows a job ended also carries its last
    events. Iteration stops after that update.
    """

    def __init__(self, client: Client, job_id: str, *, every: float = 1.0, after: int | None = None) -> None:
        self.client, self.job_id, self.every = client, job_id, every
        self.last_event_id = after

    PAGE = 500  # the API's default page of events

    def _new_events(self) -> list[Event]:
        events: list[Event] = []
        while True:
            page = self.client.events(self.job_id, after=self.last_event_id, limit=self.PAGE)
            events += page
            if page:
                self.last_event_id = page[-1].id
            if len(page) < self.PAGE:
                return events

    def __iter__(self) -> Iterator[JobUpdate]:
        while True:
            job = self.client.get(self.job_id)
            yield JobUpdate(job, self._new_events())
            if job.ended:
                return
            time.sleep(self.every)  # the poll interval; a stream will wait on the server instead


@dataclass(frozen=True)
class Message:
    """One server-sent event."""

    event: str
    data: str
    id: str | None


def parse_messages(lines: Iterable[str]) -> Iterator[Message]:
    """text/event-stream lines -> messages (comments, the heartbeats, and retry: are skipped)."""
    event, id_ = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Message(event, "\n".join(data), id_)
            event, data = "message", []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            id_ = value


class StreamFeed:
    """The job's stream: an update at each `job` message (with the events before it), to the `end`
    message. A connection that drops, or that the server ends after its time, is opened again from the
    last message id; `retries` failed connections in a row give up (Unreachable)."""

    def __init__(self, client: Client, job_id: str, *, after: int | None = None, retries: int = 5) -> None:
        self.client, self.job_id, self.retries = client, job_id, retries
        self.last_id = f"{after or 0}.0"
        self.ended = False

    def _updates(self, lines: Iterable[str]) -> Iterator[JobUpdate]:
        events: list[Event] = []
        for message in parse_messages(lines):
            self.last_id = message.id or self.last_id
            if message.event == "event":
                events.append(Event.model_validate_json(message.data))
            elif message.event == "job":
                yield JobUpdate(Job.model_validate(json.loads(message.data)), events)
                events = []
            elif message.event == "end":
                self.ended = True
                return

    def __iter__(self) -> Iterator[JobUpdate]:
        failures = 0
        while not self.ended:
            try:
                with self.client.stream(f"/v1/jobs/{self.job_id}/stream", last_event_id=self.last_id) as lines:
                    for update in self._updates(lines):
                        failures = 0
                        yield update
            except Unreachable:
                failures += 1
                if failures >= self.retries:
                    raise
                time.sleep(min(5.0, 0.5 * 2**failures))  # the server restarting, say
