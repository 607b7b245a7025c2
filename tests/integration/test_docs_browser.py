"""/docs in a real headless Chromium (Debian's chromium + chromedriver, Selenium) that
cannot resolve any host but the service's: offline, as on a machine without internet. Swagger UI
renders every operation of the document, its Authorize button takes the API key, and a call made
from the page with it answers 200. Every file the page loaded came from the service. On failure the screenshot and page are kept under
var/test-artifacts/docs/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.conftest import ROOT
from tests.support.browser import CHROMEDRIVER, CHROMIUM, headless_chromium, poll_page
from tests.support.services import Service, running_service, subprocess_env

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "var" / "test-artifacts" / "docs"

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Chromium for the browser tests: apt-get install chromium chromium-driver")
    pytest.skip("no Chromium here: apt-get install -y chromium chromium-driver (.ci/run does)", allow_module_level=True)


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("docs")
    with running_service(subprocess_env(root, None, "filesystem://"), root) as service:
        yield service


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = headless_chromium(
        # Offline: every host but the service's fails to resolve (a CDN file would not load).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    )
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def screenshots(request, browser: webdriver.Chrome, svc: Service) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        png, html = ARTIFACTS / f"{request.node.name}.png", ARTIFACTS / f"{request.node.name}.html"
        browser.save_screenshot(str(png))
        html.write_text(browser.page_source)
        print(f"docs test failed: screenshot and page kept in {png}, {html}\n{svc.dump_logs()}")


def loaded_urls(driver: webdriver.Chrome) -> list[str]:
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def operation_count(svc: Service) -> int:
    paths = httpx.get(f"{svc.url}/openapi.json", timeout=10).json()["paths"]
    return sum(len(ops) for ops in paths.values())


def test_swagger_ui_renders_offline_and_its_authorize_button_takes_the_key(browser, svc: Service):
    key = (Path(svc.env["DISTILL_HOME"]) / "api-key").read_text().strip()
    browser.get(f"{svc.url}/docs")
    expected = operation_count(svc)
    poll_page(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) == expected,
        timeout=30,
        what="every operation",
    )
    urls = loaded_urls(browser)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls) and any(u.endswith("/openapi.json") for u in urls)
    assert all(u.startswith(svc.url + "/") for u in urls), urls

    browser.find_element(By.CSS_SELECTOR, ".auth-wrapper .authorize").click()
    dialog = poll_page(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, ".modal-ux"), timeout=10, what="the Authorize dialog"
    )
    assert "ApiKey" in dialog.text and "AdminKey" in dialog.text and "Bearer" in dialog.text
    first = dialog.find_elements(By.CSS_SELECTOR, ".auth-container")[0]
    assert "ApiKey" in first.text
    first.find_element(By.CSS_SELECTOR, "input").send_keys(key)
    first.find_element(By.CSS_SELECTOR, "button.authorize").click()
    poll_page(browser, lambda d: "Logout" in first.text, timeout=10, what="the key to be taken")
    dialog.find_element(By.CSS_SELECTOR, "button.btn-done").click()

    catalog = browser.find_element(By.ID, "operations-catalog-catalog_v1_catalog_get")
    catalog.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    poll_page(
        browser,
        lambda d: catalog.find_elements(By.CSS_SELECTOR, "button.execute"),
        timeout=10,
        what="the Execute button",
    )
    catalog.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = poll_page(
        browser,
        lambda d: catalog.find_elements(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"),
        timeout=20,
        what="the call's answer",
    )
    assert status[0].text.strip().startswith("200"), status[0].text  # 401 without the key
