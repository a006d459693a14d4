"""Scenarios: which queues get which messages, for every exchange type, exchange-to-exchange
bindings, alternate exchanges, mandatory returns and sender-selected distribution (CC/BCC)."""

from harness import Typed, scenario


def _returns(ctx, ch=None):
    """A list that fills with the basic.return frames the channel receives."""
    got = []
    (ch or ctx.ch).events["basic_return"].add(
        lambda exc, exchange, rk, m: got.append({
            "code": exc.reply_code, "constant": str(exc.reply_text).split(" - ")[0],
            "exchange": exchange, "routing_key": rk, "message": ctx.msg(m)}))
    return got


@scenario
def direct_exchange(ctx):
    x = ctx.exchange("x", "direct")
    qa, qb, qab = ctx.queue("qa"), ctx.queue("qb"), ctx.queue("qab")
    ctx.ch.queue_bind(qa, x, "a")
    ctx.ch.queue_bind(qb, x, "b")
    ctx.ch.queue_bind(qab, x, "a")
    ctx.ch.queue_bind(qab, x, "b")
    ctx.ch.queue_bind(qab, x, "a")  # the same binding twice is one binding
    for k in ("a", "b", "c", "A", ""):
        ctx.publish(f"key {k!r}", x, k)
    ctx.sync()
    for q in (qa, qb, qab):
        ctx.rec(q, ctx.drain_get(q))


@scenario
def fanout_exchange_ignores_the_key(ctx):
    x = ctx.exchange("x", "fanout")
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    ctx.ch.queue_bind(q1, x, "bound-with-a-key")
    ctx.ch.queue_bind(q2, x, "")
    for k in ("", "anything", "bound-with-a-key"):
        ctx.publish(f"key {k!r}", x, k)
    ctx.sync()
    ctx.rec(q1, ctx.bodies(q1))
    ctx.rec(q2, ctx.bodies(q2))


def _topic_matrix(ctx, patterns, keys):
    x = ctx.exchange("x", "topic")
    queues = {}
    for i, p in enumerate(patterns):
        q = ctx.queue(f"p{i}")
        ctx.ch.queue_bind(q, x, p)
        queues[p] = q
    for k in keys:
        ctx.publish(k, x, k)
    ctx.sync()
    for p, q in queues.items():
        ctx.rec(f"pattern {p!r}", ctx.bodies(q))


@scenario
def topic_wildcards(ctx):
    _topic_matrix(
        ctx,
        ["*", "#", "a.*", "a.#", "#.z", "*.b.*", "a.*.c", "a.#.c", "#.#", "*.#", "a.b.c"],
        ["", "a", "z", "a.b", "a.z", "x.z", "a.b.c", "a.c", "a.b.b.c", "x.b.y", "a.b.c.z"])


@scenario
def topic_empty_words_and_odd_keys(ctx):
    _topic_matrix(
        ctx,
        ["", "a..c", "a.*.c", "*", ".", "#.", "a.#", "#.c", "*.*"],
        ["", ".", "..", "a..c", "a.", ".c", "a.b.c", "c", "#", "*"])


@scenario
def headers_exchange_all_and_any(ctx):
    x = ctx.exchange("x", "headers")
    binds = {
        "all-2": {"x-match": "all", "h1": "v1", "h2": 2},
        "any-2": {"x-match": "any", "h1": "v1", "h2": 2},
        "default": {"h1": "v1"},
        "empty-all": {"x-match": "all"},
        "empty-any": {"x-match": "any"},
    }
    queues = {}
    for tag, args in binds.items():
        q = ctx.queue(tag)
        ctx.ch.queue_bind(q, x, "", arguments=args)
        queues[tag] = q
    msgs = {
        "both": {"h1": "v1", "h2": 2},
        "both+extra": {"h1": "v1", "h2": 2, "h3": "x"},
        "h1 only": {"h1": "v1"},
        "h2 only": {"h2": 2},
        "h1 wrong": {"h1": "v2", "h2": 2},
        "none": {},
        "no headers property": None,
    }
    for body, headers in msgs.items():
        if headers is None:
            ctx.publish(body, x, "ignored-key")
        else:
            ctx.publish(body, x, "ignored-key", application_headers=headers)
    ctx.sync()
    for tag, q in queues.items():
        ctx.rec(tag, ctx.bodies(q))


