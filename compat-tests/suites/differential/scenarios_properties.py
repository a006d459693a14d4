"""Scenarios: message properties and bodies end to end, with every field-table value type."""

import random

from harness import Typed, scenario

ALL_TYPES = {
    "bool": Typed("t", True),
    "int8": Typed("b", -128),
    "uint8": Typed("B", 255),
    "int16": Typed("s", -32768),
    "uint16": Typed("u", 65535),
    "int32": Typed("I", -2147483648),
    "uint32": Typed("i", 4294967295),
    "int64": Typed("l", -9223372036854775808),
    "float": Typed("f", 1.5),
    "double": Typed("d", -2.25),
    "decimal": Typed("D", [2, -12345]),
    "longstr": Typed("S", "long string ✓"),
    "bytes": Typed("x", b"\x00\xffraw"),
    "array": Typed("A", [Typed("I", 1), Typed("S", "two"), Typed("t", False), Typed("V", None)]),
    "timestamp": Typed("T", 1700000000),
    "table": Typed("F", {"nested": Typed("F", {"deep": Typed("l", 42)}), "empty": Typed("F", {})}),
    "void": Typed("V", None),
}


def _roundtrip(ctx, body=b"body", **props):
    q = ctx.queue("q")
    ctx.publish(body, "", q, **props)
    ctx.sync()
    return ctx.get(q, props=True)


@scenario
def every_basic_property(ctx):
    ctx.rec("delivered", _roundtrip(
        ctx, b"all properties", content_type="application/json", content_encoding="gzip",
        application_headers={"k": "v", "n": 1}, delivery_mode=2, priority=7, correlation_id="corr-1",
        reply_to="reply-q", message_id="msg-1", timestamp=1700000000, type="diff.type",
        user_id=ctx.user, app_id="diff-app", cluster_id="cluster-x"))


@scenario
def no_properties_at_all(ctx):
    ctx.rec("delivered", _roundtrip(ctx, b"bare"))


@scenario
def every_field_type_in_headers(ctx):
    ctx.rec("delivered", _roundtrip(ctx, b"types", application_headers=dict(ALL_TYPES)))


@scenario
def field_type_edge_values(ctx):
    ctx.rec("delivered", _roundtrip(ctx, b"edges", application_headers={
        "int8 max": Typed("b", 127), "int16 max": Typed("s", 32767), "int32 max": Typed("I", 2147483647),
        "int64 max": Typed("l", 9223372036854775807), "uint8 0": Typed("B", 0), "uint32 0": Typed("i", 0),
        "decimal 0 scale": Typed("D", [0, 7]), "decimal max scale": Typed("D", [255, 1]),
        "empty string": Typed("S", ""), "empty bytes": Typed("x", b""), "empty array": Typed("A", []),
        "timestamp 0": Typed("T", 0), "timestamp max": Typed("T", 2**64 - 1),
        "non-utf8 longstr": Typed("S", b"\xff\xfe\x00"), "double tiny": Typed("d", 5e-324),
        "": Typed("S", "empty key"), "k" * 255: Typed("S", "255-octet key"), "ключ": Typed("S", "значение"),
    }))


@scenario
def empty_headers_table_and_empty_strings(ctx):
    ctx.rec("delivered", _roundtrip(ctx, b"empties", application_headers={}, content_type="",
                                    correlation_id="", type=""))


@scenario
def delivery_mode_and_priority_values(ctx):
    q = ctx.queue("q")
    for dm, pr in ((1, 0), (2, 9), (2, 255), (0, 1), (3, 1)):
        ch = ctx.channel()
        ctx.publish(f"dm={dm} pr={pr}", "", q, ch=ch, delivery_mode=dm, priority=pr)
        ctx.rec(f"publish dm={dm} pr={pr}", ctx.sync(ch))
    ctx.rec("delivered", [{"body": m["body"], "properties": m["properties"]} for m in ctx.drain_get(q, props=True)])


