"""Debian's headless Chromium driven by selenium through Debian's chromium-driver, for the
web page's tests: waits that say what they waited for, the page's network requests, and
screenshots under tests/.artifacts/ for a person to look at."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

__all__ = ["Browser", "ARTIFACTS", "chromium_installed"]

ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "web"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists() and Path(DRIVER).exists()


class Browser:
    def __init__(self, downloads: Path) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", f"--user-data-dir={self.profile}",
                    "--no-first-run", "--disable-background-networking"):
            o.add_argument(arg)
        o.accept_insecure_certs = True      # the agent's self-signed certificate (HTTPS test)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        o.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                            "download.prompt_for_download": False})
        self.driver = webdriver.Chrome(service=Service(DRIVER), options=o)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.requests: list[str] = []
        self.console: list[dict] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def get(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        found = self.all(css)
        return found[0].text if found else ""

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
            except (StaleElementReferenceException, WebDriverException):
                value = None               # re-rendered meanwhile, or not there yet
            if value:
                return value
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                raise AssertionError(f"waited {timeout} s for {what}; the page says:\n"
                                     f"{self.text('body')[:2000]}\nconsole: {self.logs()[-10:]}")
            time.sleep(0.2)

    def wait_text(self, css: str, text: str, timeout: float = 30) -> None:
        self.wait(lambda: text in self.text(css), timeout, f"{text!r} in {css}")

    def click(self, css: str, timeout: float = 30) -> None:
        """Click what `css` finds, once it is there and enabled (rows re-render on events)."""
        def go() -> bool:
            el = self.find(css)
            if not el.is_displayed() or not el.is_enabled():
                return False
            el.click()
            return True
        self.wait(go, timeout, f"{css} to click")

    def screenshot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def logs(self) -> list[dict]:
        self.console.extend(self.driver.get_log("browser"))
        return self.console

    def requested(self) -> list[str]:
        """Every URL the page asked for so far (from Chromium's own network log)."""
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            elif msg["method"] == "Network.webSocketCreated":
                self.requests.append(msg["params"]["url"])
        return self.requests

    def throttle_uploads(self, bytes_per_s: int | None) -> None:
        """Slow what the page sends (an upload then takes long enough to watch and cancel)."""
        self.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1,
            "uploadThroughput": bytes_per_s if bytes_per_s else -1})
