"""aio-pika (asyncio) as applications use it: work queues with acks and prefetch, RPC with
reply-to and correlation ids (a named reply queue and direct reply-to), pub/sub through fanout
and topic exchanges, publisher confirms and returns, consumer cancel notification, and errors
that close a channel but not the connection. Each test runs its own event loop (no plugin)."""

import asyncio
import os
import uuid

import aio_pika
import pytest

TIMEOUT = 10


def url():
    u = os.environ.get("AMQP_URL")
    if not u:
        pytest.fail("AMQP_URL is not set; run the suite through compat-tests/run.sh", pytrace=False)
    return u


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 3))


def name(tag):
    return f"aiopika-{tag}-{uuid.uuid4().hex[:8]}"


async def take(queue, n, ack=True):
    """The first n messages a consumer receives (bodies), acking them."""
    got = []
    async with queue.iterator() as it:
        async for m in it:
            got.append(m.body)
            if ack:
                await m.ack()
            if len(got) == n:
                break
    return got


def test_work_queue_with_prefetch_delivers_each_message_once():
    async def main():
        conn = await aio_pika.connect_robust(url())
        async with conn:
            pub = await conn.channel()
            q_name = name("work")
            await pub.declare_queue(q_name, auto_delete=True)
            workers = []
            seen = []
            for w in range(2):
                ch = await conn.channel()
                await ch.set_qos(prefetch_count=5)
                q = await ch.declare_queue(q_name, auto_delete=True)

                async def on_message(m, w=w):
                    async with m.process():
                        seen.append((w, int(m.body)))

                workers.append(await q.consume(on_message))
            for i in range(200):
                await pub.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=q_name)
            for _ in range(100):
                if len(seen) >= 200:
                    break
                await asyncio.sleep(0.05)
            assert sorted(i for _, i in seen) == list(range(200)), "each message exactly once"
            assert {w for w, _ in seen} == {0, 1}, "both workers got work"
    run(main())


def test_unacked_messages_go_back_when_a_worker_channel_closes():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(name("requeue"), auto_delete=False)
            for b in (b"a", b"b"):
                await ch.default_exchange.publish(aio_pika.Message(b), routing_key=q.name)
            worker = await conn.channel()
            await worker.set_qos(prefetch_count=2)
            wq = await worker.get_queue(q.name)
            assert await take(wq, 2, ack=False) == [b"a", b"b"]
            await worker.close()
            again = await q.get(timeout=5)
            assert again.body == b"a" and again.redelivered
            await again.ack()
            await q.delete(if_unused=False, if_empty=False)
    run(main())


def test_rpc_with_a_reply_queue_and_correlation_ids():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            server_ch = await conn.channel()
            rpc_q = await server_ch.declare_queue(name("rpc"), auto_delete=True)

            async def serve(m):
                async with m.process():
                    await server_ch.default_exchange.publish(
                        aio_pika.Message(m.body.upper(), correlation_id=m.correlation_id),
                        routing_key=m.reply_to)

            await rpc_q.consume(serve)
            client = await conn.channel()
            replies = await client.declare_queue(exclusive=True)
            futures = {}

            async def on_reply(m):
                async with m.process():
                    futures.pop(m.correlation_id).set_result(m.body)

            await replies.consume(on_reply)
            loop = asyncio.get_running_loop()
            calls = []
            for word in (b"one", b"two", b"three"):
                cid = uuid.uuid4().hex
                futures[cid] = loop.create_future()
                calls.append(futures[cid])
                await client.default_exchange.publish(
                    aio_pika.Message(word, correlation_id=cid, reply_to=replies.name), routing_key=rpc_q.name)
            assert await asyncio.gather(*calls) == [b"ONE", b"TWO", b"THREE"]
    run(main())


def test_rpc_with_direct_reply_to():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            server_ch = await conn.channel()
            rpc_q = await server_ch.declare_queue(name("drt"), auto_delete=True)
            seen_reply_to = []

            async def serve(m):
                async with m.process():
                    seen_reply_to.append(m.reply_to)
                    await server_ch.default_exchange.publish(
                        aio_pika.Message(b"pong", correlation_id=m.correlation_id), routing_key=m.reply_to)

            await rpc_q.consume(serve)
            client = await conn.channel()
            pseudo = await client.get_queue("amq.rabbitmq.reply-to", ensure=False)
            got = asyncio.get_running_loop().create_future()

            async def on_reply(m):
                got.set_result((m.body, m.correlation_id))

            await pseudo.consume(on_reply, no_ack=True)
            await client.default_exchange.publish(
                aio_pika.Message(b"ping", correlation_id="c1", reply_to="amq.rabbitmq.reply-to"),
                routing_key=rpc_q.name)
            assert await got == (b"pong", "c1")
            assert seen_reply_to[0].startswith("amq.rabbitmq.reply-to.")
    run(main())


