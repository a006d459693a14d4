"""Scenarios: error replies (channel and connection close codes with class/method ids), what is
not implemented, and what the connection handshake shows."""

import time

import amqp
from amqp import spec

from harness import scenario


@scenario
def publish_to_missing_exchange(ctx):
    ctx.publish("lost", ctx.name("nox"), "k")
    ctx.rec("close", ctx.sync())
    ctx.rec("connection still usable", ctx.attempt(lambda: ctx.channel().queue_declare("", exclusive=True) and None))


@scenario
def channel_error_leaves_other_channels_alone(ctx):
    q = ctx.queue("q")
    ch_ok, ch_bad = ctx.channel(), ctx.channel()
    ctx.seed(q, ["a"])
    ctx.rec("get unacked on ok channel", ctx.get(q, ch=ch_ok, no_ack=False))
    ctx.rec("error on the other", ctx.attempt(ch_bad.queue_declare, ctx.name("missing"), passive=True))
    ch_ok.basic_ack(1)
    ctx.rec("ack on the ok channel", ctx.sync(ch_ok))
    ctx.rec("left", ctx.declare_ok(q))


@scenario
def immediate_flag(ctx):
    q = ctx.queue("q")
    ctx.publish("immediate", "", q, immediate=True)
    ctx.rec("close", ctx.sync())


@scenario
def qos_prefetch_size(ctx):
    ctx.rec("prefetch_size 1000", ctx.attempt(ctx.ch.basic_qos, 1000, 0, False))


@scenario
def channel_flow(ctx):
    ctx.rec("flow active", ctx.attempt(ctx.ch.flow, True))
    ctx.rec("flow inactive", ctx.attempt(ctx.channel().flow, False))


@scenario
def wrong_password(ctx):
    ctx.rec("connect", ctx.attempt(lambda: ctx.connect(password="diff-wrong-password") and None))


@scenario
def unknown_vhost(ctx):
    ctx.rec("connect", ctx.attempt(lambda: ctx.connect(vhost="diff-no-such-vhost") and None))


@scenario
def method_on_a_channel_that_is_not_open(ctx):
    conn = ctx.conn
    ch = amqp.Channel(conn, channel_id=77)   # registered with the client, never opened on the wire
    ctx.rec("basic.qos on channel 77", ctx.attempt(ch.basic_qos, 0, 10, False))
    ctx.rec("connection open after", bool(conn.connected))


@scenario
def channel_open_twice(ctx):
    ch = ctx.ch
    ctx.rec("second channel.open", ctx.attempt(
        lambda: ch.send_method(spec.Channel.Open, "s", ("",), wait=spec.Channel.OpenOk) and None))


@scenario
def get_from_missing_queue(ctx):
    ctx.rec("get", ctx.attempt(ctx.ch.basic_get, ctx.name("missing")))


@scenario
def errors_on_a_reopened_channel(ctx):
    # py-amqp reopens a channel the broker closed; the reopened channel must work normally.
    q = ctx.queue("q")
    for i in range(3):
        ctx.rec(f"error {i}", ctx.attempt(ctx.ch.queue_declare, ctx.name(f"missing{i}"), passive=True))
    ctx.seed(q, ["after errors"])
    ctx.rec("get", ctx.get(q))


@scenario
def server_capabilities(ctx):
    conn = ctx.conn
    props = conn.server_properties
    ctx.rec("capabilities", dict(sorted((props.get("capabilities") or {}).items())))
    ctx.rec("mechanisms", sorted(m.decode() if isinstance(m, bytes) else m for m in conn.mechanisms))
    ctx.rec("server property keys", sorted(k for k in props if k in (
        "product", "version", "platform", "copyright", "information", "capabilities", "cluster_name")))


@scenario
def tune_parameters(ctx):
    conn = ctx.conn
    ctx.rec("channel_max", conn.channel_max)
    ctx.rec("frame_max", conn.frame_max)
    ctx.rec("heartbeat", conn.server_heartbeat)


@scenario
def heartbeats_accepted(ctx):
    conn = ctx.connect(heartbeat=2)
    ch = ctx.channel(conn)
    q = ctx.queue("q", ch=ch)
    deadline = time.monotonic() + 5      # two and a half heartbeat intervals
    while time.monotonic() < deadline:
        conn.heartbeat_tick()
        try:
            conn.drain_events(timeout=0.2)
        except Exception:
            pass
    ctx.rec("connection alive after 5 s of heartbeats", ctx.attempt(lambda: ctx.declare_ok(q, ch=ch)))
