"""rabbitmq-c's command-line tools against the broker: declare, publish, get, consume and delete,
each checked for its exact exit code and output.

Expected outputs are what the tools print against RabbitMQ 3.10. On errors the tools print
`<method>: server <channel|connection> error <code>, message: <reply text>`; the reply code and
the reply text's leading constant (e.g. NOT_FOUND) are checked exactly, the rest of the text is
the broker's own wording and is not.
"""

import os
import random
import re
import select
import time

import pika


# An amqp-consume command that prints each message's body as `[body]` on its own line.
BRACKET = ["sh", "-c", 'printf "[%s]\\n" "$(cat)"']


def error_line(method, scope, code, constant):
    """The start of the line a tool prints on stderr when the broker closes with an error."""
    return f"{method}: server {scope} error {code}, message: {constant} - ".encode()


def assert_error(p, method, scope, code, constant, stdout=b""):
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == stdout
    assert p.stderr.startswith(error_line(method, scope, code, constant)), p.stderr
    assert p.stderr.endswith(b"\n") and p.stderr.count(b"\n") == 1, p.stderr


def wait_until(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def consumer_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.consumer_count


# ---------------------------------------------------------------- amqp-declare-queue

def test_declare_prints_the_queue_name(cli, new_name, pika_channel):
    name = new_name()
    assert cli.ok("amqp-declare-queue", "-q", name) == name.encode() + b"\n"
    # idempotent: the same declaration again prints the same
    assert cli.ok("amqp-declare-queue", "-q", name) == name.encode() + b"\n"
    ok = pika_channel.queue_declare(name, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 0)


def test_declare_server_named(cli):
    out = cli.ok("amqp-declare-queue", "-q", "")
    assert re.fullmatch(rb"amq\.gen-[A-Za-z0-9_\-]+\n", out), out
    name = out[:-1].decode()
    # not exclusive, not auto-delete: it outlives the tool's connection until deleted
    assert cli.ok("amqp-delete-queue", "-q", name) == b"0\n"


def test_declare_durable_then_transient_is_refused(cli, new_name):
    name = new_name()
    assert cli.ok("amqp-declare-queue", "-q", name, "-d") == name.encode() + b"\n"
    assert cli.ok("amqp-declare-queue", "-q", name, "-d") == name.encode() + b"\n"
    p = cli.run("amqp-declare-queue", "-q", name)
    assert_error(p, "queue.declare", "channel", 406, "PRECONDITION_FAILED")


def test_declare_reserved_prefix_is_refused(cli):
    p = cli.run("amqp-declare-queue", "-q", "amq.compat-rmqc-reserved")
    assert_error(p, "queue.declare", "channel", 403, "ACCESS_REFUSED")


# ---------------------------------------------------------------- amqp-publish / amqp-get

def test_publish_then_get(cli, queue):
    assert cli.ok("amqp-publish", "-r", queue, "-b", "hello world") == b""
    assert cli.ok("amqp-get", "-q", queue) == b"hello world"
    p = cli.run("amqp-get", "-q", queue)
    assert (p.returncode, p.stdout, p.stderr) == (2, b"", b"")  # 2: queue empty


def test_get_from_empty_queue(cli, queue):
    p = cli.run("amqp-get", "-q", queue)
    assert (p.returncode, p.stdout, p.stderr) == (2, b"", b"")


def test_get_from_missing_queue(cli, new_name):
    p = cli.run("amqp-get", "-q", new_name())
    assert_error(p, "basic.get", "channel", 404, "NOT_FOUND")


def test_get_keeps_publish_order(cli, queue):
    for body in ("first", "second", "third"):
        cli.ok("amqp-publish", "-r", queue, "-b", body)
    assert [cli.ok("amqp-get", "-q", queue) for _ in range(3)] == [b"first", b"second", b"third"]
    assert cli.run("amqp-get", "-q", queue).returncode == 2


def test_publish_empty_body(cli, queue):
    cli.ok("amqp-publish", "-r", queue, "-b", "")
    p = cli.run("amqp-get", "-q", queue)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")  # a message, with an empty body
    assert cli.run("amqp-get", "-q", queue).returncode == 2


def test_publish_binary_body_from_stdin(cli, queue):
    body = bytes(range(256)) * 4
    cli.ok("amqp-publish", "-r", queue, input=body)
    assert cli.ok("amqp-get", "-q", queue) == body


def test_publish_body_larger_than_frame_max(cli, queue):
    # 1,000,000 octets: several body frames at any frame_max a broker offers (128 KiB typical)
    body = random.Random(20240).randbytes(1_000_000)
    cli.ok("amqp-publish", "-r", queue, input=body)
    assert cli.ok("amqp-get", "-q", queue) == body


def test_publish_line_buffered(cli, queue):
    # -l: one message per line of standard input, the newline kept; a last line without one too
    cli.ok("amqp-publish", "-r", queue, "-l", input=b"l1\nl2\n\nl3\nno newline")
    got = [cli.ok("amqp-get", "-q", queue) for _ in range(5)]
    assert got == [b"l1\n", b"l2\n", b"\n", b"l3\n", b"no newline"]
    assert cli.run("amqp-get", "-q", queue).returncode == 2


def test_publish_properties_as_seen_by_another_client(cli, queue, pika_channel):
    cli.ok("amqp-publish", "-r", queue, "-b", "{}", "-C", "application/json", "-E", "utf-8",
           "-t", "reply-queue", "-p", "-H", "k1: v1", "-H", "k2: two words")
    method, props, body = pika_channel.basic_get(queue, auto_ack=True)
    assert body == b"{}"
    assert (method.exchange, method.routing_key, method.redelivered) == ("", queue, False)
    assert props.content_type == "application/json"
    assert props.content_encoding == "utf-8"
    assert props.reply_to == "reply-queue"
    assert props.delivery_mode == 2
    assert props.headers == {"k1": "v1", "k2": "two words"}  # long strings, which pika decodes
    assert (props.priority, props.correlation_id, props.expiration, props.message_id, props.timestamp,
            props.type, props.user_id, props.app_id, props.cluster_id) == (None,) * 9


def test_publish_without_properties(cli, queue, pika_channel):
    cli.ok("amqp-publish", "-r", queue, "-b", "plain")
    _method, props, body = pika_channel.basic_get(queue, auto_ack=True)
    assert body == b"plain"
    # amqp-publish always sets delivery_mode (1 unless -p) and nothing else
    assert props.delivery_mode == 1
    assert (props.content_type, props.content_encoding, props.headers, props.reply_to) == (None,) * 4


def test_publish_through_a_direct_exchange(cli, queue, new_name, pika_channel):
    ex = new_name("-ex")
    pika_channel.exchange_declare(ex, "direct", auto_delete=False)
    pika_channel.queue_bind(queue, ex, routing_key="key-a")
    cli.ok("amqp-publish", "-e", ex, "-r", "key-a", "-b", "routed")
    cli.ok("amqp-publish", "-e", ex, "-r", "key-b", "-b", "dropped")
    assert cli.ok("amqp-get", "-q", queue) == b"routed"
    assert cli.run("amqp-get", "-q", queue).returncode == 2


def test_publish_to_missing_exchange(cli, new_name):
    p = cli.run("amqp-publish", "-e", new_name("-missing"), "-r", "x", "-b", "lost")
    # the publish itself has no reply; the tool sees the channel error when it closes the channel
    assert_error(p, "closing channel", "channel", 404, "NOT_FOUND")


# ---------------------------------------------------------------- amqp-consume

def test_consume_count_acks_only_what_it_consumed(cli, queue):
    for body in ("a", "b", "c"):
        cli.ok("amqp-publish", "-r", queue, "-b", body)
    p = cli.run("amqp-consume", "-q", queue, "-c", 2, "--", *BRACKET)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"[a]\n[b]\n", b"")
    # a and b were acked; c, even if it was sent to the consumer, went back to the queue
    assert cli.ok("amqp-get", "-q", queue) == b"c"
    assert cli.run("amqp-get", "-q", queue).returncode == 2


