"""Scenarios: queue.declare / delete / purge, exclusivity, auto-delete, the default queue name."""

from harness import scenario


@scenario
def declare_server_named(ctx):
    ctx.rec("declare-ok", ctx.ch.queue_declare("", exclusive=True, auto_delete=False))


@scenario
def declare_ok_counts(ctx):
    q = ctx.name("q")
    ctx.rec("first", ctx.ch.queue_declare(q, auto_delete=False))
    ctx.seed(q, ["a", "b", "c"])
    ctx.rec("after 3 published", ctx.ch.queue_declare(q, auto_delete=False))
    ch2 = ctx.channel()
    ch2.basic_qos(0, 1, False)
    _tag, got = ctx.consume(q, ch=ch2)
    ctx.wait(lambda: len(got) == 1)
    ctx.rec("with a consumer holding 1 unacked", ctx.ch.queue_declare(q, auto_delete=False))
    ctx.rec("passive", ctx.ch.queue_declare(q, passive=True))


@scenario
def redeclare_equivalent_is_ok(ctx):
    q = ctx.name("q")
    for i in range(2):
        ctx.rec(f"declare {i}", ctx.attempt(ctx.ch.queue_declare, q, durable=True, auto_delete=False))


@scenario
def passive_declare_of_missing_queue(ctx):
    ctx.rec("passive", ctx.attempt(ctx.ch.queue_declare, ctx.name("missing"), passive=True))
    ctx.rec("channel usable after", ctx.attempt(ctx.ch.queue_declare, "", exclusive=True))


@scenario
def redeclare_with_other_durable(ctx):
    q = ctx.queue("q", durable=True)
    ctx.rec("transient", ctx.attempt(ctx.ch.queue_declare, q, durable=False, auto_delete=False))


@scenario
def redeclare_with_other_auto_delete(ctx):
    q = ctx.queue("q")
    ctx.rec("auto-delete", ctx.attempt(ctx.ch.queue_declare, q, auto_delete=True))


@scenario
def redeclare_exclusive_queue_as_shared_on_same_connection(ctx):
    q = ctx.queue("q", exclusive=True)
    ctx.rec("shared", ctx.attempt(ctx.ch.queue_declare, q, exclusive=False, auto_delete=False))


@scenario
def exclusive_queue_from_another_connection(ctx):
    q = ctx.queue("q", exclusive=True)
    other = ctx.connect()
    ops = {
        "declare": lambda ch: ch.queue_declare(q, exclusive=True, auto_delete=False),
        "passive declare": lambda ch: ch.queue_declare(q, passive=True),
        "consume": lambda ch: ch.basic_consume(q, callback=lambda m: None),
        "get": lambda ch: ch.basic_get(q),
        "purge": lambda ch: ch.queue_purge(q),
        "bind": lambda ch: ch.queue_bind(q, "amq.direct", "k"),
        "delete": lambda ch: ch.queue_delete(q),
    }
    for what, op in ops.items():
        ch = ctx.channel(other)
        ctx.rec(what, ctx.attempt(lambda: op(ch) and None))
    ctx.rec("owner still sees it", ctx.declare_ok(q))


@scenario
def reserved_amq_prefix(ctx):
    ctx.rec("declare amq.*", ctx.attempt(ctx.ch.queue_declare, "amq.diff-reserved", auto_delete=False))
    ctx.rec("passive amq.* (missing)", ctx.attempt(ctx.ch.queue_declare, "amq.diff-reserved", passive=True))


