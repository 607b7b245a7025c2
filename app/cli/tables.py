"""What `distill` prints: the result table, the job list, a job's header, events, the catalog.

Every table fits 100 columns; the result table explains its columns in a footnote.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app.client.models import Artifact, Catalog, Event, Job, Report, Scores

# (report key, header, format, spread shown): the columns of the result table.
RESULT_COLUMNS = [
    ("test_accuracy", "test acc", "{:.3f}", True),
    ("train_accuracy", "train acc", "{:.3f}", True),
    ("test_ece", "ECE", "{:.3f}", True),
    ("parameters", "params", "{:,.0f}", False),
    ("latency_ms", "ms", "{:.3f}", True),
]
STATUS_STYLE = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red", "cancelled": "magenta"}


def cell_text(mean: Scores, std: Scores | None, key: str, fmt: str, spread: bool) -> str:
    value = mean.get(key)
    if value is None:
        return "-"
    text = fmt.format(value)
    if spread and std is not None and std.get(key) is not None:
        text += " ± " + fmt.format(std.get(key))
    return text


def _arch(arch: dict[str, Any] | None) -> str:
    return str((arch or {}).get("name", "?"))


def result_rows(report: Report) -> list[tuple[str, Scores, Scores | None]]:
    """(label, mean, std or None) for the teacher, the student and the scratch baseline."""
    method = report.method.get("name", "?")
    rows: list[tuple[str, Scores, Scores | None]] = [
        (f"teacher ({_arch(report.teacher.get('arch'))})", report.teacher, None)
    ]
    several = len(report.student.runs) > 1  # one seed has no spread to show
    rows.append(
        (
            f"student ({method}, {_arch(report.student.arch)})",
            report.student.mean,
            report.student.std if several else None,
        )
    )
    if report.baseline is not None:
        rows.append(
            (
                f"baseline (scratch, {_arch(report.baseline.arch)})",
                report.baseline.mean,
                report.baseline.std if several else None,
            )
        )
    return rows


def result_table(report: Report) -> Table:
    seeds = len(report.student.runs)
    table = Table(title="Result", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("model")
    for _, header, _, _ in RESULT_COLUMNS:
        table.add_column(header, justify="right")
    for name, mean, std in result_rows(report):
        table.add_row(name, *[cell_text(mean, std, key, fmt, spread) for key, _, fmt, spread in RESULT_COLUMNS])
    table.caption = footnote(report, seeds)
    table.caption_justify = "left"
    return table


def footnote(report: Report, seeds: int) -> str:
    test_size = report.dataset.get("test_size")
    on = f" ({test_size:,} examples)" if isinstance(test_size, int) else ""
    listed = ", ".join(map(str, report.seeds))
    over = f"mean ± sample std over {seeds} seeds ({listed})" if seeds > 1 else f"one seed ({listed}), so no spread"
    return (
        f"test acc: accuracy on the held-out test split{on}; train acc: on the training split; "
        "ECE: expected calibration error (0 is perfectly calibrated); params: parameter count; "
        "ms: latency of one example on CPU. Teacher: the model distilled from (one run). "
        "Student: learnt from the teacher; baseline: the same student architecture trained from the "
        f"labels alone. Both: {over}."
    )


def _points(delta: float | None) -> str | None:
    return None if delta is None else f"{round(100 * delta, 1) + 0.0:+.1f} points"  # + 0.0: no "-0.0"


def summary_lines(report: Report) -> list[str]:
    s, lines = report.summary, []
    if (vs := _points(s.student_vs_baseline_test_accuracy)) is not None:
        lines.append(f"student vs scratch baseline: {vs} of test accuracy")
    if (vs := _points(s.student_vs_teacher_test_accuracy)) is not None:
        lines.append(f"student vs teacher: {vs} of test accuracy")
    if s.compression is not None and s.speedup is not None:
        lines.append(f"the student has {s.compression:.1f}x fewer parameters and is {s.speedup:.1f}x faster")
    if (e := report.exported) is not None and e.seed is not None:
        lines.append(
            f"exported: the student of seed {e.seed} (best {e.selected_by}), test accuracy "
            f"{e.test_accuracy:.3f}: {', '.join(e.files.values())}"
        )
    return lines


def _when(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def status_text(job: Job) -> Text:
    text = Text(job.status, style=STATUS_STYLE.get(job.status, ""))
    if job.cancel_requested and not job.ended:
        text.append(" (cancel requested)", style="magenta")
    return text


def job_header(job: Job) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("job", f"{job.id}  {job.name or ''}")
    grid.add_row("status", status_text(job))
    if job.status_detail:
        grid.add_row("waiting", Text(job.status_detail, style="yellow"))
    if not job.ended:
        grid.add_row("phase", f"{job.phase or '-'}  {100 * job.progress:.0f}%")
    grid.add_row("submitted", _when(job.created_at))
    if job.started_at:
        grid.add_row("started", f"{_when(job.started_at)}  (attempt {job.attempts})")
    if job.finished_at:
        took = (job.finished_at - (job.started_at or job.created_at)).total_seconds()
        grid.add_row("finished", f"{_when(job.finished_at)}  ({took:.0f} s)")
    if job.error:
        grid.add_row("error", Text(job.error.message, style="red"))
        grid.add_row("", Text(f"code {job.error.code}" + (f", field {job.error.field}" if job.error.field else "")))
    if job.metadata:
        grid.add_row("metadata", "  ".join(f"{k}={v}" for k, v in sorted(job.metadata.items())))
    return grid


def job_view(job: Job) -> RenderableType:
    parts: list[RenderableType] = [job_header(job)]
    if job.result is not None:
        parts += [Text(""), result_table(job.result), Text("")]
        parts += [Text(line) for line in summary_lines(job.result)]
    return Group(*parts)


def jobs_table(jobs: list[Job]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    table.add_column("done", justify="right")
    table.add_column("submitted", no_wrap=True)
    table.add_column("name", max_width=22, overflow="ellipsis", no_wrap=True)
    for job in jobs:
        table.add_row(
            job.id,
            status_text(job),
            job.phase or ("waiting" if job.status_detail else "-"),
            f"{100 * job.progress:.0f}%",
            job.created_at.astimezone().strftime("%m-%d %H:%M"),
            job.name or "",
        )
    return table


def event_line(event: Event) -> Text:
    style = {"warning": "yellow", "error": "red"}.get(event.level, "")
    text = Text(f"{event.at.astimezone():%H:%M:%S} ", style="dim")
    text.append(f"{event.phase or '-':>12} ", style="bold")
    text.append(event.message, style=style)
    return text


def artifact_line(artifact: Artifact) -> str:
    return f"{artifact.filename}  {artifact.size_bytes:,} bytes  sha256 {artifact.sha256[:16]}…"


def _parameters(params: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{k}={v['default']}" if "default" in v else k for k, v in params.items())


def catalog_view(catalog: Catalog) -> Group:
    datasets = Table(title="datasets", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("name", "input", "classes", "train", "test"):
        datasets.add_column(column, justify="left" if column in ("name", "input") else "right")
    for name, d in catalog.datasets.items():
        datasets.add_row(
            name,
            "x".join(map(str, d.get("input_shape", []))),
            str(d.get("num_classes", "?")),
            f"{d.get('train_size', 0):,}",
            f"{d.get('test_size', 0):,}",
        )
    entries = Table(
        title="architectures and methods (parameter=default)", title_justify="left", show_edge=False, pad_edge=False
    )
    entries.add_column("kind")
    entries.add_column("name")
    entries.add_column("parameters", overflow="fold")
    for kind, group in (("arch", catalog.architectures), ("method", catalog.methods)):
        for name, entry in group.items():
            entries.add_row(kind, name, _parameters(entry.parameters))
    uploads = catalog.uploads
    lines = [
        f"uploads: teacher {', '.join(uploads.get('teacher', []))}; dataset {', '.join(uploads.get('dataset', []))}",
        f"phases: {', '.join(catalog.phases)}",
    ]
    return Group(datasets, Text(""), entries, Text(""), *[Text(line) for line in lines])