def test_consume_no_ack(cli, queue):
    for body in ("a", "b"):
        cli.ok("amqp-publish", "-r", queue, "-b", body)
    p = cli.run("amqp-consume", "-q", queue, "-A", "-c", 1, "--", *BRACKET)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"[a]\n", b"")
    # prefetch does not hold back no-ack deliveries: b was sent too and lost with the tool's exit,
    # unless the tool closed before it arrived
    assert cli.ok("amqp-delete-queue", "-q", queue) in (b"0\n", b"1\n")


def test_consume_with_prefetch_one(cli, queue):
    for body in ("a", "b", "c"):
        cli.ok("amqp-publish", "-r", queue, "-b", body)
    p = cli.run("amqp-consume", "-q", queue, "-p", 1, "-c", 3, "--", *BRACKET)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"[a]\n[b]\n[c]\n", b"")
    assert cli.ok("amqp-delete-queue", "-q", queue) == b"0\n"


def test_consume_waits_for_a_later_publish(cli, queue, pika_channel):
    proc = cli.popen("amqp-consume", "-q", queue, "-c", 1, "--", *BRACKET)
    assert wait_until(lambda: consumer_count(pika_channel, queue) == 1), "amqp-consume never became a consumer"
    cli.ok("amqp-publish", "-r", queue, "-b", "late")
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out, err) == (0, b"[late]\n", b"")
    assert wait_until(lambda: consumer_count(pika_channel, queue) == 0)


