"""The differential suite's harness: runs one scenario against one broker and collects what the
client observed as a JSON-able outcome.

A scenario is a function `scenario(ctx)` that drives a broker through py-amqp and calls
`ctx.rec(key, value)` for everything a client can observe: bodies, counts, delivery flags,
properties (field-table values with their type tags), returns, confirms, and error replies (reply
code, the reply text's leading constant, class and method id, and whether the channel or the
whole connection was closed). The test runs each scenario against the broker under test and the
reference broker and compares the two outcomes.

Outcomes are normalised so that only protocol-visible behaviour is compared:
- names the scenario made with `ctx.name(tag)` become `<tag>`; server-generated queue names
  (`amq.gen-…`) and consumer tags (`amq.ctag-…`) become `amq.gen-*` / `amq.ctag-*`;
- an error's reply text is reduced to its constant (`NOT_FOUND`, …): the rest is the broker's
  wording. The full texts are kept as notes, shown when outcomes differ, never compared.
"""

import base64
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote, unquote, urlsplit

import amqp
from amqp import spec
from amqp.exceptions import AMQPError

import wire

wire.install()

# py-amqp reports a server's channel.close and connection.close through the same exception
# classes (chosen by reply code). Tag each with the scope it came from.
_orig_channel_on_close = amqp.Channel._on_close
_orig_connection_on_close = amqp.Connection._on_close


def _channel_on_close(self, *args):
    try:
        return _orig_channel_on_close(self, *args)
    except AMQPError as e:
        e.compat_scope = "channel"
        raise


def _connection_on_close(self, *args):
    try:
        return _orig_connection_on_close(self, *args)
    except AMQPError as e:
        e.compat_scope = "connection"
        raise


amqp.Channel._on_close = _channel_on_close
amqp.Connection._on_close = _connection_on_close

Typed = wire.Typed

# A synchronous call that waits longer than this means the broker did not answer.
READ_TIMEOUT = 5.0
# How long to wait for deliveries that should arrive, and for ones that should not.
DELIVERY_TIMEOUT = 3.0
SETTLE = 0.25


class NoManagementApi(Exception):
    """A scenario needs the HTTP management API of a broker whose address is not known."""


# Each broker's management API, by its AMQP URL (run.sh exports both for the brokers it starts;
# give REFERENCE_HTTP_URL yourself with --reference URI).
HTTP_URLS = {
    os.environ.get("AMQP_URL"): os.environ.get("COMPAT_HTTP_URL"),
    os.environ.get("REFERENCE_URL"): os.environ.get("REFERENCE_HTTP_URL"),
}


