"""pika through a three-node Warren cluster: definitions made on one node are used on the others,
a queue lives on the node that declared it and serves clients of every node, and every message is
accounted for (published = consumed + still queued)."""

import time
import uuid

import pika


def connect(node):
    return pika.BlockingConnection(pika.URLParameters(node.url))


def wait_for(check, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def message_count(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def test_a_queue_on_one_node_serves_the_others(cluster):
    n1, n2, n3 = cluster
    queue = f"work-{uuid.uuid4().hex[:8]}"
    c1, c2, c3 = connect(n1), connect(n2), connect(n3)
    try:
        c1.channel().queue_declare(queue, durable=True)
        publisher = c2.channel()
        publisher.confirm_delivery()
        for i in range(300):
            publisher.basic_publish("", queue, f"job {i}".encode(),
                                    pika.BasicProperties(delivery_mode=2 if i % 2 else 1),
                                    mandatory=True)
        # Every node counts the same, the queue's own and the two others.
        for conn in (c1, c2, c3):
            assert message_count(conn.channel(), queue) == 300
        consumer = c3.channel()
        consumer.basic_qos(prefetch_count=50)
        got = []
        for method, _props, body in consumer.consume(queue, inactivity_timeout=5):
            if method is None:
                break
            got.append(body)
            consumer.basic_ack(method.delivery_tag)
            if len(got) == 300:
                break
        consumer.cancel()
        assert sorted(got) == sorted(f"job {i}".encode() for i in range(300))
        assert got[:3] == [b"job 0", b"job 1", b"job 2"], "in publish order"
        assert message_count(c1.channel(), queue) == 0
        c2.channel().queue_delete(queue)
    finally:
        for conn in (c1, c2, c3):
            conn.close()


def test_publish_through_an_exchange_declared_and_bound_elsewhere(cluster):
    n1, n2, n3 = cluster
    tag = uuid.uuid4().hex[:8]
    exchange, queues = f"news-{tag}", [f"reader-{tag}-{i}" for i in range(3)]
    conns = [connect(n) for n in cluster]
    try:
        conns[0].channel().exchange_declare(exchange, "fanout")
        # One reader queue on each node, each bound from another node.
        for i, conn in enumerate(conns):
            conn.channel().queue_declare(queues[i])
            conns[(i + 1) % 3].channel().queue_bind(queues[i], exchange)
        publisher = conns[1].channel()
        publisher.confirm_delivery()
        for i in range(40):
            publisher.basic_publish(exchange, "", f"n{i}".encode())
        for i, conn in enumerate(conns):
            ch = conns[(i + 2) % 3].channel()
            assert wait_for(lambda: message_count(ch, queues[i]) == 40, "fanned out to every node")
        purger = conns[0].channel()
        assert sum(purger.queue_purge(q).method.message_count for q in queues) == 120
        for i, conn in enumerate(conns):
            conn.channel().queue_delete(queues[i])
        conns[2].channel().exchange_delete(exchange)
    finally:
        for conn in conns:
            conn.close()


def test_rpc_across_three_nodes(cluster):
    """A server consumes a request queue homed on n2 from n1; a client on n3 sends requests
    with an exclusive reply queue of its own; every request is answered once."""
    n1, n2, n3 = cluster
    requests = f"rpc-{uuid.uuid4().hex[:8]}"
    server_conn, owner_conn, client_conn = connect(n1), connect(n2), connect(n3)
    try:
        owner_conn.channel().queue_declare(requests)
        client = client_conn.channel()
        reply_queue = client.queue_declare("", exclusive=True).method.queue
        server = server_conn.channel()
        for i in range(20):
            client.basic_publish("", requests, str(i).encode(),
                                 pika.BasicProperties(reply_to=reply_queue, correlation_id=str(i)))
        served = 0
        for method, props, body in server.consume(requests, inactivity_timeout=5):
            if method is None:
                break
            server.basic_publish("", props.reply_to, body * 2,
                                 pika.BasicProperties(correlation_id=props.correlation_id))
            server.basic_ack(method.delivery_tag)
            served += 1
            if served == 20:
                break
        server.cancel()
        answers = {}
        for method, props, body in client.consume(reply_queue, auto_ack=True,
                                                  inactivity_timeout=5):
            if method is None:
                break
            answers[props.correlation_id] = body
            if len(answers) == 20:
                break
        assert answers == {str(i): str(i).encode() * 2 for i in range(20)}
        owner_conn.channel().queue_delete(requests)
    finally:
        for conn in (server_conn, owner_conn, client_conn):
            conn.close()


def test_a_quorum_queue_serves_every_node_and_sends_returns_to_the_back(cluster):
    """A quorum queue declared on n1 (a Raft group on the three nodes): confirmed publishes
    through n2, every node counts them, a consumer on n3 rejects the first delivery with requeue
    and gets it again last, redelivered with x-delivery-count 1; all acked, every node counts 0."""
    n1, n2, n3 = cluster
    queue = f"quorum-{uuid.uuid4().hex[:8]}"
    c1, c2, c3 = connect(n1), connect(n2), connect(n3)
    try:
        c1.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        publisher = c2.channel()
        publisher.confirm_delivery()
        for i in range(100):
            publisher.basic_publish("", queue, f"job {i:03}".encode(),
                                    pika.BasicProperties(delivery_mode=2), mandatory=True)
        for conn in (c1, c2, c3):
            ch = conn.channel()
            wait_for(lambda: message_count(ch, queue) == 100, "every member has them")
        consumer = c3.channel()
        consumer.basic_qos(prefetch_count=10)
        got = []
        rejected = False
        for method, props, body in consumer.consume(queue, inactivity_timeout=5):
            if method is None:
                break
            if not rejected:
                consumer.basic_reject(method.delivery_tag, requeue=True)
                rejected = True
                continue
            got.append((body, method.redelivered, (props.headers or {}).get("x-delivery-count")))
            consumer.basic_ack(method.delivery_tag)
            if len(got) == 100:
                break
        consumer.cancel()
        assert [g[0] for g in got] == [f"job {i:03}".encode() for i in range(1, 100)] + [b"job 000"]
        assert got[-1][1:] == (True, 1)
        assert all(not redelivered for _, redelivered, _ in got[:-1])
        for conn in (c1, c2, c3):
            ch = conn.channel()
            wait_for(lambda: message_count(ch, queue) == 0, "acked everywhere")
        c2.channel().queue_delete(queue)
    finally:
        for conn in (c1, c2, c3):
            conn.close()
