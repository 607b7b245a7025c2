"""The dashboard (/ui) in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium) against a real uvicorn and Celery worker (embedded: SQLite + filesystem broker).

A wrong key shows a login error; the login form sets an HttpOnly, SameSite=Strict cookie scoped
to /ui that never appears in a page; a tiny digits job submitted through the client shows its
curves while it runs, then its result table (teacher / KD student / scratch baseline with ± over
two seeds) and its downloads; the upload form stores a dataset; cancel works from the page and
is refused without the CSRF token or from another origin; logging out sends pages to the login
form; a tiny sweep's page shows its progress, then its leaderboard with the winner marked and the
Pareto figure. On failure each test's screenshot and HTML are kept under var/test-artifacts/dashboard/
(the failure message names the files); DISTILL_TEST_SCREENSHOTS=DIR keeps them always."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.client import Client
from tests.conftest import ROOT
from tests.support.browser import CHROMEDRIVER, CHROMIUM, headless_chromium, poll_page
from tests.support.polling import poll_until
from tests.support.services import Service, running_service, subprocess_env

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "var" / "test-artifacts" / "dashboard"
JOB = {
    "name": "dashboard digits",
    "dataset": {"name": "digits"},
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [32]}, "epochs": 5, "patience": None}},
    "student": {"arch": {"name": "mlp", "hidden": [8]}},
    "method": {"name": "kd", "temperature": 4.0},
    "training": {"epochs": 4, "patience": None},
    "seeds": [0, 1],
    "baseline": True,
}
# Runs until it is cancelled.
LONG_JOB = {
    **JOB,
    "name": "dashboard long",
    "teacher": {"train": {"arch": {"name": "mlp", "hidden": [8]}, "epochs": 1}},
    "training": {"epochs": 5000, "patience": None},
    "seeds": [0],
    "baseline": False,
}

# Two trials (T = 2 and 4), one seed, two epochs: the smallest sweep with a leaderboard to rank.
SWEEP = {
    "name": "dashboard sweep",
    "base": {**JOB, "seeds": [0], "training": {"epochs": 2, "patience": None}},
    "axes": {"method.temperature": [2.0, 4.0]},
}

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Chromium for the dashboard tests: apt-get install chromium chromium-driver")
    pytest.skip("no Chromium here: apt-get install -y chromium chromium-driver (.ci/run does)", allow_module_level=True)

from selenium import webdriver  # noqa: E402 (only once Chromium is known to be there)
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("dashboard")
    # The default rate limit (NO_LIMITS turns it off): the pages' polling must stay under it. A JSON
    # cap below the upload's size: the upload form streams past the body guard. The sweeper every
    # second: it releases a sweep's next trial when one ends.
    env = subprocess_env(
        root, None, "filesystem://", rate_limit_per_minute=600, max_json_body_bytes=1024, sweep_seconds=1
    )
    with running_service(env, root, workers=1) as service:
        yield service


@pytest.fixture(scope="module")
def key(svc: Service) -> str:
    return (Path(svc.env["DISTILL_HOME"]) / "api-key").read_text().strip()


@pytest.fixture(scope="module")
def client(svc: Service, key: str) -> Iterator[Client]:
    with Client(svc.url, key) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = headless_chromium(
        "--lang=en-US",
    )
    yield driver
    driver.quit()


def keep_screenshot(driver: webdriver.Chrome, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    png, html = folder / f"{name}.png", folder / f"{name}.html"
    driver.save_screenshot(str(png))
    html.write_text(driver.page_source)
    return [png, html]


@pytest.fixture(autouse=True)
def screenshots(request, browser: webdriver.Chrome, svc: Service) -> Iterator[None]:
    yield
    always = os.environ.get("DISTILL_TEST_SCREENSHOTS")
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        kept = keep_screenshot(browser, ARTIFACTS, request.node.name)
        print(f"dashboard test failed: screenshot and page kept in {', '.join(map(str, kept))}")
        print(svc.dump_logs())
    elif always:
        keep_screenshot(browser, Path(always), request.node.name)


def curves_of(driver: webdriver.Chrome):
    """Found again at each look: htmx moves the (preserved) curves element on every panel refresh."""
    return driver.find_element(By.ID, "curves")


def log_in(driver: webdriver.Chrome, svc: Service, key: str) -> None:
    driver.get(f"{svc.url}/ui/jobs")
    if "/ui/login" not in driver.current_url:
        return  # still logged in from an earlier test of this module
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "login").click()
    poll_page(driver, lambda d: d.current_url.endswith("/ui/jobs"), timeout=15, what="the jobs page after logging in")


def test_a_wrong_key_shows_a_login_error(browser, svc: Service):
    browser.delete_all_cookies()
    browser.get(f"{svc.url}/ui/jobs")
    assert browser.current_url.endswith("/ui/login")  # no cookie: the login form
    browser.find_element(By.ID, "key").send_keys("dk_not-a-key")
    browser.find_element(By.ID, "login").click()
    error = poll_page(browser, lambda d: d.find_elements(By.ID, "login-error"), timeout=15, what="the login error")[0]
    assert "unknown or revoked" in error.text
    assert browser.current_url.endswith("/ui/login")
    assert not browser.get_cookies()


def test_login_sets_a_scoped_httponly_cookie_and_never_shows_the_key(browser, svc: Service, key: str):
    browser.delete_all_cookies()
    log_in(browser, svc, key)
    (cookie,) = browser.get_cookies()
    assert (cookie["name"], cookie["path"], cookie["httpOnly"], cookie["sameSite"]) == (
        "distill_ui",
        "/ui",
        True,
        "Strict",
    )
    assert key not in browser.page_source and key not in browser.current_url
    assert browser.execute_script("return document.cookie") == ""  # page scripts cannot read it


def test_a_job_page_shows_live_curves_then_the_result_table(browser, svc: Service, key: str, client: Client):
    log_in(browser, svc, key)
    job_id = client.submit(JOB).id
    browser.get(f"{svc.url}/ui/jobs")
    poll_page(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{job_id}']"),
        timeout=15,
        what="the job in the list",
    )
    browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{job_id}'] a").click()
    poll_page(browser, lambda d: d.current_url.endswith(f"/ui/jobs/{job_id}"), timeout=15, what="the job's page")
    poll_page(
        browser,
        lambda d: int(curves_of(d).get_attribute("data-points")) > 0,
        timeout=60,
        what="the curves' first points",
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-loss canvas")  # uPlot drew it
    poll_page(
        browser,
        lambda d: d.find_element(By.ID, "panel").get_attribute("data-status") == "succeeded",
        timeout=90,
        what="the job to succeed, seen by the page",
    )
    poll_page(
        browser, lambda d: curves_of(d).get_attribute("data-final") == "true", timeout=15, what="the curves' last poll"
    )

    labels = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#result tbody th")]
    assert [label.split(" (")[0] for label in labels] == ["teacher", "student", "baseline"]
    assert labels[1].startswith("student (kd") and labels[2].startswith("baseline (scratch")
    cells = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#result tbody tr")
    ]
    result = client.get(job_id).result
    assert cells[1][0] == (
        f"{result.student.mean.get('test_accuracy'):.3f} ± {result.student.std.get('test_accuracy'):.3f}"
    )  # two seeds: mean ± std
    assert "±" in cells[2][0]
    # 2 phases x 2 names per chart for the teacher + 2 seeds of student and baseline: every run drawn.
    legend = browser.find_element(By.CSS_SELECTOR, "#chart-accuracy .u-legend").text
    for run in ("teacher", "student seed=0", "student seed=1", "baseline seed=1"):
        assert run in legend
    downloads = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")}
    assert {"student.onnx", "report.json"} <= downloads
    assert browser.find_elements(By.CSS_SELECTOR, "#events li")
    href = browser.find_element(By.LINK_TEXT, "report.json").get_attribute("href")
    fetched = browser.execute_async_script(
        "const done = arguments[1]; fetch(arguments[0]).then(r => r.json()).then(j => done(j.name), e => done(String(e)))",
        href,
    )
    assert fetched == JOB["name"]  # the download works with the cookie alone


def test_the_upload_form_stores_a_dataset(browser, svc: Service, key: str, client: Client, tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=rng.normal(size=(60, 8)).astype("float32"), y=np.arange(60) % 3)
    assert path.stat().st_size > int(svc.env["DISTILL_MAX_JSON_BODY_BYTES"])
    log_in(browser, svc, key)
    browser.get(f"{svc.url}/ui/upload")
    browser.find_element(By.ID, "file").send_keys(str(path))
    browser.find_element(By.ID, "name").send_keys("tiny from the browser")
    browser.find_element(By.ID, "upload").click()
    ok = poll_page(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-ok, #upload-error"),
        timeout=30,
        what="the upload's answer",
    )[0]
    assert ok.get_attribute("id") == "upload-ok", ok.text
    (stored,) = [a for a in client.uploads(kind="dataset") if a.name == "tiny from the browser"]
    assert stored.id in ok.text and stored.inspection["rows"] == 60
    browser.get(f"{svc.url}/ui/artifacts")
    assert "tiny from the browser" in browser.find_element(By.ID, "uploads").text


def test_cancel_from_the_page_and_never_without_the_csrf_token(browser, svc: Service, key: str, client: Client):
    log_in(browser, svc, key)
    job_id = client.submit(LONG_JOB).id
    poll_until(lambda: client.get(job_id).status == "running", timeout=60, what="the long job to run")
    (cookie,) = browser.get_cookies()
    forged = httpx.post(f"{svc.url}/ui/jobs/{job_id}/cancel", cookies={cookie["name"]: cookie["value"]})
    assert forged.status_code == 403  # the cookie alone is not enough
    cross_site = httpx.post(
        f"{svc.url}/ui/jobs/{job_id}/cancel",
        cookies={cookie["name"]: cookie["value"]},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert not client.get(job_id).cancel_requested

    browser.get(f"{svc.url}/ui/jobs/{job_id}")
    # The panel may be swapped between finding the button and clicking it: click again until one lands.
    poll_page(browser, lambda d: d.find_element(By.ID, "cancel").click() or True, timeout=10, what="the cancel button")
    confirm = poll_page(browser, lambda d: d.switch_to.alert, timeout=10, what="the confirmation")
    assert "Cancel this job?" in confirm.text
    confirm.accept()
    poll_page(
        browser,
        lambda d: d.find_element(By.ID, "panel").get_attribute("data-status") == "cancelled",
        timeout=60,
        what="the job to be cancelled, seen by the page",
    )
    assert client.get(job_id).status == "cancelled"


def test_a_sweep_page_shows_progress_then_the_leaderboard_with_the_winner_marked(
    browser, svc: Service, key: str, client: Client
):
    log_in(browser, svc, key)
    sweep_id = client.submit_sweep(SWEEP).id
    browser.get(f"{svc.url}/ui/jobs")
    browser.find_element(By.ID, "nav-sweeps").click()
    row = f"tr[data-sweep='{sweep_id}'] a"
    poll_page(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), timeout=15, what="the sweep in the list")
    browser.find_element(By.CSS_SELECTOR, row).click()
    poll_page(browser, lambda d: d.current_url.endswith(f"/ui/sweeps/{sweep_id}"), timeout=15, what="the sweep's page")
    assert "trials done" in browser.find_element(By.ID, "sweep-progress").text

    def final_rows(d) -> list:
        if d.find_element(By.ID, "sweep-panel").get_attribute("data-status") != "succeeded":
            return []
        rows = d.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
        return rows if len(rows) == 2 else []

    poll_page(browser, final_rows, timeout=240, what="the leaderboard's 2 rows, the sweep ended")
    poll_page(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#pareto img"), timeout=30, what="the Pareto figure")
    sweep = client.sweep(sweep_id)
    winner = sweep.result["winner"]["trial"]
    marked = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tr[data-winner='true']")
    assert [tr.get_attribute("data-trial") for tr in marked] == [str(winner)]
    assert "winner" in marked[0].text
    assert f"trial {winner}" in browser.find_element(By.ID, "winner").text
    assert "2/2 trials done" in browser.find_element(By.ID, "sweep-progress").text
    assert "onnxruntime" in browser.find_element(By.ID, "latency-note").text
    width = browser.execute_script("return document.querySelector('#pareto img').naturalWidth")
    assert width > 0  # the figure loaded with the cookie alone
    link = marked[0].find_element(By.TAG_NAME, "a").get_attribute("href")
    assert link.endswith(f"/ui/jobs/{sweep.result['winner']['job_id']}")  # the trial's own job page


def test_logging_out_sends_pages_to_the_login_form(browser, svc: Service, key: str):
    log_in(browser, svc, key)
    browser.find_element(By.ID, "logout").click()
    poll_page(browser, lambda d: d.current_url.endswith("/ui/login"), timeout=15, what="the login form")
    assert not browser.get_cookies()
    browser.get(f"{svc.url}/ui/artifacts")
    assert browser.current_url.endswith("/ui/login")


@pytest.fixture(scope="module", autouse=True)
def _clean_old_artifacts() -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # a rerun keeps only its own failures
