"""Headless Chromium for browser tests: selenium driving Debian's chromium through chromedriver.

Installed by ``scripts/ensure-deps.sh --with-browser`` (packages ``chromium`` and
``chromium-driver``: /usr/bin/chromium, /usr/bin/chromedriver) and ``--with-python`` (selenium,
pinned in requirements.txt). Selenium Manager is never used (it would try to download drivers):
the driver path is always given.

    from browser import headless_chromium, wait_title

    with headless_chromium() as driver:
        driver.get("http://127.0.0.1:9001/page")
        wait_title(driver, "ready", timeout=10)
        driver.save_screenshot("/tmp/page.png")

The browser runs with a fresh, temporary profile (``--user-data-dir``, removed afterwards) and
flags for this machine: as root (``--no-sandbox``), no GPU, no network besides what the page
asks for (``--disable-background-networking`` etc.: the machine's network is closed, and
Chromium's own background connections would fail noisily), ``/tmp`` instead of ``/dev/shm``.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = os.environ.get("LAINLET_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LAINLET_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def check_installed():
    """Raise a RuntimeError that says what to install if Chromium or chromedriver is missing."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise RuntimeError(
                f"{path} not found: run `scripts/ensure-deps.sh --with-browser` "
                "(apt packages chromium and chromium-driver)"
            )


@contextlib.contextmanager
def headless_chromium(window_size=(1024, 768), extra_flags=()):
    """Yield a selenium Chrome driver for a fresh headless Chromium; quit it and delete its
    profile afterwards."""
    check_installed()
    profile = tempfile.mkdtemp(prefix="lainlet-test-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, *extra_flags]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
    service = Service(executable_path=CHROMEDRIVER, log_output=subprocess.DEVNULL)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=service)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(cond, timeout, what="condition"):
    """Poll ``cond()`` every 50 ms until it returns something truthy (returned) or ``timeout``
    seconds pass (TimeoutError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def wait_title(driver, title, timeout=10):
    """Wait until the page's ``document.title`` equals ``title``; TimeoutError with the last
    title otherwise."""
    try:
        wait_until(lambda: driver.title == title, timeout, f"title {title!r}")
    except TimeoutError as e:
        raise TimeoutError(f"{e} (last title {driver.title!r})") from None
