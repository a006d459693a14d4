"""Scenarios: RabbitMQ's queue features (TTL, expiry, dead-lettering, length limits, priorities,
single active consumer, consumer priorities) and direct reply-to. They wait on timers (TTLs of
100-300 ms), so they take a few seconds in all."""

import time

from harness import Typed, scenario


def _confirm_events(ch):
    ev = []
    ch.events["basic_ack"].add(lambda tag, multiple: ev.append(["ack", tag]))
    ch.events["basic_nack"].add(lambda tag, multiple: ev.append(["nack", tag]))
    ch.confirm_select()
    return ev


@scenario
def queue_message_ttl(ctx):
    q = ctx.queue("q", arguments={"x-message-ttl": 200})
    ctx.seed(q, ["expires"])
    time.sleep(0.5)
    ctx.rec("after the ttl", ctx.declare_ok(q))
    ctx.rec("redeclare with another ttl", ctx.attempt(ctx.ch.queue_declare, q, auto_delete=False,
                                                     arguments={"x-message-ttl": 300}))


@scenario
def message_expiration(ctx):
    q = ctx.queue("q")
    ctx.publish("short", "", q, expiration="100")
    ctx.publish("long", "", q, expiration="600000")
    ctx.publish("zero", "", q, expiration="0")
    ctx.rec("publishes", ctx.sync())
    time.sleep(0.4)
    ctx.rec("left", ctx.drain_get(q, props=True))


@scenario
def invalid_expiration_is_refused(ctx):
    q = ctx.queue("q")
    for value in ("soon", "-1", "1.5", ""):
        ch = ctx.channel()
        ctx.publish(f"expiration {value!r}", "", q, ch=ch, expiration=value)
        ctx.rec(f"expiration {value!r}", ctx.sync(ch))
    ctx.rec("queue", ctx.bodies(q))


@scenario
def queue_expires(ctx):
    q = ctx.queue("q", arguments={"x-expires": 300})
    time.sleep(0.8)
    ctx.rec("exists after x-expires", ctx.exists(q))