class Ctx:
    def __init__(self, url, scenario_id):
        self.url = url
        self.http_url = HTTP_URLS.get(url)
        self.sid = scenario_id
        self.outcome = {}
        self.notes = []
        self._names = {}
        self._conns = []
        u = urlsplit(url)
        self.host = u.hostname or "localhost"
        self.port = u.port or 5672
        self.user = unquote(u.username or "guest")
        self.password = unquote(u.password or "guest")
        self.vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
        self._conn = None
        self._ch = None

    # ------------------------------------------------------------ recording
    def rec(self, key, value):
        """Record one observation. Keys must be unique within a scenario."""
        if key in self.outcome:
            raise AssertionError(f"scenario bug: key {key!r} recorded twice")
        self.outcome[key] = jsonable(value)
        return value

    def name(self, tag):
        """A name unique to this run (for a queue or an exchange), shown as <tag> in outcomes."""
        real = f"diff-{tag}-{uuid.uuid4().hex[:12]}"
        self._names[real] = f"<{tag}>"
        return real

    # ------------------------------------------------------------ management API
    def http(self, path, user=None, password=None, method="GET", body=None):
        """A request (GET unless `method`; `body` sent as JSON) on the management API: (status,
        decoded JSON body or None). `{vhost}` in path is this broker's vhost, percent-encoded."""
        if not self.http_url:
            raise NoManagementApi(f"no management API known for {self.url}")
        path = path.replace("{vhost}", quote(self.vhost, safe=""))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        creds = f"{self.user if user is None else user}:{self.password if password is None else password}"
        req.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=READ_TIMEOUT) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    # ------------------------------------------------------------ connections and channels
    def connect(self, user=None, password=None, vhost=None, **kw):
        conn = amqp.Connection(
            host=f"{self.host}:{self.port}", userid=self.user if user is None else user,
            password=self.password if password is None else password,
            virtual_host=self.vhost if vhost is None else vhost,
            connect_timeout=10, read_timeout=READ_TIMEOUT, write_timeout=10, **kw)
        self._conns.append(conn)
        conn.connect()
        return conn

    @property
    def conn(self):
        """The scenario's default connection (opened on first use)."""
        if self._conn is None or not self._conn.connected:
            self._conn = self.connect()
        return self._conn

    def channel(self, conn=None):
        ch = (conn or self.conn).channel()
        ch.auto_decode = False  # bodies stay bytes, whatever content_encoding says
        return ch

    @property
    def ch(self):
        """The scenario's default channel on the default connection."""
        if self._ch is None or not self._ch.is_open:
            self._ch = self.channel()
        return self._ch

    def close(self):
        for conn in self._conns:
            try:
                if conn.connected:
                    conn.close()
            except Exception:
                pass
        self._conns = []

    def cleanup(self):
        """Delete every queue and exchange named with ctx.name (best effort)."""
        self.close()
        if not self._names:
            return
        try:
            conn = self.connect()
        except Exception:
            return
        for real in self._names:
            for op in ("queue_delete", "exchange_delete"):
                try:
                    ch = conn.channel()
                    getattr(ch, op)(real)
                    ch.close()
                except Exception:
                    if not conn.connected:
                        try:
                            conn = self.connect()
                        except Exception:
                            return
        self.close()

    # ------------------------------------------------------------ operations
    def attempt(self, fn, *args, **kw):
        """Run fn; {"ok": result} or {"error": {...}} if the broker closed the channel or the
        connection (see error())."""
        try:
            return {"ok": fn(*args, **kw)}
        except AMQPError as e:
            return {"error": self.error(e)}

    def error(self, e):
        text = str(getattr(e, "reply_text", "") or "")
        self.notes.append(f"{getattr(e, 'compat_scope', '?')} close {getattr(e, 'reply_code', None)}: {text}")
        sig = getattr(e, "method_sig", None) or (None, None)
        return {
            "scope": getattr(e, "compat_scope", "client-side"),
            "code": getattr(e, "reply_code", None),
            "constant": text.split(" - ", 1)[0],
            "class_method": list(sig) if sig else None,
        }

    def sync(self, ch=None):
        """A round trip on the channel, so that the broker has acted on everything sent before it
        (and any channel or connection error it raised for that arrives here)."""
        ch = ch or self.ch
        return self.attempt(lambda: ch.exchange_declare("amq.direct", "direct", passive=True) and None)

    def publish(self, body, exchange="", routing_key="", ch=None, mandatory=False, immediate=False, **props):
        """basic.publish of a bytes body with the given properties (headers=... may hold Typed)."""
        if isinstance(body, str):
            body = body.encode()
        (ch or self.ch).basic_publish(amqp.Message(body, **props), exchange=exchange,
                                      routing_key=routing_key, mandatory=mandatory, immediate=immediate)

    def seed(self, queue, bodies, **props):
        """Put messages in a queue (default exchange, persistent off) and wait until the broker
        confirmed them all, on a channel of its own."""
        ch = self.channel()
        ch.confirm_select()
        acked = []
        ch.events["basic_ack"].add(lambda tag, multiple: acked.append((tag, multiple)))
        for b in bodies:
            self.publish(b, "", queue, ch=ch, **props)
        n = len(bodies)
        self.wait(lambda: acked and (acked[-1][0] >= n), conn=ch.connection)
        ch.close()

    def get(self, queue, ch=None, no_ack=True, props=False):
        """basic.get: None if empty, else the message as msg() describes it."""
        m = (ch or self.ch).basic_get(queue, no_ack=no_ack)
        return None if m is None else self.msg(m, props=props)

    def drain_get(self, queue, ch=None, props=False):
        """Every message left in the queue, with basic.get no-ack, in order."""
        out = []
        for _ in range(10000):
            m = self.get(queue, ch=ch, props=props)
            if m is None:
                return out
            out.append(m)
        raise AssertionError("scenario bug: drain_get of more than 10000 messages")

    def bodies(self, queue, ch=None):
        return [m["body"] for m in self.drain_get(queue, ch=ch)]

    def msg(self, m, props=True):
        """A received message: body, delivery info, and (props=True) its properties decoded from
        the raw content header, field-table values as [tag, value]."""
        out = {"body": body_text(m.body)}
        di = dict(m.delivery_info or {})
        for k in ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key", "message_count"):
            if k in di:
                out[k] = di[k]
        if props:
            raw = getattr(m, "_compat_raw_props", None)
            out["properties"] = wire.decode_basic_properties(raw) if raw is not None else "?"
        return out

    def consume(self, queue, ch=None, no_ack=False, consumer_tag="", exclusive=False, arguments=None,
                props=False):
        """basic.consume; returns (consumer tag, list that fills with (msg dict, Message))."""
        ch = ch or self.ch
        got = []
        tag = ch.basic_consume(queue, consumer_tag=consumer_tag, no_ack=no_ack, exclusive=exclusive,
                               arguments=arguments, callback=lambda m: got.append((self.msg(m, props=props), m)))
        return tag, got

    def wait(self, pred, timeout=DELIVERY_TIMEOUT, conn=None):
        """Process incoming frames until pred() is true or the timeout passes; returns pred()."""
        conn = conn or self.conn
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                conn.drain_events(timeout=min(left, 0.1))
            except socket.timeout:
                pass
        return bool(pred())

    def settle(self, conn=None, duration=SETTLE):
        """Process incoming frames for a short while (to see deliveries that should not come)."""
        self.wait(lambda: False, timeout=duration, conn=conn)

    def nack(self, delivery_tag, multiple=False, requeue=True, ch=None):
        """basic.nack (py-amqp has no method for it)."""
        (ch or self.ch).send_method(spec.Basic.Nack, "Lbb", (delivery_tag, multiple, requeue))

    def queue(self, tag, durable=False, exclusive=False, auto_delete=False, arguments=None, ch=None):
        """Declare a queue named ctx.name(tag) (py-amqp's default would be auto-delete)."""
        name = self.name(tag)
        (ch or self.ch).queue_declare(name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                                      arguments=arguments)
        return name

    def exchange(self, tag, type="direct", durable=False, auto_delete=False, internal=False, arguments=None,
                 ch=None):
        """Declare an exchange named ctx.name(tag) (internal=True is sent as such)."""
        name = self.name(tag)
        self.exchange_declare(name, type, durable=durable, auto_delete=auto_delete, internal=internal,
                              arguments=arguments, ch=ch)
        return name

    def exchange_declare(self, name, type, passive=False, durable=False, auto_delete=False, internal=False,
                         arguments=None, ch=None):
        """exchange.declare with every flag, internal included (py-amqp always sends internal=0)."""
        (ch or self.ch).send_method(
            spec.Exchange.Declare, "BssbbbbbF",
            (0, name, type, passive, durable, auto_delete, internal, False, arguments),
            wait=spec.Exchange.DeclareOk)

    def exists(self, name, kind="queue"):
        """Whether a queue (or exchange) exists, asked with a passive declare on a channel of its
        own, so that a 404 does not close the scenario's channels. An exclusive queue of another
        connection (405 RESOURCE_LOCKED) exists."""
        ch = self.channel()
        try:
            if kind == "queue":
                ch.queue_declare(name, passive=True)
            else:
                ch.exchange_declare(name, "direct", passive=True)
        except AMQPError as e:
            if getattr(e, "reply_code", None) == 404:
                return False
            if getattr(e, "reply_code", None) == 405:
                return True
            raise
        ch.close()
        return True

    def declare_ok(self, queue, ch=None):
        """[message_count, consumer_count] of a queue (passive declare)."""
        ok = (ch or self.ch).queue_declare(queue, passive=True)
        return [ok.message_count, ok.consumer_count]

    # ------------------------------------------------------------ normalisation
    def normalise(self, value):
        names = sorted(self._names.items(), key=lambda kv: -len(kv[0]))

        def fix(s):
            for real, placeholder in names:
                s = s.replace(real, placeholder)
            s = re.sub(r"amq\.gen-[A-Za-z0-9_\-]+", "amq.gen-*", s)
            s = re.sub(r"amq\.ctag-[A-Za-z0-9_\-]+", "amq.ctag-*", s)
            return s

        def walk(v):
            if isinstance(v, str):
                return fix(v)
            if isinstance(v, list):
                return [walk(x) for x in v]
            if isinstance(v, dict):
                return {fix(k): walk(x) for k, x in v.items()}
            return v

        return walk(value)


