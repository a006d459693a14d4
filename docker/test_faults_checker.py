"""Unit tests of docker/faults_checker.py on made-up histories:
    python3 -m unittest discover -s docker -p 'test_faults_checker.py'
"""

import unittest

from faults_checker import (
    Delivery,
    Fault,
    Publish,
    check,
    per_fault_kind,
    recovery_times,
)


def pub(i, outcome="ok", publisher="p1", session=0, queue="q", t=None):
    return Publish(f"{publisher}-{i}", queue, publisher, session, i, outcome, float(i if t is None else t))


def got(msg_id, t, redelivered=False, consumer="c1", session=0, queue="q"):
    return Delivery(msg_id, queue, consumer, session, redelivered, float(t))


class Counts(unittest.TestCase):
    def test_clean_history_is_valid(self):
        ps = [pub(i) for i in range(5)]
        ds = [got(p.msg_id, 10 + i) for i, p in enumerate(ps)]
        r = check(ps, ds)
        self.assertEqual((r.attempted, r.confirmed, r.nacked, r.indeterminate), (5, 5, 0, 0))
        self.assertEqual((r.dequeued, r.deliveries), (5, 5))
        self.assertEqual((r.lost, r.unexpected, r.duplicated, r.recovered), ([], [], 0, 0))
        self.assertTrue(r.valid)
        self.assertTrue(r.ordered)

    def test_confirmed_but_never_dequeued_is_lost(self):
        ps = [pub(1), pub(2), pub(3, outcome="info"), pub(4, outcome="nack")]
        r = check(ps, [got("p1-1", 10)])
        self.assertEqual(r.lost, ["p1-2"])
        self.assertEqual(r.indeterminate, 1)
        self.assertEqual(r.nacked, 1)
        self.assertFalse(r.valid)

    def test_unconfirmed_publishes_that_arrive_are_recovered_not_lost(self):
        ps = [pub(1, outcome="info"), pub(2, outcome="nack"), pub(3, outcome="info")]
        r = check(ps, [got("p1-1", 10), got("p1-2", 11)])
        self.assertEqual(r.recovered, 2)
        self.assertEqual(r.nacked_but_dequeued, 1)
        self.assertEqual(r.lost, [])
        self.assertTrue(r.valid)

    def test_dequeued_but_never_attempted_is_unexpected(self):
        r = check([pub(1)], [got("p1-1", 10), got("p9-9", 11)])
        self.assertEqual(r.unexpected, ["p9-9"])
        self.assertEqual(r.dequeued, 1)
        self.assertFalse(r.valid)

    def test_duplicates_must_be_marked_redelivered(self):
        ps = [pub(1), pub(2)]
        ds = [
            got("p1-1", 10),
            got("p1-1", 11, redelivered=True),  # fine: at-least-once, flagged
            got("p1-2", 12),
            got("p1-2", 13),  # a second copy not flagged: a violation
        ]
        r = check(ps, ds)
        self.assertEqual(r.duplicated, 2)
        self.assertEqual(r.duplicate_deliveries, 2)
        self.assertEqual(r.duplicates_not_redelivered, ["p1-2"])
        self.assertFalse(r.valid)

    def test_duplicate_judged_in_time_order_not_list_order(self):
        ps = [pub(1)]
        ds = [got("p1-1", 20, redelivered=True), got("p1-1", 10)]
        self.assertTrue(check(ps, ds).valid)


class Order(unittest.TestCase):
    def test_out_of_order_first_deliveries_on_one_channel(self):
        ps = [pub(i) for i in range(1, 4)]
        ds = [got("p1-1", 10), got("p1-3", 11), got("p1-2", 12)]
        r = check(ps, ds)
        self.assertEqual(r.order_violations, ["p1-2<p1-3"])
        self.assertTrue(r.valid)  # order is reported apart from validity
        self.assertFalse(r.ordered)

    def test_redeliveries_and_other_channels_may_interleave(self):
        ps = [pub(1), pub(2), pub(3), pub(4, session=1), pub(5, publisher="p2")]
        ds = [
            got("p1-2", 10),
            got("p1-1", 11, redelivered=True),  # returned to the queue: may come later
            got("p1-3", 12),
            got("p2-5", 13),
            got("p1-1", 14, session=1),  # another consumer channel: its own order
            got("p1-4", 15),
        ]
        # p1-1 was never delivered first-time on consumer session 0 before p1-2, so no
        # violation: it came back redelivered there.
        r = check(ps, ds)
        self.assertEqual(r.order_violations, [])

    def test_other_queues_are_separate(self):
        ps = [pub(1, queue="a"), pub(2, queue="b")]
        ds = [got("p1-2", 10, queue="b"), got("p1-1", 11, queue="a")]
        self.assertEqual(check(ps, ds).order_violations, [])


class Recovery(unittest.TestCase):
    def test_time_until_every_worker_succeeds_again(self):
        faults = [Fault("crash", "n1", 10.0, 20.0), Fault("pause", "n2", 40.0, 50.0)]
        ok = {"p1": [1, 21, 22, 51], "p2": [2, 23.5, 55], "c1": [3, 20.5, 52]}
        self.assertEqual(recovery_times(faults, ok), [3.5, 5.0])

    def test_no_success_before_the_next_fault_is_none(self):
        faults = [Fault("crash", "n1", 10.0, 20.0), Fault("pause", "n2", 30.0, 40.0)]
        ok = {"p1": [21, 41], "p2": [35, 45]}
        self.assertEqual(recovery_times(faults, ok, until=100.0), [None, 5.0])

    def test_never_again_is_none(self):
        self.assertEqual(recovery_times([Fault("crash", "n1", 1.0, 2.0)], {"p1": [1.5]}), [None])


class PerKind(unittest.TestCase):
    def test_publishes_attributed_to_the_fault_active_then(self):
        faults = [Fault("crash", "n1", 10.0, 20.0), Fault("pause", "n2", 30.0, 40.0)]
        ps = [pub(5), pub(15), pub(16, outcome="info"), pub(25), pub(35, outcome="nack")]
        s = per_fault_kind(faults, ps, lost=["p1-15"])
        self.assertEqual(s["crash"]["faults"], 1)
        self.assertEqual(s["crash"]["attempted"], 2)
        self.assertEqual(s["crash"]["indeterminate"], 1)
        self.assertEqual(s["crash"]["lost"], 1)
        self.assertEqual(s["pause"]["nacked"], 1)
        self.assertEqual(s["(no fault)"]["attempted"], 2)


if __name__ == "__main__":
    unittest.main()
