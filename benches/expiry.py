#!/usr/bin/env python3
"""Cost of expiring messages with mixed per-message TTLs (a benchmark, not a test).

For each N: publish N messages to a fresh queue, each with an `expiration` drawn uniformly from
1..MAX_TTL ms, no consumer; then wait until the queue is empty. Reported per N: the broker's CPU
time (user + system, from /proc/PID/stat) while publishing and while expiring, per message, and
the wall time from the last publish to an empty queue. If expiry costs O(1) (or O(log n)) per
message, the expiry CPU per message stays flat as N grows.

Expired messages only leave from the head of a queue (RabbitMQ does the same), so a message
behind a longer-lived one leaves when that one does; with TTLs up to MAX_TTL the queue is empty
about MAX_TTL ms after the last publish. At the end a consumer checks that nothing expired was
ever delivered: it attaches while messages with short and long TTLs are mixed in the queue.

    python3 benches/expiry.py --uri amqp://guest:guest@127.0.0.1:5672/%2F --pid PID [--sizes 10000,100000]

Needs pika (`pip install pika`). PID is the broker process (for RabbitMQ, the beam.smp VM).
"""

import argparse
import os
import random
import time

import pika

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ")".
    return (int(fields[11]) + int(fields[12])) / TICK


def count(ch, queue):
    return ch.queue_declare(queue=queue, passive=True).method.message_count


def run(uri, pid, n, max_ttl, rng):
    conn = pika.BlockingConnection(pika.URLParameters(uri))
    ch = conn.channel()
    queue = f"expiry-bench-{n}"
    ch.queue_delete(queue=queue)
    ch.queue_declare(queue=queue)
    props = [pika.BasicProperties(expiration=str(t)) for t in range(1, max_ttl + 1)]
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    for _ in range(n):
        ch.basic_publish("", queue, b"x" * 16, props[rng.randrange(max_ttl)])
    count(ch, queue)  # a round trip: every publish has reached the queue
    t1 = time.monotonic()
    cpu1 = cpu_seconds(pid)
    while count(ch, queue) > 0:
        time.sleep(0.01)
    t2 = time.monotonic()
    cpu2 = cpu_seconds(pid)
    ch.queue_delete(queue=queue)
    conn.close()
    return {
        "n": n,
        "publish_s": t1 - t0,
        "publish_cpu_us_per_msg": (cpu1 - cpu0) / n * 1e6,
        "drain_wall_ms": (t2 - t1) * 1000,
        "expiry_cpu_us_per_msg": (cpu2 - cpu1) / n * 1e6,
    }


def no_expired_deliveries(uri, rng):
    """Mixed short (50 ms) and long (60 s) TTLs; a consumer attaches after the short ones are
    due: it must get only long-lived messages."""
    conn = pika.BlockingConnection(pika.URLParameters(uri))
    ch = conn.channel()
    queue = "expiry-bench-mixed"
    ch.queue_delete(queue=queue)
    ch.queue_declare(queue=queue)
    expected = 0
    for i in range(10_000):
        short = rng.random() < 0.5
        ttl = "50" if short else "60000"
        expected += 0 if short else 1
        ch.basic_publish("", queue, b"short" if short else b"long", pika.BasicProperties(expiration=ttl))
    time.sleep(0.3)
    got = {"long": 0, "short": 0}
    for method, _props, body in ch.consume(queue, auto_ack=True, inactivity_timeout=1.0):
        if method is None:
            break
        got[body.decode()] += 1
    ch.cancel()
    ch.queue_delete(queue=queue)
    conn.close()
    return expected, got


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    ap.add_argument("--pid", type=int, required=True, help="broker process id")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--max-ttl", type=int, default=1000, help="largest expiration, ms")
    args = ap.parse_args()
    rng = random.Random(42)
    print(f"{'n':>9} {'publish s':>10} {'publish CPU µs/msg':>19} {'last publish -> empty ms':>25} {'expiry CPU µs/msg':>18}")
    for n in [int(s) for s in args.sizes.split(",")]:
        r = run(args.uri, args.pid, n, args.max_ttl, rng)
        print(f"{r['n']:>9} {r['publish_s']:>10.2f} {r['publish_cpu_us_per_msg']:>19.2f} "
              f"{r['drain_wall_ms']:>25.0f} {r['expiry_cpu_us_per_msg']:>18.3f}")
    expected, got = no_expired_deliveries(args.uri, rng)
    print(f"mixed 50 ms / 60 s TTLs: {got['long']} of {expected} long-lived delivered, "
          f"{got['short']} expired ones delivered (must be 0)")


if __name__ == "__main__":
    main()
