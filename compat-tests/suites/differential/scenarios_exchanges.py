"""Scenarios: exchange.declare / delete / bind, built-in exchanges, auto-delete, internal."""

from harness import scenario


@scenario
def declare_every_type(ctx):
    for t in ("direct", "fanout", "topic", "headers"):
        x = ctx.name(f"x-{t}")
        ctx.rec(f"declare {t}", ctx.attempt(ctx.exchange_declare, x, t))
        ctx.rec(f"passive {t}", ctx.attempt(ctx.exchange_declare, x, t, passive=True))
        ctx.rec(f"passive {t} with another type", ctx.attempt(ctx.exchange_declare, x, "fanout" if t != "fanout" else "direct", passive=True))


@scenario
def builtin_exchanges_exist(ctx):
    for x in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"):
        ctx.rec(x, ctx.attempt(ctx.exchange_declare, x, "direct", passive=True))


@scenario
def redeclare_with_other_type(ctx):
    x = ctx.exchange("x", "direct")
    ctx.rec("as fanout", ctx.attempt(ctx.exchange_declare, x, "fanout"))


@scenario
def redeclare_with_other_durable_or_auto_delete(ctx):
    x = ctx.exchange("x", "topic", durable=True)
    ctx.rec("transient", ctx.attempt(ctx.exchange_declare, x, "topic", durable=False))
    ctx.rec("auto-delete", ctx.attempt(ctx.exchange_declare, x, "topic", durable=True, auto_delete=True))
    ctx.rec("same", ctx.attempt(ctx.exchange_declare, x, "topic", durable=True))


@scenario
def declare_unknown_type(ctx):
    ctx.rec("declare", ctx.attempt(ctx.exchange_declare, ctx.name("x"), "no-such-type"))


@scenario
def declare_reserved_amq_prefix(ctx):
    ctx.rec("new amq.*", ctx.attempt(ctx.exchange_declare, "amq.diff-reserved", "direct"))


@scenario
def redeclare_builtin_exchange(ctx):
    ctx.rec("amq.direct as is", ctx.attempt(ctx.exchange_declare, "amq.direct", "direct", durable=True))


@scenario
def declare_default_exchange(ctx):
    ctx.rec("passive ''", ctx.attempt(ctx.exchange_declare, "", "direct", passive=True))
    ctx.rec("declare ''", ctx.attempt(ctx.exchange_declare, "", "direct", durable=True))


@scenario
def passive_declare_of_missing_exchange(ctx):
    ctx.rec("passive", ctx.attempt(ctx.exchange_declare, ctx.name("missing"), "direct", passive=True))


@scenario
def delete_exchange(ctx):
    x = ctx.exchange("x")
    ctx.rec("delete", ctx.attempt(ctx.ch.exchange_delete, x))
    ctx.rec("exists after", ctx.exists(x, "exchange"))
    ctx.rec("delete missing", ctx.attempt(ctx.ch.exchange_delete, ctx.name("missing")))


@scenario
def delete_exchange_if_unused(ctx):
    x = ctx.exchange("x")
    q = ctx.queue("q")
    ctx.ch.queue_bind(q, x, "k")
    ctx.rec("if-unused, bound", ctx.attempt(ctx.ch.exchange_delete, x, if_unused=True))
    ctx.ch.queue_unbind(q, x, "k")
    ctx.rec("if-unused, unbound", ctx.attempt(ctx.ch.exchange_delete, x, if_unused=True))


@scenario
def delete_exchange_used_as_e2e_source_if_unused(ctx):
    src, dst = ctx.exchange("src", "fanout"), ctx.exchange("dst", "fanout")
    ctx.ch.exchange_bind(dst, src, "")
    ctx.rec("delete source if-unused", ctx.attempt(ctx.ch.exchange_delete, src, if_unused=True))
    ctx.rec("delete destination if-unused", ctx.attempt(ctx.ch.exchange_delete, dst, if_unused=True))


@scenario
def delete_builtin_and_default_exchanges(ctx):
    ctx.rec("delete amq.fanout", ctx.attempt(ctx.ch.exchange_delete, "amq.fanout"))
    ctx.rec("delete ''", ctx.attempt(ctx.ch.exchange_delete, ""))
    ctx.rec("amq.fanout still there", ctx.exists("amq.fanout", "exchange"))


@scenario
def bind_to_default_exchange(ctx):
    q = ctx.queue("q")
    ctx.rec("bind to ''", ctx.attempt(lambda: ctx.ch.queue_bind(q, "", "other-key") and None))
    ctx.rec("unbind from ''", ctx.attempt(lambda: ctx.ch.queue_unbind(q, "", q) and None))


@scenario
def bind_missing_queue_or_exchange(ctx):
    q, x = ctx.queue("q"), ctx.exchange("x")
    ctx.rec("queue.bind missing exchange", ctx.attempt(lambda: ctx.ch.queue_bind(q, ctx.name("nox"), "k") and None))
    ctx.rec("queue.bind missing queue", ctx.attempt(lambda: ctx.ch.queue_bind(ctx.name("noq"), x, "k") and None))
    ctx.rec("exchange.bind missing source", ctx.attempt(lambda: ctx.ch.exchange_bind(x, ctx.name("nosrc"), "k") and None))
    ctx.rec("exchange.bind missing destination", ctx.attempt(lambda: ctx.ch.exchange_bind(ctx.name("nodst"), x, "k") and None))


