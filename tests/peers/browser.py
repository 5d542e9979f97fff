"""Headless chromium for the console's page tests: Debian's chromium driven by its chromium-driver
through Selenium (WebDriver), no browser download.

Why Selenium and Debian's packages: the browser and its driver come from apt in one version pair
(``scripts/setup.sh --test``), nothing is fetched at run time. The tests skip, with the reason, only
where chromium, chromium-driver or selenium is not installed.

:class:`Browser` wraps one driver for a test: :meth:`Browser.open` visits a page and writes a screenshot
into the test's tmp dir (``<tmp>/screens/NN-name.png``, not committed) so a reviewer can look at the
pages; :meth:`Browser.wait_text` waits (bounded) for an element's text to say something.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver", "chromium-driver")


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    chromium = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_NAMES) if p), None)
    if chromium is None or driver is None:
        return "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return chromium, driver


def start_driver(chromium: str, driver: str, log: Path) -> Any:
    """A headless chromium session (a phone-and-desktop friendly 1100x900 window)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--disable-default-apps",
                "--disable-component-update", "--metrics-recording-only"):  # fmt: skip
        options.add_argument(arg)
    service = Service(executable_path=driver, log_output=str(log))
    return webdriver.Chrome(service=service, options=options)


class Browser:
    """One test's view of the shared driver: page visits with screenshots, bounded waits."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self._count = 0

    def open(self, url: str, name: str | None = None) -> None:
        """Visit ``url`` and write a screenshot named ``name`` (default: from the URL's path).

        Chromium aborts a load with ERR_NETWORK_CHANGED when any interface on the machine changes (other
        tests create network namespaces and veth pairs): such a load is tried again, a few times."""
        for _ in range(3):
            self.driver.get(url)
            if "ERR_NETWORK_CHANGED" not in self.page_text():
                break
            time.sleep(0.2)
        self.shot(name or url)

    def shot(self, name: str) -> Path:
        """A screenshot of the page as it is now, in the test's tmp dir."""
        self.shots.mkdir(parents=True, exist_ok=True)
        self._count += 1
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name.split("://", 1)[-1]).strip("-")[:60] or "page"
        path = self.shots / f"{self._count:02d}-{slug}.png"
        self.driver.save_screenshot(str(path))
        return path

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def wait(self, cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        """Poll ``cond`` (a missing or replaced element counts as not yet) until it is true."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        deadline = time.monotonic() + timeout
        while True:
            self.reload_if_network_changed()
            with contextlib.suppress(NoSuchElementException, StaleElementReferenceException):
                value = cond()
                if value:
                    return value
            if time.monotonic() >= deadline:
                self.shot(f"timeout-{what}")
                raise AssertionError(f"{what} (waited {timeout} s); page text:\n{self.page_text()[:2000]}")
            time.sleep(interval)

    def wait_text(self, css: str, needle: str, timeout: float = 20) -> str:
        return str(self.wait(lambda: needle in (t := self.text(css)) and t, timeout,
                             f"{css} to show {needle!r}"))  # fmt: skip

    def reload_if_network_changed(self) -> None:
        """A navigation chromium aborted with ERR_NETWORK_CHANGED (any interface on the machine changed:
        other tests make network namespaces) is loaded again; the page's script state is then new."""
        if "ERR_NETWORK_CHANGED" in self.page_text():
            with contextlib.suppress(Exception):
                self.driver.refresh()

    def page_text(self) -> str:
        with contextlib.suppress(Exception):
            return str(self.find("body").text)
        return ""

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def reset(self) -> None:
        """Forget every cookie (of any site: the page may be an error page) and leave it (between tests)."""
        with contextlib.suppress(Exception):
            self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        with contextlib.suppress(Exception):
            self.driver.delete_all_cookies()
        with contextlib.suppress(Exception):
            self.driver.get("about:blank")
