"""Fixtures for the web-ui suite: a headless Chromium (Debian's `chromium`, driven through
`chromedriver` by selenium) on Warren's web UI, pika connections to the same Warren, unique names
and deletions after a test. A failed test leaves a screenshot of the page and its HTML in
target/web-ui-artifacts/ (webui.ARTIFACTS).
"""

import os
import pathlib
import shutil
import sys
import uuid

import pika
import pytest

# webui.py, beside this file, is imported by the tests as well.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from webui import ARTIFACTS, BROWSER, WINDOW, Ui, api, params  # noqa: E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Each phase's report on the test, for the failure screenshot below.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def base_url():
    return os.environ["COMPAT_HTTP_URL"].rstrip("/")


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        # As root in a container: no user namespace sandbox; a small /dev/shm.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        # Nothing but the page under test goes on the network.
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver given by path: selenium must not look for (download) one.
    service = Service(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def _firefox():
    from selenium import webdriver
    from selenium.webdriver.firefox.service import Service

    options = webdriver.FirefoxOptions()
    options.binary_location = shutil.which("firefox-esr") or shutil.which("firefox")
    for arg in ("-headless", f"--width={WINDOW[0]}", f"--height={WINDOW[1]}"):
        options.add_argument(arg)
    return webdriver.Firefox(service=Service(executable_path=shutil.which("geckodriver")), options=options)


@pytest.fixture(scope="session")
def driver(base_url):
    d = _firefox() if BROWSER == "firefox" else _chromium()
    d.set_page_load_timeout(30)
    # This run's screenshots only (a failure's from an earlier run would mislead).
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield d
    d.quit()


@pytest.fixture
def ui(driver, base_url, request):
    u = Ui(driver, base_url)
    u.js_errors()
    yield u
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        name = request.node.name
        u.screenshot(f"FAILED-{name}")
        (ARTIFACTS / f"FAILED-{name}.html").write_text(driver.page_source, encoding="utf-8")
    errors = u.js_errors()
    assert not errors, f"script errors in the page: {errors}"


@pytest.fixture
def connect():
    """Factory: connect(user=None, password=None, name=None) -> a pika BlockingConnection,
    closed after the test."""
    opened = []

    def open_one(user=None, password=None, name=None):
        conn = pika.BlockingConnection(params(user, password, name))
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        try:
            if conn.is_open:
                conn.close()
        except Exception:
            pass


@pytest.fixture
def unique():
    """Factory: unique(prefix) -> a name no other test or run uses."""
    return lambda prefix: f"webui-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cleanup():
    """Management API deletions run after the test, whatever happened: cleanup(path)."""
    paths = []
    yield paths.append
    for path in reversed(paths):
        api("DELETE", path)
