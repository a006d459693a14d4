"""Routing with pika (an independent codec): every exchange type, exchange-to-exchange bindings,
alternate exchanges, sender-selected distribution (CC/BCC) and transactions. Each test asserts
what a client observes: which queues got which bodies, returns, and close codes."""

import uuid

import pika
import pytest


def drain(channel, queue):
    """Every body in `queue`, in order, acked via basic.get."""
    bodies = []
    while True:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


@pytest.fixture
def exchange_name(channel):
    names = []

    def _new(suffix=""):
        name = f"compat-ex{suffix}-{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    yield _new
    for name in names:
        try:
            if channel.is_open:
                channel.exchange_delete(name)
        except pika.exceptions.ChannelClosedByBroker:
            pass


def make_queues(channel, new_queue_name, n):
    names = [new_queue_name(f"-{i}") for i in range(n)]
    for q in names:
        channel.queue_declare(q)
    return names


def closed_code(exc_info):
    return exc_info.value.args[0]


def test_fanout_reaches_every_bound_queue(channel, exchange_name, new_queue_name):
    ex = exchange_name()
    channel.exchange_declare(ex, "fanout")
    queues = make_queues(channel, new_queue_name, 3)
    for q in queues:
        channel.queue_bind(q, ex, routing_key="ignored")
    channel.basic_publish(ex, "any-key", b"hello")
    assert [drain(channel, q) for q in queues] == [[b"hello"]] * 3


@pytest.mark.parametrize(
    "pattern,key,matches",
    [
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "", True),
        ("*", "", False),
        ("#.c", "a.b.c", True),
        ("a.#.c", "a.c", True),
        ("a.*", "a.", True),
        ("*.*", "a", False),
        ("a.b", "a.b.c", False),
        ("lazy.#", "lazy.orange.male.rabbit", True),
    ],
)
def test_topic_matching(channel, exchange_name, queue_name, pattern, key, matches):
    ex = exchange_name()
    channel.exchange_declare(ex, "topic")
    channel.queue_declare(queue_name)
    channel.queue_bind(queue_name, ex, routing_key=pattern)
    channel.basic_publish(ex, key, b"m")
    assert drain(channel, queue_name) == ([b"m"] if matches else [])


@pytest.mark.parametrize(
    "binding,headers,matches",
    [
        ({"x-match": "all", "a": "1", "b": "2"}, {"a": "1", "b": "2", "c": "3"}, True),
        ({"x-match": "all", "a": "1", "b": "2"}, {"a": "1"}, False),
        ({"x-match": "any", "a": "1", "b": "2"}, {"b": "2"}, True),
        ({"x-match": "any", "a": "1", "b": "2"}, {"c": "2"}, False),
        ({"a": 5}, {"a": 5}, True),
        ({"a": 5}, {"a": "5"}, False),
        ({"x-match": "all"}, {}, True),
        ({"x-match": "any"}, {"a": "1"}, False),
    ],
)
def test_headers_matching(channel, exchange_name, queue_name, binding, headers, matches):
    ex = exchange_name()
    channel.exchange_declare(ex, "headers")
    channel.queue_declare(queue_name)
    channel.queue_bind(queue_name, ex, arguments=binding)
    channel.basic_publish(ex, "", b"h", pika.BasicProperties(headers=headers))
    assert drain(channel, queue_name) == ([b"h"] if matches else [])


def test_predeclared_exchanges_exist(channel):
    for name, kind in [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                       ("amq.headers", "headers"), ("amq.match", "headers")]:
        channel.exchange_declare(name, kind, passive=True)


def test_exchange_to_exchange_bindings_deliver_once_even_in_a_cycle(channel, exchange_name, new_queue_name):
    a, b = exchange_name("-a"), exchange_name("-b")
    channel.exchange_declare(a, "fanout")
    channel.exchange_declare(b, "fanout")
    channel.exchange_bind(destination=b, source=a)
    channel.exchange_bind(destination=a, source=b)  # a cycle
    qa, qb = make_queues(channel, new_queue_name, 2)
    channel.queue_bind(qa, a)
    channel.queue_bind(qb, b)
    channel.queue_bind(qb, a)  # reachable twice
    channel.basic_publish(a, "", b"x")
    assert drain(channel, qa) == [b"x"]
    assert drain(channel, qb) == [b"x"]
    channel.exchange_unbind(destination=b, source=a)
    channel.basic_publish(a, "", b"y")
    assert drain(channel, qa) == [b"y"]
    assert drain(channel, qb) == [b"y"]