def publish_until_routed(ch, exchange, routing_key, body, timeout=10.0):
    """Publish (mandatory, on a confirm channel) until the message is routed rather than returned:
    how another connection waits for a binding it cannot see. Exactly one copy gets routed."""
    def routed():
        try:
            ch.basic_publish(exchange, routing_key, body, mandatory=True)
            return True
        except pika.exceptions.UnroutableError:
            return False

    return wait_until(routed, timeout=timeout)


def test_consume_binds_the_queue_to_an_exchange(cli, new_name, pika_channel):
    # With -e, amqp-consume declares the queue itself, auto-delete (so it must not exist yet as a
    # plain queue: that would be an inequivalent redeclaration), and binds it once per
    # comma-separated routing key given with -r.
    ex, queue = new_name("-ex"), new_name()
    pika_channel.exchange_declare(ex, "topic", auto_delete=False)
    pika_channel.confirm_delivery()
    proc = cli.popen("amqp-consume", "-q", queue, "-e", ex, "-r", "a.*,b.#", "-c", 3, "--", *BRACKET)
    assert publish_until_routed(pika_channel, ex, "a.x", b"one"), "amqp-consume never bound its queue"
    for key, body in (("c.a", "not routed"), ("b.c.d", "two"), ("a.x.y", "not routed"), ("b", "three")):
        cli.ok("amqp-publish", "-e", ex, "-r", key, "-b", body)
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out, err) == (0, b"[one]\n[two]\n[three]\n", b"")
    # auto-delete: gone once its only consumer is
    assert wait_until(lambda: cli.run("amqp-get", "-q", queue).returncode == 1)
    assert_error(cli.run("amqp-get", "-q", queue), "basic.get", "channel", 404, "NOT_FOUND")


def _read_line(stream, timeout=10.0):
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready:
            byte = os.read(stream.fileno(), 1)  # unbuffered: select() sees the fd only
            if not byte:
                break
            buf += byte
    return buf


