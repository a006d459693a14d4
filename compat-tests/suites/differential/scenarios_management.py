"""Scenarios: the management HTTP API's read-only listings (queues, exchanges, bindings, whoami,
errors), compared field by field. They need both brokers' management API (run.sh enables
RabbitMQ's plugin on its private node); otherwise they are skipped."""

import time

from harness import scenario

# RabbitMQ refreshes queue counts in the management API every collect_statistics_interval
# (run.sh sets 500 ms on its node); this is long enough for a fresh figure.
STATS_SETTLE = 1.6

QUEUE_FIELDS = ["name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages",
                "messages_ready", "messages_unacknowledged", "consumers", "state", "type"]
EXCHANGE_FIELDS = ["name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"]


def pick(obj, fields):
    return {k: obj.get(k) for k in fields} if isinstance(obj, dict) else obj


@scenario
def queue_listing_with_counts(ctx):
    q = ctx.queue("q", durable=True, arguments={"x-max-length": 10, "x-message-ttl": 60000})
    ctx.seed(q, ["a", "b", "c"])
    ctx.rec("get", ctx.ch.basic_get(q, no_ack=False) is not None)
    ch2 = ctx.channel()
    ch2.basic_qos(0, 1, False)
    ctx.consume(q, ch=ch2)
    # A new queue's counts appear in RabbitMQ's listing after a while: wait for them to be there
    # (not for any value), then for one more refresh.
    deadline = time.time() + 15
    while time.time() < deadline:
        status, body = ctx.http(f"/api/queues/{{vhost}}/{q}")
        if isinstance(body, dict) and body.get("messages") is not None:
            break
        time.sleep(0.3)
    time.sleep(STATS_SETTLE)
    status, body = ctx.http(f"/api/queues/{{vhost}}/{q}")
    ctx.rec("queue", (status, pick(body, QUEUE_FIELDS)))
    status, body = ctx.http("/api/queues/{vhost}")
    ctx.rec("in the vhost listing", (status, [pick(x, QUEUE_FIELDS) for x in body if x["name"] == q]))


@scenario
def exchange_listing(ctx):
    x = ctx.exchange("x", "topic", durable=True, arguments={"alternate-exchange": "amq.fanout"})
    i = ctx.exchange("i", "headers", internal=True, auto_delete=True)
    for name in (x, i, "amq.default", "amq.match"):
        status, body = ctx.http(f"/api/exchanges/{{vhost}}/{name}")
        ctx.rec(f"exchange {name}", (status, pick(body, EXCHANGE_FIELDS)))
    status, body = ctx.http("/api/exchanges/{vhost}")
    names = [e["name"] for e in body if e["name"].startswith("amq.") or e["name"] in ("", x, i)]
    ctx.rec("names in the vhost listing", (status, sorted(names)))


@scenario
def binding_listing(ctx):
    q = ctx.queue("q")
    x = ctx.exchange("x", "topic")
    x2 = ctx.exchange("x2", "fanout")
    ctx.ch.queue_bind(q, x, "a.#")
    ctx.ch.queue_bind(q, x, "b", arguments={"k": "v"})
    ctx.ch.exchange_bind(x2, x, "c.*")
    status, body = ctx.http("/api/bindings/{vhost}")
    mine = [b for b in body if q in (b["source"], b["destination"]) or x in (b["source"], b["destination"])]
    for b in mine:
        if b["arguments"]:
            b.pop("properties_key")   # RabbitMQ's is a hash of the arguments
    key = lambda b: (b["source"], b["destination"], b["routing_key"])
    ctx.rec("bindings", (status, sorted(mine, key=key)))


@scenario
def whoami_vhost_and_errors(ctx):
    ctx.rec("whoami", ctx.http("/api/whoami"))
    status, body = ctx.http("/api/vhosts/{vhost}")
    ctx.rec("vhost", (status, pick(body, ["name"])))
    ctx.rec("bad password", ctx.http("/api/queues", password="wrong"))
    ctx.rec("missing queue", ctx.http(f"/api/queues/{{vhost}}/{ctx.name('missing')}"))
    ctx.rec("missing vhost", ctx.http("/api/queues/diff-no-such-vhost"))
    ctx.rec("missing exchange", ctx.http(f"/api/exchanges/{{vhost}}/{ctx.name('missing')}"))


# ---------------------------------------------------------------- writes (status codes, bodies)