@scenario
def delete_reports_message_count(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c"])
    ctx.rec("delete-ok", ctx.ch.queue_delete(q))
    ctx.rec("exists after", ctx.exists(q))


@scenario
def delete_of_missing_queue(ctx):
    ctx.rec("delete", ctx.attempt(ctx.ch.queue_delete, ctx.name("missing")))


@scenario
def delete_if_empty(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a"])
    ctx.rec("if-empty, 1 message", ctx.attempt(ctx.ch.queue_delete, q, if_empty=True))
    ctx.rec("still there", ctx.declare_ok(q))
    ctx.get(q)
    ctx.rec("if-empty, empty", ctx.attempt(ctx.ch.queue_delete, q, if_empty=True))


@scenario
def delete_if_unused(ctx):
    q = ctx.queue("q")
    ch2 = ctx.channel()
    tag, _got = ctx.consume(q, ch=ch2)
    ctx.rec("if-unused, 1 consumer", ctx.attempt(ctx.ch.queue_delete, q, if_unused=True))
    ch2.basic_cancel(tag)
    ctx.rec("if-unused, no consumer", ctx.attempt(ctx.ch.queue_delete, q, if_unused=True))


@scenario
def purge(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c", "d"])
    ctx.rec("get one, unacked", ctx.get(q, no_ack=False))
    ctx.rec("purge-ok", ctx.ch.queue_purge(q))
    ctx.rec("counts after purge", ctx.declare_ok(q))
    ctx.ch.basic_reject(1, requeue=True)
    ctx.rec("after requeue of the unacked one", ctx.bodies(q))
    ctx.rec("purge missing", ctx.attempt(ctx.ch.queue_purge, ctx.name("missing")))


@scenario
def exclusive_queue_goes_with_its_connection(ctx):
    other = ctx.connect()
    q = ctx.queue("q", exclusive=True, ch=ctx.channel(other))
    ctx.rec("exists while owner is open", ctx.exists(q))
    other.close()
    ctx.wait(lambda: not ctx.exists(q))
    ctx.rec("exists after owner closed", ctx.exists(q))


@scenario
def auto_delete_queue_after_last_consumer(ctx):
    q = ctx.queue("q", auto_delete=True)
    ctx.rec("exists before any consumer", ctx.exists(q))
    t1, _ = ctx.consume(q)
    t2, _ = ctx.consume(q)
    ctx.ch.basic_cancel(t1)
    ctx.rec("exists with one consumer left", ctx.exists(q))
    ctx.ch.basic_cancel(t2)
    ctx.wait(lambda: not ctx.exists(q))
    ctx.rec("exists after the last cancel", ctx.exists(q))


@scenario
def auto_delete_queue_when_consumer_channel_closes(ctx):
    q = ctx.queue("q", auto_delete=True)
    ch2 = ctx.channel()
    ctx.consume(q, ch=ch2)
    ch2.close()
    ctx.wait(lambda: not ctx.exists(q))
    ctx.rec("exists after consumer's channel closed", ctx.exists(q))


@scenario
def default_queue_name_is_last_declared(ctx):
    ch = ctx.ch
    ok = ch.queue_declare("", exclusive=True, auto_delete=False)
    ctx.seed(ok.queue, ["one", "two"])
    ctx.rec("get ''", ctx.get("", ch=ch))
    ctx.rec("purge ''", ch.queue_purge(""))
    ctx.rec("bind ''", ctx.attempt(lambda: ch.queue_bind("", "amq.fanout", "") and None))
    ctx.rec("delete ''", ctx.attempt(ch.queue_delete, ""))


@scenario
def default_queue_name_without_a_declared_queue(ctx):
    ctx.rec("get ''", ctx.attempt(lambda: ctx.ch.basic_get("") and None))


@scenario
def unknown_arguments_are_not_compared(ctx):
    q = ctx.queue("q", arguments={"x-diff-custom": "a", "diff-other": 1})
    ctx.rec("redeclare other values", ctx.attempt(
        ctx.ch.queue_declare, q, auto_delete=False, arguments={"x-diff-custom": "b"}))


@scenario
def declare_nowait(ctx):
    q = ctx.name("q")
    ctx.ch.queue_declare(q, auto_delete=False, nowait=True)
    ctx.rec("sync after", ctx.sync())
    ctx.rec("passive", ctx.declare_ok(q))


@scenario
def names_utf8_and_255_octets(ctx):
    q1 = ctx.name("ünïcødé-名前")
    ctx.rec("utf-8 name", ctx.ch.queue_declare(q1, auto_delete=False))
    ctx.seed(q1, ["x"])
    ctx.rec("utf-8 get", ctx.get(q1))
    q2 = ctx.name("long")
    long_name = q2 + "-" + "n" * (255 - len(q2) - 1)
    ctx._names[long_name] = "<long-255>"
    ctx.rec("255-octet name", ctx.attempt(ctx.ch.queue_declare, long_name, auto_delete=False))
    ctx.rec("255-octet delete", ctx.attempt(ctx.ch.queue_delete, long_name))


@scenario
def bind_with_empty_queue_and_key(ctx):
    # An empty queue name is the channel's last declared queue; when the routing key is empty
    # too, the key is that queue's name (queue.bind and queue.unbind alike).
    q = ctx.queue("q")
    ctx.rec("bind '' ''", ctx.attempt(lambda: ctx.ch.queue_bind("", "amq.direct", "") and None))
    ctx.publish("key q", "amq.direct", q)
    ctx.publish("key ''", "amq.direct", "")
    ctx.sync()
    ctx.rec("q got", ctx.bodies(q))
    q2 = ctx.queue("q2")
    ctx.rec("bind '' k", ctx.attempt(lambda: ctx.ch.queue_bind("", "amq.direct", "k") and None))
    ctx.rec("bind '' '' again", ctx.attempt(lambda: ctx.ch.queue_bind("", "amq.direct", "") and None))
    ctx.rec("bind q2 '' (named: the key stays empty)", ctx.attempt(
        lambda: ctx.ch.queue_bind(q2, "amq.direct", "") and None))
    for key in ("k", q2, ""):
        ctx.publish(f"to {key or 'empty'}", "amq.direct", key)
    ctx.sync()
    ctx.rec("q2 got", ctx.bodies(q2))
    ctx.rec("unbind '' ''", ctx.attempt(lambda: ctx.ch.queue_unbind("", "amq.direct", "") and None))
    for key in ("k", q2, ""):
        ctx.publish(f"again to {key or 'empty'}", "amq.direct", key)
    ctx.sync()
    ctx.rec("q2 got after unbind", ctx.bodies(q2))
    ctx.rec("q got nothing more", ctx.bodies(q))
    sn = ctx.channel()
    server_named = sn.queue_declare("", exclusive=True).queue
    ctx.rec("bind '' '' to a topic exchange", ctx.attempt(lambda: sn.queue_bind("", "amq.topic", "") and None))
    ctx.publish("topic", "amq.topic", server_named)
    ctx.sync()
    ctx.rec("server-named got", ctx.bodies(server_named, ch=sn))
    for what, op in (("bind '' ''", lambda ch: ch.queue_bind("", "amq.direct", "")),
                     ("bind '' k", lambda ch: ch.queue_bind("", "amq.direct", "k")),
                     ("unbind '' ''", lambda ch: ch.queue_unbind("", "amq.direct", "")),
                     ("bind '' '' to a missing exchange", lambda ch: ch.queue_bind("", ctx.name("nox"), ""))):
        ch = ctx.channel()
        ctx.rec(f"no declared queue: {what}", ctx.attempt(lambda: op(ch) and None))


@scenario
def unbind_missing_queue_or_exchange(ctx):
    q = ctx.queue("q")
    ch = ctx.channel()
    ctx.rec("missing queue", ctx.attempt(lambda: ch.queue_unbind(ctx.name("noq"), "amq.direct", "k") and None))
    ctx.rec("missing exchange", ctx.attempt(lambda: ch.queue_unbind(q, ctx.name("nox"), "k") and None))
    ctx.rec("both missing", ctx.attempt(
        lambda: ch.queue_unbind(ctx.name("noq2"), ctx.name("nox2"), "k") and None))
    ctx.rec("default exchange", ctx.attempt(lambda: ch.queue_unbind(q, "", q) and None))


@scenario
def exclusive_queue_bindings_from_another_connection(ctx):
    q = ctx.queue("q", exclusive=True)
    ctx.ch.queue_bind(q, "amq.direct", "k")
    other = ctx.connect()
    ops = {
        "unbind": lambda ch: ch.queue_unbind(q, "amq.direct", "k"),
        "unbind a binding it does not have": lambda ch: ch.queue_unbind(q, "amq.direct", "other"),
        "unbind from a missing exchange": lambda ch: ch.queue_unbind(q, ctx.name("nox"), "k"),
        "bind": lambda ch: ch.queue_bind(q, "amq.direct", "k2"),
        "bind to a missing exchange": lambda ch: ch.queue_bind(q, ctx.name("nox"), "k2"),
        "purge": lambda ch: ch.queue_purge(q),
        "delete if-empty": lambda ch: ch.queue_delete(q, if_empty=True),
        "declare shared": lambda ch: ch.queue_declare(q, auto_delete=False),
        "consume with x-priority as string": lambda ch: ch.basic_consume(
            q, arguments={"x-priority": "high"}, callback=lambda m: None),
    }
    for what, op in ops.items():
        ch = ctx.channel(other)
        ctx.rec(what, ctx.attempt(lambda: op(ch) and None))
    ctx.publish("still bound", "amq.direct", "k")
    ctx.sync()
    ctx.rec("owner gets", ctx.bodies(q))


@scenario
def names_with_line_feeds(ctx):
    # RabbitMQ drops CR and LF from queue and exchange names in declare, bind, unbind and
    # delete, but not in publish, get, consume or purge.
    q = ctx.name("crlf")
    qn = q[:9] + "\n" + q[9:]
    x = ctx.name("xcrlf")
    xn = x[:8] + "\r\n" + x[8:]
    ctx.rec("declare", ctx.attempt(lambda: list(ctx.ch.queue_declare(q[:4] + "\r\n" + q[4:] + "\n",
                                                                      auto_delete=False))))
    ctx.rec("passive", ctx.attempt(lambda: list(ctx.ch.queue_declare(qn, passive=True))))
    ctx.rec("exchange declare", ctx.attempt(ctx.exchange_declare, xn, "direct"))
    ctx.rec("exchange passive", ctx.attempt(ctx.exchange_declare, x + "\r", "direct", passive=True))
    ctx.rec("exchange exists", ctx.exists(x, "exchange"))
    ctx.rec("bind", ctx.attempt(lambda: ctx.channel().queue_bind(qn, xn, "k\nk") and None))
    ctx.publish("to kk", x, "kk")
    ctx.publish("to k-lf-k", x, "k\nk")
    ctx.sync()
    ctx.rec("the key kept its LF", ctx.bodies(q))
    for what, op in (("get", lambda ch: ch.basic_get(qn)),
                     ("consume", lambda ch: ch.basic_consume(qn, callback=lambda m: None)),
                     ("purge", lambda ch: ch.queue_purge(qn))):
        ch = ctx.channel()
        ctx.rec(what, ctx.attempt(lambda: op(ch) and None))
    ch = ctx.channel()
    ctx.publish("p", xn, "k\nk", ch=ch)
    ctx.rec("publish to the exchange", ctx.sync(ch))
    ctx.rec("exchange.bind", ctx.attempt(lambda: ctx.channel().exchange_bind(xn, "amq.fanout\n", "") and None))
    ctx.publish("via amq.fanout", "amq.fanout", "")
    ctx.sync()
    ctx.rec("q got nothing via fanout (key k-lf-k only)", ctx.bodies(q))
    ctx.rec("bind with key ''", ctx.attempt(lambda: ctx.channel().queue_bind(q, x, "") and None))
    ctx.publish("via amq.fanout", "amq.fanout", "")
    ctx.sync()
    ctx.rec("q got via fanout", ctx.bodies(q))
    ctx.rec("exchange.unbind", ctx.attempt(lambda: ctx.channel().exchange_unbind(xn, "amq.\rfanout", "") and None))
    ctx.publish("via amq.fanout after unbind", "amq.fanout", "")
    ctx.rec("unbind", ctx.attempt(lambda: ctx.channel().queue_unbind(qn, xn, "k\nk") and None))
    ctx.publish("to k-lf-k after unbind", x, "k\nk")
    ctx.sync()
    ctx.rec("q got after unbinds", ctx.bodies(q))
    ctx.rec("exchange delete", ctx.attempt(lambda: ctx.channel().exchange_delete(xn) and None))
    ctx.rec("exchange gone", not ctx.exists(x, "exchange"))
    ctx.rec("delete", ctx.attempt(lambda: ctx.channel().queue_delete(qn)))
    ctx.rec("queue gone", not ctx.exists(q))
    # Names that are only CR/LF: a server-named queue, the default exchange, the queue ''.
    ctx.rec("declare a queue named LF", ctx.attempt(lambda: ctx.channel().queue_declare("\n", exclusive=True).queue))
    ctx.rec("declare an exchange named LF", ctx.attempt(ctx.exchange_declare, "\n", "direct", ch=ctx.channel()))
    ctx.rec("declare am-LF-q.x", ctx.attempt(lambda: ctx.channel().queue_declare("am\nq.x", auto_delete=False) and None))
    ch = ctx.channel()
    ch.queue_declare(ctx.name("last"), auto_delete=False)
    ctx.rec("passive CR-LF (the queue '', not the last declared)", ctx.attempt(
        lambda: ch.queue_declare("\r\n", passive=True) and None))
    ch = ctx.channel()
    last = ctx.queue("last2", ch=ch)
    ctx.rec("bind LF with key '' (no shortcut)", ctx.attempt(lambda: ch.queue_bind("\n", "amq.direct", "") and None))
    ch = ctx.channel()
    ch.queue_declare(last, passive=True)
    ctx.rec("delete LF", ctx.attempt(lambda: ch.queue_delete("\n")))
    ctx.rec("last declared still there", ctx.exists(last))


@scenario
def queue_type_validation(ctx):
    # x-queue-type must name a kind RabbitMQ has; quorum and stream queues are durable, never
    # exclusive or auto-delete.
    for qt in ["bogus", 5]:
        ch = ctx.channel()
        ctx.rec(f"type {qt!r}", ctx.attempt(ch.queue_declare, ctx.name(f"t-{qt}"), durable=True,
                                             auto_delete=False, arguments={"x-queue-type": qt}))
    for qt in ["quorum", "stream"]:
        for tag, flags in (("non-durable", dict(durable=False, auto_delete=False)),
                           ("exclusive", dict(durable=True, exclusive=True, auto_delete=False)),
                           ("auto-delete", dict(durable=True, auto_delete=True))):
            ch = ctx.channel()
            ctx.rec(f"{qt} {tag}", ctx.attempt(ch.queue_declare, ctx.name(f"{qt}-{tag}"),
                                               arguments={"x-queue-type": qt}, **flags))
    q = ctx.queue("classic", arguments={"x-queue-type": "classic"})
    ctx.rec("classic", ctx.declare_ok(q))


def _declare_text(ctx, name, arguments, durable=True, exclusive=False):
    """A queue.declare (not auto-delete) on a fresh channel: ctx.attempt's outcome, with the whole
    reply text when refused (names made with ctx.name are normalised)."""
    ch = ctx.channel()
    out = ctx.attempt(lambda: ch.queue_declare(name, durable=durable, exclusive=exclusive,
                                               auto_delete=False, arguments=arguments) and None)
    if "error" in out:
        out["error"]["text"] = ctx.notes[-1].split(": ", 1)[1]
    return out


@scenario
def quorum_queue_argument_checks(ctx):
    # RabbitMQ 3.10 checks the values of a quorum queue's own arguments, in its order (the
    # strategy before the length limits, the group size and the locator after them). It does
    # not check x-delivery-limit.
    cases = {
        "dead-letter-strategy at-least-once": {"x-dead-letter-strategy": "at-least-once"},
        "dead-letter-strategy at-most-once": {"x-dead-letter-strategy": "at-most-once"},
        "dead-letter-strategy unknown": {"x-dead-letter-strategy": "bogus"},
        "dead-letter-strategy as int": {"x-dead-letter-strategy": 5},
        "initial group size 3": {"x-quorum-initial-group-size": 3},
        "initial group size 0": {"x-quorum-initial-group-size": 0},
        "initial group size -1": {"x-quorum-initial-group-size": -1},
        "initial group size as string": {"x-quorum-initial-group-size": "3"},
        "leader locator client-local": {"x-queue-leader-locator": "client-local"},
        "leader locator balanced": {"x-queue-leader-locator": "balanced"},
        "leader locator random": {"x-queue-leader-locator": "random"},
        "leader locator least-leaders": {"x-queue-leader-locator": "least-leaders"},
        "leader locator unknown": {"x-queue-leader-locator": "bogus"},
        "leader locator as int": {"x-queue-leader-locator": 5},
        "max-in-memory-length 10": {"x-max-in-memory-length": 10},
        "max-in-memory-length -1": {"x-max-in-memory-length": -1},
        "max-in-memory-bytes as string": {"x-max-in-memory-bytes": "x"},
        "delivery-limit -1": {"x-delivery-limit": -1},
        "delivery-limit as string": {"x-delivery-limit": "x"},
        "expires 0": {"x-expires": 0},
        "overflow reject-publish-dlx": {"x-overflow": "reject-publish-dlx"},
        "ha-policy (no queue type's)": {"x-ha-policy": "all"},
        "unknown x-foo": {"x-foo": "bar"},
        "bad strategy, bad max-length": {"x-max-length": -1, "x-dead-letter-strategy": "bogus"},
        "bad group size, bad max-length": {"x-max-length": -1, "x-quorum-initial-group-size": "x"},
        "group size 0, bad locator": {"x-queue-leader-locator": "bogus", "x-quorum-initial-group-size": 0},
    }
    for what, args in cases.items():
        ctx.rec(what, _declare_text(ctx, ctx.name("q"), {"x-queue-type": "quorum", **args}))
    ctx.rec("the queue type is checked first", _declare_text(
        ctx, ctx.name("q"), {"x-expires": 0, "x-queue-type": "bogus"}))


@scenario
def queue_arguments_of_other_queue_types(ctx):
    # An argument RabbitMQ 3.10 knows for other queue types only is refused by name (after the
    # type's own checks), whatever its value; the first of several in the order sent (sorted
    # here, Warren's tables being sorted). Priorities on quorum queues and delivery limits on
    # classic queues are Warren's own, so not here.
    quorum = {
        "queue-mode lazy": {"x-queue-mode": "lazy"},
        "queue-mode unknown": {"x-queue-mode": "bogus"},
        "queue-mode as int": {"x-queue-mode": 5},
        "queue-master-locator": {"x-queue-master-locator": "min-masters"},
        "queue-version 2": {"x-queue-version": 2},
        "max-age": {"x-max-age": "1D"},
        "initial-cluster-size": {"x-initial-cluster-size": 3},
        "stream-max-segment-size-bytes": {"x-stream-max-segment-size-bytes": 1000},
        "bad overflow, queue-mode": {"x-overflow": "bogus", "x-queue-mode": "lazy"},
        "bad strategy, queue-mode": {"x-dead-letter-strategy": "bogus", "x-queue-mode": "lazy"},
        "group size 0, queue-mode": {"x-queue-mode": "lazy", "x-quorum-initial-group-size": 0},
        "max-age, queue-mode": {"x-max-age": "1D", "x-queue-mode": "lazy"},
    }
    for what, args in quorum.items():
        ctx.rec(f"quorum {what}", _declare_text(ctx, ctx.name("q"), {"x-queue-type": "quorum", **args}))
    ctx.rec("quorum non-durable, queue-mode", _declare_text(
        ctx, ctx.name("q"), {"x-queue-type": "quorum", "x-queue-mode": "lazy"}, durable=False))
    ctx.rec("quorum exclusive, queue-mode", _declare_text(
        ctx, ctx.name("q"), {"x-queue-type": "quorum", "x-queue-mode": "lazy"}, exclusive=True))
    classic = {
        "dead-letter-strategy": {"x-dead-letter-strategy": "at-least-once"},
        "dead-letter-strategy unknown": {"x-dead-letter-strategy": "bogus"},
        "initial group size 0": {"x-quorum-initial-group-size": 0},
        "leader locator": {"x-queue-leader-locator": "balanced"},
        "max-in-memory-length": {"x-max-in-memory-length": 10},
        "max-in-memory-bytes": {"x-max-in-memory-bytes": 10},
        "max-age unknown": {"x-max-age": "bogus"},
        "initial-cluster-size": {"x-initial-cluster-size": 3},
        "stream-max-segment-size-bytes as string": {"x-stream-max-segment-size-bytes": "x"},
        "bad max-length, strategy": {"x-max-length": -1, "x-dead-letter-strategy": "bogus"},
        "queue-version 1": {"x-queue-version": 1},
        "queue-version 2, queue-master-locator": {"x-queue-master-locator": "min-masters", "x-queue-version": 2},
        "queue-version 3": {"x-queue-version": 3},
        "queue-version 0": {"x-queue-version": 0},
        "queue-version -1": {"x-queue-version": -1},
        "queue-version as string": {"x-queue-version": "2"},
    }
    for what, args in classic.items():
        ctx.rec(f"classic {what}", _declare_text(ctx, ctx.name("q"), args))
    ctx.rec("no type named, initial group size", _declare_text(
        ctx, ctx.name("q"), {"x-quorum-initial-group-size": 3}))


@scenario
def queue_argument_equivalence_per_type(ctx):
    # A redeclare compares the arguments RabbitMQ knows for the queue's type, in that type's
    # order; those of other types are ignored (not refused: the queue exists).
    qq = ctx.queue("qq", durable=True, arguments={"x-queue-type": "quorum"})
    redeclares = {
        "queue-mode": {"x-queue-mode": "lazy"},
        "queue-version": {"x-queue-version": 2},
        "strategy added": {"x-dead-letter-strategy": "at-most-once"},
        "group size added": {"x-quorum-initial-group-size": 3},
        "locator added": {"x-queue-leader-locator": "balanced"},
        "max-in-memory-bytes added": {"x-max-in-memory-bytes": 3},
        "strategy before expires": {"x-expires": 1000, "x-dead-letter-strategy": "at-most-once"},
        "in-memory length before group size, delivery-limit, ttl, locator": {
            "x-delivery-limit": 3, "x-max-in-memory-length": 3, "x-message-ttl": 5,
            "x-queue-leader-locator": "balanced", "x-quorum-initial-group-size": 3},
        "group size before delivery-limit, locator": {
            "x-delivery-limit": 3, "x-queue-leader-locator": "balanced", "x-quorum-initial-group-size": 3},
    }
    for what, args in redeclares.items():
        ctx.rec(f"quorum {what}", _declare_text(ctx, qq, {"x-queue-type": "quorum", **args}))
    qs = ctx.queue("qs", durable=True, arguments={"x-queue-type": "quorum", "x-dead-letter-strategy": "at-most-once"})
    ctx.rec("quorum other strategy", _declare_text(
        ctx, qs, {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once"}))
    cq = ctx.queue("cq", durable=True)
    redeclares = {
        "strategy": {"x-dead-letter-strategy": "bogus"},
        "group size": {"x-quorum-initial-group-size": 0},
        "max-age": {"x-max-age": "1D"},
        "queue-version added": {"x-queue-version": 2},
        "queue-master-locator added": {"x-queue-master-locator": "random"},
        "expires before mode, version, locator": {
            "x-expires": 1000, "x-queue-master-locator": "random", "x-queue-mode": "lazy", "x-queue-version": 2},
        "mode before version, locator": {
            "x-queue-master-locator": "random", "x-queue-mode": "lazy", "x-queue-version": 2},
        "version before locator": {"x-queue-master-locator": "random", "x-queue-version": 2},
    }
    for what, args in redeclares.items():
        ctx.rec(f"classic {what}", _declare_text(ctx, cq, args))
