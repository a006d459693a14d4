"""Management over AMQP from pika (an independent client): the README's `manage` helper, word for
word, then what a client observes: answers with the HTTP API's status and JSON, changes made by
messages, errors answered rather than closing the channel, and authorisation as the connection's
user. Runs only against Warren (COMPAT_BROKER=warren): RabbitMQ has no such exchange."""

import json
import os
import time
import uuid

import pika
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("COMPAT_BROKER") != "warren",
                                reason="management over AMQP is Warren's own feature")


# --- the README's example (keep them the same) -------------------------------------------------
def manage(channel, method, path, body=None, timeout=10):
    """One management API call over AMQP: (status, JSON answer or None)."""
    request_id = str(uuid.uuid4())
    answers = []
    # Direct reply-to: consume from the pseudo-queue first, then publish with it as reply_to.
    tag = channel.basic_consume("amq.rabbitmq.reply-to", auto_ack=True,
                                on_message_callback=lambda _ch, _m, props, answer:
                                answers.append((props, answer)))
    channel.basic_publish(
        exchange="amq.warren.management",
        routing_key="",
        body=json.dumps({"method": method, "path": path, "body": body}),
        properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                        correlation_id=request_id))
    deadline = time.monotonic() + timeout
    while not answers and time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.5)
    channel.basic_cancel(tag)
    if not answers:
        raise TimeoutError("no answer")
    props, answer = answers[0]
    assert props.correlation_id == request_id
    return props.headers["status"], json.loads(answer) if answer else None
# -----------------------------------------------------------------------------------------------


def connect(user=None, password=None):
    params = pika.URLParameters(os.environ["AMQP_URL"])
    if user is not None:
        params.credentials = pika.PlainCredentials(user, password)
    return pika.BlockingConnection(params)


@pytest.fixture
def channel():
    conn = connect()
    yield conn.channel()
    conn.close()


def test_reads_and_writes_as_over_http(channel):
    status, overview = manage(channel, "GET", "/api/overview")
    assert status == 200 and "node" in overview
    vhost = f"mgmt-amqp-{uuid.uuid4().hex[:8]}"
    assert manage(channel, "PUT", f"/api/vhosts/{vhost}", {"description": "by pika"}) == (201, None)
    status, v = manage(channel, "GET", f"/api/vhosts/{vhost}")
    assert (status, v["description"]) == (200, "by pika")
    assert manage(channel, "DELETE", f"/api/vhosts/{vhost}") == (204, None)
    assert manage(channel, "GET", f"/api/vhosts/{vhost}")[0] == 404


def test_bad_requests_are_answered_and_the_channel_stays_open(channel):
    answers = []
    tag = channel.basic_consume("amq.rabbitmq.reply-to", auto_ack=True,
                                on_message_callback=lambda _ch, _m, props, body:
                                answers.append((props, body)))
    channel.basic_publish(exchange="amq.warren.management", routing_key="", body=b"{not json",
                          properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                                          correlation_id="bad"))
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        channel.connection.process_data_events(time_limit=0.5)
    channel.basic_cancel(tag)
    props, body = answers[0]
    assert props.correlation_id == "bad"
    assert props.headers["status"] == 400
    assert json.loads(body) == {"error": "bad_request", "reason": "not_json"}
    status, _ = manage(channel, "PATCH", "/api/overview")
    assert status == 400
    assert channel.is_open
    assert manage(channel, "GET", "/api/overview")[0] == 200


def test_requests_are_authorised_as_the_connections_user(channel):
    user = f"mgmt-amqp-{uuid.uuid4().hex[:8]}"
    assert manage(channel, "PUT", f"/api/users/{user}", {"password": "pp", "tags": ""})[0] == 201
    assert manage(channel, "PUT", f"/api/permissions/%2F/{user}",
                  {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    try:
        conn = connect(user, "pp")
        try:
            assert manage(conn.channel(), "GET", "/api/overview") == (
                401, {"error": "not_authorised", "reason": "Not management user"})
        finally:
            conn.close()
    finally:
        manage(channel, "DELETE", f"/api/users/{user}")
