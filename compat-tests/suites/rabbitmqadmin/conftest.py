"""Fixtures for the rabbitmqadmin suite: RabbitMQ's management CLI (RABBITMQADMIN, fetched by
run-suite.sh) run as a subprocess against the management API at COMPAT_HTTP_URL, as guest, with
names unique to each test (deleted afterwards)."""

import json
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, unquote

import pytest

# One run of the tool may take this long; more means the broker stopped answering.
TOOL_TIMEOUT = 20


class Admin:
    def __init__(self, tool, host, port, user, password):
        self.base = [sys.executable, tool, "-H", host, "-P", str(port), "-u", user, "-p", password]

    def run(self, *args, vhost=None, timeout=TOOL_TIMEOUT):
        """`rabbitmqadmin [-V vhost] args...` (the tool's default vhost for declares is `/`): the
        CompletedProcess (text)."""
        argv = self.base + (["-V", vhost] if vhost else []) + [str(a) for a in args]
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, check=False)

    def ok(self, *args, vhost=None):
        """A run that must succeed: its stdout."""
        p = self.run(*args, vhost=vhost)
        assert p.returncode == 0, f"rabbitmqadmin {args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    def json(self, *args, vhost=None):
        """`-f raw_json` output, parsed."""
        return json.loads(self.ok("-f", "raw_json", *args, vhost=vhost))


@pytest.fixture(scope="session")
def admin():
    tool = os.environ.get("RABBITMQADMIN")
    if not tool:
        pytest.fail("RABBITMQADMIN is not set; run the suite through compat-tests/run.sh", pytrace=False)
    http = os.environ.get("COMPAT_HTTP_URL")
    if not http:
        pytest.skip("COMPAT_HTTP_URL is not set (a broker given as a URI: its HTTP port is unknown)")
    u = urlsplit(http)
    amqp = urlsplit(os.environ.get("AMQP_URL", "amqp://guest:guest@localhost/"))
    return Admin(tool, u.hostname or "127.0.0.1", u.port or 15672,
                 unquote(amqp.username or "guest"), unquote(amqp.password or "guest"))


@pytest.fixture
def name(admin):
    """A factory of unique names; queues and exchanges so named are deleted after the test."""
    made = []

    def make(tag):
        n = f"rmqadmin-{tag}-{uuid.uuid4().hex[:8]}"
        made.append(n)
        return n

    yield make
    for n in made:
        admin.run("delete", "queue", f"name={n}")
        admin.run("delete", "exchange", f"name={n}")
