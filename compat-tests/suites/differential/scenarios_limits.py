"""Scenarios: topic permissions, vhost limits and user limits, through the management API (status
codes, bodies, errors) and as clients meet them on AMQP (403 on a topic routing or binding key,
530 on connection.open and channel.open, 406 on queue.declare). They need both brokers'
management API with an administrator (the default user); otherwise they are skipped."""

from urllib.parse import quote

from harness import scenario
from scenarios_access import refusal


def sorted_rows(answer):
    """(status, rows sorted) for a listing whose order RabbitMQ does not fix."""
    status, body = answer
    if isinstance(body, list):
        body = sorted(body, key=lambda row: sorted((k, str(v)) for k, v in row.items()))
    return status, body


@scenario
def topic_permissions_on_publish_and_bind(ctx):
    u = ctx.name("user")
    vh = quote(ctx.vhost, safe="")
    q = ctx.queue("q")
    tx = ctx.exchange("tx", type="topic")
    dx = ctx.exchange("dx", type="direct")
    dest = ctx.exchange("dest", type="fanout")
    try:
        ctx.http(f"/api/users/{u}", method="PUT", body={"password": "pp", "tags": ""})
        ctx.http(f"/api/permissions/{vh}/{u}", method="PUT",
                 body={"configure": ".*", "write": ".*", "read": ".*"})
        put = lambda body: ctx.http(f"/api/topic-permissions/{vh}/{u}", method="PUT", body=body)
        ctx.rec("first", put({"exchange": tx, "write": "^{username}\\.", "read": "^r\\."}))
        ctx.rec("second exchange", put({"exchange": dx, "write": "^nothing$", "read": "^nothing$"}))
        ctx.rec("amq.topic", put({"exchange": "amq.topic", "write": "^{vhost}$", "read": ""}))
        ctx.rec("missing keys", put({"read": "x"}))
        ctx.rec("bad regex status", put({"exchange": tx, "write": "(", "read": "x"})[0])
        ctx.rec("no such user", ctx.http(f"/api/topic-permissions/{vh}/{u}-nope", method="PUT",
                                         body={"exchange": tx, "write": "a", "read": "a"}))
        ctx.rec("list", sorted_rows(ctx.http(f"/api/topic-permissions/{vh}/{u}")))
        ctx.rec("list of user", sorted_rows(ctx.http(f"/api/users/{u}/topic-permissions")))
        ctx.rec("none for guest", ctx.http(f"/api/topic-permissions/{vh}/{ctx.user}"))
        conn = ctx.connect(user=u, password="pp")

        def on_new_channel(what, fn):
            ctx.rec(what, refusal(ctx, fn, ctx.channel(conn)))

        def publish_then_sync(ch, exchange, key):
            ctx.publish("x", exchange=exchange, routing_key=key, ch=ch)
            ch.queue_declare(q, passive=True)

        on_new_channel("publish own key", lambda ch: publish_then_sync(ch, tx, f"{u}.a"))
        on_new_channel("publish other key", lambda ch: publish_then_sync(ch, tx, "bob.a"))
        on_new_channel("publish vhost key", lambda ch: publish_then_sync(ch, "amq.topic", ctx.vhost))
        on_new_channel("publish to amq.topic", lambda ch: publish_then_sync(ch, "amq.topic", "k"))
        on_new_channel("direct exchange unchecked", lambda ch: publish_then_sync(ch, dx, "k"))
        on_new_channel("bind r key", lambda ch: ch.queue_bind(q, tx, "r.x"))
        on_new_channel("bind other key", lambda ch: ch.queue_bind(q, tx, "x.r"))
        on_new_channel("unbind other key", lambda ch: ch.queue_unbind(q, tx, "x.r"))
        on_new_channel("exchange.bind r key", lambda ch: ch.exchange_bind(dest, tx, "r.y"))
        on_new_channel("exchange.bind other key", lambda ch: ch.exchange_bind(dest, tx, "y"))
        on_new_channel("bind empty read", lambda ch: ch.queue_bind(q, "amq.topic", "a"))
        on_new_channel("bind empty key, empty read", lambda ch: ch.queue_bind(q, "amq.topic", ""))
        # A change applies to the open connection.
        ctx.rec("delete one", ctx.http(f"/api/topic-permissions/{vh}/{u}/{tx}", method="DELETE")[0])
        on_new_channel("publish other key after delete", lambda ch: publish_then_sync(ch, tx, "bob.a"))
        ctx.rec("delete all", ctx.http(f"/api/topic-permissions/{vh}/{u}", method="DELETE")[0])
        ctx.rec("delete all again", ctx.http(f"/api/topic-permissions/{vh}/{u}", method="DELETE"))
        on_new_channel("publish to amq.topic after delete", lambda ch: publish_then_sync(ch, "amq.topic", "k"))
    finally:
        ctx.http(f"/api/users/{u}", method="DELETE")


