"""Scenarios: publisher confirms and transactions."""

from harness import body_text, scenario


def _confirms(ctx, ch):
    """Select confirm mode; returns a list that fills with ("ack"|"nack"|"return", ...) events in
    arrival order."""
    events = []
    ch.events["basic_ack"].add(lambda tag, multiple: events.append(["ack", tag, multiple]))
    ch.events["basic_nack"].add(lambda tag, multiple: events.append(["nack", tag, multiple]))
    ch.events["basic_return"].add(lambda exc, x, rk, m: events.append(["return", exc.reply_code, x, rk]))
    ch.confirm_select()
    return events


def _confirmed(events):
    """Sorted delivery tags acked, multiple acks expanded (an ack with multiple=True confirms every
    tag up to its own; brokers may batch, and order acks, differently)."""
    tags = set()
    for e in events:
        if e[0] == "ack":
            tags |= set(range(1, e[1] + 1)) if e[2] else {e[1]}
    return sorted(tags)


def _all_confirmed(events, n):
    return _confirmed(events)[:n] == list(range(1, n + 1))


@scenario
def confirms_for_routed_and_unroutable(ctx):
    q = ctx.queue("q")
    ev = _confirms(ctx, ctx.ch)
    for i in range(5):
        ctx.publish(str(i), "", q)
    ctx.publish("unroutable", "", ctx.name("noq"))
    ctx.wait(lambda: _all_confirmed(ev, 6))
    ctx.rec("confirmed", _confirmed(ev))
    ctx.rec("nacks", [e for e in ev if e[0] == "nack"])
    ctx.rec("queue", ctx.bodies(q))


@scenario
def confirm_of_a_returned_message_comes_after_the_return(ctx):
    ev = _confirms(ctx, ctx.ch)
    ctx.publish("unroutable", "", ctx.name("noq"), mandatory=True)
    ctx.wait(lambda: _all_confirmed(ev, 1))
    ctx.rec("events", [e[:2] if e[0] == "return" else ["ack", e[1]] for e in ev])


@scenario
def confirms_for_persistent_messages_to_durable_queue(ctx):
    q = ctx.queue("q", durable=True)
    ev = _confirms(ctx, ctx.ch)
    for i in range(20):
        ctx.publish(str(i), "", q, delivery_mode=2)
    ctx.wait(lambda: _all_confirmed(ev, 20))
    ctx.rec("confirmed", _confirmed(ev))
    ctx.rec("count", ctx.declare_ok(q))


@scenario
def confirm_publish_to_missing_exchange(ctx):
    q = ctx.queue("q")
    ev = _confirms(ctx, ctx.ch)
    ctx.publish("ok", "", q)
    ctx.wait(lambda: _all_confirmed(ev, 1))
    ctx.publish("lost", ctx.name("nox"), "k")
    ctx.rec("sync", ctx.sync())
    ctx.rec("confirmed", _confirmed(ev))
    ctx.rec("queue", ctx.bodies(q))


@scenario
def confirm_select_twice_and_nowait(ctx):
    ctx.rec("first", ctx.attempt(ctx.ch.confirm_select))
    ctx.rec("second", ctx.attempt(ctx.ch.confirm_select))
    ch = ctx.channel()
    ch.confirm_select(nowait=True)
    ctx.rec("nowait then sync", ctx.sync(ch))


@scenario
def confirm_and_tx_exclude_each_other(ctx):
    ch = ctx.channel()
    ch.tx_select()
    ctx.rec("confirm.select on a tx channel", ctx.attempt(ch.confirm_select))
    ch = ctx.channel()
    ch.confirm_select()
    ctx.rec("tx.select on a confirm channel", ctx.attempt(ch.tx_select))


@scenario
def confirm_tags_count_per_channel(ctx):
    q = ctx.queue("q")
    ch1, ch2 = ctx.channel(), ctx.channel()
    ev1, ev2 = _confirms(ctx, ch1), _confirms(ctx, ch2)
    for i in range(3):
        ctx.publish(f"1-{i}", "", q, ch=ch1)
        ctx.publish(f"2-{i}", "", q, ch=ch2)
    ctx.wait(lambda: _all_confirmed(ev1, 3) and _all_confirmed(ev2, 3))
    ctx.rec("channel 1", _confirmed(ev1))
    ctx.rec("channel 2", _confirmed(ev2))