@scenario
def http_queue_writes(ctx):
    q = ctx.name("q")
    path = f"/api/queues/{{vhost}}/{q}"
    body = {"durable": True, "arguments": {"x-max-length": 3}}
    ctx.rec("put", ctx.http(path, method="PUT", body=body))
    ctx.rec("put again", ctx.http(path, method="PUT", body=body))
    ctx.rec("put inequivalent durable", ctx.http(path, method="PUT", body={"durable": False}))
    ctx.rec("put inequivalent args", ctx.http(path, method="PUT", body={"durable": True}))
    ctx.rec("put bad flag", ctx.http(path, method="PUT", body={"durable": "yes"}))
    ctx.rec("put bad arg", ctx.http(f"/api/queues/{{vhost}}/{ctx.name('q2')}", method="PUT",
                                    body={"arguments": {"x-max-length": "abc"}}))
    ctx.rec("put reserved name", ctx.http("/api/queues/{vhost}/amq.diff", method="PUT", body={}))
    ctx.rec("put missing vhost", ctx.http(f"/api/queues/diff-no-such-vhost/{q}", method="PUT", body={}))
    status, listed = ctx.http(path)
    ctx.rec("listed", (status, pick(listed, ["durable", "auto_delete", "arguments"])))
    ctx.seed(q, ["a", "b"])
    ctx.rec("delete if-empty", ctx.http(path + "?if-empty=true", method="DELETE"))
    ctx.rec("purge", ctx.http(path + "/contents", method="DELETE"))
    ctx.rec("count after purge", ctx.ch.queue_declare(q, passive=True).message_count)
    ctx.rec("delete", ctx.http(path, method="DELETE"))
    ctx.rec("delete again", ctx.http(path, method="DELETE"))
    ctx.rec("purge missing", ctx.http(path + "/contents", method="DELETE"))
    ctx.rec("exists", ctx.exists(q))