@scenario
def unbind_binding_that_does_not_exist(ctx):
    q, x = ctx.queue("q"), ctx.exchange("x")
    ctx.rec("queue.unbind", ctx.attempt(lambda: ctx.ch.queue_unbind(q, x, "never-bound") and None))
    ctx.rec("exchange.unbind", ctx.attempt(lambda: ctx.ch.exchange_unbind(x, "amq.direct", "never-bound") and None))
    ctx.rec("queue.unbind missing exchange", ctx.attempt(lambda: ctx.ch.queue_unbind(q, ctx.name("nox"), "k") and None))


@scenario
def auto_delete_exchange(ctx):
    x = ctx.exchange("x", "fanout", auto_delete=True)
    ctx.rec("exists before any binding", ctx.exists(x, "exchange"))
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    ctx.ch.queue_bind(q1, x, "")
    ctx.ch.queue_bind(q2, x, "")
    ctx.ch.queue_unbind(q1, x, "")
    ctx.rec("exists with one binding left", ctx.exists(x, "exchange"))
    ctx.ch.queue_unbind(q2, x, "")
    ctx.wait(lambda: not ctx.exists(x, "exchange"))
    ctx.rec("exists after last unbind", ctx.exists(x, "exchange"))


@scenario
def auto_delete_exchange_when_bound_queue_is_deleted(ctx):
    x = ctx.exchange("x", "fanout", auto_delete=True)
    q = ctx.queue("q")
    ctx.ch.queue_bind(q, x, "")
    ctx.ch.queue_delete(q)
    ctx.wait(lambda: not ctx.exists(x, "exchange"))
    ctx.rec("exists after its only bound queue was deleted", ctx.exists(x, "exchange"))


@scenario
def internal_exchange(ctx):
    internal = ctx.exchange("internal", "fanout", internal=True)
    front = ctx.exchange("front", "fanout")
    q = ctx.queue("q")
    ctx.ch.queue_bind(q, internal, "")
    ctx.ch.exchange_bind(internal, front, "")
    ctx.publish("via front", front)
    ctx.rec("sync", ctx.sync())
    ctx.publish("direct to internal", internal)
    ctx.rec("publish to internal", ctx.sync())
    ctx.rec("queue", ctx.bodies(q))
    ctx.rec("redeclare as not internal", ctx.attempt(ctx.exchange_declare, internal, "fanout"))


@scenario
def firehose_trace_exchange(ctx):
    # RabbitMQ predeclares amq.rabbitmq.trace: a durable, internal topic exchange.
    ctx.rec("passive", ctx.attempt(ctx.exchange_declare, "amq.rabbitmq.trace", "topic", passive=True))
    ctx.rec("redeclare", ctx.attempt(ctx.exchange_declare, "amq.rabbitmq.trace", "topic", durable=True,
                                     internal=True))
    ctx.publish("to the trace exchange", "amq.rabbitmq.trace", "publish.x")
    ctx.rec("publish", ctx.sync())


@scenario
def deleting_an_exchange_removes_its_bindings(ctx):
    x = ctx.exchange("x", "fanout")
    q = ctx.queue("q")
    ctx.ch.queue_bind(q, x, "")
    ctx.ch.exchange_delete(x)
    ctx.exchange_declare(x, "fanout")
    returned = []
    ctx.ch.events["basic_return"].add(lambda exc, exchange, rk, m: returned.append(exc.reply_code))
    ctx.publish("after redeclare", x, mandatory=True)
    ctx.sync()
    ctx.settle()
    ctx.rec("returned", returned)
    ctx.rec("queue", ctx.bodies(q))


@scenario
def deleting_a_queue_removes_its_bindings(ctx):
    x = ctx.exchange("x", "direct")
    q = ctx.queue("q")
    ctx.ch.queue_bind(q, x, "k")
    ctx.ch.queue_delete(q)
    ctx.ch.queue_declare(q, auto_delete=False)
    ctx.publish("after", x, "k")
    ctx.sync()
    ctx.rec("queue", ctx.bodies(q))


@scenario
def exchange_arguments_are_accepted(ctx):
    x = ctx.exchange("x", "direct", arguments={"diff-arg": "v", "n": 1})
    ctx.rec("redeclare with other arguments", ctx.attempt(ctx.exchange_declare, x, "direct", arguments={"diff-arg": "w"}))


@scenario
def exchange_unbind_missing_ends(ctx):
    x = ctx.exchange("x")
    ch = ctx.channel()
    ctx.rec("missing source", ctx.attempt(lambda: ch.exchange_unbind(x, ctx.name("nosrc"), "k") and None))
    ctx.rec("missing destination", ctx.attempt(lambda: ch.exchange_unbind(ctx.name("nodst"), x, "k") and None))
    ctx.rec("both missing", ctx.attempt(
        lambda: ch.exchange_unbind(ctx.name("nodst2"), ctx.name("nosrc2"), "k") and None))
    ctx.rec("default exchange as source", ctx.attempt(lambda: ctx.channel().exchange_unbind(x, "", "k") and None))
    ctx.rec("default exchange as destination", ctx.attempt(
        lambda: ctx.channel().exchange_unbind("", ctx.name("nosrc3"), "k") and None))
