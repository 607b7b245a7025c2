"""The API's documentation (issue 14, items 2 and 8), in process over SQLite and PostgreSQL:
/docs loads nothing but the service's own files; the OpenAPI document has a bearer
security scheme on every /v1 route, a summary and a description on every operation, examples
for every request body (POST /v1/jobs: one per method, each accepted as it is), and typed
report and catalog models that leave the bodies exactly as they were."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from pydantic import TypeAdapter

from app.api.catalog import catalog
from app.api.examples import job_examples
from app.contract.methods import METHODS
from app.contract.report import Catalog, Report
from app.contract.spec import JobSpec
from app.db import get_sessionmaker
from app.models import Job
from tests.conftest import ROOT

METHODS_HTTP = ("get", "post", "put", "patch", "delete")
UNSECURED = {"/healthz", "/readyz", "/metrics"}
# The reports the golden jobs wrote (tests/distill/test_golden.py); read here without the engine.
GOLDEN = [json.loads(p.read_text()) for p in sorted((ROOT / "tests/distill/golden").glob("machine-*/*.json"))]
# And one whole report as a worker writes it today: verdict, reproducibility, latencies (the golden
# reports leave those out); tests/distill/golden/cases.py's kd case, run on 2026-12-01.
FULL_REPORT = json.loads((ROOT / "tests/api/data/report-full.json").read_text())
REPORTS = [g["report"] for g in GOLDEN if "report" in g] + [FULL_REPORT]


class Links(HTMLParser):
    """Every URL a page loads: its src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def linked(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    # Swagger UI's inline script names the document it loads: url: '/openapi.json'
    return parser.urls + re.findall(r"\burl: '([^']+)'", html)


def operations(document: dict) -> list[tuple[str, str, dict]]:
    return [(m.upper(), p, op) for p, ops in document["paths"].items() for m, op in ops.items() if m in METHODS_HTTP]


@pytest.fixture
def document(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_the_docs_page_loads_only_the_services_own_files(client):
    r = client.get("/docs", headers={"Authorization": ""})  # the page needs no key
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text), "a page names another host"
    urls = linked(r.text)
    assert len(urls) == 4 and "/openapi.json" in urls  # the script, the stylesheet, the icon, the document
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url, headers={"Authorization": ""})
        assert asset.status_code == 200 and len(asset.content) > 100, url
    scripts = [u for u in urls if u.endswith(".js")]
    assert len(scripts) == 1 and all(client.get(u).headers["cache-control"].endswith("immutable") for u in scripts)


def test_only_the_vendored_files_are_served_as_docs_assets(client):
    assert client.get("/docs/assets/vendor/VENDOR.md").status_code == 200
    assert client.get("/redoc").status_code == 404  # not served: ReDoc loads a logo from its CDN
    for path in ("../docs.py", "vendor/../../docs.py", "nothing.js"):
        assert client.get(f"/docs/assets/{path}").status_code == 404


def test_every_v1_route_has_the_bearer_scheme_and_health_routes_none(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["AdminKey"]["scheme"] == "bearer"
    ops = operations(document)
    assert len(ops) >= 25
    for method, path, op in ops:
        if path.startswith("/v1/admin/"):
            assert op.get("security") == [{"AdminKey": []}], (method, path)
        elif path.startswith("/v1/"):
            assert op.get("security") == [{"ApiKey": []}], (method, path)
        else:
            assert path in UNSECURED and "security" not in op, (method, path)


def _schema(document: dict, node: dict) -> dict:
    ref = node.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else node


def _has_example(document: dict, media: dict) -> bool:
    schema = _schema(document, media.get("schema", {}))
    fields = [_schema(document, p) for p in schema.get("properties", {}).values()]
    return bool(media.get("examples") or schema.get("examples") or any("examples" in f for f in fields))


def test_every_operation_has_a_summary_a_description_and_request_examples(document):
    for method, path, op in operations(document):
        assert op.get("summary") and len(op.get("description", "")) > 30, (method, path)
        for media_type, media in op.get("requestBody", {}).get("content", {}).items():
            assert _has_example(document, media), (method, path, media_type)


def test_post_jobs_has_an_example_job_per_method_each_accepted_as_it_is(client, document):
    examples = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples == json.loads(json.dumps(job_examples()))
    for name in METHODS:
        example = examples[f"method_{name}"]
        assert example["summary"] and example["value"]["method"]["name"] == name
        r = client.post("/v1/jobs", json=example["value"])
        assert r.status_code == 202, (name, r.text)
    for key in ("uploaded_dataset", "brought_onnx_teacher", "brought_safetensors_teacher", "ensemble"):
        assert key in examples
    for example in examples.values():
        JobSpec.model_validate(example["value"])  # brought ones name uploads that do not exist here


def test_the_report_and_the_catalog_are_typed(client, document):
    schemas = document["components"]["schemas"]
    assert {"$ref": "#/components/schemas/Report"} in schemas["JobOut"]["properties"]["result"]["anyOf"]
    assert {"student", "baseline", "teacher", "verdict", "summary"} <= set(schemas["Report"]["properties"])
    ok = document["paths"]["/v1/catalog"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/Catalog"}
    body = client.get("/v1/catalog")
    assert body.status_code == 200
    assert body.content == TypeAdapter(dict[str, Any]).dump_json(catalog())  # the body as it was untyped
    assert Catalog.model_validate(body.json()).methods["kd"].parameters["temperature"]["default"] == 8.0


def _succeed(job_id: str, report: dict) -> None:
    """What a worker writes when a job succeeds (the API reads it; no worker runs here)."""
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        job.status, job.progress, job.result = "succeeded", 1.0, report
        session.commit()


SMALL = {
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [16]}, "epochs": 1}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "seeds": [0],
}


def test_a_succeeded_job_shows_its_report_exactly_as_the_worker_wrote_it(client):
    assert len(REPORTS) >= 13
    for report in REPORTS:
        job_id = client.post("/v1/jobs", json=SMALL).json()["id"]
        _succeed(job_id, report)
        result = client.get(f"/v1/jobs/{job_id}").json()["result"]
        assert json.dumps(result) == json.dumps(report), report["name"]  # the same keys, order, ints and floats
        Report.model_validate(report)
    typed = Report.model_validate(FULL_REPORT)
    assert typed.verdict.warnings[0].code == "student_worse_than_baseline"
    assert typed.student.runs[1].latency_onnx_threads == 1 and typed.reproducibility.software["torch"]


def test_a_stored_report_the_model_does_not_describe_is_still_shown(client):
    job_id = client.post("/v1/jobs", json=SMALL).json()["id"]
    odd = {"student": {"runs": "not a list"}, "from": "an older worker"}
    _succeed(job_id, odd)
    r = client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["result"] == odd
