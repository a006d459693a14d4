"""What the web-ui suite's tests share (conftest.py's fixtures and the tests import it): whether
the suite can run here, the browser on the UI (`Ui`), pika connection parameters, and the
management API for what a test sets up behind the page's back.

run.sh exports AMQP_URL and COMPAT_HTTP_URL (Warren's HTTP listener). Screenshots go to
target/web-ui-artifacts/ (or WEB_UI_ARTIFACTS).
"""

import base64
import json
import os
import pathlib
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

import pika

ROOT = pathlib.Path(__file__).resolve().parents[3]
ARTIFACTS = pathlib.Path(os.environ.get("WEB_UI_ARTIFACTS") or ROOT / "target" / "web-ui-artifacts")
# How long a condition on the page may take to hold: the page polls every 5 s.
WAIT = 15
# The laptop screen the UI is made for.
WINDOW = (1366, 768)
# Which browser: Debian's chromium (the default, as CI runs it) or, by hand, Firefox
# (WEB_UI_BROWSER=firefox: firefox-esr, with a geckodriver on PATH).
BROWSER = os.environ.get("WEB_UI_BROWSER", "chromium")


def missing_prerequisite():
    """Why the suite cannot run here, or None."""
    if os.environ.get("COMPAT_BROKER") != "warren":
        return "the web UI is Warren's own: run with --broker warren"
    if not os.environ.get("COMPAT_HTTP_URL"):
        return "COMPAT_HTTP_URL is not set (run.sh sets it when it starts the broker)"
    if BROWSER == "firefox":
        if not (shutil.which("firefox-esr") or shutil.which("firefox")):
            return "firefox is not installed (Debian: apt-get install firefox-esr)"
        if not shutil.which("geckodriver"):
            return "geckodriver is not on PATH (Debian has no package of it: cargo install geckodriver)"
        return None
    if not shutil.which("chromium"):
        return "chromium is not installed (Debian: apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (Debian: apt-get install chromium-driver)"
    return None


# The text of a column (by its header's label) in the row of a table that has a cell or a link
# reading a key: arguments (table selector, key, column label).
_ROW_CELL = """
const [css, key, column] = arguments;
for (const table of document.querySelectorAll(css)) {
  const headers = [...table.querySelectorAll('thead th')].map((th) => th.textContent.replace(/[\u25b2\u25bc]/g, '').trim());
  const i = headers.indexOf(column);
  if (i < 0) continue;
  for (const tr of table.querySelectorAll('tbody tr')) {
    const cells = [...tr.cells];
    const hit = cells.some((td) => td.textContent.trim() === key || [...td.querySelectorAll('a, button')].some((a) => a.textContent === key));
    if (hit && cells[i]) return cells[i].textContent.trim();
  }
}
return null;
"""


class Ui:
    """The browser on the UI, with what a test does there."""

    def __init__(self, driver, base_url):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.d = driver
        self.base = base_url
        # The page redraws what it polls: an element found may be gone a moment later.
        self.wait = WebDriverWait(driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

    # ------------------------------------------------------------------ navigation
    def open(self, route=""):
        """The page at `#/route` (a fresh load of the UI)."""
        self.d.get(f"{self.base}/#/{route}")

    def go(self, route):
        """A route of the UI, as a click on one of its links goes there."""
        self.d.execute_script("location.hash = arguments[0]", f"#/{route}")

    def login(self, user="guest", password="guest"):
        self.d.get(f"{self.base}/")
        self.d.execute_script("sessionStorage.clear()")
        self.d.get(f"{self.base}/#/")
        self.fill("#login", username=user, password=password)
        self.submit("#login")

    # ------------------------------------------------------------------ reading
    def find(self, css):
        from selenium.webdriver.common.by import By

        return self.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def text_of(self, css):
        return self.find(css).text

    def until_text(self, css, want, exact=False):
        """Waits until an element's text contains `want` (or is it, `exact`), and returns it."""
        from selenium.webdriver.common.by import By

        def holds(d):
            for el in d.find_elements(By.CSS_SELECTOR, css):
                text = el.text.strip()
                if (text == want) if exact else (want in text):
                    return text
            return False

        try:
            return self.wait.until(holds)
        except Exception:
            found = [el.text for el in self.d.find_elements(By.CSS_SELECTOR, css)]
            raise AssertionError(f"no {css} with text {want!r} within {WAIT} s; found {found!r}") from None

    def row(self, table_css, key, column):
        """The text of `column` (a header's label) in the row of a table that has a cell (or a
        link) reading `key`; None when there is none. Read in one script: the page redraws its
        tables as it polls."""
        return self.d.execute_script(_ROW_CELL, table_css, key, column)

    def until_cell(self, table_css, key, column, want):
        try:
            return self.wait.until(lambda d: self.row(table_css, key, column) == want)
        except Exception:
            seen = self.row(table_css, key, column)
            raise AssertionError(f"{column} of {key} never showed {want!r} within {WAIT} s (shows {seen!r})") from None

    # ------------------------------------------------------------------ acting
    def fill(self, form_css, **fields):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        form = self.find(form_css)
        for name, value in fields.items():
            el = form.find_element(By.NAME, name)
            if el.tag_name == "select":
                self.wait.until(lambda d: any(o.get_attribute("value") == value for o in Select(el).options))
                Select(el).select_by_value(value)
            elif el.get_attribute("type") == "checkbox":
                if el.is_selected() != bool(value):
                    el.click()
            else:
                el.clear()
                el.send_keys(value)

    def submit(self, form_css):
        from selenium.webdriver.common.by import By

        self.find(form_css).find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def status(self, form_css, want):
        """Waits until the line under a form says `want`; returns it."""
        return self.until_text(f"{form_css} .status", want)

    def click(self, css):
        """Clicks the element once it is shown and enabled; again if the page redrew it first."""
        from selenium.webdriver.common.by import By

        def attempt(d):
            el = d.find_element(By.CSS_SELECTOR, css)
            if not (el.is_displayed() and el.is_enabled()):
                return False
            el.click()
            return True

        self.wait.until(attempt)

    def accept_confirm(self):
        from selenium.webdriver.support import expected_conditions as EC

        self.wait.until(EC.alert_is_present()).accept()

    def open_foldout(self, title):
        from selenium.webdriver.common.by import By

        summary = self.wait.until(lambda d: next((s for s in d.find_elements(By.CSS_SELECTOR, "details > summary") if s.text.strip() == title), None))
        if summary.find_element(By.XPATH, "..").get_attribute("open") is None:
            summary.click()

    def screenshot(self, name):
        self.d.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def js_errors(self):
        """Script errors the browser logged since the last call (failed requests are not: the
        tests make some on purpose)."""
        if BROWSER == "firefox":
            return []  # geckodriver does not hand out the console
        return [e["message"] for e in self.d.get_log("browser") if "Uncaught" in e["message"] or "SyntaxError" in e["message"]]


def params(user=None, password=None, name=None):
    params = pika.URLParameters(os.environ["AMQP_URL"])
    if user is not None:
        params.credentials = pika.PlainCredentials(user, password)
    if name is not None:
        params.client_properties = {"connection_name": name}
    params.socket_timeout = 10
    params.stack_timeout = 10
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    return params


def api(method, path, body=None, auth=("guest", "guest")):
    """One management API call, as a script would make it (behind the page's back): (status,
    decoded answer or None)."""
    url = os.environ["COMPAT_HTTP_URL"].rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, (json.loads(raw) if raw else None)


def quote(part):
    return urllib.parse.quote(part, safe="")


def wait_until(what, check, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
