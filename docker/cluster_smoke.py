"""The compose cluster from the host: a quorum queue and a classic queue declared through the
first node, messages published with confirms through each node, read back through another.
    python docker/cluster_smoke.py HOST PORT1,PORT2,PORT3 HTTP_PORT1
"""
import base64
import json
import sys
import time
import urllib.request

import pika

host, ports, http = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], int(sys.argv[3])


def connect(port, deadline=time.time() + 120):
    while True:
        try:
            return pika.BlockingConnection(pika.ConnectionParameters(host, port, heartbeat=10))
        except pika.exceptions.AMQPConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


deadline = time.time() + 120
for q, args in (("smoke-quorum", {"x-queue-type": "quorum"}), ("smoke-classic", {})):
    while True:  # the first declare waits for the cluster to form
        try:
            c = connect(ports[0])
            c.channel().queue_declare(q, durable=True, arguments=args)
            c.close()
            break
        except pika.exceptions.AMQPError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    for i, port in enumerate(ports):
        c = connect(port)
        ch = c.channel()
        ch.confirm_delivery()
        ch.basic_publish("", q, f"{q} via {i + 1}".encode(), pika.BasicProperties(delivery_mode=2))
        c.close()
    got = []
    for i, port in enumerate(ports):
        c = connect(ports[(i + 1) % 3])
        ch = c.channel()
        m, _, body = ch.basic_get(q, auto_ack=True)
        assert m is not None, f"{q}: nothing through node {(i + 1) % 3 + 1}"
        got.append(body.decode())
        c.close()
    assert sorted(got) == sorted(f"{q} via {i + 1}" for i in range(3)), got
    print(f"{q}: published through every node, read back through every node")
req = urllib.request.Request(f"http://{host}:{http}/api/queues/%2F/smoke-quorum")
req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
info = json.loads(urllib.request.urlopen(req, timeout=10).read())
assert sorted(info["members"]) == ["warren1", "warren2", "warren3"], info
print(f"smoke-quorum: leader {info['leader']}, members {info['members']}, online {info['online']}")
