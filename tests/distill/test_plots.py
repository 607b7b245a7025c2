"""curves.png and report.html, from crafted histories and reports (the real job: test_verdict.py)."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import pytest
from PIL import Image

from tests.distill.test_verdict import crafted, splits
from tests.support.specs import tiny_spec
from worker.distill import verdict
from worker.distill.plots import draw_curves, figure_size, phases_of
from worker.distill.report_html import render, write_report_files

EVIL = '<script>alert("x")</script>'


def history(epochs: int, start: float = 0.3):
    return [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "val_loss": 2.1 / e,
            "train_accuracy": start + 0.05 * e,
            "val_accuracy": start + 0.04 * e,
            "lr": 0.003,
        }
        for e in range(1, epochs + 1)
    ]


HISTORIES = {
    ("teacher", "teacher"): history(6, 0.5),
    ("student", "seed=0"): history(4),
    ("student", "seed=1"): history(4, 0.25),
    ("baseline", "seed=0"): history(4, 0.2),
    ("baseline", "seed=1"): history(4, 0.22),
}


def png_of(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_phases_in_job_order():
    shuffled = dict(reversed(list(HISTORIES.items())))
    assert phases_of(shuffled) == ["teacher", "student", "baseline"]


@pytest.mark.parametrize(
    "keys, columns",
    [
        ([("teacher", "teacher"), ("student", "seed=0"), ("student", "seed=1"), ("baseline", "seed=0")], 3),
        ([("student", "seed=0")], 2),  # one phase still leaves room for the caption
    ],
)
def test_curves_png_opens_at_its_size(keys, columns):
    image = png_of(draw_curves({k: HISTORIES.get(k, history(3)) for k in keys}))
    assert image.format == "PNG"
    assert image.size == figure_size(columns) == (columns * 420, 640)


def test_born_again_and_assistants_get_their_columns():
    histories = {**HISTORIES, ("assistant", "link=1"): history(4), ("generation", "gen=1 seed=0"): history(4)}
    assert phases_of(histories) == ["teacher", "assistant", "generation", "student", "baseline"]
    assert png_of(draw_curves(histories)).size == figure_size(5)


class Page(HTMLParser):
    """What a browser would load or run: tags, references, scripts; and the text, per table cell."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.references: list[str] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.references += [value for name, value in attrs if name in {"src", "href", "srcset", "action"}]
        self._in_cell = tag in {"td", "th"}
        if self._in_cell:
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag in {"td", "th"}:
            self._in_cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells[-1] += data


def full_report(spec, name=EVIL, dataset=EVIL):
    report = crafted([0.90, 0.91, 0.93], [0.85, 0.855, 0.87], train_size=100)
    report["name"] = name
    report["dataset"]["name"] = dataset
    report.update(
        {"method": {"name": "kd"}, "seeds": [0, 1, 2], "exported": {"seed": 2, "selected_by": "validation accuracy"}}
    )
    report.update(verdict.assess(report, spec, splits(), job_id="job-7"))
    report["reproducibility"]["dataset"]["name"] = dataset
    return report


@pytest.fixture
def spec():
    return tiny_spec(name=EVIL, seeds=[0, 1, 2])


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def test_report_html_is_self_contained_and_complete(spec, tmp_path):
    report = full_report(spec)
    files = write_report_files(report, HISTORIES, tmp_path)
    assert [(f.name, f.media_type, f.kind) for f in files] == [
        ("curves.png", "image/png", "report"),
        ("report.html", "text/html; charset=utf-8", "report"),
    ]
    html = files[1].path.read_text()
    page = parse(html)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert page.references and all(r.startswith("data:image/png;base64,") for r in page.references)
    assert "http://" not in html and "https://" not in html and "url(" not in html
    assert page.tags.count("table") == 2  # the results and the per-seed comparison
    for cell in ("Teacher", "Distilled student", "Scratch baseline", "91.33% ± 1.53", "85.83% ± 1.04", "+5.00 points"):
        assert cell in page.cells, cell
    text = " ".join(" ".join(page.text).split())
    assert " ".join(report["verdict"]["summary"].split()) in text
    assert "helped" in text and "few_steps_per_epoch" in text  # the outcome and a warning's code
    assert report["reproducibility"]["dataset"]["sha256"] in text and "job-7" in text


def test_the_embedded_curves_are_curves_png(spec, tmp_path):
    import base64

    files = write_report_files(full_report(spec), HISTORIES, tmp_path)
    embedded = parse(files[1].path.read_text()).references[0].split(",", 1)[1]
    assert base64.b64decode(embedded) == files[0].path.read_bytes()


def test_user_text_is_escaped(spec):
    html = render(full_report(spec), draw_curves(HISTORIES))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    page = parse(html)
    assert "script" not in page.tags
    assert EVIL in " ".join(page.text)  # shown as text, where the user wrote it


def test_a_report_without_baseline_or_verdict_renders():
    report = crafted([0.9, 0.91, 0.92])
    report.update({"method": {"name": "kd"}, "seeds": [0, 1, 2], "exported": {"seed": 0, "selected_by": "x"}})
    page = parse(render(report, draw_curves({("student", "seed=0"): history(3)})))
    assert "Scratch baseline" not in page.cells and "Distilled student" in page.cells
    assert "This report has no verdict." in " ".join(page.text)
