"""Debian's headless Chromium driven by Selenium, for the tests that need a real browser, and
waiting for what a page shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService

from tests.support.polling import NotYet, poll_until

T = TypeVar("T")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def headless_chromium(*extra_args: str) -> webdriver.Chrome:
    """A headless Chromium with a tall window (the pages are checked whole); quit it when done."""
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,1700",
    ):
        options.add_argument(arg)
    for arg in extra_args:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def poll_page(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T], *, timeout: float, what: str) -> T:
    """poll_until for a page: condition(driver), looked at again while the element it looks for is
    missing or was replaced (htmx swaps a panel while it refreshes: an element found a moment ago
    may be gone)."""

    def look() -> T | NotYet:
        try:
            return condition(driver)
        except (NoSuchElementException, StaleElementReferenceException) as error:
            return NotYet(f"{type(error).__name__}: {error.msg}")

    return poll_until(look, timeout=timeout, what=what, every=0.2)
