"""pika smoke test: the basic publish / consume / get / ack paths and a few error codes.

Each test uses its own queue (unique name, deleted afterwards), and every wait is bounded, so a
broken broker fails the test instead of hanging the run.
"""

import threading
import time
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError

# Bound on any "wait until the broker has delivered everything" loop.
DELIVERY_TIMEOUT = 30.0
# Bound on publishing the 10,000 confirmed messages of the two-consumer test.
PUBLISH_TIMEOUT = 45.0


def passive_count(channel, queue):
    """(message_count, consumer_count) of an existing queue, by passive declare."""
    ok = channel.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


def publish_confirmed(channel, queue, bodies, **props):
    """Publish each body to the default exchange with routing key `queue`; the channel must be in
    confirm mode, so each publish returns only once the broker has confirmed it."""
    for body in bodies:
        channel.basic_publish("", queue, body, pika.BasicProperties(**props))


# --------------------------------------------------------------------------- (a) two consumers


class Consumer(threading.Thread):
    """A consumer on its own connection (pika connections are not thread-safe): prefetch 10,
    manual ack of every delivery, until told to stop."""

    def __init__(self, name, params, queue, tally):
        super().__init__(name=name, daemon=True)
        self.params = params
        self.queue = queue
        self.tally = tally
        self.ready = threading.Event()
        self.stop_event = threading.Event()
        self.received = []  # (message_id, body, redelivered)
        self.error = None

    def on_message(self, ch, method, props, body):
        self.received.append((props.message_id, body, method.redelivered))
        ch.basic_ack(method.delivery_tag)
        self.tally.add()

    def run(self):
        conn = None
        try:
            conn = pika.BlockingConnection(self.params)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=10)
            ch.basic_consume(self.queue, self.on_message, auto_ack=False)
            self.ready.set()
            while not self.stop_event.is_set():
                conn.process_data_events(time_limit=0.05)
        except BaseException as e:  # reported to the test thread
            self.error = e
        finally:
            self.ready.set()
            if conn is not None:
                try:
                    if conn.is_open:
                        conn.close()
                except Exception as e:
                    self.error = self.error or e


class Tally:
    def __init__(self, target):
        self.target = target
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def add(self):
        with self.lock:
            self.count += 1
            if self.count >= self.target:
                self.done.set()


@pytest.mark.timeout(120)
def test_confirmed_publish_two_consumers_exactly_once(connect, connection_params, queue_name):
    n = 10_000
    pub = connect().channel()
    pub.queue_declare(queue_name)
    pub.confirm_delivery()

    tally = Tally(n)
    consumers = [Consumer(f"consumer-{i}", connection_params(), queue_name, tally) for i in range(2)]
    for c in consumers:
        c.start()
    try:
        for c in consumers:
            assert c.ready.wait(20), f"{c.name} did not start consuming"
            assert c.error is None, f"{c.name} failed: {c.error!r}"
        assert passive_count(pub, queue_name)[1] == 2

        started = time.monotonic()
        for i in range(n):
            # Each publish waits for its confirm: n round trips.
            pub.basic_publish(
                "",
                queue_name,
                f"body-{i}".encode(),
                pika.BasicProperties(message_id=str(i)),
            )
            if i % 500 == 499 and time.monotonic() - started > PUBLISH_TIMEOUT:
                pytest.fail(
                    f"only {i + 1} of {n} confirmed publishes within {PUBLISH_TIMEOUT} s"
                    f" (RabbitMQ takes a few seconds; Nagle's algorithm left on is one cause)"
                )
        published = time.monotonic()

        if not tally.done.wait(DELIVERY_TIMEOUT):
            errors = [c.error for c in consumers if c.error]
            pytest.fail(
                f"only {tally.count} of {n} messages delivered within {DELIVERY_TIMEOUT} s"
                f" (consumer errors: {errors!r})"
            )
        # Give any stray duplicate a moment to show up before stopping.
        time.sleep(0.3)
    finally:
        for c in consumers:
            c.stop_event.set()
        for c in consumers:
            c.join(15)
    for c in consumers:
        assert not c.is_alive(), f"{c.name} did not stop"
        assert c.error is None, f"{c.name} failed: {c.error!r}"

    got = [m for c in consumers for m in c.received]
    ids = [m[0] for m in got]
    assert len(ids) == n, f"{len(ids)} deliveries for {n} messages"
    assert len(set(ids)) == n, "some message was delivered more than once"
    assert set(ids) == {str(i) for i in range(n)}
    for message_id, body, redelivered in got:
        assert body == f"body-{message_id}".encode()
        assert not redelivered
    for c in consumers:
        assert c.received, f"{c.name} got no messages"
    assert passive_count(pub, queue_name)[0] == 0
    print(
        f"published {n} confirmed in {published - started:.2f}s; split"
        f" {[len(c.received) for c in consumers]}"
    )


