"""rabbitmqadmin against the broker's management API: list, declare, delete, purge, publish,
get, export and import, with the tool's own output and exit codes (it exits 1 with the
`reason` of a 400, `Access refused` for a 401, `Not found` for a 404)."""

import json


def names(rows):
    return sorted(r["name"] for r in rows)


def test_declare_list_and_delete_a_queue(admin, name):
    q = name("q")
    out = admin.ok("declare", "queue", f"name={q}", "durable=true", 'arguments={"x-max-length": 5}')
    assert out.strip() == "queue declared"
    rows = [r for r in admin.json("list", "queues") if r["name"] == q]
    assert len(rows) == 1 and rows[0]["durable"] is True and rows[0]["arguments"] == {"x-max-length": 5}
    table = admin.ok("list", "queues", "name", "durable")
    assert q in table and "True" in table
    # Redeclaring differently: the tool prints the broker's reason and exits 1.
    p = admin.run("declare", "queue", f"name={q}", "durable=false")
    assert p.returncode == 1
    assert "inequivalent arg 'durable'" in p.stdout + p.stderr
    assert admin.ok("delete", "queue", f"name={q}").strip() == "queue deleted"
    assert q not in names(admin.json("list", "queues"))
    p = admin.run("delete", "queue", f"name={q}")
    assert p.returncode == 1 and "Not found" in p.stdout + p.stderr


def test_exchange_binding_publish_and_get(admin, name):
    x, q = name("x"), name("q")
    admin.ok("declare", "exchange", f"name={x}", "type=topic")
    admin.ok("declare", "queue", f"name={q}", "durable=false")
    assert admin.ok("declare", "binding", f"source={x}", f"destination={q}",
                    "routing_key=orders.#").strip() == "binding declared"
    bindings = [b for b in admin.json("list", "bindings") if b["source"] == x]
    assert [(b["destination"], b["routing_key"], b["properties_key"]) for b in bindings] == \
        [(q, "orders.#", "orders.%23")]
    assert admin.ok("publish", f"exchange={x}", "routing_key=orders.new",
                    "payload=hello", 'properties={"content_type": "text/plain"}').strip() == "Message published"
    assert admin.ok("publish", f"exchange={x}", "routing_key=other",
                    "payload=lost").strip() == "Message published but NOT routed"
    got = admin.json("get", f"queue={q}", "ackmode=ack_requeue_true")
    assert [(m["payload"], m["redelivered"], m["routing_key"], m["exchange"], m["message_count"])
            for m in got] == [("hello", False, "orders.new", x, 0)]
    assert got[0]["properties"] == {"content_type": "text/plain"}
    # Requeued by that get: got again, redelivered, and acked away this time.
    got = admin.json("get", f"queue={q}", "ackmode=ack_requeue_false", "count=5")
    assert [(m["payload"], m["redelivered"]) for m in got] == [("hello", True)]
    assert admin.json("get", f"queue={q}") == []
    # The default table output shows the payload too.
    admin.ok("publish", f"exchange={x}", "routing_key=orders.x", "payload=tabled")
    assert "tabled" in admin.ok("get", f"queue={q}")
    assert admin.ok("purge", "queue", f"name={q}").strip() == "queue purged"
    assert admin.json("get", f"queue={q}") == []
    assert admin.ok("delete", "binding", f"source={x}", "destination_type=queue", f"destination={q}",
                    "properties_key=orders.%23").strip() == "binding deleted"
    assert [b for b in admin.json("list", "bindings") if b["source"] == x] == []
    assert admin.ok("delete", "exchange", f"name={x}").strip() == "exchange deleted"


def test_export_then_import(admin, name, tmp_path):
    q, x = name("q"), name("x")
    admin.ok("declare", "exchange", f"name={x}", "type=fanout")
    admin.ok("declare", "queue", f"name={q}", 'arguments={"x-message-ttl": 60000}')
    admin.ok("declare", "binding", f"source={x}", f"destination={q}")
    file = tmp_path / "defs.json"
    out = admin.ok("export", str(file))
    assert out.startswith("Exported definitions")
    defs = json.loads(file.read_text())
    for key in ("rabbit_version", "users", "vhosts", "permissions", "queues", "exchanges", "bindings"):
        assert key in defs, key
    assert q in names(defs["queues"]) and x in names(defs["exchanges"])
    admin.ok("delete", "queue", f"name={q}")
    admin.ok("delete", "exchange", f"name={x}")
    assert admin.ok("import", str(file)).startswith("Uploaded definitions")
    queues = {r["name"]: r for r in admin.json("list", "queues")}
    assert queues[q]["arguments"] == {"x-message-ttl": 60000}
    assert [b["destination"] for b in admin.json("list", "bindings") if b["source"] == x] == [q]
    # One vhost's definitions (-V), as the tool exports them.
    vfile = tmp_path / "vhost.json"
    admin.ok("export", str(vfile), vhost="/")
    one = json.loads(vfile.read_text())
    assert q in names(one["queues"]) and "users" not in one and "vhost" not in one["queues"][0]


def test_refusals_as_the_tool_reports_them(admin, name):
    p = admin.run("declare", "exchange", "name=amq.rmqadmin", "type=direct")
    assert p.returncode == 1 and "Access refused" in p.stdout + p.stderr
    p = admin.run("declare", "queue", f"name={name('q')}", vhost="rmqadmin-no-such-vhost")
    assert p.returncode == 1 and "Not found" in p.stdout + p.stderr
    p = admin.run("declare", "exchange", f"name={name('x')}", "type=bogus")
    assert p.returncode == 1 and "invalid exchange type 'bogus'" in p.stdout + p.stderr
