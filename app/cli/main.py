"""`distill`: submit, watch, list, show, cancel, events, download, upload and catalog, over the HTTP API.

The API key comes from --key, else $DISTILL_API_KEY, else the embedded service's key file
($DISTILL_HOME/api-key); the URL from --url, else $DISTILL_URL, else http://127.0.0.1:8000.
Exit codes: 0 done (a watched job succeeded), 1 an error or a job that failed or was cancelled,
130 detached with Ctrl-C (the job keeps running).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from app.cli import tables
from app.cli.background import in_background
from app.cli.live import watch as live_watch
from app.client import Client, DistillError, Job, SpecError, apply_overrides, load_spec
from app.client.client import ENV_URL

app = typer.Typer(
    help="Distillation as a service, from the command line (the HTTP API's client).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
DETACHED = 130
WIDTH = 100  # what every table is laid out for


def out_console() -> Console:
    """Made per call (the test runner swaps stdout); off a terminal, laid out for WIDTH columns."""
    return Console() if sys.stdout.isatty() else Console(width=WIDTH, soft_wrap=False)


def err_console() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else WIDTH)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """The client's errors become a red message and exit code 1, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DistillError, SpecError) as exc:
            err_console().print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
            raise typer.Exit(1) from exc

    return run


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(envvar=ENV_URL, help="The API's base URL.")] = None,
    key: Annotated[
        str | None, typer.Option(help="API key (else $DISTILL_API_KEY, else $DISTILL_HOME/api-key).")
    ] = None,
) -> None:
    ctx.obj = {"url": url, "key": key}


def client_of(ctx: typer.Context) -> Client:
    return Client(ctx.obj["url"], ctx.obj["key"])


def follow_to_the_end(client: Client, job_id: str, every: float, poll: bool = False) -> Job:
    """Watch the job; at its end print the result. Ctrl-C detaches (exit 130)."""
    console = out_console()
    try:
        job = live_watch(client, job_id, console, every=every, poll=poll)
    except KeyboardInterrupt:
        err_console().print(
            f"detached from job {job_id}; it keeps running. Re-attach with: distill watch {job_id}", highlight=False
        )
        raise typer.Exit(DETACHED) from None
    console.line()
    console.print(tables.job_view(job))
    if job.status != "succeeded":
        raise typer.Exit(1)
    return job


EVERY = typer.Option(help="Seconds between polls (with --poll).", min=0.1)
POLL = typer.Option("--poll", help="Ask every few seconds instead of following the job's live stream.")


@app.command()
@reports_errors
def submit(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="A job spec, .json or .yaml.")],
    set_: Annotated[
        list[str], typer.Option("--set", help="dotted.path=JSON, e.g. training.epochs=20 or seeds=[0,1]; repeatable.")
    ] = [],  # noqa: B006 - typer reads the default; the list is never mutated
    wait: Annotated[bool, typer.Option(help="Watch the job to its end and print the result.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the job id.")] = False,
    every: Annotated[float, EVERY] = 1.0,
    poll: Annotated[bool, POLL] = False,
) -> None:
    """Submit a job spec (overrides with --set)."""
    body = apply_overrides(load_spec(spec), set_)
    with client_of(ctx) as client:
        handle = client.submit(body)
        if quiet:
            print(handle.id)
        else:
            out_console().print(f"submitted job {handle.id} ({handle.submitted.status})", highlight=False)
        if wait:
            follow_to_the_end(client, handle.id, every, poll)


@app.command()
@reports_errors
def watch(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    every: Annotated[float, EVERY] = 1.0,
    poll: Annotated[bool, POLL] = False,
) -> None:
    """Live progress of a job until it ends; Ctrl-C detaches, watch again re-attaches."""
    with client_of(ctx) as client:
        follow_to_the_end(client, job, every, poll)


@app.command("list")
@reports_errors
def list_jobs(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option(help="Only jobs in this state; repeatable.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Jobs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next page, from a previous listing.")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE: only jobs with this label; repeatable, all must match.")
    ] = None,
) -> None:
    """Your jobs, newest first."""
    labels = {}
    for item in metadata or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: write it as KEY=VALUE, e.g. team=vision", param_hint="--metadata")
        labels[key] = value
    with client_of(ctx) as client:
        page = client.list(status=status, limit=limit, cursor=cursor, metadata=labels)
    console = out_console()
    console.print(tables.jobs_table(page.items))
    if page.next_cursor:
        console.print(f"more: distill list --cursor {page.next_cursor}", highlight=False, soft_wrap=True)


