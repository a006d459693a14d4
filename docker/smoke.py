"""The client side of docker/test.sh (pika): `smoke.py HOST publish` sends 1000 persistent
messages with confirms to the durable queue docker.smoke; `smoke.py HOST check` reads them back
and fails unless all 1000 are there, in order. Waits up to 30 s for the broker to listen."""

import sys
import time

import pika

COUNT = 1000


def connect(host):
    deadline = time.time() + 30
    while True:
        try:
            return pika.BlockingConnection(pika.ConnectionParameters(host, 5672))
        except pika.exceptions.AMQPConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def publish(ch):
    ch.queue_declare("docker.smoke", durable=True)
    ch.confirm_delivery()
    for i in range(COUNT):
        ch.basic_publish("", "docker.smoke", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    print(f"published and confirmed {COUNT} persistent messages")


def check(ch):
    seen = []
    while True:
        method, _props, body = ch.basic_get("docker.smoke", auto_ack=True)
        if method is None:
            break
        seen.append(int(body))
    missing = sorted(set(range(COUNT)) - set(seen))
    assert seen == list(range(COUNT)), f"{len(seen)} messages back, first missing {missing[:5]}"
    print(f"all {COUNT} back, in order")


if __name__ == "__main__":
    host, step = sys.argv[1], sys.argv[2]
    conn = connect(host)
    {"publish": publish, "check": check}[step](conn.channel())
    conn.close()