# --------------------------------------------------------------------------- (b) basic.get


def test_basic_get_in_order_then_empty(channel, queue_name):
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    publish_confirmed(channel, queue_name, [b"m0", b"m1", b"m2"])

    tags = []
    for i in range(3):
        method, props, body = channel.basic_get(queue_name, auto_ack=False)
        assert method is not None, f"get {i} came back empty"
        assert body == f"m{i}".encode()
        assert method.message_count == 2 - i
        assert method.redelivered is False
        assert method.exchange == ""
        assert method.routing_key == queue_name
        tags.append(method.delivery_tag)
        channel.basic_ack(method.delivery_tag)
    assert tags == sorted(tags) and len(set(tags)) == 3

    method, props, body = channel.basic_get(queue_name, auto_ack=False)
    assert method is None and props is None and body is None
    assert passive_count(channel, queue_name) == (0, 0)


def test_basic_get_auto_ack(channel, queue_name):
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    publish_confirmed(channel, queue_name, [b"one", b"two"])
    method, _, body = channel.basic_get(queue_name, auto_ack=True)
    assert body == b"one" and method.message_count == 1
    method, _, body = channel.basic_get(queue_name, auto_ack=True)
    assert body == b"two" and method.message_count == 0
    assert channel.basic_get(queue_name)[0] is None


# --------------------------------------------------------------------------- (c) nack / reject


def test_nack_requeue_redelivers(channel, queue_name):
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    publish_confirmed(channel, queue_name, [b"again"])

    method, _, body = channel.basic_get(queue_name, auto_ack=False)
    assert body == b"again" and method.redelivered is False
    channel.basic_nack(method.delivery_tag, requeue=True)

    method, _, body = channel.basic_get(queue_name, auto_ack=False)
    assert method is not None, "nacked message did not come back"
    assert body == b"again"
    assert method.redelivered is True
    channel.basic_ack(method.delivery_tag)
    assert passive_count(channel, queue_name)[0] == 0


def test_nack_requeue_redelivers_to_consumer(channel, queue_name):
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    publish_confirmed(channel, queue_name, [b"first"])
    channel.basic_qos(prefetch_count=1)

    seen = []
    for method, _, body in channel.consume(queue_name, auto_ack=False, inactivity_timeout=5):
        assert method is not None, f"no delivery within 5 s (seen so far: {seen})"
        seen.append((body, method.redelivered))
        if len(seen) == 1:
            channel.basic_nack(method.delivery_tag, requeue=True)
        else:
            channel.basic_ack(method.delivery_tag)
            break
    channel.cancel()
    assert seen == [(b"first", False), (b"first", True)]


def test_reject_without_requeue_drops(channel, queue_name):
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    publish_confirmed(channel, queue_name, [b"doomed"])

    method, _, body = channel.basic_get(queue_name, auto_ack=False)
    assert body == b"doomed"
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert channel.basic_get(queue_name, auto_ack=False)[0] is None
    assert passive_count(channel, queue_name)[0] == 0


def test_prefetch_limits_unacked_deliveries(channel, queue_name):
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    publish_confirmed(channel, queue_name, [f"p{i}".encode() for i in range(25)])
    channel.basic_qos(prefetch_count=10)

    got = []
    channel.basic_consume(queue_name, lambda ch, m, p, b: got.append((m.delivery_tag, b)))

    def settle(expect):
        deadline = time.monotonic() + 5
        while len(got) < expect and time.monotonic() < deadline:
            channel.connection.process_data_events(time_limit=0.05)
        # and a little longer, to see any delivery beyond the limit
        channel.connection.process_data_events(time_limit=0.3)

    settle(10)
    assert [b for _, b in got] == [f"p{i}".encode() for i in range(10)]
    channel.basic_ack(got[-1][0], multiple=True)  # frees all 10 slots
    settle(20)
    assert [b for _, b in got] == [f"p{i}".encode() for i in range(20)]
    channel.basic_ack(got[-1][0], multiple=True)
    settle(25)
    assert [b for _, b in got] == [f"p{i}".encode() for i in range(25)]
    channel.basic_ack(got[-1][0], multiple=True)
    assert passive_count(channel, queue_name) == (0, 1)