@scenario
def headers_exchange_value_types(ctx):
    # Does a binding value match a header of the same number or text under another field type?
    x = ctx.exchange("x", "headers")
    binds = {
        "I 5": {"k": Typed("I", 5)},
        "l 5": {"k": Typed("l", 5)},
        "S '5'": {"k": Typed("S", "5")},
        "t true": {"k": Typed("t", True)},
        "b 1": {"k": Typed("b", 1)},
        "d 5.0": {"k": Typed("d", 5.0)},
    }
    queues = {}
    for tag, args in binds.items():
        q = ctx.queue(tag.replace(" ", "-").replace("'", ""))
        ctx.ch.queue_bind(q, x, "", arguments=dict(args, **{"x-match": "all"}))
        queues[tag] = q
    for tag, v in (("I 5", Typed("I", 5)), ("l 5", Typed("l", 5)), ("s 5", Typed("s", 5)),
                   ("u 5", Typed("u", 5)), ("S '5'", Typed("S", "5")), ("x '5'", Typed("x", b"5")),
                   ("t true", Typed("t", True)), ("b 1", Typed("b", 1)), ("B 1", Typed("B", 1)),
                   ("d 5.0", Typed("d", 5.0)), ("f 5.0", Typed("f", 5.0))):
        ctx.publish(tag, x, "", application_headers={"k": v})
    ctx.sync()
    for tag, q in queues.items():
        ctx.rec(f"binding {tag}", ctx.bodies(q))


@scenario
def headers_exchange_x_keys_and_void(ctx):
    x = ctx.exchange("x", "headers")
    bx = ctx.queue("x-key-in-binding")
    ctx.ch.queue_bind(bx, x, "", arguments={"x-match": "all", "x-diff": "ignored?", "k": "v"})
    bv = ctx.queue("void-value")
    ctx.ch.queue_bind(bv, x, "", arguments={"x-match": "all", "k": None})
    bany = ctx.queue("any-x-only")
    ctx.ch.queue_bind(bany, x, "", arguments={"x-match": "any", "x-diff": "v"})
    for body, h in (("k=v", {"k": "v"}), ("k=v x-diff=v", {"k": "v", "x-diff": "v"}),
                    ("k=other", {"k": "other"}), ("k void", {"k": None}), ("x-diff=v", {"x-diff": "v"})):
        ctx.publish(body, x, "", application_headers=h)
    ctx.sync()
    for q in (bx, bv, bany):
        ctx.rec(q, ctx.bodies(q))


@scenario
def headers_exchange_unbind_by_arguments(ctx):
    x = ctx.exchange("x", "headers")
    q = ctx.queue("q")
    ctx.ch.queue_bind(q, x, "", arguments={"x-match": "any", "a": "1"})
    ctx.ch.queue_bind(q, x, "", arguments={"x-match": "any", "b": "2"})
    ctx.ch.queue_unbind(q, x, "", arguments={"x-match": "any", "a": "1"})
    for body, h in (("a", {"a": "1"}), ("b", {"b": "2"})):
        ctx.publish(body, x, "", application_headers=h)
    ctx.sync()
    ctx.rec("queue", ctx.bodies(q))


@scenario
def exchange_to_exchange_chain_and_duplicates(ctx):
    x1, x2, x3 = ctx.exchange("x1", "topic"), ctx.exchange("x2", "direct"), ctx.exchange("x3", "fanout")
    q, qd = ctx.queue("q"), ctx.queue("q-direct")
    ctx.ch.exchange_bind(x2, x1, "a.b")
    ctx.ch.exchange_bind(x3, x2, "a.b")
    ctx.ch.queue_bind(q, x3, "")
    ctx.ch.queue_bind(q, x1, "#")       # q is reachable two ways: one copy only
    ctx.ch.queue_bind(qd, x2, "a.b")
    for k in ("a.b", "a.c"):
        ctx.publish(k, x1, k)
    ctx.sync()
    ctx.rec("q", ctx.drain_get(q))
    ctx.rec("q-direct", ctx.drain_get(qd))
    ctx.ch.exchange_unbind(x2, x1, "a.b")
    ctx.publish("after unbind", x1, "a.b")
    ctx.sync()
    ctx.rec("q after unbind", ctx.bodies(q))
    ctx.rec("q-direct after unbind", ctx.bodies(qd))


@scenario
def exchange_to_exchange_cycle(ctx):
    x1, x2 = ctx.exchange("x1", "fanout"), ctx.exchange("x2", "fanout")
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    ctx.ch.exchange_bind(x2, x1, "")
    ctx.ch.exchange_bind(x1, x2, "")
    ctx.ch.queue_bind(q1, x1, "")
    ctx.ch.queue_bind(q2, x2, "")
    ctx.publish("into x1", x1)
    ctx.publish("into x2", x2)
    ctx.sync()
    ctx.rec("q1", ctx.bodies(q1))
    ctx.rec("q2", ctx.bodies(q2))


@scenario
def alternate_exchange(ctx):
    ae = ctx.exchange("ae", "fanout")
    x = ctx.exchange("x", "direct", arguments={"alternate-exchange": ae})
    q, qae = ctx.queue("q"), ctx.queue("q-ae")
    ctx.ch.queue_bind(q, x, "k")
    ctx.ch.queue_bind(qae, ae, "")
    returns = _returns(ctx)
    ctx.publish("routed", x, "k", mandatory=True)
    ctx.publish("unroutable", x, "other", mandatory=True)
    ctx.sync()
    ctx.settle()
    ctx.rec("returns", returns)
    ctx.rec("q", ctx.drain_get(q))
    ctx.rec("q-ae", ctx.drain_get(qae))


