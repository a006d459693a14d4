"""A definitions round trip RabbitMQ -> Warren -> RabbitMQ: a vhost made on the reference broker
(users, permissions, topic permissions, a policy, vhost limits, exchanges of each type, queues
with arguments, queue and exchange-to-exchange bindings) is exported by RabbitMQ, imported into
Warren, exported by Warren, imported into RabbitMQ under another vhost name, and must come back
the same. Needs both brokers' management API (run with --reference); skipped otherwise."""

import base64
import json
import os
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote, unquote, urlsplit

import pytest

AMQP_URL = os.environ.get("AMQP_URL")
HTTP_URL = os.environ.get("COMPAT_HTTP_URL")
REFERENCE_URL = os.environ.get("REFERENCE_URL")
REFERENCE_HTTP_URL = os.environ.get("REFERENCE_HTTP_URL")

pytestmark = pytest.mark.skipif(
    not (AMQP_URL and HTTP_URL and REFERENCE_URL and REFERENCE_HTTP_URL),
    reason="needs both brokers' management API (compat-tests/run.sh --reference rabbitmq)")


class Api:
    def __init__(self, http_url, amqp_url):
        u = urlsplit(amqp_url)
        self.base = http_url
        self.auth = "Basic " + base64.b64encode(
            f"{unquote(u.username or 'guest')}:{unquote(u.password or 'guest')}".encode()).decode()

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        return status, (json.loads(raw) if raw else None)

    def ok(self, method, path, body=None):
        status, answer = self.call(method, path, body)
        assert status in (200, 201, 204), f"{method} {path}: {status} {answer}"
        return answer


def of_vhost(defs, vhost, user):
    """The entries of a definitions file that belong to `vhost` (and user `user`), with the vhost
    left out, each list sorted: what must survive the round trip."""
    def pick(section, keys):
        rows = [{k: e.get(k) for k in keys} for e in defs.get(section, []) if e.get("vhost") == vhost]
        return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
    users = [{"name": u["name"], "password_hash": u["password_hash"],
              "hashing_algorithm": u["hashing_algorithm"], "tags": sorted(u["tags"]) if
              isinstance(u["tags"], list) else u["tags"], "limits": u.get("limits") or {}}
             for u in defs.get("users", []) if u["name"] == user]
    return {
        "users": users,
        "permissions": pick("permissions", ["user", "configure", "write", "read"]),
        "topic_permissions": pick("topic_permissions", ["user", "exchange", "write", "read"]),
        "policies": pick("policies", ["name", "pattern", "apply-to", "definition", "priority"]),
        "parameters": pick("parameters", ["component", "name", "value"]),
        "queues": pick("queues", ["name", "durable", "auto_delete", "arguments"]),
        "exchanges": pick("exchanges", ["name", "type", "durable", "auto_delete", "internal", "arguments"]),
        "bindings": pick("bindings", ["source", "destination", "destination_type", "routing_key", "arguments"]),
    }


def only(defs, vhost, user):
    """A definitions file holding only `vhost`'s entries and `user` (to import elsewhere)."""
    return {
        "users": [u for u in defs["users"] if u["name"] == user],
        "vhosts": [v for v in defs["vhosts"] if v["name"] == vhost],
        **{s: [e for e in defs.get(s, []) if e.get("vhost") == vhost]
           for s in ["permissions", "topic_permissions", "policies", "parameters", "queues",
                     "exchanges", "bindings"]},
    }


def renamed(defs, old, new):
    text = json.dumps(defs).replace(json.dumps(old), json.dumps(new))
    return json.loads(text)


def test_rabbitmq_to_warren_to_rabbitmq():
    rabbit = Api(REFERENCE_HTTP_URL, REFERENCE_URL)
    warren = Api(HTTP_URL, AMQP_URL)
    tag = uuid.uuid4().hex[:8]
    v, back, user = f"rt-{tag}", f"rt-back-{tag}", f"rt-user-{tag}"
    qv = quote(v, safe="")
    try:
        rabbit.ok("PUT", f"/api/vhosts/{qv}", {"description": "round trip", "tags": "a,b"})
        rabbit.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"})
        rabbit.ok("PUT", f"/api/permissions/{qv}/{user}", {"configure": "^rt", "write": ".*", "read": ".*"})
        rabbit.ok("PUT", f"/api/topic-permissions/{qv}/{user}",
                  {"exchange": "rt.topic", "write": "^{username}\\.", "read": ".*"})
        rabbit.ok("PUT", f"/api/policies/{qv}/cap",
                  {"pattern": "^rt\\.capped", "definition": {"max-length": 10, "message-ttl": 60000},
                   "apply-to": "queues", "priority": 2})
        rabbit.ok("PUT", f"/api/vhost-limits/{qv}/max-queues", {"value": 50})
        for name, kind in [("rt.direct", "direct"), ("rt.topic", "topic"), ("rt.fanout", "fanout"),
                           ("rt.headers", "headers")]:
            rabbit.ok("PUT", f"/api/exchanges/{qv}/{name}",
                      {"type": kind, "durable": True, "arguments": {"alternate-exchange": "rt.fanout"}
                       if kind == "direct" else {}})
        rabbit.ok("PUT", f"/api/queues/{qv}/rt.capped", {"durable": True})
        rabbit.ok("PUT", f"/api/queues/{qv}/rt.args",
                  {"durable": True, "arguments": {"x-max-length": 5, "x-dead-letter-exchange": "rt.fanout",
                                                  "x-message-ttl": 1000, "x-max-priority": 3}})
        rabbit.ok("POST", f"/api/bindings/{qv}/e/rt.direct/q/rt.args", {"routing_key": "k"})
        rabbit.ok("POST", f"/api/bindings/{qv}/e/rt.topic/q/rt.capped", {"routing_key": "a.*.c"})
        rabbit.ok("POST", f"/api/bindings/{qv}/e/rt.headers/q/rt.args",
                  {"routing_key": "", "arguments": {"x-match": "any", "h": "1"}})
        rabbit.ok("POST", f"/api/bindings/{qv}/e/rt.topic/e/rt.fanout", {"routing_key": "#"})

        theirs = rabbit.ok("GET", "/api/definitions")
        original = of_vhost(theirs, v, user)
        assert original["queues"] and original["bindings"] and original["policies"]

        assert warren.call("POST", "/api/definitions", only(theirs, v, user))[0] == 204
        ours = warren.ok("GET", "/api/definitions")
        assert of_vhost(ours, v, user) == original, "Warren's export of RabbitMQ's definitions"

        # Back into RabbitMQ under another vhost name (the user exists there already).
        again = renamed(only(ours, v, user), v, back)
        assert rabbit.call("POST", "/api/definitions", again)[0] in (201, 204)
        returned = of_vhost(rabbit.ok("GET", "/api/definitions"), back, user)
        assert renamed(returned, back, v) == original, "RabbitMQ's import of Warren's export"
    finally:
        for api in (rabbit, warren):
            for vh in (v, back):
                api.call("DELETE", f"/api/vhosts/{quote(vh, safe='')}")
            api.call("DELETE", f"/api/users/{user}")
