"""Scenarios: users, vhosts and permissions through the management API (status codes, bodies),
logins with the stored password, connection.open to a vhost without permission (530), and the
configure / write / read checks on AMQP methods with RabbitMQ's 403 texts. They need both
brokers' management API with an administrator (the default user); otherwise they are skipped."""

from urllib.parse import quote

from amqp.exceptions import AMQPError

from harness import scenario


def refusal(ctx, fn, *args, **kw):
    """The full close text (and code) of an operation, or "ok"."""
    try:
        fn(*args, **kw)
        return "ok"
    except AMQPError as e:
        return [getattr(e, "reply_code", None), ctx.normalise(str(getattr(e, "reply_text", "")))]


@scenario
def user_crud_status_codes(ctx):
    u = ctx.name("user")
    try:
        ctx.rec("create", ctx.http(f"/api/users/{u}", method="PUT", body={"password": "p", "tags": "administrator"})[0])
        ctx.rec("update", ctx.http(f"/api/users/{u}", method="PUT", body={"password": "p2", "tags": "monitoring"})[0])
        ctx.rec("no tags", ctx.http(f"/api/users/{u}", method="PUT", body={"password": "p"}))
        ctx.rec("bad hash", ctx.http(f"/api/users/{u}", method="PUT", body={"password_hash": "abc", "tags": ""}))
        status, body = ctx.http(f"/api/users/{u}")
        ctx.rec("get", (status, sorted(body), body["tags"], body["hashing_algorithm"]))
        ctx.rec("monitoring reads", ctx.http("/api/overview", user=u, password="p2")[0])
        ctx.rec("monitoring may not write", ctx.http(f"/api/users/{u}", user=u, password="p2", method="PUT",
                                                     body={"password": "p", "tags": ""}))
        ctx.rec("old password", ctx.http("/api/overview", user=u, password="p")[0])
    finally:
        ctx.rec("delete", ctx.http(f"/api/users/{u}", method="DELETE")[0])
    ctx.rec("delete again", ctx.http(f"/api/users/{u}", method="DELETE"))


@scenario
def imported_hash_logs_in_and_vhost_permission_needed(ctx):
    u, v = ctx.name("user"), ctx.name("vhost")
    # RabbitMQ 3.10's hash of "p" (rabbitmqctl add_user u p; export_definitions).
    theirs = "zC2kn+lAXYtfFjnKorF4QlvLiuJnlTg+K32MFmD/oVmuzGkW"
    try:
        ctx.rec("user", ctx.http(f"/api/users/{u}", method="PUT",
                                 body={"password_hash": theirs, "hashing_algorithm": "rabbit_password_hashing_sha256",
                                       "tags": ""})[0])
        ctx.rec("vhost", ctx.http(f"/api/vhosts/{v}", method="PUT", body={})[0])
        ctx.rec("vhost again", ctx.http(f"/api/vhosts/{v}", method="PUT", body={"description": "d", "tags": "a,b"})[0])
        status, body = ctx.http(f"/api/vhosts/{v}")
        ctx.rec("vhost metadata", (status, body.get("metadata")))
        ctx.rec("open without permission", refusal(ctx, ctx.connect, user=u, password="p", vhost=v))
        ctx.rec("missing keys", ctx.http(f"/api/permissions/{v}/{u}", method="PUT", body={"configure": ".*"}))
        ctx.rec("no such vhost", ctx.http(f"/api/permissions/{v}-nope/{u}", method="PUT",
                                          body={"configure": ".*", "write": ".*", "read": ".*"}))
        ctx.rec("grant", ctx.http(f"/api/permissions/{v}/{u}", method="PUT",
                                  body={"configure": ".*", "write": ".*", "read": ".*"})[0])
        ctx.rec("regrant", ctx.http(f"/api/permissions/{v}/{u}", method="PUT",
                                    body={"configure": "^x", "write": ".*", "read": ".*"})[0])
        ctx.rec("permission", ctx.http(f"/api/permissions/{v}/{u}"))
        ctx.rec("open with permission", refusal(ctx, ctx.connect, user=u, password="p", vhost=v))
        ctx.rec("wrong password", refusal(ctx, ctx.connect, user=u, password="q", vhost=v))
        ctx.rec("revoke", ctx.http(f"/api/permissions/{v}/{u}", method="DELETE")[0])
        ctx.rec("revoke again", ctx.http(f"/api/permissions/{v}/{u}", method="DELETE")[0])
    finally:
        ctx.http(f"/api/users/{u}", method="DELETE")
        ctx.rec("delete vhost", ctx.http(f"/api/vhosts/{quote(v, safe='')}", method="DELETE")[0])