def body_text(b):
    if isinstance(b, str):
        b = b.encode()
    b = bytes(b)
    try:
        s = b.decode("utf-8")
        if len(s) <= 200:
            return s
    except UnicodeDecodeError:
        pass
    import hashlib
    return {"len": len(b), "sha256": hashlib.sha256(b).hexdigest()[:16]}


def jsonable(v):
    """Tuples (py-amqp's *_ok_t namedtuples included) to lists, bytes to text, recursively."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return body_text(bytes(v))
    if isinstance(v, tuple) and hasattr(v, "_asdict"):
        return {k: jsonable(x) for k, x in v._asdict().items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


def run(fn, url, scenario_id):
    """Run one scenario against the broker at url: (normalised outcome, notes)."""
    ctx = Ctx(url, scenario_id)
    try:
        fn(ctx)
    except NoManagementApi:
        raise
    except AMQPError as e:
        ctx.outcome["!unexpected close"] = ctx.error(e)
    except (socket.timeout, TimeoutError) as e:
        ctx.outcome["!timeout"] = f"{type(e).__name__}: no answer within {READ_TIMEOUT} s"
    except (ConnectionError, OSError, amqp.exceptions.RecoverableConnectionError) as e:
        ctx.outcome["!connection lost"] = type(e).__name__
    finally:
        ctx.cleanup()
    return ctx.normalise(jsonable(ctx.outcome)), ctx.notes


# ---------------------------------------------------------------- registry
SCENARIOS = {}   # id -> function, run against both brokers
PENDING = {}     # id -> (area, what it needs, function): features the broker under test lacks


def scenario(fn):
    sid = f"{fn.__module__.replace('scenarios_', '')}/{fn.__name__}"
    if sid in SCENARIOS:
        raise AssertionError(f"duplicate scenario {sid}")
    SCENARIOS[sid] = fn
    return fn


def pending(area, needs):
    """A scenario for a feature Warren does not have yet: not collected as a test unless
    COMPAT_DIFF_PENDING=1. `area` is the issue area it waits for (queue features, management)."""
    if area not in ("queue features", "management"):
        raise AssertionError(f"unknown issue area {area!r}")

    def deco(fn):
        sid = f"{fn.__module__.replace('scenarios_', '')}/{fn.__name__}"
        PENDING[sid] = (area, needs, fn)
        return fn
    return deco
