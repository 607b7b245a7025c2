"""Following a job as it runs: a sequence of JobUpdate (the job now, and its events since the last one).

Today the feed polls (GET /v1/jobs/{id}, then GET /v1/jobs/{id}/events?after=). A server-sent-events
feed (GET /v1/jobs/{id}/stream, resumable with Last-Event-ID) can replace PollingFeed behind the same
iterator of JobUpdate: callers (wait, `distill watch`, `distill events --follow`) only iterate.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
