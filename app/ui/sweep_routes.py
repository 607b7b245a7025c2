"""The dashboard's sweeps: the list, a sweep's page (progress, best so far, the leaderboard or the
standings so far, links to the trial jobs, the Pareto figure), its figure and cancel. Reads and
writes go through the API's own route functions, as the job pages do (app/ui/views.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from app.api import sweeps as sweeps_api
from app.auth import Caller
from app.problems import Problem
from app.ui import views
from app.ui.session import PATH, DashboardCaller, check_csrf
from app.ui.web import SECURITY_HEADERS, DashboardRoute, render

router = APIRouter(prefix=f"{PATH}/sweeps", route_class=DashboardRoute, include_in_schema=False)


def _sweeps_context(caller: Caller) -> dict:
    return {"sweeps": views.sweeps_of(caller), "page": "sweeps"}


@router.get("")
def sweeps_page(request: Request, caller: DashboardCaller) -> Response:
    return render(request, "sweeps.html", _sweeps_context(caller))


@router.get("/rows")
def sweeps_rows(request: Request, caller: DashboardCaller) -> Response:
    return render(request, "_sweeps_table.html", _sweeps_context(caller))


@router.get("/{sweep_id}")
def sweep_page(request: Request, sweep_id: str, caller: DashboardCaller) -> Response:
    try:
        view = views.sweep_view(views.sweep_of(caller, sweep_id))
    except Problem as problem:
        return render(request, "missing.html", {"problem": problem, "page": "sweeps"}, status=problem.status)
    return render(request, "sweep.html", {"view": view, "page": "sweeps"})


@router.get("/{sweep_id}/panel")
def sweep_panel(request: Request, sweep_id: str, caller: DashboardCaller) -> Response:
    view = views.sweep_view(views.sweep_of(caller, sweep_id))
    return render(request, "_sweep_panel.html", {"view": view})


@router.get("/{sweep_id}/pareto.png")
def sweep_pareto(sweep_id: str, caller: DashboardCaller) -> Response:
    return sweeps_api.sweep_pareto(sweep_id=sweep_id, caller=caller)


@router.post("/{sweep_id}/cancel")
def cancel(request: Request, sweep_id: str, caller: DashboardCaller, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    try:
        sweeps_api.cancel_sweep(sweep_id=sweep_id, caller=caller)
    except Problem as problem:
        if problem.status != 409:  # 409: it ended meanwhile, which its page shows
            raise
    return RedirectResponse(f"{PATH}/sweeps/{sweep_id}", status_code=303, headers=SECURITY_HEADERS)