def test_consume_exclusive_server_named_queue(cli, new_name, pika_channel):
    # -x and no -q: an exclusive, auto-delete, server-named queue, whose name the tool prints on
    # stderr. (amqp-tools 0.11.0 needs a routing key with -e, even for a fanout exchange.)
    ex = new_name("-ex")
    pika_channel.exchange_declare(ex, "fanout", auto_delete=False)
    pika_channel.confirm_delivery()
    proc = cli.popen("amqp-consume", "-x", "-e", ex, "-r", "unused", "-c", 1, "--", *BRACKET)
    line = _read_line(proc.stderr)
    m = re.fullmatch(rb"Server provided queue name: (amq\.gen-[A-Za-z0-9_\-]+)\n", line)
    assert m, line
    qname = m.group(1).decode()
    assert publish_until_routed(pika_channel, ex, "", b"fanned"), "amqp-consume never bound its queue"
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out, err) == (0, b"[fanned]\n", b"")
    # exclusive and auto-delete: gone with the tool's connection
    assert wait_until(lambda: cli.run("amqp-get", "-q", qname).returncode == 1)
    assert_error(cli.run("amqp-get", "-q", qname), "basic.get", "channel", 404, "NOT_FOUND")


def test_consume_exclusive_on_an_existing_shared_queue(cli, queue):
    p = cli.run("amqp-consume", "-q", queue, "-x", "-c", 1, "--", "cat")
    assert_error(p, "queue.declare", "channel", 405, "RESOURCE_LOCKED")


def test_consume_from_missing_queue(cli, new_name):
    p = cli.run("amqp-consume", "-q", new_name(), "-c", 1, "--", "cat")
    assert_error(p, "basic.consume", "channel", 404, "NOT_FOUND")


# ---------------------------------------------------------------- amqp-delete-queue

def test_delete_prints_the_message_count(cli, queue):
    for body in ("a", "b", "c"):
        cli.ok("amqp-publish", "-r", queue, "-b", body)
    assert cli.ok("amqp-delete-queue", "-q", queue) == b"3\n"
    assert_error(cli.run("amqp-get", "-q", queue), "basic.get", "channel", 404, "NOT_FOUND")


def test_delete_missing_queue_is_not_an_error(cli, new_name):
    assert cli.ok("amqp-delete-queue", "-q", new_name()) == b"0\n"


def test_delete_if_empty_refuses_a_non_empty_queue(cli, queue):
    cli.ok("amqp-publish", "-r", queue, "-b", "still here")
    p = cli.run("amqp-delete-queue", "-q", queue, "--if-empty")
    assert_error(p, "queue.delete", "channel", 406, "PRECONDITION_FAILED")
    assert cli.ok("amqp-get", "-q", queue) == b"still here"
    assert cli.ok("amqp-delete-queue", "-q", queue, "--if-empty") == b"0\n"


def test_delete_if_unused_refuses_a_queue_with_a_consumer(cli, queue, pika_channel):
    pika_channel.basic_consume(queue, lambda *a: None)
    p = cli.run("amqp-delete-queue", "-q", queue, "--if-unused")
    assert_error(p, "queue.delete", "channel", 406, "PRECONDITION_FAILED")
    pika_channel.cancel()
    pika_channel.close()
    assert cli.ok("amqp-delete-queue", "-q", queue, "--if-unused") == b"0\n"


# ---------------------------------------------------------------- connecting

def test_wrong_password_is_refused(cli, amqp_url, queue):
    params = pika.URLParameters(amqp_url)
    p = cli.run("amqp-get", "--server", params.host, "--port", params.port, "--username",
                params.credentials.username, "--password", "wrong-password", "-q", queue, url=False)
    assert_error(p, "logging in to AMQP server", "connection", 403, "ACCESS_REFUSED")


def test_unknown_vhost_is_refused(cli, amqp_url, queue):
    base = amqp_url.rsplit("/", 1)[0]
    p = cli.run("amqp-get", "-u", f"{base}/compat-no-such-vhost", "-q", queue, url=False)
    assert_error(p, "logging in to AMQP server", "connection", 530, "NOT_ALLOWED")
