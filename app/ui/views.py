"""What the dashboard's pages show, read through the API's own route functions (one code path for
the API and the dashboard: the same tenant checks, the same 404s) and typed with the client's
models (the same result table as `distill show`). Each route function opens and closes its own
session (app/db.py), so no session outlives one read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.api import artifacts as artifacts_api
from app.api import jobs as jobs_api
from app.api import sweeps as sweeps_api
from app.auth import Caller
from app.cli.sweep_tables import latency_line
from app.cli.tables import (
    RESULT_COLUMNS,
    cell_text,
    footnote,
    result_rows,
    summary_lines,
)
from app.client.models import Artifact, Event, Job, Metrics, Report, Sweep

JOBS_SHOWN = 50
SWEEPS_SHOWN = 50


def as_job(out: Any) -> Job:
    return Job.model_validate(out.model_dump(mode="json"))


def jobs_of(caller: Caller, cursor: str | None = None) -> tuple[list[Job], str | None]:
    """A page of the tenant's jobs, newest first, and the cursor of the next page (None: the last)."""
    page = jobs_api.list_jobs(caller=caller, status_=None, limit=JOBS_SHOWN, cursor=cursor)
    return [as_job(j) for j in page.items], page.next_cursor


def job_of(caller: Caller, job_id: str) -> Job:
    return as_job(jobs_api.read_job(caller, job_id))


def events_of(caller: Caller, job_id: str) -> list[Event]:
    rows = jobs_api.job_events(job_id=job_id, caller=caller, after=None, limit=500)
    return [Event.model_validate(e.model_dump(mode="json")) for e in rows]


def metrics_of(caller: Caller, job_id: str) -> Metrics:
    out = jobs_api.job_metrics(job_id=job_id, caller=caller, phase=None, name=None)
    return Metrics.model_validate(out.model_dump(mode="json"))


def job_files_of(caller: Caller, job_id: str) -> list[Artifact]:
    rows = jobs_api.job_artifacts(job_id=job_id, caller=caller)
    return [Artifact.model_validate(a.model_dump(mode="json")) for a in rows]


def sweeps_of(caller: Caller) -> list[Sweep]:
    return [Sweep.model_validate(s.model_dump(mode="json")) for s in sweeps_api.list_sweeps(caller, SWEEPS_SHOWN)]


def sweep_of(caller: Caller, sweep_id: str) -> Sweep:
    return Sweep.model_validate(sweeps_api.get_sweep(sweep_id, caller).model_dump(mode="json"))


def mean_std(value: dict[str, float] | None) -> str:
    return "–" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"


def number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in config.items()) or "(the base spec)"


FIGURE_WAIT_SECONDS = 60  # a worker draws pareto.png just after the result; past this, stop asking


def _seconds_since(at: datetime) -> float:
    now = datetime.now(UTC)
    return (now - at if at.tzinfo else now.replace(tzinfo=None) - at).total_seconds()


@dataclass
class SweepView:
    sweep: Sweep
    rows: list[dict[str, Any]]
    final: bool
    latency: str | None
    live: bool


def sweep_view(sweep: Sweep) -> SweepView:
    """The leaderboard (or the standings so far), and whether the page keeps polling: while the
    sweep runs, and after it ended until the worker has drawn its figure."""
    result = sweep.result or {}
    rows = sweep.leaderboard
    waiting_for_figure = bool(result.get("leaderboard")) and not result.get("pareto_png_url")
    recent = sweep.finished_at is not None and _seconds_since(sweep.finished_at) < FIGURE_WAIT_SECONDS
    return SweepView(
        sweep=sweep,
        rows=rows,
        final=bool(sweep.result),
        latency=latency_line(rows),
        live=not sweep.ended or (waiting_for_figure and recent),
    )


def uploads_of(caller: Caller) -> list[Artifact]:
    rows = artifacts_api.list_uploads(caller=caller, kind=None, limit=100)
    return [Artifact.model_validate(a.model_dump(mode="json")) for a in rows]


@dataclass
class ResultTable:
    headers: list[str]
    rows: list[tuple[str, list[str]]]
    notes: list[str]
    footnote: str


def result_table(report: Report) -> ResultTable:
    """The rows of `distill show`'s table: teacher, KD student, scratch baseline (mean ± std)."""
    rows = [
        (label, [cell_text(mean, std, key, fmt, spread) for key, _, fmt, spread in RESULT_COLUMNS])
        for label, mean, std in result_rows(report)
    ]
    return ResultTable(
        headers=[header for _, header, _, _ in RESULT_COLUMNS],
        rows=rows,
        notes=summary_lines(report),
        footnote=footnote(report, len(report.student.runs)),
    )


@dataclass
class Verdict:
    headline: str | None
    facts: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_HEADLINE_KEYS = ("summary", "text", "headline", "message", "words")


def _words(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return str(
            value.get("message") or value.get("text") or ", ".join(f"{k}: {_words(v)}" for k, v in value.items())
        )
    return str(value)


def verdict_of(report: Report) -> Verdict | None:
    """report.verdict when the report has one (its shape is the report's: text, or an object with
    a headline, facts and warnings); None otherwise."""
    raw = (report.model_extra or {}).get("verdict")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Verdict(headline=_words(raw))
    headline = next((str(raw[k]) for k in _HEADLINE_KEYS if isinstance(raw.get(k), str)), None)
    verdict = Verdict(headline=headline)
    for key, value in raw.items():
        if isinstance(value, str) and value == headline:
            continue
        if isinstance(value, list):
            verdict.warnings += [_words(v) for v in value]
        else:
            verdict.facts.append((key.replace("_", " "), _words(value)))
    return verdict


def when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "–"


def size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value = n / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


def inspection_line(artifact: Artifact) -> str:
    """The few facts inspection found that a person picks an upload by."""
    facts = artifact.inspection or {}
    shown = []
    for key in ("rows", "input_shape", "num_classes", "output_kind", "arch"):
        if key in facts and facts[key] is not None:
            value = facts[key]
            value = "×".join(map(str, value)) if isinstance(value, list) else value
            shown.append(f"{key.replace('_', ' ')}: {value}")
    return ", ".join(shown)
