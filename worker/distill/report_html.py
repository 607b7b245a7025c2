"""report.html: the job's report as one self-contained page for a person.

Tables (teacher / distilled student / scratch baseline, mean ± std over seeds; the per-seed
paired comparison), the curves (curves.png embedded as base64), the verdict with its warnings,
and the provenance block. Inline CSS, no script, no external reference: it opens offline, from
an e-mail or an artifact store. Jinja2 autoescaping escapes every value, so a job or dataset
name can never inject markup.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from app.contract.files import atomic_write
from worker.distill.export import OutputFile
from worker.distill.plots import Histories, draw_curves

CURVES_NAME = "curves.png"
HTML_NAME = "report.html"

_env = Environment(
    loader=PackageLoader("worker.distill", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

# (column title, report key, how to show it)
COLUMNS = (
    ("test accuracy", "test_accuracy", "pct"),
    ("validation accuracy", "val_accuracy", "pct"),
    ("agrees with teacher", "test_agreement", "pct"),
    ("ECE ↓", "test_ece", "num"),
    ("NLL ↓", "test_nll", "num"),
    ("parameters", "parameters", "int"),
    ("weights", "bytes", "bytes"),
    ("CPU latency", "latency_ms", "ms"),
)


def _show(value: float | None, how: str) -> str:
    if value is None:
        return "–"
    if how == "pct":
        return f"{value * 100:.2f}%"
    if how == "num":
        return f"{value:.4f}"
    if how == "int":
        return f"{value:,.0f}"
    if how == "bytes":
        return f"{value / 1024:,.1f} KiB" if value < 1024**2 else f"{value / 1024**2:,.2f} MiB"
    return f"{value:.3f} ms"


def _cell(section: dict, key: str, how: str) -> str:
    """One value, or mean ± std for a section aggregated over seeds."""
    if "mean" not in section:
        return _show(section.get(key), how)
    mean, std = section["mean"].get(key), section["std"].get(key)
    if mean is None or std is None or len(section.get("runs", [])) < 2 or how not in ("pct", "num"):
        return _show(mean, how)  # sizes do not vary with the seed; latency's spread is timing noise
    spread = f"{std * 100:.2f}" if how == "pct" else _show(std, how)
    return f"{_show(mean, how)} ± {spread}"


def result_rows(report: dict) -> list[dict[str, Any]]:
    """The result table: teacher, assistants, generations, student, baseline."""
    sections = [("teacher", "Teacher", report["teacher"])]
    sections += [("assistant", f"Teacher assistant {a['link']}", a) for a in report.get("assistants") or []]
    sections += [
        ("generation", f"Born-again generation {g['generation']}", g) for g in (report.get("generations") or [])[:-1]
    ]
    sections.append(("student", "Distilled student", report["student"]))
    if report.get("baseline"):
        sections.append(("baseline", "Scratch baseline", report["baseline"]))
    return [
        {"kind": kind, "label": label, "cells": [_cell(section, key, how) for _, key, how in COLUMNS]}
        for kind, label, section in sections
    ]


def seed_rows(report: dict) -> list[dict[str, str]]:
    """Per seed: the student's and the baseline's test accuracy and their difference."""
    diff = (report.get("verdict") or {}).get("kd_minus_scratch")
    if not diff or not report.get("baseline"):
        return []
    student = {r["seed"]: r["test_accuracy"] for r in report["student"]["runs"]}
    baseline = {r["seed"]: r["test_accuracy"] for r in report["baseline"]["runs"]}
    return [
        {
            "seed": d["seed"],
            "student": _show(student[d["seed"]], "pct"),
            "baseline": _show(baseline[d["seed"]], "pct"),
            "difference": f"{d['difference'] * 100:+.2f} points",
        }
        for d in diff["per_seed"]
    ]


def render(report: dict, curves_png: bytes) -> str:
    """The page's HTML text."""
    verdict = report.get("verdict") or {}
    provenance = report.get("reproducibility") or {}
    return _env.get_template("report.html").render(
        report=report,
        verdict=verdict,
        columns=[title for title, _, _ in COLUMNS],
        rows=result_rows(report),
        seeds=seed_rows(report),
        # A negative share (the student fell below its baseline) is said by a warning instead.
        gap_closed=f"{verdict['gap_closed']:.0%}" if (verdict.get("gap_closed") or -1) >= 0 else None,
        provenance=provenance,
        spec_json=json.dumps(provenance.get("spec"), indent=2) if provenance.get("spec") else None,
        curves=base64.b64encode(curves_png).decode("ascii"),
    )


def write_report_files(report: dict, histories: Histories, out_dir: Path) -> list[OutputFile]:
    """curves.png and report.html in out_dir, as the job's output files."""
    png = draw_curves(histories)
    curves = atomic_write(Path(out_dir) / CURVES_NAME, lambda f: f.write(png))
    html = render(report, png).encode()
    page = atomic_write(Path(out_dir) / HTML_NAME, lambda f: f.write(html))
    return [
        OutputFile(CURVES_NAME, curves, "image/png", "report"),
        OutputFile(HTML_NAME, page, "text/html; charset=utf-8", "report"),
    ]