@app.command()
@reports_errors
def show(ctx: typer.Context, job: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """A job's state and, when it succeeded, its result table."""
    with client_of(ctx) as client:
        out_console().print(tables.job_view(client.get(job)))


@app.command()
@reports_errors
def cancel(ctx: typer.Context, job: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Cancel a job: a queued one at once, a running one at its next batch."""
    with client_of(ctx) as client:
        result = client.cancel(job)
    stopping = " (the worker stops it at the next batch)" if result.status == "running" else ""
    out_console().print(f"job {result.id}: {result.status}{stopping}", highlight=False)


@app.command()
@reports_errors
def delete(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Argument(help="The job id (an ended job).")] = None,
    artifact: Annotated[str | None, typer.Option(help="Delete this artifact (an upload) instead.")] = None,
) -> None:
    """Delete an ended job with its files, or an upload (--artifact ID); refused while a job uses it."""
    if (job is None) == (artifact is None):
        raise typer.BadParameter("name a job, or --artifact ID (one of them)")
    with client_of(ctx) as client:
        if artifact is not None:
            client.delete_artifact(artifact)
            deleted = "artifact " + artifact
        else:
            assert job is not None  # exactly one of job and --artifact (checked above)
            client.delete(job)
            deleted = "job " + job
    out_console().print(f"deleted {deleted}", highlight=False)


@app.command()
@reports_errors
def events(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    after: Annotated[int | None, typer.Option(help="Only events after this id.")] = None,
    every: Annotated[float, EVERY] = 1.0,
    poll: Annotated[bool, POLL] = False,
) -> None:
    """A job's events (phases, early stops, warnings)."""
    console = out_console()
    with client_of(ctx) as client:
        if not follow:
            for event in client.events(job, after=after):
                console.print(tables.event_line(event))
            return
        try:
            for update in in_background(client.follow(job, every=every, after=after, poll=poll)):
                for event in update.events:
                    console.print(tables.event_line(event))
        except KeyboardInterrupt:
            raise typer.Exit(DETACHED) from None


@app.command()
@reports_errors
def download(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    directory: Annotated[Path, typer.Argument(help="Folder to write the files to.")],
) -> None:
    """Download a job's files (student, report), each checked against its sha256."""
    console = out_console()
    with client_of(ctx) as client:
        artifacts = client.artifacts(job)
        if not artifacts:
            raise DistillError(f"job {job} has no files (yet): `distill show {job}` says where it stands")
        for artifact in artifacts:
            path = client.download(artifact, directory)
            console.print(f"ok  {path}  {artifact.size_bytes:,} bytes  sha256 {artifact.sha256[:16]}…", highlight=False)


@app.command()
@reports_errors
def upload(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file to upload.")],
    kind: Annotated[str, typer.Option(help="teacher or dataset.")],
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    format: Annotated[str | None, typer.Option(help="Default: from the extension.")] = None,
    label_column: Annotated[str | None, typer.Option(help="CSV/Parquet: the label column.")] = None,
    output: Annotated[str | None, typer.Option(help="ONNX: the output with the class scores.")] = None,
) -> None:
    """Upload a teacher (ONNX, safetensors) or a dataset (NPZ, CSV, Parquet, image ZIP)."""
    if kind not in ("teacher", "dataset"):
        raise typer.BadParameter("teacher or dataset", param_hint="--kind")
    with client_of(ctx) as client:
        artifact, created = client.upload(
            file, kind, name=name, format=format, label_column=label_column, output=output
        )
    console = out_console()
    said = "uploaded" if created else "already uploaded (same content)"
    console.print(f"{said}: {artifact.kind} {artifact.id}  {tables.artifact_line(artifact)}", highlight=False)
    for key, value in (artifact.inspection or {}).items():
        console.print(f"  {key}: {value}", highlight=False)


@app.command()
@reports_errors
def catalog(ctx: typer.Context) -> None:
    """Datasets, architectures and methods a job may use, with their parameters."""
    with client_of(ctx) as client:
        out_console().print(tables.catalog_view(client.catalog()))


@app.command()
@reports_errors
def ready(ctx: typer.Context, timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 60.0) -> None:
    """Wait until the service answers /readyz (database and queue reachable); for scripts."""
    with client_of(ctx) as client:
        client.wait_ready(timeout)
        out_console().print(f"{client.url} is ready", highlight=False)


# `distill sweep ...` (app/cli/sweeps.py builds on the helpers above, so it is imported after them).
from app.cli.sweeps import app as sweep_app  # noqa: E402

app.add_typer(sweep_app, name="sweep")


def main() -> None:
    app()