@scenario
def alternate_exchange_missing_or_unroutable_too(ctx):
    missing = ctx.name("missing-ae")
    x1 = ctx.exchange("x1", "direct", arguments={"alternate-exchange": missing})
    ae_empty = ctx.exchange("ae-no-bindings", "fanout")
    x2 = ctx.exchange("x2", "direct", arguments={"alternate-exchange": ae_empty})
    returns = _returns(ctx)
    ctx.publish("to x1", x1, "k", mandatory=True)
    ctx.publish("to x2", x2, "k", mandatory=True)
    ctx.publish("to x2, not mandatory", x2, "k")
    ctx.sync()
    ctx.settle()
    ctx.rec("returns", returns)


@scenario
def alternate_exchange_chain(ctx):
    ae2 = ctx.exchange("ae2", "fanout")
    ae1 = ctx.exchange("ae1", "direct", arguments={"alternate-exchange": ae2})
    x = ctx.exchange("x", "direct", arguments={"alternate-exchange": ae1})
    q2 = ctx.queue("q-ae2")
    ctx.ch.queue_bind(q2, ae2, "")
    ctx.publish("falls through two", x, "k")
    ctx.sync()
    ctx.rec("q-ae2", ctx.drain_get(q2))


@scenario
def mandatory_return(ctx):
    x = ctx.exchange("x", "direct")
    returns = _returns(ctx)
    ctx.publish("to nowhere", x, "no-binding", mandatory=True, content_type="text/plain",
                application_headers={"h": Typed("I", 7)}, message_id="m-1")
    ctx.publish("to default exchange, no such queue", "", ctx.name("noq"), mandatory=True)
    ctx.publish("not mandatory", x, "no-binding")
    ctx.sync()
    ctx.settle()
    ctx.rec("returns", [dict(r, message=dict(r["message"], properties=r["message"].get("properties"))) for r in returns])


@scenario
def mandatory_return_keeps_properties(ctx):
    returns = []
    ctx.ch.events["basic_return"].add(lambda exc, exchange, rk, m: returns.append(ctx.msg(m, props=True)))
    ctx.publish(b"\x00\x01binary", "", ctx.name("noq"), mandatory=True, delivery_mode=2, priority=3,
                correlation_id="c", reply_to="r", timestamp=1700000000, type="t", app_id="a",
                application_headers={"s": "v", "n": Typed("l", -5), "t": Typed("F", {"in": Typed("b", -1)})})
    ctx.sync()
    ctx.settle()
    ctx.rec("returned", returns)


@scenario
def default_exchange_routes_by_queue_name(ctx):
    q = ctx.queue("q")
    ctx.publish("exact", "", q)
    ctx.publish("other case", "", q.upper())
    ctx.publish("prefix", "", q[:-1])
    ctx.sync()
    ctx.rec("q", ctx.drain_get(q))


@scenario
def sender_selected_distribution_cc_bcc(ctx):
    x = ctx.exchange("x", "direct")
    qa, qb, qc, qd = ctx.queue("qa"), ctx.queue("qb"), ctx.queue("qc"), ctx.queue("qd")
    for q, k in ((qa, "a"), (qb, "b"), (qc, "c"), (qd, "d")):
        ctx.ch.queue_bind(q, x, k)
    ctx.publish("cc+bcc", x, "a", application_headers={
        "CC": Typed("A", [Typed("S", "b")]), "BCC": Typed("A", [Typed("S", "c"), Typed("S", "a")]),
        "other": Typed("I", 1)})
    ctx.rec("publish with CC and BCC arrays", ctx.sync())
    ctx.publish("cc as a plain string", x, "a", application_headers={"CC": Typed("S", "d")})
    ctx.rec("publish with CC as a long string", ctx.sync())
    for q in (qa, qb, qc, qd):
        ctx.rec(q, [ctx.msg(m, props=True) for m in _get_all(ctx, q)])


def _get_all(ctx, q):
    out = []
    while True:
        m = ctx.ch.basic_get(q, no_ack=True)
        if m is None:
            return out
        out.append(m)


@scenario
def order_is_kept_per_queue(ctx):
    x = ctx.exchange("x", "fanout")
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    ctx.ch.queue_bind(q1, x, "")
    ctx.ch.queue_bind(q2, x, "")
    for i in range(200):
        ctx.publish(str(i), x)
    ctx.sync()
    b1, b2 = ctx.bodies(q1), ctx.bodies(q2)
    ctx.rec("q1 in order", b1 == [str(i) for i in range(200)])
    ctx.rec("q2 in order", b2 == [str(i) for i in range(200)])