def test_alternate_exchange_takes_unroutable_messages(connection, exchange_name, new_queue_name):
    channel = connection.channel()
    main, alt = exchange_name("-main"), exchange_name("-alt")
    channel.exchange_declare(alt, "fanout")
    channel.exchange_declare(main, "direct", arguments={"alternate-exchange": alt})
    routed, unrouted = make_queues(channel, new_queue_name, 2)
    channel.queue_bind(routed, main, routing_key="k")
    channel.queue_bind(unrouted, alt)
    channel.confirm_delivery()
    channel.basic_publish(main, "k", b"routed", mandatory=True)
    channel.basic_publish(main, "other", b"to-alt", mandatory=True)  # not returned: the AE routes it
    assert drain(channel, routed) == [b"routed"]
    assert drain(channel, unrouted) == [b"to-alt"]
    channel.queue_unbind(unrouted, alt)
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(main, "other", b"nowhere", mandatory=True)


def test_cc_and_bcc_add_routing_keys_and_bcc_is_not_delivered(channel, new_queue_name):
    q1, q2, q3 = make_queues(channel, new_queue_name, 3)
    props = pika.BasicProperties(headers={"CC": [q2], "BCC": [q3], "keep": "yes"})
    channel.basic_publish("", q1, b"cc", props)
    for q in (q1, q2, q3):
        method, got, body = channel.basic_get(q, auto_ack=True)
        assert body == b"cc"
        assert got.headers.get("keep") == "yes"
        assert got.headers.get("CC") == [q2]
        assert "BCC" not in got.headers


def test_tx_commit_and_rollback_of_publishes_and_acks(connection, queue_name):
    channel = connection.channel()
    channel.queue_declare(queue_name)
    channel.tx_select()
    channel.basic_publish("", queue_name, b"rolled-back")
    channel.tx_rollback()
    channel.basic_publish("", queue_name, b"committed")
    probe = connection.channel()
    assert probe.queue_declare(queue_name, passive=True).method.message_count == 0
    channel.tx_commit()
    assert probe.queue_declare(queue_name, passive=True).method.message_count == 1
    method, _, body = channel.basic_get(queue_name)
    assert body == b"committed"
    channel.basic_ack(method.delivery_tag)
    channel.tx_rollback()  # the ack is undone: the message stays unacked on this channel
    channel.basic_ack(method.delivery_tag)
    channel.tx_commit()
    channel.close()
    assert probe.queue_declare(queue_name, passive=True).method.message_count == 0


def test_tx_and_confirm_do_not_mix(connection):
    ch = connection.channel()
    ch.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.confirm_delivery()
    assert closed_code(e) == 406
    ch = connection.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.tx_select()
    assert closed_code(e) == 406
    ch = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.tx_commit()
    assert closed_code(e) == 406


def test_internal_exchange_refuses_publishes(connection, exchange_name):
    ch = connection.channel()
    ex = exchange_name()
    ch.exchange_declare(ex, "fanout", internal=True)
    ch.basic_publish(ex, "", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)  # any round trip surfaces the close
    assert closed_code(e) == 403


@pytest.mark.parametrize(
    "action,code",
    [
        (lambda ch, ex: ch.exchange_declare("amq.custom", "direct"), 403),
        (lambda ch, ex: ch.exchange_declare(ex, "direct", passive=True), 404),
        (lambda ch, ex: ch.exchange_delete("amq.direct"), 403),
        (lambda ch, ex: ch.queue_bind("no-such-queue-here", "amq.direct"), 404),
        (lambda ch, ex: ch.exchange_bind(destination="amq.fanout", source=ex), 404),
    ],
)
def test_exchange_soft_errors(connection, exchange_name, action, code):
    ch = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        action(ch, exchange_name())
    assert closed_code(e) == code
    assert connection.channel().is_open


def test_unknown_exchange_type_closes_the_connection(connect, exchange_name):
    conn = connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.exchange_declare(exchange_name(), "no-such-type")
    assert closed_code(e) == 503


def test_redeclare_inequivalent_and_delete_if_unused(connection, exchange_name, queue_name):
    ch = connection.channel()
    ex = exchange_name()
    ch.exchange_declare(ex, "direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(ex, "fanout")
    assert closed_code(e) == 406
    ch = connection.channel()
    ch.queue_declare(queue_name)
    ch.queue_bind(queue_name, ex, routing_key="k")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_delete(ex, if_unused=True)
    assert closed_code(e) == 406
    ch = connection.channel()
    ch.queue_unbind(queue_name, ex, routing_key="not-bound")  # a no-op, like RabbitMQ
    ch.exchange_delete(ex, if_unused=False)


def test_auto_delete_exchange_goes_with_its_last_binding(connection, exchange_name, queue_name):
    ch = connection.channel()
    ex = exchange_name()
    ch.exchange_declare(ex, "direct", auto_delete=True)
    ch.queue_declare(queue_name)
    ch.queue_bind(queue_name, ex, routing_key="k")
    ch.queue_unbind(queue_name, ex, routing_key="k")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(ex, "direct", passive=True)
    assert closed_code(e) == 404
