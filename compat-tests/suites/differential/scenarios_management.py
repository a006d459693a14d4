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