@scenario
def vhost_limits_on_connections_and_queues(ctx):
    v = ctx.name("vhost")
    vq = quote(v, safe="")
    try:
        ctx.http(f"/api/vhosts/{vq}", method="PUT", body={})
        ctx.rec("none yet", ctx.http(f"/api/vhost-limits/{vq}"))
        put = lambda name, body: ctx.http(f"/api/vhost-limits/{vq}/{name}", method="PUT", body=body)
        ctx.rec("max-connections", put("max-connections", {"value": 1}))
        ctx.rec("max-queues", put("max-queues", {"value": 1}))
        ctx.rec("unknown", put("max-foo", {"value": 1}))
        ctx.rec("string", put("max-queues", {"value": "x"}))
        ctx.rec("float", put("max-queues", {"value": 1.5}))
        ctx.rec("no value", put("max-queues", {"valu": 1}))
        ctx.rec("no such vhost", ctx.http(f"/api/vhost-limits/{vq}-nope/max-queues", method="PUT",
                                          body={"value": 1}))
        ctx.rec("limits", ctx.http(f"/api/vhost-limits/{vq}"))
        ctx.rec("listed", [row for row in ctx.http("/api/vhost-limits")[1] if row["vhost"] == v])
        conn = ctx.connect(vhost=v)
        ctx.rec("second connection", refusal(ctx, ctx.connect, vhost=v))
        ch = ctx.channel(conn)
        q1, q2 = ctx.name("q1"), ctx.name("q2")
        ctx.rec("first queue", refusal(ctx, ch.queue_declare, q1))
        ctx.rec("same queue again", refusal(ctx, ch.queue_declare, q1))
        ctx.rec("second queue", refusal(ctx, ch.queue_declare, q2))
        ctx.rec("server-named queue", refusal(ctx, ctx.channel(conn).queue_declare, ""))
        ctx.rec("no limit", put("max-connections", {"value": -1}))
        ctx.rec("second connection without limit", refusal(ctx, ctx.connect, vhost=v))
        ctx.rec("zero queues", put("max-queues", {"value": 0}))
        ctx.rec("queue with zero", refusal(ctx, ctx.channel(conn).queue_declare, q2))
        ctx.rec("clear queues", ctx.http(f"/api/vhost-limits/{vq}/max-queues", method="DELETE")[0])
        ctx.rec("clear again", ctx.http(f"/api/vhost-limits/{vq}/max-queues", method="DELETE")[0])
        ctx.rec("queue after clear", refusal(ctx, ctx.channel(conn).queue_declare, q2))
        ctx.rec("clear connections", ctx.http(f"/api/vhost-limits/{vq}/max-connections", method="DELETE")[0])
        ctx.rec("all cleared", ctx.http(f"/api/vhost-limits/{vq}"))
    finally:
        ctx.close()
        ctx.http(f"/api/vhosts/{vq}", method="DELETE")


@scenario
def user_limits_on_connections_and_channels(ctx):
    u = ctx.name("user")
    vh = quote(ctx.vhost, safe="")
    try:
        ctx.http(f"/api/users/{u}", method="PUT", body={"password": "pp", "tags": ""})
        ctx.http(f"/api/permissions/{vh}/{u}", method="PUT",
                 body={"configure": ".*", "write": ".*", "read": ".*"})
        put = lambda name, body: ctx.http(f"/api/user-limits/{u}/{name}", method="PUT", body=body)
        ctx.rec("max-connections", put("max-connections", {"value": 1}))
        ctx.rec("max-channels", put("max-channels", {"value": 2}))
        ctx.rec("unknown", put("max-queues", {"value": 1}))
        ctx.rec("string", put("max-channels", {"value": "a"}))
        ctx.rec("no such user", ctx.http(f"/api/user-limits/{u}-nope/max-channels", method="PUT",
                                         body={"value": 1}))
        ctx.rec("limits", ctx.http(f"/api/user-limits/{u}"))
        status, body = ctx.http(f"/api/users/{u}")
        ctx.rec("user shows limits", (status, body.get("limits")))
        ctx.rec("password change keeps limits",
                ctx.http(f"/api/users/{u}", method="PUT", body={"password": "pp", "tags": ""})[0])
        ctx.rec("limits after password change", ctx.http(f"/api/user-limits/{u}"))
        conn = ctx.connect(user=u, password="pp")
        ctx.rec("second connection", refusal(ctx, ctx.connect, user=u, password="pp"))
        ctx.rec("channel 1", refusal(ctx, ctx.channel, conn))
        ctx.rec("channel 2", refusal(ctx, ctx.channel, conn))
        ctx.rec("channel 3", refusal(ctx, ctx.channel, conn))
        ctx.rec("clear connections", ctx.http(f"/api/user-limits/{u}/max-connections", method="DELETE")[0])
        ctx.rec("clear channels", ctx.http(f"/api/user-limits/{u}/max-channels", method="DELETE")[0])
        ctx.rec("all cleared", ctx.http(f"/api/user-limits/{u}"))
        conn = ctx.connect(user=u, password="pp")
        ctx.rec("three channels after clear", [refusal(ctx, ctx.channel, conn) for _ in range(3)])
    finally:
        ctx.close()
        ctx.http(f"/api/users/{u}", method="DELETE")