@scenario
def permission_matrix_on_amqp_methods(ctx):
    u = ctx.name("user")
    vh = quote(ctx.vhost, safe="")
    rq, wq, other, q1 = ctx.queue("rq"), ctx.queue("wq"), ctx.queue("other"), ctx.name("q1")
    xe, re_ = ctx.exchange("xe"), ctx.exchange("re")
    zz = ctx.name("zz")
    try:
        ctx.http(f"/api/users/{u}", method="PUT", body={"password": "pp", "tags": ""})
        # Queues and exchanges of this run are named diff-<tag>-…: anchor on the tag.
        ctx.http(f"/api/permissions/{vh}/{u}", method="PUT",
                 body={"configure": "^diff-q1-", "write": "^diff-(wq|xe)-", "read": "^diff-(rq|re)-"})
        conn = ctx.connect(user=u, password="pp")

        def on_new_channel(what, fn):
            ch = ctx.channel(conn)
            ctx.rec(what, refusal(ctx, fn, ch))

        on_new_channel("declare q1", lambda ch: ch.queue_declare(q1))
        on_new_channel("declare other", lambda ch: ch.queue_declare(other))
        on_new_channel("declare other passive", lambda ch: ch.queue_declare(other, passive=True))
        on_new_channel("declare server-named", lambda ch: ch.queue_declare(""))
        on_new_channel("exchange.declare zz", lambda ch: ch.exchange_declare(zz, "direct"))
        on_new_channel("bind wq to re", lambda ch: ch.queue_bind(wq, re_, "k"))
        on_new_channel("bind rq to re", lambda ch: ch.queue_bind(rq, re_, "k"))
        on_new_channel("bind wq to xe", lambda ch: ch.queue_bind(wq, xe, "k"))
        on_new_channel("unbind rq from re", lambda ch: ch.queue_unbind(rq, re_, "k"))
        on_new_channel("exchange.bind xe to re", lambda ch: ch.exchange_bind(xe, re_, "k"))
        on_new_channel("exchange.bind re to xe", lambda ch: ch.exchange_bind(re_, xe, "k"))
        on_new_channel("get rq", lambda ch: ch.basic_get(rq))
        on_new_channel("get wq", lambda ch: ch.basic_get(wq))
        on_new_channel("consume wq", lambda ch: ch.basic_consume(wq))
        on_new_channel("purge wq", lambda ch: ch.queue_purge(wq))
        on_new_channel("delete other", lambda ch: ch.queue_delete(other))
        on_new_channel("exchange.delete xe", lambda ch: ch.exchange_delete(xe))
        on_new_channel("delete q1", lambda ch: ch.queue_delete(q1))

        def publish_then_sync(ch, exchange):
            ctx.publish("x", exchange=exchange, routing_key="k", ch=ch)
            ch.queue_declare(q1, passive=False)

        on_new_channel("publish default", lambda ch: publish_then_sync(ch, ""))
        on_new_channel("publish xe", lambda ch: publish_then_sync(ch, xe))
        # A change applies to the open connection.
        ctx.http(f"/api/permissions/{vh}/{u}", method="PUT",
                 body={"configure": "^diff-q1-", "write": "^diff-(wq|xe)-", "read": "^diff-(rq|re|wq)-"})
        on_new_channel("get wq after grant", lambda ch: ch.basic_get(wq))
    finally:
        ctx.http(f"/api/users/{u}", method="DELETE")
        try:
            ctx.channel().queue_delete(q1)
        except Exception:
            pass


@scenario
def vhost_default_queue_type(ctx):
    v = ctx.name("vhost")
    vq = quote(v, safe="")
    try:
        ctx.rec("create", ctx.http(f"/api/vhosts/{vq}", method="PUT",
                                   body={"defaultqueuetype": "quorum", "description": "d"})[0])
        status, body = ctx.http(f"/api/vhosts/{vq}")
        ctx.rec("vhost", (status, body.get("default_queue_type"), body.get("metadata")))
        ctx.rec("update keeps it", ctx.http(f"/api/vhosts/{vq}", method="PUT",
                                            body={"defaultqueuetype": "stream"})[0])
        status, body = ctx.http(f"/api/vhosts/{vq}")
        ctx.rec("after update", (status, body.get("default_queue_type")))
        conn = ctx.connect(vhost=v)
        ch = ctx.channel(conn)
        durable, transient, typed = ctx.name("durable"), ctx.name("transient"), ctx.name("typed")
        ctx.rec("durable", ch.queue_declare(durable, durable=True)[1:])
        ctx.rec("redeclare", ch.queue_declare(durable, durable=True)[1:])
        ctx.rec("transient", ch.queue_declare(transient)[1:])
        ctx.rec("typed", ch.queue_declare(typed, durable=True, arguments={"x-queue-type": "classic"})[1:])
        status, queues = ctx.http(f"/api/queues/{vq}")
        ctx.rec("queues", (status, sorted((ctx.normalise(q["name"]), q.get("type"), q["durable"],
                                           q["arguments"]) for q in queues)))
    finally:
        ctx.close()
        ctx.http(f"/api/vhosts/{vq}", method="DELETE")
