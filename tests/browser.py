"""The portal in a real browser: Debian's chromium on the student's laptop (tests/laptop.py),
driven by selenium."""

import os
import time
from pathlib import Path

from tests import laptop

SCREENSHOTS = Path(os.environ.get("SWARMLAB_SCREENSHOTS", "/tmp/swarmlab-screenshots"))


def fetch(url: str) -> tuple[int, str]:
    return laptop.fetch(url)


def open_browser(directory: Path):
    """Debian's chromium on the student's laptop."""
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--window-size=1400,900",
                "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={directory / 'chromium'}",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    options.binary_location = laptop.chromium(directory)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))


def wait_for(browser, css: str, text: str, timeout: float = 120) -> str:
    from selenium.webdriver.common.by import By
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = browser.find_element(By.CSS_SELECTOR, css).text
        except Exception:
            seen = ""
        if text in seen:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{css} never showed {text!r}; it shows: {seen[-600:]!r}")


def type_in_terminal(browser, node: str, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    browser.find_element(By.CSS_SELECTOR, f".tab[data-node='{node}']").click()
    browser.find_element(By.CSS_SELECTOR, f"#term-{node} .xterm-screen").click()
    ActionChains(browser).send_keys(keys).perform()