@scenario
def tx_publish_visible_only_after_commit(ctx):
    q = ctx.queue("q")
    tx = ctx.channel()
    tx.tx_select()
    ctx.publish("a", "", q, ch=tx)
    ctx.publish("b", "", q, ch=tx)
    ctx.rec("sync", ctx.sync(tx))
    ctx.rec("before commit", ctx.declare_ok(q))
    tx.tx_commit()
    ctx.rec("after commit", ctx.bodies(q))


@scenario
def tx_rollback_discards_publishes(ctx):
    q = ctx.queue("q")
    tx = ctx.channel()
    tx.tx_select()
    ctx.publish("rolled back", "", q, ch=tx)
    tx.tx_rollback()
    ctx.publish("committed", "", q, ch=tx)
    tx.tx_commit()
    ctx.rec("queue", ctx.bodies(q))


@scenario
def tx_acks_take_effect_on_commit(ctx):
    q = ctx.queue("q")
    ctx.seed(q, ["a", "b", "c"])
    tx = ctx.channel()
    tx.tx_select()
    for _ in range(3):
        ctx.get(q, ch=tx, no_ack=False)
    tx.basic_ack(1)
    tx.tx_rollback()         # the ack of a is discarded; a stays unacked
    tx.basic_ack(2)
    tx.tx_commit()           # b is acked
    tx.basic_reject(3, requeue=True)
    tx.tx_commit()           # c goes back
    ctx.rec("ready after commits", ctx.declare_ok(q))
    tx.close()               # a was never acked: requeued
    ctx.rec("queue", ctx.drain_get(q))


@scenario
def tx_commit_and_rollback_without_select(ctx):
    ctx.rec("commit", ctx.attempt(ctx.ch.tx_commit))
    ctx.rec("rollback", ctx.attempt(ctx.ch.tx_rollback))


@scenario
def tx_mandatory_return(ctx):
    tx = ctx.channel()
    returns = []
    tx.events["basic_return"].add(lambda exc, x, rk, m: returns.append([exc.reply_code, rk]))
    tx.tx_select()
    ctx.publish("unroutable", "", ctx.name("noq"), ch=tx, mandatory=True)
    ctx.rec("select ok, before commit", ctx.sync(tx))
    tx.tx_commit()
    ctx.settle()
    ctx.rec("returns after commit", returns)


@scenario
def tx_select_twice_and_publish_to_missing_exchange(ctx):
    tx = ctx.channel()
    tx.tx_select()
    ctx.rec("second select", ctx.attempt(tx.tx_select))
    ctx.publish("lost", ctx.name("nox"), "k", ch=tx)
    ctx.rec("commit after publish to missing exchange", ctx.attempt(tx.tx_commit))


@scenario
def uncommitted_tx_ack_is_undone_when_the_channel_closes(ctx):
    # Java client's Transactions.requeueOnClose: the ack was never committed, so m1 comes back.
    q = ctx.queue("q")
    ctx.seed(q, ["m1", "m2"])
    ch = ctx.channel()
    ch.tx_select()
    m1 = ch.basic_get(q, no_ack=False)
    ch.basic_ack(m1.delivery_tag)
    ch.basic_get(q, no_ack=False)
    ch.close()
    ctx.rec("queue", [[m["body"], m["redelivered"]] for m in ctx.drain_get(q)])


@scenario
def transactional_publishes_are_routed_at_commit(ctx):
    # Java client's Routing tests: RabbitMQ routes a transaction's publishes at tx.commit, so a
    # mandatory one whose queue was deleted meanwhile comes back then (312 NO_ROUTE), and one to a
    # queue declared only after the publish reaches it.
    gone = ctx.queue("gone")
    ch = ctx.channel()
    returns = []
    ch.events["basic_return"].add(lambda exc, x, rk, m: returns.append([exc.reply_code, body_text(m.body)]))
    ch.tx_select()
    ctx.publish("to a queue deleted before commit", "", gone, ch=ch, mandatory=True)
    later = ctx.name("later")
    ctx.publish("to a queue declared before commit", "", later, ch=ch, mandatory=True)
    ctx.sync(ch)
    ctx.rec("returns before commit", list(returns))
    ctx.ch.queue_delete(gone)
    ctx.ch.queue_declare(later, auto_delete=False)
    ch.tx_commit()
    ctx.wait(lambda: returns, conn=ch.connection)
    ctx.settle(conn=ch.connection)
    ctx.rec("returns", sorted(returns))
    ctx.rec("later", ctx.bodies(later))
    ctx.ch.queue_delete(later)
