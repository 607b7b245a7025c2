"""The dashboard's routes under /ui: log in and out, the jobs, a job (live), uploads, an upload form.

Pages are rendered on the server; htmx refreshes the parts that change (the job list, a job's
panel) and a small script draws the curves with uPlot. Reads go through the API's own route
functions (views.py); writes through the API's cancel and upload. See session.py for the cookie
and the CSRF token.
"""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from app.api import artifacts as artifacts_api
from app.api import jobs as jobs_api
from app.api import stream as stream_api
from app.api import uploads as uploads_api
from app.auth import Caller, count_wrong_key
from app.client.models import Artifact
from app.problems import Problem
from app.ui import views
from app.ui.session import (
    PATH,
    DashboardCaller,
    caller_of_key,
    check_csrf,
    check_same_origin,
    clear_login_cookie,
    cookie_value_for,
    keys_required,
    set_login_cookie,
)
from app.ui.web import LOGIN, SECURITY_HEADERS, DashboardRoute, asset_response, render

router = APIRouter(prefix=PATH, route_class=DashboardRoute, include_in_schema=False)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


@router.get("/static/{path:path}")
def static_file(path: str) -> Response:
    return asset_response(path)


@router.get("")
@router.get("/")
def home() -> Response:
    return _see_other(f"{PATH}/jobs")


@router.get("/login")
def login_page(request: Request) -> Response:
    return render(request, "login.html")


@router.post("/login")
def login(request: Request, key: Annotated[str, Form()] = "") -> Response:
    check_same_origin(request)
    key = key.strip()
    if keys_required():
        error = None
        if not key:
            error = "Enter your API key."
        elif caller_of_key(request, key) is None:
            error = "This API key is unknown or revoked. Check it, or ask an admin for a new one."
            try:
                count_wrong_key(request)  # as the API does: guessing keys here is as slow
            except Problem as problem:
                return render(
                    request, "login.html", {"error": problem.detail}, status=problem.status, headers=problem.headers
                )
        if error:
            return render(request, "login.html", {"error": error}, status=401)
    response = _see_other(f"{PATH}/jobs")
    set_login_cookie(request, response, cookie_value_for(key if keys_required() else None))
    return response


@router.post("/logout")
def logout(request: Request, caller: DashboardCaller, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    response = _see_other(LOGIN)
    clear_login_cookie(request, response)
    return response


def _jobs_context(caller: Caller, cursor: str | None) -> dict:
    jobs, next_cursor = views.jobs_of(caller, cursor)
    return {"jobs": jobs, "next_cursor": next_cursor, "cursor": cursor, "page": "jobs"}


@router.get("/jobs")
def jobs_page(request: Request, caller: DashboardCaller, cursor: str | None = None) -> Response:
    return render(request, "jobs.html", _jobs_context(caller, cursor))


@router.get("/jobs/rows")
def jobs_rows(request: Request, caller: DashboardCaller, cursor: str | None = None) -> Response:
    return render(request, "_jobs_table.html", _jobs_context(caller, cursor))


def _job_context(caller: Caller, job_id: str) -> dict:
    job = views.job_of(caller, job_id)
    report = job.result
    return {
        "job": job,
        "events": views.events_of(caller, job_id),
        "files": views.job_files_of(caller, job_id) if job.ended else [],
        "table": views.result_table(report) if report else None,
        "verdict": views.verdict_of(report) if report else None,
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, caller: DashboardCaller) -> Response:
    try:
        context = _job_context(caller, job_id)
    except Problem as problem:
        return render(request, "missing.html", {"problem": problem, "page": "jobs"}, status=problem.status)
    return render(request, "job.html", {**context, "page": "jobs"})


@router.get("/jobs/{job_id}/panel")
def job_panel(request: Request, job_id: str, caller: DashboardCaller) -> Response:
    context = _job_context(caller, job_id)
    return render(request, "_job_panel.html", context)


@router.get("/jobs/{job_id}/metrics")
def job_metrics(job_id: str, caller: DashboardCaller) -> dict:
    """The curves' data (the script cannot call /v1: it never holds the key), with the job's status
    so that it knows when to stop polling."""
    job = views.job_of(caller, job_id)
    metrics = views.metrics_of(caller, job_id)
    return {"status": job.status, "ended": job.ended, **metrics.model_dump(mode="json")}


@router.get("/jobs/{job_id}/stream")
async def job_stream(request: Request, job_id: str, caller: DashboardCaller) -> Response:
    """The job's live stream for the curves script and the panel (the API's, with the cookie's caller)."""
    await to_thread.run_sync(stream_api.check_job, caller, job_id)
    return stream_api.open_stream(request, caller, job_id, request.headers.get("last-event-id"))


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, caller: DashboardCaller, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    try:
        jobs_api.cancel_job(job_id=job_id, response=Response(), caller=caller)
    except Problem as problem:
        if problem.status != 409:  # 409: it ended meanwhile, which its page shows
            raise
    return _see_other(f"{PATH}/jobs/{job_id}")


@router.get("/artifacts")
def artifacts_page(request: Request, caller: DashboardCaller) -> Response:
    uploads = views.uploads_of(caller)
    return render(
        request, "artifacts.html", {"uploads": uploads, "page": "artifacts", "inspection": views.inspection_line}
    )


@router.get("/artifacts/{artifact_id}/content")
def download(artifact_id: str, caller: DashboardCaller) -> Response:
    return artifacts_api.artifact_content(artifact_id=artifact_id, caller=caller)


@router.get("/upload")
def upload_page(request: Request, caller: DashboardCaller) -> Response:
    return render(request, "upload.html", {"page": "upload"})


@router.post("/upload")
async def upload(request: Request, caller: DashboardCaller) -> Response:
    """The form's multipart body goes to the API's streaming upload as it is (the CSRF token
    comes as a header, so the body holds only the upload's own fields). A refusal is shown in the
    form (htmx swaps these statuses in; a 429 or 5xx leaves the page as it was)."""
    response = Response(status_code=201)  # the API route's own status; 200 when stored before
    try:
        check_csrf(request)
        stored = await uploads_api.upload_artifact(request, response, caller)
    except Problem as problem:
        return render(request, "_upload_result.html", {"problem": problem}, status=problem.status)
    artifact = Artifact.model_validate(stored.model_dump(mode="json"))
    return render(
        request,
        "_upload_result.html",
        {"artifact": artifact, "again": response.status_code == 200, "inspection": views.inspection_line(artifact)},
        status=response.status_code,
    )
