"""`distill sweep submit|show|list|cancel|wait`: sweeps over the HTTP API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from app.cli.background import in_background
from app.cli.main import DETACHED, EVERY, client_of, err_console, out_console, reports_errors
from app.cli.sweep_tables import progress_line, sweep_view
from app.client import Client, Sweep, apply_overrides, load_spec

app = typer.Typer(help="Sweeps: many trials from one request, a leaderboard chosen on validation.")
SWEEP_ID = typer.Argument(help="The sweep id.")


@app.command()
@reports_errors
def submit(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="A sweep spec (base, axes, ...), .json or .yaml.")],
    set_: Annotated[list[str], typer.Option("--set", help="dotted.path=JSON override; repeatable.")] = [],  # noqa: B006 - typer reads the default
    wait: Annotated[bool, typer.Option(help="Follow the sweep to its end and print the leaderboard.")] = False,
    every: Annotated[float, EVERY] = 2.0,
) -> None:
    """Submit a sweep."""
    with client_of(ctx) as client:
        sweep = client.submit_sweep(apply_overrides(load_spec(spec), set_))
        out_console().print(f"submitted sweep {sweep.id} ({sweep.progress['total']} trials)", highlight=False)
        if wait:
            _follow(client, sweep.id, every)


def _reads(client: Client, sweep_id: str, every: float) -> Iterator[Sweep]:
    while True:
        sweep = client.sweep(sweep_id)
        yield sweep
        if sweep.ended:
            return
        time.sleep(every)


def _poll(client: Client, sweep_id: str, every: float) -> Sweep:
    # The reads in a daemon thread: Ctrl-C interrupts the wait, never httpx (see in_background).
    console, last = out_console(), None
    for sweep in in_background(_reads(client, sweep_id, every)):
        if (line := progress_line(sweep)) != last:
            console.print(line, highlight=False)
            last = line
    return sweep


def _follow(client: Client, sweep_id: str, every: float) -> None:
    """Progress lines to the sweep's end, then its leaderboard. Ctrl-C detaches (exit 130)."""
    try:
        sweep = _poll(client, sweep_id, every)
    except KeyboardInterrupt:
        err_console().print(
            f"detached from sweep {sweep_id}; it keeps running. Re-attach with: distill sweep watch {sweep_id}",
            highlight=False,
        )
        raise typer.Exit(DETACHED) from None
    out_console().print(sweep_view(sweep))
    if sweep.status != "succeeded":
        raise typer.Exit(1)


@app.command()
@reports_errors
def wait(ctx: typer.Context, sweep: Annotated[str, SWEEP_ID], every: Annotated[float, EVERY] = 2.0) -> None:
    """Follow a sweep's progress to its end, then print its leaderboard."""
    with client_of(ctx) as client:
        _follow(client, sweep, every)


@app.command()
@reports_errors
def watch(ctx: typer.Context, sweep: Annotated[str, SWEEP_ID], every: Annotated[float, EVERY] = 2.0) -> None:
    """Follow a sweep: a line at each change (done / running / queued, best so far), then its
    leaderboard. Ctrl-C detaches; the sweep runs on."""
    with client_of(ctx) as client:
        _follow(client, sweep, every)


@app.command()
@reports_errors
def show(ctx: typer.Context, sweep: Annotated[str, SWEEP_ID]) -> None:
    """A sweep's progress, its standings so far while it runs and, once ended, its leaderboard,
    winner and budget."""
    with client_of(ctx) as client:
        out_console().print(sweep_view(client.sweep(sweep)))


@app.command("list")
@reports_errors
def list_sweeps(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=100)] = 20) -> None:
    """Your sweeps, newest first."""
    with client_of(ctx) as client:
        for sweep in client.sweeps(limit=limit):
            out_console().print(progress_line(sweep), highlight=False)


@app.command()
@reports_errors
def cancel(ctx: typer.Context, sweep: Annotated[str, SWEEP_ID]) -> None:
    """Cancel a sweep: no more trials; queued ones at once, running ones at their next batch."""
    with client_of(ctx) as client:
        out_console().print(progress_line(client.cancel_sweep(sweep)), highlight=False)
