"""The JSON of the jobs polled lately, kept per job with what it was made from.

A poll mostly reads a job that has not changed since the last poll (a queued job, a finished
one, a running one between two epochs' reports). Building JobOut and its JSON was about a
quarter of a poll's CPU (bench/results/load.md, round 4); when the row read now is equal to the
row the kept JSON was made from, and so are the fields that move with time (the ETA's countdown,
a queued job's wait), the kept JSON is the answer. Anything else is a miss, never a stale answer.

Used from the event loop only (app/api/jobs.py's PostgreSQL path): one thread, no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

# A finished job's JSON carries its report (tens of kB): a few hundred jobs stay small.
KEPT_JOBS = 256


class RecentBodies:
    def __init__(self, size: int = KEPT_JOBS) -> None:
        self._size = size
        self._kept: OrderedDict[Hashable, tuple[Any, str]] = OrderedDict()

    def get(self, job_id: Hashable, made_from: Any) -> str | None:
        """The JSON kept for the job if it was made from values equal to `made_from`."""
        kept = self._kept.get(job_id)
        if kept is None or kept[0] != made_from:
            return None
        self._kept.move_to_end(job_id)
        return kept[1]

    def put(self, job_id: Hashable, made_from: Any, body: str) -> None:
        self._kept[job_id] = (made_from, body)
        self._kept.move_to_end(job_id)
        if len(self._kept) > self._size:
            self._kept.popitem(last=False)