@scenario
def utf8_in_string_properties(ctx):
    ctx.rec("delivered", _roundtrip(ctx, "тело ✓".encode(), content_type="text/plain; charset=utf-8",
                                    correlation_id="ключ-✓", reply_to="очередь", message_id="id-名前",
                                    type="тип", app_id="приложение"))


@scenario
def user_id_must_match_the_login(ctx):
    q = ctx.queue("q")
    ctx.publish("as myself", "", q, user_id=ctx.user)
    ctx.rec("own user id", ctx.sync())
    ctx.publish("as someone else", "", q, user_id="diff-not-me")
    ctx.rec("other user id", ctx.sync())
    ctx.rec("queue", ctx.bodies(q))


@scenario
def bodies_empty_binary_and_multi_frame(ctx):
    q = ctx.queue("q")
    big = random.Random(7).randbytes(3 * 131072 + 17)   # several body frames at frame_max 128 KiB
    for b in (b"", bytes(range(256)), big, b"x" * 131064, b"y" * 131065):
        ctx.publish(b, "", q)
    ctx.sync()
    ctx.rec("delivered", [m["body"] for m in ctx.drain_get(q)])


@scenario
def properties_survive_requeue_and_fanout(ctx):
    x = ctx.exchange("x", "fanout")
    q1, q2 = ctx.queue("q1"), ctx.queue("q2")
    ctx.ch.queue_bind(q1, x, "")
    ctx.ch.queue_bind(q2, x, "")
    ctx.publish(b"p", x, "rk", content_type="a/b", application_headers={"t": Typed("s", -2)}, delivery_mode=2)
    ctx.sync()
    first = ctx.get(q1, no_ack=False, props=True)
    ctx.ch.basic_reject(first["delivery_tag"], requeue=True)
    ctx.rec("q1 first", first)
    ctx.rec("q1 redelivered", ctx.get(q1, props=True))
    ctx.rec("q2", ctx.get(q2, props=True))


@scenario
def properties_to_a_consumer(ctx):
    q = ctx.queue("q")
    ctx.publish(b"c", "", q, content_type="text/plain", application_headers=dict(ALL_TYPES), priority=1,
                expiration=None, timestamp=42)
    ctx.sync()
    _tag, got = ctx.consume(q, no_ack=True, props=True)
    ctx.wait(lambda: got)
    ctx.rec("delivered", [m for m, _ in got])


@scenario
def bcc_removal_keeps_other_header_types(ctx):
    x = ctx.exchange("x", "direct")
    qa, qb = ctx.queue("qa"), ctx.queue("qb")
    ctx.ch.queue_bind(qa, x, "a")
    ctx.ch.queue_bind(qb, x, "b")
    headers = dict(ALL_TYPES)
    headers["BCC"] = Typed("A", [Typed("S", "b")])
    ctx.publish(b"bcc", x, "a", application_headers=headers)
    ctx.sync()
    ctx.rec("qa", ctx.get(qa, props=True))
    ctx.rec("qb", ctx.get(qb, props=True))


@scenario
def field_types_in_method_arguments(ctx):
    # Arguments tables of declare and bind travel as field tables too: the broker must parse every
    # type (here in keys it does not interpret) without closing the channel.
    args = {k: v for k, v in ALL_TYPES.items()}
    q = ctx.name("q")
    ctx.rec("queue.declare", ctx.attempt(lambda: ctx.ch.queue_declare(q, auto_delete=False, arguments=args) and None))
    x = ctx.name("x")
    ctx.rec("exchange.declare", ctx.attempt(ctx.exchange_declare, x, "topic", arguments=args))
    ctx.rec("queue.bind", ctx.attempt(lambda: ctx.ch.queue_bind(q, x, "k", arguments=args) and None))
    ctx.rec("consume", ctx.attempt(lambda: ctx.consume(q, arguments=args)[0]))
