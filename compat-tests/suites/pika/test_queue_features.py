"""Queue features with pika: TTL, dead-lettering (with x-death), length limits and overflow,
priorities, single active consumer, consumer priorities and argument validation — RabbitMQ's
semantics, checked as a client sees them."""

import time

import pika
import pytest


def drain(channel, queue):
    out = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body, props))


def bodies(channel, queue):
    return [b for b, _ in drain(channel, queue)]


def wait_for(predicate, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def pump(connection, done, timeout=3.0):
    """Processes events until `done()` (pika returns after the first batch of events)."""
    deadline = time.time() + timeout
    while not done() and time.time() < deadline:
        connection.process_data_events(time_limit=0.1)
    return done()


def count(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def test_queue_ttl_expires_messages(channel, queue_name):
    channel.queue_declare(queue_name, arguments={"x-message-ttl": 200})
    channel.basic_publish("", queue_name, b"old")
    time.sleep(0.4)
    channel.basic_publish("", queue_name, b"new")
    assert bodies(channel, queue_name) == [b"new"]


def test_per_message_ttl_and_lower_of_the_two_wins(channel, queue_name):
    channel.queue_declare(queue_name, arguments={"x-message-ttl": 60000})
    channel.basic_publish("", queue_name, b"short", pika.BasicProperties(expiration="100"))
    channel.basic_publish("", queue_name, b"long", pika.BasicProperties(expiration="60000"))
    time.sleep(0.3)
    assert bodies(channel, queue_name) == [b"long"]


def test_expired_messages_are_dead_lettered_with_x_death(channel, new_queue_name):
    work, dead = new_queue_name("-work"), new_queue_name("-dead")
    channel.queue_declare(dead)
    channel.queue_declare(work, arguments={
        "x-message-ttl": 100,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead,
    })
    channel.basic_publish("", work, b"late", pika.BasicProperties(headers={"h": "v"}))
    assert wait_for(lambda: count(channel, dead) == 1)
    [(body, props)] = drain(channel, dead)
    assert body == b"late"
    assert props.headers["h"] == "v"
    death = props.headers["x-death"][0]
    assert death["reason"] == "expired"
    assert death["queue"] == work
    assert death["count"] == 1
    assert death["exchange"] == ""
    assert death["routing-keys"] == [work]
    assert props.headers["x-first-death-reason"] == "expired"
    assert props.headers["x-first-death-queue"] == work


def test_rejected_messages_are_dead_lettered_and_requeued_ones_are_not(channel, new_queue_name):
    work, dead = new_queue_name("-work"), new_queue_name("-dead")
    channel.queue_declare(dead)
    channel.queue_declare(work, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    for b in (b"a", b"b", b"c"):
        channel.basic_publish("", work, b)
    m1 = channel.basic_get(work)[0]
    channel.basic_reject(m1.delivery_tag, requeue=False)
    m2 = channel.basic_get(work)[0]
    channel.basic_nack(m2.delivery_tag, requeue=True)
    m3 = channel.basic_get(work)[0]  # b again, redelivered
    assert m3.redelivered
    channel.basic_nack(m3.delivery_tag, multiple=False, requeue=False)
    assert wait_for(lambda: count(channel, dead) == 2)
    got = drain(channel, dead)
    assert [b for b, _ in got] == [b"a", b"b"]
    assert all(p.headers["x-death"][0]["reason"] == "rejected" for _, p in got)
    assert bodies(channel, work) == [b"c"]


def test_max_length_drops_from_the_head(channel, queue_name):
    channel.queue_declare(queue_name, arguments={"x-max-length": 2})
    for b in (b"1", b"2", b"3", b"4"):
        channel.basic_publish("", queue_name, b)
    assert bodies(channel, queue_name) == [b"3", b"4"]


def test_max_length_bytes(channel, queue_name):
    channel.queue_declare(queue_name, arguments={"x-max-length-bytes": 10})
    for b in (b"aaaa", b"bbbb", b"cccc"):
        channel.basic_publish("", queue_name, b)
    assert bodies(channel, queue_name) == [b"bbbb", b"cccc"]


def test_reject_publish_nacks_confirming_publishers(connection, queue_name):
    ch = connection.channel()
    ch.queue_declare(queue_name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", queue_name, b"fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", queue_name, b"refused")
    assert bodies(ch, queue_name) == [b"fits"]


def test_maxlen_drop_head_dead_letters(channel, new_queue_name):
    work, dead = new_queue_name("-work"), new_queue_name("-dead")
    channel.queue_declare(dead)
    channel.queue_declare(work, arguments={"x-max-length": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    channel.basic_publish("", work, b"first")
    channel.basic_publish("", work, b"second")
    assert wait_for(lambda: count(channel, dead) == 1)
    [(body, props)] = drain(channel, dead)
    assert body == b"first" and props.headers["x-death"][0]["reason"] == "maxlen"


def test_priorities_higher_first_fifo_within_a_level(channel, queue_name):
    channel.queue_declare(queue_name, arguments={"x-max-priority": 10})
    for body, prio in [(b"low1", 1), (b"high1", 9), (b"none", None), (b"high2", 9), (b"low2", 1), (b"over", 50)]:
        props = pika.BasicProperties(priority=prio) if prio is not None else None
        channel.basic_publish("", queue_name, body, props)
    assert bodies(channel, queue_name) == [b"over", b"high1", b"high2", b"low1", b"low2", b"none"]


def test_single_active_consumer_gets_everything_until_it_leaves(connection, queue_name):
    ch_a, ch_b = connection.channel(), connection.channel()
    ch_a.queue_declare(queue_name, arguments={"x-single-active-consumer": True})
    got = {"a": [], "b": []}
    tag_a = ch_a.basic_consume(queue_name, lambda c, m, p, b: got["a"].append(b), auto_ack=True)
    ch_b.basic_consume(queue_name, lambda c, m, p, b: got["b"].append(b), auto_ack=True)
    for i in range(6):
        ch_a.basic_publish("", queue_name, b"m%d" % i)
    assert pump(connection, lambda: len(got["a"]) == 6)
    connection.process_data_events(time_limit=0.2)
    assert got["b"] == []
    ch_a.basic_cancel(tag_a)
    ch_b.basic_publish("", queue_name, b"after")
    assert pump(connection, lambda: got["b"] == [b"after"])


def test_consumer_priority_serves_the_higher_one_first(connection, queue_name):
    ch = connection.channel()
    ch.queue_declare(queue_name)
    got = {"low": [], "high": []}
    ch.basic_consume(queue_name, lambda c, m, p, b: got["low"].append(b), auto_ack=True, arguments={"x-priority": 1})
    ch.basic_consume(queue_name, lambda c, m, p, b: got["high"].append(b), auto_ack=True, arguments={"x-priority": 10})
    for i in range(5):
        ch.basic_publish("", queue_name, b"m%d" % i)
    assert pump(connection, lambda: len(got["high"]) + len(got["low"]) == 5)
    assert len(got["high"]) == 5 and got["low"] == []


@pytest.mark.parametrize("args", [
    {"x-max-length": -1},
    {"x-max-length": "ten"},
    {"x-message-ttl": -5},
    {"x-max-priority": 300},
    {"x-overflow": "sometimes"},
    {"x-dead-letter-routing-key": "k"},
    {"x-expires": 0},
])
def test_invalid_arguments_are_refused_with_406(connection, queue_name, args):
    ch = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue_name, arguments=args)
    assert e.value.args[0] == 406
    assert "invalid arg" in e.value.args[1]


def test_unknown_x_arguments_are_accepted(channel, queue_name):
    channel.queue_declare(queue_name, arguments={"x-whatever": "kept"})


def test_x_expires_deletes_an_unused_queue(connection, queue_name):
    ch = connection.channel()
    ch.queue_declare(queue_name, arguments={"x-expires": 300})
    time.sleep(0.8)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue_name, passive=True)
    assert e.value.args[0] == 404


def test_direct_reply_to_round_trip(connect, queue_name):
    server = connect().channel()
    server.queue_declare(queue_name)
    client_conn = connect()
    client = client_conn.channel()
    replies = []
    client.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((b, p.correlation_id)), auto_ack=True)
    client.basic_publish("", queue_name, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="42"))
    method, props, body = None, None, None
    deadline = time.time() + 5
    while method is None and time.time() < deadline:
        method, props, body = server.basic_get(queue_name, auto_ack=True)
    assert body == b"ping"
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    server.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id=props.correlation_id))
    assert pump(client_conn, lambda: replies == [(b"pong", "42")])


def test_direct_reply_to_rules(connect):
    conn = connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("", "anything", b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
        ch.queue_declare("", exclusive=True)
    assert e.value.args[0] == 406
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False)
    assert e.value.args[0] == 406