# --------------------------------------------------------------------------- routing, properties


def test_direct_exchange_routing_and_properties(channel, queue_name):
    exchange = f"compat-pika-x-{uuid.uuid4().hex[:12]}"
    channel.exchange_declare(exchange, exchange_type="direct")
    try:
        channel.queue_declare(queue_name)
        channel.queue_bind(queue_name, exchange, routing_key="rk")
        channel.confirm_delivery()
        props = pika.BasicProperties(
            content_type="application/json",
            content_encoding="utf-8",
            headers={"x-str": "v", "x-int": 42, "x-bool": True, "x-list": [1, "two"]},
            delivery_mode=2,
            priority=3,
            correlation_id="corr-1",
            reply_to="reply-q",
            expiration="60000",
            message_id="mid-1",
            timestamp=1_700_000_000,
            type="kind",
            user_id="guest",
            app_id="compat",
        )
        channel.basic_publish(exchange, "rk", b'{"a": 1}', props)
        channel.basic_publish(exchange, "other-key", b"nowhere")  # routed to no queue, dropped

        method, got, body = channel.basic_get(queue_name, auto_ack=True)
        assert body == b'{"a": 1}'
        assert method.exchange == exchange and method.routing_key == "rk"
        assert method.message_count == 0
        for field in (
            "content_type",
            "content_encoding",
            "delivery_mode",
            "priority",
            "correlation_id",
            "reply_to",
            "expiration",
            "message_id",
            "timestamp",
            "type",
            "user_id",
            "app_id",
        ):
            assert getattr(got, field) == getattr(props, field), field
        assert got.headers == {"x-str": "v", "x-int": 42, "x-bool": True, "x-list": [1, "two"]}
    finally:
        channel.exchange_delete(exchange)


def test_purge_reports_count(channel, queue_name):
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    publish_confirmed(channel, queue_name, [b"a", b"b", b"c", b"d"])
    assert channel.queue_purge(queue_name).method.message_count == 4
    assert passive_count(channel, queue_name)[0] == 0


def test_mandatory_unroutable_is_returned(channel, queue_name):
    channel.confirm_delivery()
    missing = f"compat-pika-nowhere-{uuid.uuid4().hex[:12]}"
    with pytest.raises(UnroutableError) as info:
        channel.basic_publish("", missing, b"lost?", mandatory=True)
    [returned] = info.value.messages
    assert returned.method.reply_code == 312  # NO_ROUTE
    assert returned.method.routing_key == missing
    assert returned.body == b"lost?"
    # The channel stays usable.
    channel.queue_declare(queue_name)
    channel.basic_publish("", queue_name, b"fine", mandatory=True)
    assert channel.basic_get(queue_name, auto_ack=True)[2] == b"fine"


# --------------------------------------------------------------------------- (d) error codes


def test_passive_declare_missing_queue_404_then_connection_still_works(connection, queue_name):
    ch = connection.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(f"compat-pika-missing-{uuid.uuid4().hex[:12]}", passive=True)
    assert info.value.reply_code == 404
    assert info.value.reply_text.startswith("NOT_FOUND")
    assert ch.is_closed
    assert connection.is_open

    ch2 = connection.channel()
    ch2.queue_declare(queue_name)
    ch2.confirm_delivery()
    ch2.basic_publish("", queue_name, b"still alive")
    assert ch2.basic_get(queue_name, auto_ack=True)[2] == b"still alive"


def test_publish_to_missing_exchange_404(connection):
    ch = connection.channel()
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_publish(f"compat-pika-nox-{uuid.uuid4().hex[:12]}", "rk", b"x")
    assert info.value.reply_code == 404
    assert connection.is_open
    connection.channel().close()


def test_redeclare_with_different_properties_406(connection, queue_name):
    ch = connection.channel()
    ch.queue_declare(queue_name, durable=False)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(queue_name, durable=True)
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith("PRECONDITION_FAILED")
    assert connection.is_open
    ok = connection.channel().queue_declare(queue_name, passive=True).method
    assert ok.queue == queue_name
