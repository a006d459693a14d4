"""Fixtures for the rabbitmq-c suite: rabbitmq-c's command-line tools (Debian's amqp-tools:
amqp-declare-queue, amqp-publish, amqp-consume, amqp-get, amqp-delete-queue) run as subprocesses
against the broker named by AMQP_URL. pika (an independent client) sets up and inspects state
the tools cannot show, e.g. message properties and consumer counts.
"""

import os
import shutil
import subprocess
import uuid

import pika
import pytest

TOOLS = ("amqp-declare-queue", "amqp-publish", "amqp-consume", "amqp-get", "amqp-delete-queue")
# One tool run may take this long; more means the broker stopped answering.
TOOL_TIMEOUT = 20


@pytest.fixture(scope="session")
def amqp_url():
    url = os.environ.get("AMQP_URL")
    if not url:
        pytest.fail("AMQP_URL is not set; run the suite through compat-tests/run.sh", pytrace=False)
    return url


@pytest.fixture(scope="session", autouse=True)
def tools_installed():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"rabbitmq-c tools not installed: {' '.join(missing)} (apt-get install amqp-tools)", pytrace=False)


class Cli:
    def __init__(self, url):
        self.url = url

    def run(self, tool, *args, input=None, url=True, timeout=TOOL_TIMEOUT):
        """Run `tool [-u AMQP_URL] args...`; returns CompletedProcess with bytes stdout/stderr."""
        argv = [tool] + (["-u", self.url] if url else []) + [str(a) for a in args]
        return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)

    def ok(self, tool, *args, input=None):
        """Run a tool that must succeed (exit 0, nothing on stderr); returns its stdout (bytes)."""
        p = self.run(tool, *args, input=input)
        assert (p.returncode, p.stderr) == (0, b""), f"{tool} {args}: exit {p.returncode}, stderr {p.stderr!r}"
        return p.stdout

    def popen(self, tool, *args):
        argv = [tool, "-u", self.url] + [str(a) for a in args]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def cli(amqp_url):
    procs = []
    c = Cli(amqp_url)
    real_popen = c.popen

    def popen(*a):
        p = real_popen(*a)
        procs.append(p)
        return p

    c.popen = popen
    yield c
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        p.stdout.close()
        p.stderr.close()


def _pika_params(url):
    params = pika.URLParameters(url)
    params.socket_timeout = 10
    params.stack_timeout = 10
    params.connection_attempts = 1
    return params


@pytest.fixture
def pika_channel(amqp_url):
    conn = pika.BlockingConnection(_pika_params(amqp_url))
    yield conn.channel()
    if conn.is_open:
        conn.close()


@pytest.fixture
def new_name(request, amqp_url):
    """Factory: new_name() -> a queue/exchange name unique to this test; queues and exchanges so
    named are deleted (if they exist) when the test ends."""
    names = []

    def _new(suffix=""):
        base = request.node.name.replace("[", "-").replace("]", "")
        name = f"compat-rmqc-{base}{suffix}-{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    yield _new
    if not names:
        return
    conn = pika.BlockingConnection(_pika_params(amqp_url))
    try:
        for name in names:
            for delete in ("queue_delete", "exchange_delete"):
                try:
                    ch = conn.channel()
                    getattr(ch, delete)(name)
                    ch.close()
                except pika.exceptions.ChannelClosedByBroker:
                    pass
    finally:
        if conn.is_open:
            conn.close()


@pytest.fixture
def queue(new_name, cli):
    """A fresh queue, declared with amqp-declare-queue."""
    name = new_name()
    assert cli.ok("amqp-declare-queue", "-q", name) == name.encode() + b"\n"
    return name

