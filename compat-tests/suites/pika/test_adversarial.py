"""Consumers that go away badly, played by real pika processes: killed with SIGKILL while
deliveries are in flight, or frozen with SIGSTOP. As in RabbitMQ, every unacknowledged delivery
goes back to its queue however the consumer goes, and a frozen consumer is dropped once its
heartbeats stop. Messages are counted: published = ready again, each exactly once.
"""

import os
import signal
import subprocess
import sys
import time

import pika
import pytest

# A consumer without a prefetch limit: it reads deliveries (never acking them) and says "ready"
# once it has seen `take` of them.
CONSUMER = r"""
import sys
import pika

url, queue, take, heartbeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = pika.URLParameters(url)
params.heartbeat = heartbeat
conn = pika.BlockingConnection(params)
ch = conn.channel()
seen = 0

def on_message(channel, method, properties, body):
    global seen
    seen += 1
    if seen == take:
        print("ready", flush=True)

ch.basic_consume(queue, on_message, auto_ack=False)
ch.start_consuming()
"""

# Bound on waiting for the broker to hand back what a vanished consumer held.
SETTLE_TIMEOUT = 30.0


def fill(channel, queue, n, size):
    channel.queue_declare(queue)
    for i in range(n):
        channel.basic_publish("", queue, f"m{i:07d}-".encode().ljust(size, b"x"))
    wait_for(channel, queue, lambda ready, consumers: ready == n, 60.0)


def counts(channel, queue):
    ok = channel.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


def wait_for(channel, queue, done, timeout):
    deadline = time.monotonic() + timeout
    while True:
        ready, consumers = counts(channel, queue)
        if done(ready, consumers) or time.monotonic() > deadline:
            return ready, consumers
        time.sleep(0.05)


def drain_exactly(channel, queue, n):
    seen = set()
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        i = int(body[1:8])
        assert i not in seen, f"message {i} delivered twice"
        seen.add(i)
    assert seen == set(range(n)), f"{n - len(seen)} messages lost"


def start_consumer(amqp_url, queue, take, heartbeat):
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, amqp_url, queue, str(take), str(heartbeat)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"the consumer process did not get {take} deliveries (said {line!r})")
    return proc


@pytest.mark.parametrize("round_", range(3))
def test_killed_consumer_loses_nothing(amqp_url, channel, queue_name, round_):
    n = 5000
    fill(channel, queue_name, n, 256)
    proc = start_consumer(amqp_url, queue_name, take=50, heartbeat=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ready, consumers = wait_for(
        channel, queue_name, lambda r, c: r == n and c == 0, SETTLE_TIMEOUT
    )
    assert (ready, consumers) == (n, 0)
    drain_exactly(channel, queue_name, n)


def test_frozen_consumer_is_dropped_and_its_deliveries_requeued(amqp_url, channel, queue_name):
    # Enough to fill the socket buffers of a consumer that stops reading.
    n = 20000
    fill(channel, queue_name, n, 1024)
    proc = start_consumer(amqp_url, queue_name, take=10, heartbeat=2)
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        ready, consumers = wait_for(
            channel, queue_name, lambda r, c: r == n and c == 0, SETTLE_TIMEOUT
        )
        assert (ready, consumers) == (n, 0), "the frozen consumer still holds deliveries"
    finally:
        proc.kill()
        os.kill(proc.pid, signal.SIGCONT)
        proc.wait()
    drain_exactly(channel, queue_name, n)
