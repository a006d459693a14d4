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