@scenario
def dead_letter_on_reject(ctx):
    dlx = ctx.exchange("dlx", "fanout")
    dlq = ctx.queue("dlq")
    ctx.ch.queue_bind(dlq, dlx, "")
    q = ctx.queue("q", arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    ctx.seed(q, ["rejected"])
    m = ctx.get(q, no_ack=False)
    ctx.ch.basic_reject(m["delivery_tag"], requeue=False)
    ctx.sync()
    time.sleep(0.2)
    m = ctx.get(dlq, props=True)
    for death in (m or {}).get("properties", {}).get("headers", {}).get("x-death", ["A", []])[1]:
        death[1].pop("time", None)   # when it died: differs from run to run
    ctx.rec("dead-lettered", m)


@scenario
def max_length_drop_head(ctx):
    q = ctx.queue("q", arguments={"x-max-length": 2})
    ctx.seed(q, ["a", "b", "c"])
    ctx.rec("left", ctx.bodies(q))


@scenario
def max_length_reject_publish(ctx):
    q = ctx.queue("q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ev = _confirm_events(ctx.ch)
    ctx.publish("a", "", q)
    ctx.publish("b", "", q)
    ctx.wait(lambda: len(ev) >= 2)
    ctx.rec("confirms", ev)
    ctx.rec("left", ctx.bodies(q))


@scenario
def priority_queue_order(ctx):
    q = ctx.queue("q", arguments={"x-max-priority": 10})
    for body, prio in (("low", 1), ("high", 9), ("mid", 5), ("none", None)):
        if prio is None:
            ctx.publish(body, "", q)
        else:
            ctx.publish(body, "", q, priority=prio)
    ctx.sync()
    ctx.rec("order", ctx.bodies(q))


@scenario
def single_active_consumer(ctx):
    q = ctx.queue("q", arguments={"x-single-active-consumer": True})
    t1, g1 = ctx.consume(q, ch=ctx.channel(), no_ack=True)
    t2, g2 = ctx.consume(q, ch=ctx.channel(), no_ack=True)
    ctx.seed(q, [str(i) for i in range(4)])
    ctx.wait(lambda: len(g1) + len(g2) == 4)
    ctx.rec("first consumer", [m["body"] for m, _ in g1])
    ctx.rec("second consumer", [m["body"] for m, _ in g2])


@scenario
def direct_reply_to(ctx):
    q = ctx.queue("rpc")
    replies = []
    ctx.ch.basic_consume("amq.rabbitmq.reply-to", no_ack=True, callback=lambda m: replies.append(ctx.msg(m)))
    ctx.publish("request", "", q, reply_to="amq.rabbitmq.reply-to")
    ctx.sync()
    req = ctx.channel().basic_get(q, no_ack=True)
    reply_to = req.properties.get("reply_to") or ""
    ctx.rec("reply_to seen by the server side is amq.rabbitmq.reply-to.<token>",
            reply_to.startswith("amq.rabbitmq.reply-to.") and len(reply_to) > 22)
    ctx.publish(b"response", "", req.properties["reply_to"], ch=ctx.channel())
    ctx.wait(lambda: replies)
    ctx.rec("reply", [r["body"] for r in replies])


@scenario
def consumer_priorities(ctx):
    q = ctx.queue("q")
    ch_lo, ch_hi = ctx.channel(), ctx.channel()
    _t, lo = ctx.consume(q, ch=ch_lo, no_ack=True, arguments={"x-priority": 1})
    _t, hi = ctx.consume(q, ch=ch_hi, no_ack=True, arguments={"x-priority": 10})
    ctx.seed(q, ["a", "b", "c"])
    ctx.wait(lambda: len(lo) + len(hi) == 3)
    ctx.rec("high priority consumer", len(hi))


def _strip_death_times(m):
    """x-death entries without their `time` (when it died: differs from run to run)."""
    for death in (m or {}).get("properties", {}).get("headers", {}).get("x-death", ["A", []])[1]:
        death[1].pop("time", None)
    return m


@scenario
def dead_letter_reasons(ctx):
    dlx = ctx.exchange("dlx", "topic")
    dlq = ctx.queue("dlq")
    ctx.ch.queue_bind(dlq, dlx, "#")
    q_ttl = ctx.queue("q-ttl", arguments={"x-message-ttl": 100, "x-dead-letter-exchange": dlx})
    q_len = ctx.queue("q-maxlen", arguments={"x-max-length": 1, "x-dead-letter-exchange": dlx})
    q_nack = ctx.queue("q-nack", arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "rk"})
    ctx.seed(q_ttl, ["expired"])
    ctx.seed(q_len, ["pushed out", "stays"])
    ctx.seed(q_nack, ["nacked"])
    m = ctx.get(q_nack, no_ack=False)
    ctx.nack(m["delivery_tag"], requeue=False)
    ctx.sync()
    time.sleep(0.4)
    got = [_strip_death_times(x) for x in ctx.drain_get(dlq, props=True)]
    ctx.rec("dead-lettered, by body", sorted(got, key=lambda x: x["body"]))


@scenario
def dead_letter_cycle_is_dropped(ctx):
    # expired -> dead-lettered back into the same queue by the default exchange: RabbitMQ drops a
    # message that would go round a cycle with no rejection in it
    q = ctx.name("q")
    ctx.ch.queue_declare(q, auto_delete=False, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": q})
    ctx.seed(q, ["round and round"])
    time.sleep(0.6)
    ctx.rec("left", ctx.declare_ok(q))


@scenario
def max_length_bytes_and_reject_publish_dlx(ctx):
    q = ctx.queue("q-bytes", arguments={"x-max-length-bytes": 10})
    ctx.seed(q, ["12345", "67890", "abcde"])
    ctx.rec("max-length-bytes 10, three 5-octet messages", ctx.bodies(q))
    dlx = ctx.exchange("dlx", "fanout")
    dlq = ctx.queue("dlq")
    ctx.ch.queue_bind(dlq, dlx, "")
    q2 = ctx.queue("q-rpd", arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                       "x-dead-letter-exchange": dlx})
    ev = _confirm_events(ctx.ch)
    ctx.publish("a", "", q2)
    ctx.publish("b", "", q2)
    ctx.wait(lambda: len(ev) >= 2)
    ctx.rec("confirms", ev)
    ctx.rec("queue", ctx.bodies(q2))
    ctx.rec("dead-lettered", ctx.bodies(dlq))


@scenario
def priority_queue_requeue_and_limits(ctx):
    q = ctx.queue("q", arguments={"x-max-priority": 5})
    for body, prio in (("p1", 1), ("p5", 5), ("p9 counts as 5", 9), ("p0", 0), ("p3", 3)):
        ctx.publish(body, "", q, priority=prio)
    ctx.sync()
    first = ctx.get(q, no_ack=False)
    ctx.rec("first", first["body"])
    ctx.ch.basic_reject(first["delivery_tag"], requeue=True)
    ctx.rec("order after requeue", [(m["body"], m["redelivered"]) for m in ctx.drain_get(q)])


@scenario
def single_active_consumer_hands_over(ctx):
    q = ctx.queue("q", arguments={"x-single-active-consumer": True})
    ch1, ch2 = ctx.channel(), ctx.channel()
    _t1, g1 = ctx.consume(q, ch=ch1)
    _t2, g2 = ctx.consume(q, ch=ch2)
    ctx.seed(q, ["a", "b"])
    ctx.wait(lambda: len(g1) == 2)
    ctx.settle()
    ctx.rec("active consumer got", [m["body"] for m, _ in g1])
    ctx.rec("passive consumer got", [m["body"] for m, _ in g2])
    ch1.close()     # a and b were unacked: back to the queue, and to the new active consumer
    ctx.wait(lambda: len(g2) == 2)
    ctx.settle()
    ctx.rec("after the active one's channel closed", [(m["body"], m["redelivered"]) for m, _ in g2])


@scenario
def queue_argument_validation(ctx):
    cases = {
        "x-message-ttl -1": {"x-message-ttl": -1},
        "x-message-ttl as string": {"x-message-ttl": "100"},
        "x-expires 0": {"x-expires": 0},
        "x-max-length -1": {"x-max-length": -1},
        "x-max-priority 256": {"x-max-priority": 256},
        "x-max-priority as string": {"x-max-priority": "5"},
        "x-overflow unknown": {"x-overflow": "drop-tail"},
        "x-dead-letter-routing-key without exchange": {"x-dead-letter-routing-key": "k"},
        "x-single-active-consumer as string": {"x-single-active-consumer": "yes"},
    }
    for what, args in cases.items():
        ch = ctx.channel()
        ctx.rec(what, ctx.attempt(lambda: ch.queue_declare(ctx.name("q"), auto_delete=False, arguments=args) and None))


@scenario
def queue_argument_equivalence(ctx):
    q = ctx.queue("q", arguments={"x-max-length": 10, "x-message-ttl": 1000})
    for what, args in (("same", {"x-max-length": 10, "x-message-ttl": 1000}),
                       ("other max-length", {"x-max-length": 11, "x-message-ttl": 1000}),
                       ("without ttl", {"x-max-length": 10}),
                       ("same ttl as another int type", {"x-max-length": 10, "x-message-ttl": Typed("l", 1000)})):
        ch = ctx.channel()
        ctx.rec(what, ctx.attempt(lambda: ch.queue_declare(q, auto_delete=False, arguments=args) and None))


@scenario
def direct_reply_to_rules(ctx):
    q = ctx.queue("rpc")
    # Consuming the pseudo-queue needs no-ack; publishing with it as reply_to needs that consumer.
    ctx.rec("consume with acks", ctx.attempt(
        lambda: ctx.channel().basic_consume("amq.rabbitmq.reply-to", no_ack=False, callback=lambda m: None)))
    ch = ctx.channel()
    ctx.publish("request", "", q, ch=ch, reply_to="amq.rabbitmq.reply-to")
    ctx.rec("publish without the consumer", ctx.sync(ch))
    ctx.rec("declare the pseudo-queue", ctx.attempt(
        lambda: list(ctx.channel().queue_declare("amq.rabbitmq.reply-to", passive=True))))


@scenario
def queue_expires_waits_for_consumers(ctx):
    q = ctx.queue("q", arguments={"x-expires": 300})
    ch = ctx.channel()
    tag, _got = ctx.consume(q, ch=ch, no_ack=True)
    time.sleep(0.6)
    ctx.rec("exists while consumed", ctx.exists(q))
    ch.basic_cancel(tag)
    time.sleep(0.8)
    ctx.rec("exists after the consumer left", ctx.exists(q))


@scenario
def consumer_priorities_fall_back_when_busy(ctx):
    q = ctx.queue("q")
    ch_lo, ch_hi = ctx.channel(), ctx.channel()
    ch_hi.basic_qos(0, 1, False)
    _t, lo = ctx.consume(q, ch=ch_lo, no_ack=True, arguments={"x-priority": 1})
    _t, hi = ctx.consume(q, ch=ch_hi, no_ack=False, arguments={"x-priority": 10})
    ctx.seed(q, ["a", "b", "c"])
    ctx.wait(lambda: len(lo) + len(hi) == 3)
    ctx.rec("high priority consumer (prefetch 1, never acks)", [m["body"] for m, _ in hi])
    ctx.rec("low priority consumer", [m["body"] for m, _ in lo])


@scenario
def ttl_and_priority_together(ctx):
    q = ctx.queue("q", arguments={"x-max-priority": 5, "x-message-ttl": 200})
    # (A per-message expiration at the head of a priority level is left out: RabbitMQ 3.10 hands
    # such a message out after it expired, which Warren does not copy.)
    ctx.publish("low", "", q, priority=1)
    ctx.publish("high", "", q, priority=5)
    ctx.rec("publishes", ctx.sync())
    time.sleep(0.1)
    ctx.rec("before the queue ttl", ctx.bodies(q))
    ctx.publish("late", "", q, priority=2)
    ctx.sync()
    time.sleep(0.4)
    ctx.rec("after the queue ttl", ctx.bodies(q))


@scenario
def delivery_limit_on_a_quorum_queue(ctx):
    # RabbitMQ 3.10 has x-delivery-limit on quorum queues only; Warren has it on every queue and
    # accepts x-queue-type as an ordinary argument.
    dlq = ctx.queue("dlq")
    q = ctx.queue("q", durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 1,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ctx.seed(q, ["m"])
    seen = []
    for _ in range(3):
        m = ctx.ch.basic_get(q, no_ack=False)
        if m is None:
            break
        seen.append([m.body.decode(), m.delivery_info["redelivered"]])
        ctx.nack(m.delivery_tag, requeue=True)
        ctx.sync()
    ctx.rec("deliveries before the limit", seen)
    ctx.wait(lambda: ctx.declare_ok(dlq)[1] == 1)
    ctx.rec("dead-lettered", [_strip_death_times(x) for x in ctx.drain_get(dlq, props=True)])


@scenario
def max_length_applies_to_requeued_messages(ctx):
    # Java client's QueueSizeLimit.requeue / requeueWithDlx: a requeue that takes the queue past
    # x-max-length drops (dead-letters) from the head.
    dlq = ctx.queue("dlq")
    for tag, args in (("plain", {}), ("dlx", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})):
        q = ctx.queue("q-" + tag, arguments={"x-max-length": 1, **args})
        ctx.seed(q, ["first"])
        ch = ctx.channel()
        m = ch.basic_get(q, no_ack=False)
        ctx.seed(q, ["second"])
        ctx.nack(m.delivery_tag, requeue=True, ch=ch)
        ctx.sync(ch)
        ctx.rec(tag, ctx.bodies(q))
    ctx.rec("dead-lettered", ctx.bodies(dlq))


@scenario
def zero_ttl_reaches_a_waiting_consumer(ctx):
    # Java client's zeroTTLDelivery (three test classes): TTL 0 means "now or never", and a
    # consumer that is ready takes it now.
    q = ctx.queue("q", arguments={"x-message-ttl": 0})
    q2 = ctx.queue("q2")
    _, got = ctx.consume(q, no_ack=True)
    _, got2 = ctx.consume(q2, no_ack=True)
    ctx.sync()
    ctx.publish("queue ttl 0", "", q)
    ctx.publish("expiration 0", "", q2, expiration="0")
    ctx.wait(lambda: got and got2)
    ctx.rec("q", [m["body"] for m, _ in got])
    ctx.rec("q2", [m["body"] for m, _ in got2])


@scenario
def publish_then_get_with_an_idle_consumer_goes_to_the_consumer(ctx):
    # Java client's BindingLifecycle / ConsumerPriorities: a channel's methods take effect in
    # order, so a message published before a basic.get reaches the idle consumer first.
    q = ctx.queue("q")
    ch2 = ctx.channel()
    _, got = ctx.consume(q, ch=ch2, no_ack=True)
    ctx.sync(ch2)
    results = []
    for i in range(30):
        ctx.publish(str(i), "", q)
        results.append(ctx.get(q))
    ctx.wait(lambda: len(got) >= 30, conn=ch2.connection)
    ctx.rec("gets", [r for r in results if r is not None])
    ctx.rec("consumed", len(got))


def _attempt_text(ctx, fn):
    """ctx.attempt, and on an error the whole reply text too (names made with ctx.name are
    normalised), for the errors whose wording clients show or match."""
    out = ctx.attempt(fn)
    if "error" in out:
        out["error"]["text"] = ctx.notes[-1].split(": ", 1)[1]
    return out


def _dead_letter_with_cc(ctx, dead_letter_routing_key):
    dlx = ctx.exchange("dlx")
    dlq, ccq, bccq = ctx.queue("dlq"), ctx.queue("ccq"), ctx.queue("bccq")
    ctx.ch.queue_bind(dlq, dlx, "dl-key")
    ctx.ch.queue_bind(dlq, dlx, "orig")
    ctx.ch.queue_bind(ccq, dlx, "cc-key")
    ctx.ch.queue_bind(bccq, dlx, "bcc-key")
    args = {"x-dead-letter-exchange": dlx}
    if dead_letter_routing_key:
        args["x-dead-letter-routing-key"] = "dl-key"
    src = ctx.queue("src", arguments=args)
    ctx.ch.queue_bind(src, "amq.direct", "orig")
    ctx.publish("m", "amq.direct", "orig", application_headers={
        "CC": Typed("A", [Typed("S", "cc-key")]), "BCC": Typed("A", [Typed("S", "bcc-key")]),
        "other": Typed("S", "kept")})
    ctx.sync()
    m = ctx.ch.basic_get(src, no_ack=False)
    ctx.ch.basic_reject(m.delivery_tag, requeue=False)
    ctx.sync()
    ctx.wait(lambda: ctx.declare_ok(dlq)[0] == 1)
    for what, q in (("dead-letter queue", dlq), ("queue bound with the CC key", ccq)):
        got = ctx.drain_get(q, props=True)
        for g in got:
            h = g["properties"].get("headers", {})
            h["x-death"][1][0][1].pop("time", None)
        ctx.rec(what, [{"routing_key": g["routing_key"], "exchange": g["exchange"],
                        "headers": g["properties"].get("headers")} for g in got])
    # RabbitMQ also routes with the BCC keys (Warren does not keep them past the publish): not
    # recorded.


@scenario
def dead_letter_routing_key_drops_cc(ctx):
    _dead_letter_with_cc(ctx, True)


@scenario
def dead_letter_keeps_cc_without_routing_key(ctx):
    _dead_letter_with_cc(ctx, False)


@scenario
def consumer_priority_must_be_an_integer(ctx):
    q = ctx.queue("q")
    values = {
        "longstr": Typed("S", "5"), "table": Typed("F", {}), "void": Typed("V", None), "array": Typed("A", []),
        "bool": Typed("t", True), "float": Typed("f", 1.5), "double": Typed("d", 2.5),
        "decimal": Typed("D", (1, 5)), "timestamp": Typed("T", 5), "byte array": Typed("x", b"5"),
        "int8": Typed("b", 5), "uint8": Typed("B", 5), "int16": Typed("s", 5), "uint16": Typed("u", 5),
        "int32": Typed("I", 5), "uint32": Typed("i", 5), "int64": Typed("l", 2 ** 40), "negative": Typed("I", -3),
    }
    for what, v in values.items():
        ch = ctx.channel()
        ctx.rec(what, _attempt_text(
            ctx, lambda: ch.basic_consume(q, arguments={"x-priority": v}, callback=lambda m: None) and None))
    ch = ctx.channel()
    ch.queue_declare(q, passive=True)
    ctx.rec("on the last declared queue ''", _attempt_text(
        ctx, lambda: ch.basic_consume("", arguments={"x-priority": "5"}, callback=lambda m: None) and None))
    ctx.rec("on a missing queue", _attempt_text(ctx, lambda: ctx.channel().basic_consume(
        ctx.name("missing"), arguments={"x-priority": "5"}, callback=lambda m: None) and None))
    for what, v in (("x-cancel-on-ha-failover as string", "yes"), ("x-cancel-on-ha-failover as int", 1),
                    ("x-cancel-on-ha-failover as bool", True)):
        ch = ctx.channel()
        ctx.rec(what, _attempt_text(ctx, lambda: ch.basic_consume(
            q, arguments={"x-cancel-on-ha-failover": v}, callback=lambda m: None) and None))
    ctx.rec("consumers", ctx.declare_ok(q))


@scenario
def direct_reply_to_declare_from_elsewhere(ctx):
    q = ctx.queue("rpc")
    requester = ctx.connect()
    rch = ctx.channel(requester)
    tag = rch.basic_consume("amq.rabbitmq.reply-to", no_ack=True, callback=lambda m: None)
    ctx.publish("request", "", q, ch=rch, reply_to="amq.rabbitmq.reply-to")
    ctx.sync(rch)
    reply_to = ctx.ch.basic_get(q, no_ack=True).properties["reply_to"]
    other = ctx.connect()

    def declare(name, ch=None, **kw):
        ok = (ch or ctx.channel(other)).queue_declare(name, **kw)
        return {"same name": ok.queue == name, "messages": ok.message_count, "consumers": ok.consumer_count}

    ctx.rec("passive, other connection", ctx.attempt(declare, reply_to, passive=True))
    ctx.rec("passive, requester's connection", ctx.attempt(declare, reply_to, ch=ctx.channel(requester), passive=True))
    ctx.rec("not passive, any flags", ctx.attempt(declare, reply_to, durable=True, exclusive=True,
                                                  arguments={"x-queue-mode": "bogus"}))
    for what, name in (("unknown suffix", reply_to + "x"), ("garbage", "amq.rabbitmq.reply-to.garbage"),
                       ("prefix only", "amq.rabbitmq.reply-to."), ("no dot", "amq.rabbitmq.reply-tox")):
        for passive in (True, False):
            ctx.rec(f"{what}, passive={passive}", ctx.attempt(declare, name, passive=passive))
    ctx.rec("the pseudo-queue, not passive", ctx.attempt(declare, "amq.rabbitmq.reply-to", durable=True))
    for what, op in (("get", lambda ch: ch.basic_get(reply_to)), ("purge", lambda ch: ch.queue_purge(reply_to)),
                     ("bind", lambda ch: ch.queue_bind(reply_to, "amq.direct", "k")),
                     ("consume", lambda ch: ch.basic_consume(reply_to, no_ack=True, callback=lambda m: None)),
                     ("delete", lambda ch: ch.queue_delete(reply_to))):
        ctx.rec(what, ctx.attempt(lambda: op(ctx.channel(other))))
    rch.basic_cancel(tag)
    ctx.rec("passive after the requester cancelled", ctx.attempt(declare, reply_to, passive=True))
    c2 = ctx.connect()
    ch2 = ctx.channel(c2)
    ch2.basic_consume("amq.rabbitmq.reply-to", no_ack=True, callback=lambda m: None)
    ctx.publish("request 2", "", q, ch=ch2, reply_to="amq.rabbitmq.reply-to")
    ctx.sync(ch2)
    reply_to2 = ctx.ch.basic_get(q, no_ack=True).properties["reply_to"]
    ctx.rec("passive while the second requester waits", ctx.attempt(declare, reply_to2, passive=True))
    c2.close()
    ctx.rec("passive after its connection closed", ctx.attempt(declare, reply_to2, passive=True))


@scenario
def queue_mode_validation(ctx):
    cases = {
        "default": "default", "lazy": "lazy", "unknown": "bogus", "empty": "", "capitalised": "Lazy",
        "short int": Typed("s", 1), "bool": Typed("t", True), "byte array": Typed("x", b"lazy"),
        "table": Typed("F", {}), "void": Typed("V", None), "array": Typed("A", []),
    }
    for what, mode in cases.items():
        ch = ctx.channel()
        ctx.rec(what, _attempt_text(ctx, lambda: ch.queue_declare(
            ctx.name("q"), auto_delete=False, arguments={"x-queue-mode": mode}).message_count))
    q = ctx.queue("q-plain")
    ctx.rec("redeclare with an unknown mode", _attempt_text(ctx, lambda: ctx.channel().queue_declare(
        q, auto_delete=False, arguments={"x-queue-mode": "bogus"}).message_count))
    ctx.rec("passive with an unknown mode", _attempt_text(ctx, lambda: ctx.channel().queue_declare(
        q, passive=True, arguments={"x-queue-mode": "bogus"}).message_count))


@scenario
def queue_argument_error_texts(ctx):
    # The whole reply texts (queue_argument_validation compares codes), and which argument is
    # reported first when several are wrong.
    cases = {
        "x-overflow unknown": {"x-overflow": "drop-tail"},
        "x-overflow as short": {"x-overflow": Typed("s", 1)},
        "x-max-priority 256": {"x-max-priority": 256},
        "x-max-priority -1": {"x-max-priority": -1},
        "x-single-active-consumer as string": {"x-single-active-consumer": "yes"},
        "x-dead-letter-exchange as int": {"x-dead-letter-exchange": 5},
        "x-dead-letter-exchange as table": {"x-dead-letter-exchange": Typed("F", {})},
        "x-dead-letter-routing-key as int": {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": 5},
        "bad ttl, int dead-letter exchange": {"x-message-ttl": -1, "x-dead-letter-exchange": 5},
        "bad ttl, bad expires": {"x-message-ttl": -1, "x-expires": 0},
        "bad max-length, routing key without exchange": {"x-max-length": -1, "x-dead-letter-routing-key": "k"},
        "bad mode, bad overflow": {"x-queue-mode": "bogus", "x-overflow": "x"},
        "bad mode, bad max-priority": {"x-queue-mode": "bogus", "x-max-priority": 300},
        "bad mode, bad single-active-consumer": {"x-queue-mode": "bogus", "x-single-active-consumer": "x"},
    }
    for what, args in cases.items():
        ch = ctx.channel()
        ctx.rec(what, _attempt_text(ctx, lambda: ch.queue_declare(
            ctx.name("q"), auto_delete=False, arguments=args) and None))


def _delivery_counts(messages):
    return [[m["body"], m.get("redelivered"),
             (m.get("properties", {}).get("headers") or {}).get("x-delivery-count")] for m in messages]


@scenario
def quorum_queue_returns_go_to_the_back_with_a_delivery_count(ctx):
    # RabbitMQ 3.10's quorum queues: a nacked (requeued) message goes behind the others and
    # carries x-delivery-count; basic.get answers carry it from the first delivery (0).
    q = ctx.queue("q", durable=True, arguments={"x-queue-type": "quorum"})
    ctx.seed(q, ["m1", "m2", "m3"])
    first = ctx.get(q, no_ack=False, props=True)
    ctx.rec("first get", _delivery_counts([first]))
    ctx.nack(first["delivery_tag"], requeue=True)
    ctx.sync()
    got = [ctx.get(q, no_ack=False, props=True) for _ in range(3)]
    ctx.rec("after the nack", _delivery_counts(got))
    # basic.recover hands them all back: behind, in delivery order.
    ctx.ch.basic_recover(requeue=True)
    ctx.sync()
    ctx.rec("after recover", _delivery_counts(ctx.drain_get(q, props=True)))


@scenario
def quorum_queue_consumer_sees_a_delivery_count_on_redelivery_only(ctx):
    q = ctx.queue("q", durable=True, arguments={"x-queue-type": "quorum"})
    ctx.seed(q, ["a", "b", "c"], headers={"h": 1})
    ch = ctx.channel()
    ch.basic_qos(0, 1, False)
    seen = []

    def on_message(m):
        d = ctx.msg(m, props=True)
        seen.append(d)
        if d["body"] == "a" and not d["redelivered"]:
            ch.basic_reject(m.delivery_tag, requeue=True)
        else:
            ch.basic_ack(m.delivery_tag)

    ch.basic_consume(q, callback=on_message)
    ctx.wait(lambda: len(seen) >= 4)
    ctx.settle()
    ctx.rec("deliveries", _delivery_counts(seen))


@scenario
def at_least_once_dead_letters_are_held_while_refused(ctx):
    # RabbitMQ 3.10's at-least-once dead-lettering (a quorum queue with x-overflow reject-publish):
    # a dead-letter its target refuses (reject-publish at its limit) stays in the source queue,
    # counted in messages_dlx and message_bytes_dlx; at-most-once drops it. (RabbitMQ routes a
    # held one again after minutes, Warren every second: not compared.)
    for strategy in ("at-least-once", "at-most-once"):
        target = ctx.queue(f"{strategy} target", durable=True,
                           arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        q = ctx.queue(strategy, durable=True, arguments={
            "x-queue-type": "quorum", "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target, "x-dead-letter-strategy": strategy,
            "x-overflow": "reject-publish"})
        ctx.seed(q, ["a", "bb", "ccc"], delivery_mode=2)
        for _ in range(3):
            m = ctx.ch.basic_get(q, no_ack=False)
            ctx.nack(m.delivery_tag, requeue=False)
        ctx.sync()
        ctx.wait(lambda: ctx.declare_ok(target)[0] >= 1)
        ctx.rec(f"{strategy}: source", ctx.declare_ok(q))
        ctx.rec(f"{strategy}: target", ctx.declare_ok(target))

        def held():
            status, body = ctx.http(f"/api/queues/{{vhost}}/{q}")
            return [body.get("messages_dlx"), body.get("message_bytes_dlx")] if status == 200 else status
        want = [2, 5] if strategy == "at-least-once" else [0, 0]
        # RabbitMQ's figures are its management stats, a few seconds late.
        ctx.wait(lambda: held() == want, timeout=15)
        ctx.rec(f"{strategy}: held", held())
        # Drained last: a held one may go to the target once it has room.
        ctx.rec(f"{strategy}: target's message", ctx.bodies(target))
