"""Scenarios: basic.get / consume / ack / nack / reject / recover / qos / cancel, redelivery."""

from harness import scenario


@scenario
def get_message_counts_and_tags(ctx):
    q = ctx.queue("q")
    ctx.rec("empty", ctx.get(q))
    ctx.seed(q, ["a", "b", "c"])
    for i in range(3):
        ctx.rec(f"get {i}", ctx.get(q, no_ack=False))
    ctx.rec("get when all are unacked", ctx.get(q, no_ack=False))
    ctx.ch.basic_ack(3, multiple=True)
    ctx.rec("counts after ack", ctx.declare_ok(q))


@scenario
def nack_requeue_then_redelivered(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c"])
    first = ctx.get(q, no_ack=False)
    ctx.rec("first", first)
    ctx.nack(first["delivery_tag"], requeue=True)
    ctx.rec("all, after the nack", ctx.drain_get(q))


@scenario
def reject_requeue_puts_back_in_place(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c", "d"])
    got = [ctx.get(q, no_ack=False) for _ in range(3)]
    ctx.ch.basic_reject(got[1]["delivery_tag"], requeue=True)   # b
    ctx.ch.basic_reject(got[0]["delivery_tag"], requeue=True)   # a
    ctx.rec("after rejecting b then a", ctx.drain_get(q))
    ctx.ch.basic_ack(got[2]["delivery_tag"])


@scenario
def reject_and_nack_without_requeue_drop(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c"])
    got = [ctx.get(q, no_ack=False) for _ in range(3)]
    ctx.ch.basic_reject(got[0]["delivery_tag"], requeue=False)
    ctx.nack(got[2]["delivery_tag"], multiple=True, requeue=False)
    ctx.rec("sync", ctx.sync())
    ctx.rec("left", ctx.declare_ok(q))


@scenario
def nack_multiple_requeue_order(ctx):
    q = ctx.queue("q")
    ctx.seed(q, [str(i) for i in range(5)])
    got = [ctx.get(q, no_ack=False) for _ in range(4)]
    ctx.ch.basic_ack(got[1]["delivery_tag"])
    ctx.nack(got[3]["delivery_tag"], multiple=True, requeue=True)
    ctx.rec("after nack multiple", ctx.drain_get(q))


@scenario
def ack_multiple_and_ack_zero(ctx):
    q = ctx.queue("q")
    ctx.seed(q, [str(i) for i in range(6)])
    for _ in range(6):
        ctx.get(q, no_ack=False)
    ctx.ch.basic_ack(2, multiple=True)
    ctx.rec("ack 2 multiple", ctx.sync())
    ctx.ch.basic_ack(0, multiple=True)          # 0 + multiple: everything outstanding
    ctx.rec("ack 0 multiple", ctx.sync())
    ctx.ch.close()
    ctx.rec("requeued after close", ctx.drain_get(q))


@scenario
def ack_unknown_tag(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a"])
    ctx.get(q, no_ack=False)
    ctx.ch.basic_ack(5)
    ctx.rec("ack unknown", ctx.sync())
    ctx.rec("message back after the channel error", ctx.drain_get(q))


@scenario
def ack_twice(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a"])
    m = ctx.get(q, no_ack=False)
    ctx.ch.basic_ack(m["delivery_tag"])
    ctx.ch.basic_ack(m["delivery_tag"])
    ctx.rec("second ack", ctx.sync())


@scenario
def ack_of_a_no_ack_delivery(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a"])
    m = ctx.get(q, no_ack=True)
    ctx.ch.basic_ack(m["delivery_tag"])
    ctx.rec("ack", ctx.sync())


@scenario
def reject_and_nack_unknown_tag(ctx):
    ctx.ch.basic_reject(9, requeue=True)
    ctx.rec("reject unknown", ctx.sync())
    ctx.nack(9, requeue=True)
    ctx.rec("nack unknown", ctx.sync())
    ctx.nack(0, multiple=True, requeue=True)
    ctx.rec("nack 0 multiple with nothing outstanding", ctx.sync())


@scenario
def channel_close_requeues_unacked_in_order(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c", "d"])
    ch2 = ctx.channel()
    for _ in range(3):
        ctx.get(q, ch=ch2, no_ack=False)
    ch2.basic_ack(2)
    ch2.close()
    ctx.rec("after close", ctx.drain_get(q))


@scenario
def connection_close_requeues_unacked(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b"])
    other = ctx.connect()
    ch2 = ctx.channel(other)
    _tag, got = ctx.consume(q, ch=ch2)
    ctx.wait(lambda: len(got) == 2, conn=other)
    ctx.rec("delivered", [m for m, _ in got])
    other.close()
    ctx.rec("after the consumer's connection closed", ctx.drain_get(q))


@scenario
def consume_deliveries(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c"])
    tag, got = ctx.consume(q)
    ctx.rec("consumer tag", tag)
    ctx.wait(lambda: len(got) == 3)
    ctx.rec("deliveries", [m for m, _ in got])
    ctx.ch.basic_ack(3, multiple=True)
    ctx.rec("cancel", ctx.ch.basic_cancel(tag))
    ctx.rec("after", ctx.declare_ok(q))


@scenario
def consume_with_own_tag_and_duplicate_tag(ctx):
    q = ctx.queue("q")
    ctx.rec("first", ctx.attempt(ctx.ch.basic_consume, q, consumer_tag="diff-tag", callback=lambda m: None))
    ctx.rec("same tag, other channel", ctx.attempt(ctx.channel().basic_consume, q, consumer_tag="diff-tag",
                                                   callback=lambda m: None))
    ctx.rec("same tag, same channel", ctx.attempt(ctx.ch.basic_consume, q, consumer_tag="diff-tag",
                                                  callback=lambda m: None))


@scenario
def exclusive_consumer(ctx):
    q = ctx.queue("q")
    ctx.rec("exclusive", ctx.attempt(lambda: ctx.consume(q, exclusive=True)[0]))
    ctx.rec("second consumer", ctx.attempt(lambda: ctx.consume(q, ch=ctx.channel())[0]))
    q2 = ctx.queue("q2")
    ctx.consume(q2)
    ctx.rec("exclusive while another consumes", ctx.attempt(lambda: ctx.consume(q2, ch=ctx.channel(), exclusive=True)[0]))


@scenario
def consume_from_missing_queue(ctx):
    ctx.rec("consume", ctx.attempt(lambda: ctx.consume(ctx.name("missing"))[0]))
    ctx.rec("get", ctx.attempt(lambda: ctx.get(ctx.name("missing2"))))


@scenario
def cancel_unknown_and_ack_after_cancel(ctx):
    ctx.rec("cancel unknown", ctx.attempt(ctx.ch.basic_cancel, "diff-no-such-tag"))
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b"])
    tag, got = ctx.consume(q)
    ctx.wait(lambda: len(got) == 2)
    ctx.ch.basic_cancel(tag)
    ctx.ch.basic_ack(1)
    ctx.rec("ack after cancel", ctx.sync())
    ctx.ch.basic_reject(2, requeue=True)
    ctx.rec("left", ctx.drain_get(q))


@scenario
def prefetch_count(ctx):
    q = ctx.queue("q")
    ctx.seed(q, [str(i) for i in range(6)])
    ctx.ch.basic_qos(0, 2, False)
    _tag, got = ctx.consume(q)
    ctx.wait(lambda: len(got) >= 2)
    ctx.settle()
    ctx.rec("with prefetch 2", [m["body"] for m, _ in got])
    ctx.ch.basic_ack(got[0][0]["delivery_tag"])
    ctx.wait(lambda: len(got) >= 3)
    ctx.settle()
    ctx.rec("after one ack", [m["body"] for m, _ in got])
    ctx.ch.basic_ack(3, multiple=True)
    ctx.wait(lambda: len(got) >= 5)
    ctx.settle()
    ctx.rec("after ack multiple", [m["body"] for m, _ in got])


@scenario
def prefetch_per_consumer_and_global(ctx):
    qa, qb = ctx.queue("qa"), ctx.queue("qb")
    ctx.seed(qa, [f"a{i}" for i in range(3)])
    ctx.seed(qb, [f"b{i}" for i in range(3)])
    ch = ctx.channel()
    ch.basic_qos(0, 1, False)           # RabbitMQ: per consumer
    _t1, ga = ctx.consume(qa, ch=ch)
    _t2, gb = ctx.consume(qb, ch=ch)
    ctx.wait(lambda: len(ga) + len(gb) >= 2)
    ctx.settle()
    ctx.rec("prefetch 1 per consumer", sorted(m["body"] for m, _ in ga + gb))
    ch.close()
    ch = ctx.channel()
    ch.basic_qos(0, 1, True)            # RabbitMQ: shared by the channel's consumers
    _t1, ga = ctx.consume(qa, ch=ch)
    _t2, gb = ctx.consume(qb, ch=ch)
    ctx.wait(lambda: len(ga) + len(gb) >= 1)
    ctx.settle()
    ctx.rec("prefetch 1 global: deliveries", len(ga) + len(gb))


@scenario
def round_robin_between_consumers(ctx):
    q = ctx.queue("q")
    ch1, ch2 = ctx.channel(), ctx.channel()
    _t1, g1 = ctx.consume(q, ch=ch1, no_ack=True)
    _t2, g2 = ctx.consume(q, ch=ch2, no_ack=True)
    ctx.seed(q, [str(i) for i in range(10)])
    ctx.wait(lambda: len(g1) + len(g2) == 10)
    ctx.rec("consumer 1", [m["body"] for m, _ in g1])
    ctx.rec("consumer 2", [m["body"] for m, _ in g2])


@scenario
def no_ack_consumer(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c"])
    ctx.ch.basic_qos(0, 1, False)  # prefetch does not limit no-ack consumers
    _tag, got = ctx.consume(q, no_ack=True)
    ctx.wait(lambda: len(got) == 3)
    ctx.rec("deliveries", [m for m, _ in got])
    ctx.rec("left", ctx.declare_ok(q))


@scenario
def recover_requeue(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b"])
    _tag, got = ctx.consume(q)
    ctx.wait(lambda: len(got) == 2)
    ctx.ch.basic_ack(1)
    ctx.ch.basic_recover(requeue=True)
    ctx.wait(lambda: len(got) == 3)
    ctx.settle()
    ctx.rec("deliveries", [m for m, _ in got])


@scenario
def server_cancels_consumer_when_queue_deleted(ctx):
    q = ctx.queue("q")
    cancelled = []
    ctx.ch.basic_consume(q, consumer_tag="diff-cancelled", callback=lambda m: None,
                         on_cancel=lambda tag: cancelled.append(tag))
    ctx.channel().queue_delete(q)
    ctx.wait(lambda: cancelled)
    ctx.rec("basic.cancel from the server", cancelled)
    ctx.rec("channel still open", ctx.sync())


@scenario
def delivery_tags_shared_by_get_and_consume(ctx):
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    ctx.seed(q1, ["g1", "g2"])
    ctx.seed(q2, ["c1", "c2"])
    ctx.rec("get", ctx.get(q1, no_ack=False))
    _tag, got = ctx.consume(q2)
    ctx.wait(lambda: len(got) == 2)
    ctx.rec("consumed", [m for m, _ in got])
    ctx.rec("get again", ctx.get(q1, no_ack=False))
    ctx.ch.basic_ack(0, multiple=True)
    ctx.rec("acked all", ctx.sync())


@scenario
def redelivered_to_a_new_consumer(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b"])
    ch1 = ctx.channel()
    _t, got1 = ctx.consume(q, ch=ch1)
    ctx.wait(lambda: len(got1) == 2)
    ch1.close()
    _t, got2 = ctx.consume(q, ch=ctx.channel())
    ctx.wait(lambda: len(got2) == 2)
    ctx.rec("second consumer", [m for m, _ in got2])


@scenario
def messages_published_while_consuming(ctx):
    q = ctx.queue("q")
    tag, got = ctx.consume(q, no_ack=True)
    ctx.seed(q, ["a", "b"])
    ctx.wait(lambda: len(got) == 2)
    ctx.ch.basic_cancel(tag)
    ctx.seed(q, ["c"])
    ctx.settle()
    ctx.rec("delivered", [m["body"] for m, _ in got])
    ctx.rec("left after cancel", ctx.bodies(q))


@scenario
def global_prefetch_holds_back_no_ack_consumers_too(ctx):
    # Java client's QosTests.noAckObeysLimit: with the channel's limit used up by an unacked
    # delivery, a no-ack consumer on another queue of the channel gets nothing until the ack.
    ch = ctx.channel()
    ch.basic_qos(0, 1, True)
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    _, got1 = ctx.consume(q1, ch=ch)
    ctx.seed(q1, ["a1"])
    ctx.wait(lambda: got1, conn=ch.connection)
    _, got2 = ctx.consume(q2, ch=ch, no_ack=True)
    ctx.seed(q2, ["b1"])
    ctx.settle(conn=ch.connection)
    ctx.rec("no-ack consumer while the limit is used up", [m["body"] for m, _ in got2])
    ch.basic_ack(got1[0][1].delivery_tag)
    ctx.wait(lambda: got2, conn=ch.connection)
    ctx.rec("after the ack", [m["body"] for m, _ in got2])


@scenario
def global_prefetch_is_shared_fairly_between_queues(ctx):
    # Java client's QosTests.fairness: prefetch 1 (global) over three queues of 100 messages;
    # after 99 acks every queue has had a fair share (RabbitMQ: about a third each).
    ch = ctx.channel()
    ch.basic_qos(0, 1, True)
    queues = [ctx.queue(f"q{i}") for i in range(3)]
    for q in queues:
        ctx.seed(q, [f"{q}-{i}" for i in range(100)])
    lists = [ctx.consume(q, ch=ch)[1] for q in queues]
    acked = set()
    for _ in range(99):
        ctx.wait(lambda: sum(len(got) for got in lists) > len(acked), conn=ch.connection)
        for got in lists:
            for _, m in got:
                if m.delivery_tag not in acked:
                    acked.add(m.delivery_tag)
                    ch.basic_ack(m.delivery_tag)
    counts = sorted(len(got) for got in lists)
    ctx.rec("every queue had at least a fifth of the deliveries", counts[0] >= 20)
