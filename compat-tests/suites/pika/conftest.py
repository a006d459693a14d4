"""Fixtures for the pika suite: connections, channels and unique, cleaned-up queue names.

The broker under test is named by the AMQP_URL environment variable (set by compat-tests/run.sh),
e.g. amqp://guest:guest@127.0.0.1:PORT/%2F.
"""

import os
import uuid

import pika
import pytest

# Bounds on how long one connection attempt may take, so a broker that accepts TCP connections but
# never completes the AMQP handshake fails the test instead of hanging it.
SOCKET_TIMEOUT = 10
STACK_TIMEOUT = 10
BLOCKED_CONNECTION_TIMEOUT = 30


@pytest.fixture(scope="session")
def amqp_url():
    url = os.environ.get("AMQP_URL")
    if not url:
        pytest.fail("AMQP_URL is not set; run the suite through compat-tests/run.sh", pytrace=False)
    return url


def _params(url):
    params = pika.URLParameters(url)
    params.socket_timeout = SOCKET_TIMEOUT
    params.stack_timeout = STACK_TIMEOUT
    params.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT
    params.connection_attempts = 1
    return params


@pytest.fixture(scope="session")
def broker_probe(amqp_url):
    """Open (and close) one connection before the first test. If that fails, the broker is not
    usable at all: every test then fails at once with that error, instead of each waiting out its
    own connection timeout."""
    try:
        pika.BlockingConnection(_params(amqp_url)).close()
    except Exception as e:
        return f"cannot open an AMQP connection to {amqp_url}: {e!r}"
    return None


@pytest.fixture
def connection_params(amqp_url, broker_probe):
    """Factory: connection_params() -> fresh pika.URLParameters for the broker under test."""
    if broker_probe:
        pytest.fail(broker_probe, pytrace=False)
    return lambda: _params(amqp_url)


def _close_quietly(conn):
    try:
        if conn.is_open:
            conn.close()
    except Exception:  # the test may already have broken it; closing is best effort
        pass


@pytest.fixture
def connect(connection_params):
    """Factory: connect() -> a new BlockingConnection, closed when the test ends."""
    opened = []

    def _connect():
        conn = pika.BlockingConnection(connection_params())
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        _close_quietly(conn)


@pytest.fixture
def connection(connect):
    return connect()


@pytest.fixture
def channel(connection):
    return connection.channel()


@pytest.fixture
def new_queue_name(request, connection_params):
    """Factory: new_queue_name() -> a queue name unique to this test. Every queue so named is
    deleted (if it exists) when the test ends."""
    names = []

    def _new(suffix=""):
        base = request.node.name.replace("[", "-").replace("]", "")
        name = f"compat-pika-{base}{suffix}-{uuid.uuid4().hex[:12]}"
        names.append(name)
        return name

    yield _new
    if not names:
        return
    try:
        conn = pika.BlockingConnection(connection_params())
    except Exception:
        return
    try:
        for name in names:
            try:
                ch = conn.channel()
                ch.queue_delete(name)
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        _close_quietly(conn)


@pytest.fixture
def queue_name(new_queue_name):
    """A fresh queue name for this test; the queue is deleted afterwards."""
    return new_queue_name()
