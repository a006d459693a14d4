"""Scenarios: policies and operator policies (management API) and what they do to queues: a TTL
policy, a length limit set on a queue that already holds messages, a policy meeting a queue's own
arguments, an operator policy's cap, and the API's answers to bad policies. They need both
brokers' management API (skipped otherwise).

Each scenario's policies match only its own queues (the pattern is the queue's full name) and
are deleted at the end whatever happens. RabbitMQ applies a policy to a queue asynchronously
(after the HTTP answer), so a scenario waits until the queue reports its policy (RabbitMQ's
statistics say so once the queue process has taken it) before depending on it."""

import re
import time

from harness import scenario

# How long RabbitMQ may take to apply a policy and report it in its statistics (the private node
# refreshes them every 500 ms).
APPLY_TIMEOUT = 15.0


def _put(ctx, kind, name, body):
    status, answer = ctx.http(f"/api/{kind}/{{vhost}}/{name}", method="PUT", body=body)
    return [status, answer]


def _delete(ctx, kind, name):
    status, _ = ctx.http(f"/api/{kind}/{{vhost}}/{name}", method="DELETE")
    return status


def _exactly(name):
    return f"^{re.escape(name)}$"


def _wait(pred, timeout=APPLY_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    return pred()


def _policy_fields(ctx, queue, policy=None, operator_policy=None):
    """The queue's policy fields, once they name these policies (None: no policy). (RabbitMQ's
    statistics may show `effective_policy_definition` as null for a moment after a change.)"""
    def fields():
        status, body = ctx.http(f"/api/queues/{{vhost}}/{queue}")
        if status != 200 or not isinstance(body, dict):
            return None
        got = {k: body.get(k) for k in ("policy", "operator_policy", "effective_policy_definition")}
        named = (got["policy"], got["operator_policy"]) == (policy, operator_policy)
        return got if named and isinstance(got["effective_policy_definition"], dict) else None
    return _wait(fields) or "not applied in time"


def _count_becomes(ctx, queue, n, timeout=APPLY_TIMEOUT):
    """The queue's ready count once it is n (or what it is at the timeout)."""
    _wait(lambda: ctx.declare_ok(queue)[0] == n, timeout)
    return ctx.declare_ok(queue)[0]


@scenario
def message_ttl_policy(ctx):
    q = ctx.queue("q")
    pol = ctx.name("pol")
    try:
        ctx.rec("set", _put(ctx, "policies", pol, {"pattern": _exactly(q), "apply-to": "queues",
                                                   "definition": {"message-ttl": 100}}))
        ctx.rec("queue fields", _policy_fields(ctx, q, pol))
        ctx.seed(q, ["a", "b"])
        ctx.rec("after the ttl", _count_becomes(ctx, q, 0))
        ctx.rec("delete", _delete(ctx, "policies", pol))
        ctx.rec("queue fields after delete", _policy_fields(ctx, q))
        ctx.seed(q, ["kept"])
        ctx.settle(duration=0.4)
        ctx.rec("without the policy", ctx.bodies(q))
    finally:
        _delete(ctx, "policies", pol)


@scenario
def max_length_policy_on_a_queue_holding_messages(ctx):
    q = ctx.queue("q", durable=True)
    pol = ctx.name("pol")
    try:
        ctx.seed(q, [f"m{i}" for i in range(1, 6)])
        ctx.rec("before", ctx.declare_ok(q))
        ctx.rec("set", _put(ctx, "policies", pol, {"pattern": _exactly(q),
                                                   "definition": {"max-length": 2}}))
        ctx.rec("count", _count_becomes(ctx, q, 2))
        ctx.rec("left", ctx.bodies(q))
        ctx.rec("delete", _delete(ctx, "policies", pol))
        ctx.rec("queue fields after delete", _policy_fields(ctx, q))
        ctx.seed(q, ["n1", "n2", "n3", "n4"])
        ctx.rec("without the policy", ctx.declare_ok(q))
    finally:
        _delete(ctx, "policies", pol)


@scenario
def policy_meets_queue_arguments(ctx):
    dlx_arg = ctx.exchange("dlx-arg", "fanout")
    dlx_pol = ctx.exchange("dlx-pol", "fanout")
    dead_arg = ctx.queue("dead-arg")
    dead_pol = ctx.queue("dead-pol")
    ctx.ch.queue_bind(dead_arg, dlx_arg, "")
    ctx.ch.queue_bind(dead_pol, dlx_pol, "")
    # Limits: the smaller of argument and policy; the dead-letter exchange: the argument's.
    q = ctx.queue("q", arguments={"x-max-length": 3, "x-message-ttl": 600000,
                                  "x-dead-letter-exchange": dlx_arg})
    plain = ctx.queue("plain")
    pol = ctx.name("pol")
    try:
        ctx.rec("set", _put(ctx, "policies", pol, {
            "pattern": f"^({re.escape(q)}|{re.escape(plain)})$", "priority": 1,
            "definition": {"max-length": 5, "message-ttl": 300000, "dead-letter-exchange": dlx_pol}}))
        ctx.rec("queue fields", _policy_fields(ctx, q, pol))
        ctx.rec("plain queue fields", _policy_fields(ctx, plain, pol))
        for queue in (q, plain):
            ctx.seed(queue, [f"m{i}" for i in range(1, 8)])
        ctx.rec("with arguments", ctx.declare_ok(q))
        ctx.rec("without arguments", ctx.declare_ok(plain))
        for queue in (q, plain):
            m = ctx.ch.basic_get(queue, no_ack=False)
            ctx.ch.basic_reject(m.delivery_info["delivery_tag"], requeue=False)
        ctx.rec("dead-lettered by the argument's exchange",
                _wait(lambda: ctx.bodies(dead_arg), 5.0))
        ctx.rec("dead-lettered by the policy's exchange",
                _wait(lambda: ctx.bodies(dead_pol), 5.0))
    finally:
        _delete(ctx, "policies", pol)


@scenario
def operator_policy_caps_the_policy(ctx):
    q = ctx.queue("q")
    pol = ctx.name("pol")
    op = ctx.name("op")
    try:
        ctx.rec("set policy", _put(ctx, "policies", pol, {
            "pattern": _exactly(q), "definition": {"max-length": 5, "message-ttl": 600000}}))
        ctx.rec("set operator policy", _put(ctx, "operator-policies", op, {
            "pattern": _exactly(q), "definition": {"max-length": 2, "message-ttl": 900000}}))
        ctx.rec("queue fields", _policy_fields(ctx, q, pol, op))
        ctx.seed(q, [f"m{i}" for i in range(1, 6)])
        ctx.rec("left", ctx.bodies(q))
        status, listing = ctx.http("/api/operator-policies/{vhost}")
        # (The pattern holds the queue's name escaped, which differs from run to run.)
        fields = ("vhost", "name", "apply-to", "definition", "priority")
        ctx.rec("operator listing", [status, [{k: p.get(k) for k in fields}
                                              for p in listing if p.get("name") == op]])
        ctx.rec("delete operator policy", _delete(ctx, "operator-policies", op))
        ctx.rec("queue fields after delete", _policy_fields(ctx, q, pol))
        ctx.seed(q, [f"n{i}" for i in range(1, 8)])
        ctx.rec("policy alone", ctx.declare_ok(q))
    finally:
        _delete(ctx, "operator-policies", op)
        _delete(ctx, "policies", pol)


@scenario
def bad_policies_are_refused(ctx):
    pol = ctx.name("pol")
    good = {"pattern": "^diff-never-matches$", "definition": {"max-length": 1}}
    bad = {
        "unknown key": {"pattern": "x", "definition": {"nonsense": 1, "max-length": 1}},
        "negative ttl": {"pattern": "x", "definition": {"message-ttl": -1}},
        "string limit": {"pattern": "x", "definition": {"max-length": "5"}},
        "bad overflow": {"pattern": "x", "definition": {"overflow": "explode"}},
        "expires zero": {"pattern": "x", "definition": {"expires": 0}},
        "empty definition": {"pattern": "x", "definition": {}},
        "invalid regex": {"pattern": "(", "definition": {"max-length": 1}},
        "bad apply-to": {"pattern": "x", "definition": {"max-length": 1}, "apply-to": "classic_queues"},
        "string priority": {"pattern": "x", "definition": {"max-length": 1}, "priority": "high"},
        "no definition": {"pattern": "x"},
        "everything wrong": {"pattern": "(", "definition": {"message-ttl": -5}, "priority": "a",
                             "apply-to": "x"},
    }
    try:
        ctx.rec("good", _put(ctx, "policies", pol, good))
        for what, body in bad.items():
            ctx.rec(what, _put(ctx, "policies", pol, body))
        status, got = ctx.http(f"/api/policies/{{vhost}}/{pol}")
        ctx.rec("unchanged", [status, {k: got.get(k) for k in ("pattern", "definition", "apply-to", "priority")}])
        ctx.rec("operator key not allowed", _put(ctx, "operator-policies", pol, {
            "pattern": "x", "definition": {"dead-letter-exchange": "x"}}))
        ctx.rec("missing vhost", ctx.http(f"/api/policies/diff-no-such-vhost/{pol}", method="PUT", body=good))
        ctx.rec("delete", _delete(ctx, "policies", pol))
        ctx.rec("delete again", _delete(ctx, "policies", pol))
        ctx.rec("get deleted", ctx.http(f"/api/policies/{{vhost}}/{pol}"))
    finally:
        _delete(ctx, "policies", pol)