@scenario
def http_publish_and_get(ctx):
    q = ctx.queue("q")
    pub = lambda x, body: ctx.http(f"/api/exchanges/{{vhost}}/{x}/publish", method="POST", body=body)
    msg = lambda rk, **kw: {"routing_key": rk, "payload": "hello", "payload_encoding": "string",
                            "properties": {}, **kw}
    ctx.rec("publish", pub("amq.default", msg(q, properties={"content_type": "text/plain", "priority": 2,
                                                             "headers": {"h": "v", "n": 1}})))
    ctx.rec("publish base64", pub("amq.default", msg(q, payload="/w==", payload_encoding="base64")))
    ctx.rec("publish unrouted", pub("amq.direct", msg("diff-nowhere")))
    ctx.rec("publish missing exchange", pub(ctx.name("missing"), msg("k")))
    ctx.rec("publish missing key", pub("amq.direct", {"routing_key": "k", "payload": "x", "properties": {}}))
    ctx.rec("publish bad encoding", pub("amq.direct", msg("k", payload_encoding="foo")))
    ctx.rec("publish bad property", pub("amq.direct", msg("k", properties={"priority": "x"})))
    get = lambda **kw: ctx.http(f"/api/queues/{{vhost}}/{q}/get", method="POST",
                                body={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", **kw})
    ctx.rec("get requeue", get(count=5))
    ctx.rec("get reject requeue truncated", get(ackmode="reject_requeue_true", truncate=2))
    ctx.rec("get base64", get(encoding="base64", count="1"))
    ctx.rec("get reject", get(ackmode="reject_requeue_false"))
    ctx.rec("get ack", get(ackmode="ack_requeue_false", count=5))
    ctx.rec("get empty", get())
    ctx.rec("get bad encoding", get(encoding="x"))
    ctx.rec("get missing count", ctx.http(f"/api/queues/{{vhost}}/{q}/get", method="POST",
                                          body={"ackmode": "ack_requeue_true", "encoding": "auto"}))
    ctx.rec("get missing queue", ctx.http(f"/api/queues/{{vhost}}/{ctx.name('missing')}/get", method="POST",
                                          body={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}))


@scenario
def http_exchange_and_binding_writes(ctx):
    x, x2, q = ctx.name("x"), ctx.name("x2"), ctx.queue("q")
    xpath = f"/api/exchanges/{{vhost}}/{x}"
    ctx.rec("put", ctx.http(xpath, method="PUT", body={"type": "topic", "durable": True}))
    ctx.rec("put again", ctx.http(xpath, method="PUT", body={"type": "topic", "durable": True}))
    ctx.rec("put inequivalent", ctx.http(xpath, method="PUT", body={"type": "fanout", "durable": True}))
    # The status only: RabbitMQ's text says "invalid" or "unknown" exchange type depending on
    # whether the name happens to be an atom in its VM already.
    status, body = ctx.http(f"/api/exchanges/{{vhost}}/{x2}", method="PUT", body={"type": "diff-no-such-type"})
    ctx.rec("put bad type", (status, body["error"]))
    ctx.rec("put x2", ctx.http(f"/api/exchanges/{{vhost}}/{x2}", method="PUT", body={"type": "fanout"}))
    ctx.rec("put reserved", ctx.http("/api/exchanges/{vhost}/amq.diff", method="PUT", body={"type": "direct"}))
    ctx.rec("put default", ctx.http("/api/exchanges/{vhost}/amq.default", method="PUT", body={"type": "direct"}))
    ctx.rec("delete builtin", ctx.http("/api/exchanges/{vhost}/amq.direct", method="DELETE"))
    bind = lambda s, kind, d, body: ctx.http(f"/api/bindings/{{vhost}}/e/{s}/{kind}/{d}", method="POST", body=body)
    ctx.rec("bind escaped key", bind(x, "q", q, {"routing_key": "a.b c~d/#"}))
    ctx.rec("bind empty key", bind(x, "q", q, {}))
    ctx.rec("bind with args", bind(x, "q", q, {"routing_key": "k", "arguments": {"x": "y"}}))
    ctx.rec("bind e2e", bind(x, "e", x2, {"routing_key": "r.*"}))
    ctx.rec("bind missing source", bind(ctx.name("missing"), "q", q, {}))
    ctx.rec("bind missing queue", bind(x, "q", ctx.name("missing2"), {}))
    ctx.rec("bind default", bind("amq.default", "q", q, {}))
    status, listed = ctx.http(f"/api/bindings/{{vhost}}/e/{x}/q/{q}")
    no_args = sorted((b["routing_key"], b["properties_key"]) for b in listed if not b["arguments"])
    ctx.rec("between", (status, no_args))
    ctx.rec("one by key", ctx.http(f"/api/bindings/{{vhost}}/e/{x}/q/{q}/a.b+c%257Ed%252F%2523"))
    ctx.rec("one empty key", ctx.http(f"/api/bindings/{{vhost}}/e/{x}/q/{q}/~"))
    ctx.rec("one missing", ctx.http(f"/api/bindings/{{vhost}}/e/{x}/q/{q}/nokey"))
    status, source = ctx.http(f"/api/exchanges/{{vhost}}/{x}/bindings/source")
    ctx.rec("from exchange", (status, len(source)))
    status, dest = ctx.http(f"/api/exchanges/{{vhost}}/{x2}/bindings/destination")
    ctx.rec("to exchange", (status, [(b["source"], b["routing_key"], b["properties_key"]) for b in dest]))
    status, to_q = ctx.http(f"/api/queues/{{vhost}}/{q}/bindings")
    ctx.rec("to queue", (status, sorted((b["source"], b["routing_key"]) for b in to_q)))
    ctx.rec("unbind", ctx.http(f"/api/bindings/{{vhost}}/e/{x}/q/{q}/~", method="DELETE"))
    ctx.rec("unbind again", ctx.http(f"/api/bindings/{{vhost}}/e/{x}/q/{q}/~", method="DELETE"))
    ctx.rec("delete in use", ctx.http(xpath + "?if-unused=true", method="DELETE"))
    ctx.rec("delete", ctx.http(xpath, method="DELETE"))
    ctx.rec("delete again", ctx.http(xpath, method="DELETE"))


@scenario
def http_vhost_definitions(ctx):
    q = ctx.queue("q", durable=True, arguments={"x-message-ttl": 1000})
    x = ctx.exchange("x", "fanout", durable=True)
    ctx.ch.queue_bind(q, x, "k")
    status, defs = ctx.http("/api/definitions/{vhost}")
    ctx.rec("keys", (status, sorted(defs)))
    ctx.rec("queue", [e for e in defs["queues"] if e["name"] == q])
    ctx.rec("exchange", [e for e in defs["exchanges"] if e["name"] == x])
    ctx.rec("binding", [e for e in defs["bindings"] if e["source"] == x])
    ctx.rec("missing vhost", ctx.http("/api/definitions/diff-no-such-vhost"))
    status, full = ctx.http("/api/definitions")
    ctx.rec("full keys", (status, sorted(k for k in full if k not in ("product_name", "product_version",
                                                                       "rabbit_version", "rabbitmq_version"))))