def test_pub_sub_fanout_and_topic():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            ch = await conn.channel()
            fan = await ch.declare_exchange(name("fan"), aio_pika.ExchangeType.FANOUT, auto_delete=True)
            subs = []
            for _ in range(3):
                q = await ch.declare_queue(exclusive=True)
                await q.bind(fan)
                subs.append(q)
            await fan.publish(aio_pika.Message(b"news"), routing_key="")
            for q in subs:
                assert (await q.get(timeout=5)).body == b"news"
            top = await ch.declare_exchange(name("top"), aio_pika.ExchangeType.TOPIC, auto_delete=True)
            errors = await ch.declare_queue(exclusive=True)
            await errors.bind(top, "*.error")
            everything = await ch.declare_queue(exclusive=True)
            await everything.bind(top, "#")
            for key in ("app.error", "app.info", "db.error.disk"):
                await top.publish(aio_pika.Message(key.encode()), routing_key=key)
            assert await take(errors, 1) == [b"app.error"]
            assert sorted(await take(everything, 3)) == [b"app.error", b"app.info", b"db.error.disk"]
            assert await errors.get(fail=False, timeout=1) is None
    run(main())


def test_confirms_and_mandatory_returns():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
            q = await ch.declare_queue(name("confirm"), auto_delete=True)
            for i in range(50):
                confirm = await ch.default_exchange.publish(
                    aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=q.name)
                assert confirm is not None
            assert (await ch.declare_queue(q.name, passive=True)).declaration_result.message_count == 50
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await ch.default_exchange.publish(aio_pika.Message(b"lost"), routing_key=name("nowhere"),
                                                  mandatory=True)
    run(main())


def test_consumer_hears_when_its_queue_is_deleted():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(name("cancel"))
            cancelled = asyncio.get_running_loop().create_future()
            tag = await q.consume(lambda m: None)

            def on_cancel(frame):
                if not cancelled.done():
                    cancelled.set_result(frame.consumer_tag)

            underlay = await ch.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(on_cancel)
            other = await conn.channel()
            await other.queue_delete(q.name)
            assert await asyncio.wait_for(cancelled, 5) == tag
            assert not ch.is_closed
    run(main())


def test_nack_reject_and_get():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(name("nack"), auto_delete=False)
            for b in (b"x", b"y"):
                await ch.default_exchange.publish(aio_pika.Message(b), routing_key=q.name)
            m = await q.get(timeout=5)
            await m.nack(requeue=True)
            m = await q.get(timeout=5)
            assert (m.body, m.redelivered) == (b"x", True)
            await m.reject(requeue=False)
            m = await q.get(timeout=5)
            assert m.body == b"y"
            await m.ack()
            assert await q.get(fail=False, timeout=1) is None
            await q.delete()
    run(main())


def test_errors_close_the_channel_not_the_connection():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            ch = await conn.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await ch.declare_queue(name("missing"), passive=True)
            ch2 = await conn.channel()
            q = await ch2.declare_queue(name("equiv"), auto_delete=True)
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await ch2.declare_queue(q.name, durable=True)
            ch3 = await conn.channel()
            assert (await ch3.declare_queue(exclusive=True)).name
    run(main())


def test_properties_round_trip():
    async def main():
        conn = await aio_pika.connect(url())
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(exclusive=True)
            headers = {"s": "text", "i": 42, "neg": -7, "f": 1.5, "b": True, "l": [1, "two"], "t": {"k": "v"}}
            await ch.default_exchange.publish(aio_pika.Message(
                b"body", headers=headers, content_type="application/json", content_encoding="utf-8",
                correlation_id="corr", message_id="mid", app_id="app", type="kind", priority=3,
                expiration=60, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=q.name)
            m = await q.get(timeout=5)
            assert m.body == b"body"
            assert (m.content_type, m.content_encoding, m.correlation_id, m.message_id, m.app_id, m.type,
                    m.priority) == ("application/json", "utf-8", "corr", "mid", "app", "kind", 3)
            assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert m.headers["s"] == "text" and m.headers["i"] == 42 and m.headers["neg"] == -7
            assert m.headers["b"] is True and m.headers["f"] == 1.5
            assert list(m.headers["l"]) == [1, "two"] and dict(m.headers["t"]) == {"k": "v"}
    run(main())
