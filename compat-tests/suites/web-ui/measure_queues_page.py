"""How long the web UI's queue list takes to show its first page with many queues: a measurement,
not a test (pytest does not collect it).

    target/compat-venv/bin/python compat-tests/suites/web-ui/measure_queues_page.py \\
        --amqp amqp://guest:guest@127.0.0.1:5672/%2F --http http://127.0.0.1:15672 --queues 10000

Declares that many queues (`measure-NNNNN`, kept; a later run reuses them) over AMQP, then, in
headless Chromium, loads the UI at #/queues five times, each from scratch (a new page load with
the session's credentials already stored), and prints the time from the start of navigation to
the first page of the table drawn in the page, and the API's answer times for one page and for
the whole listing.
"""

import argparse
import shutil
import statistics
import sys
import time
import urllib.parse
import urllib.request
import base64

import pika

# Resolves once the queue table has rows: the time since navigation started (ms).
_FIRST_PAGE_DRAWN = """
const done = arguments[arguments.length - 1];
function check() {
  const rows = document.querySelectorAll('#queues tbody tr td a');
  if (rows.length) done(performance.now());
  else requestAnimationFrame(check);
}
check();
"""


def declare(amqp_url, count):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    started = time.monotonic()
    for i in range(count):
        ch.queue_declare(f"measure-{i:05d}", durable=False)
    # A few with messages, so that the page has figures to show.
    for i in range(0, count, max(1, count // 20)):
        ch.basic_publish("", f"measure-{i:05d}", b"x")
    conn.close()
    return time.monotonic() - started


def api_time(http, path, auth):
    req = urllib.request.Request(http + path)
    req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    started = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as r:
        size = len(r.read())
    return (time.monotonic() - started) * 1000, size


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--amqp", required=True)
    p.add_argument("--http", required=True)
    p.add_argument("--queues", type=int, default=10000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--user", default="guest:guest")
    a = p.parse_args()
    http = a.http.rstrip("/")

    took = declare(a.amqp, a.queues)
    print(f"declared {a.queues} queues over AMQP in {took:.1f} s")
    for path in ["/api/queues?page=1&page_size=50", "/api/queues", "/api/vhosts", "/api/overview"]:
        ms, size = api_time(http, path, a.user)
        print(f"GET {path}: {ms:.0f} ms, {size} bytes")

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--window-size=1366,768", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    d.set_script_timeout(60)
    try:
        user, password = a.user.split(":", 1)
        d.get(http + "/")
        d.execute_script(
            "sessionStorage.setItem('warren.session', JSON.stringify({name: arguments[0], tags: ['administrator'],"
            " auth: 'Basic ' + btoa(arguments[0] + ':' + arguments[1])}))",
            user,
            password,
        )
        times = []
        for _ in range(a.runs):
            d.get("about:blank")
            d.get(http + "/#/queues")
            times.append(d.execute_async_script(_FIRST_PAGE_DRAWN))
        summary = d.find_element("css selector", "#queues .summary").text
        print(f"first page of #/queues drawn after (ms, from navigation start): {', '.join(f'{t:.0f}' for t in times)}")
        print(f"median {statistics.median(times):.0f} ms; the list says: {summary}")
    finally:
        d.quit()


if __name__ == "__main__":
    sys.exit(main())
