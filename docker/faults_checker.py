"""The checker of docker/faults.py: Jepsen's `total-queue` counts over a run's history.

A history is what the workers of a run saw, nothing the broker said about itself:

* ``Publish(msg_id, queue, publisher, session, seq, outcome, t)``: one attempt to publish a
  unique message; ``outcome`` is ``"ok"`` (confirmed: basic.ack), ``"nack"`` (basic.nack) or
  ``"info"`` (indeterminate: the connection or channel failed before an answer came);
  ``session`` numbers the publisher's channels (messages of one channel keep their order),
  ``seq`` the publisher's messages (increasing);
* ``Delivery(msg_id, queue, consumer, session, redelivered, t)``: one message a consumer got
  (and then acked; an ack may be lost, so the message may come again, marked redelivered).

The counts, as Jepsen's total-queue checker has them:

* attempted, confirmed, nacked, indeterminate publishes; dequeued (distinct messages got);
* lost = confirmed but never dequeued; unexpected = dequeued but never attempted;
* duplicated = messages got more than once (allowed under at-least-once), and among the extra
  deliveries those without the redelivered flag (a violation: a broker that hands out a message
  twice must say so);
* recovered = publishes not confirmed (nacked or indeterminate) that were dequeued anyway.

Valid iff lost = 0, unexpected = 0 and every duplicate is marked redelivered. Ordered iff, within
each consumer channel, the first deliveries (not redelivered) of each publisher channel's messages
to a queue come in the order they were published (AMQP's per-channel order).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Publish:
    msg_id: str
    queue: str
    publisher: str
    session: int
    seq: int
    outcome: str  # "ok" | "nack" | "info"
    t: float


@dataclass(frozen=True)
class Delivery:
    msg_id: str
    queue: str
    consumer: str
    session: int
    redelivered: bool
    t: float


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    start: float
    healed: float


@dataclass
class Result:
    attempted: int = 0
    confirmed: int = 0
    nacked: int = 0
    indeterminate: int = 0
    deliveries: int = 0
    dequeued: int = 0
    lost: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    duplicated: int = 0
    duplicate_deliveries: int = 0
    duplicates_not_redelivered: List[str] = field(default_factory=list)
    recovered: int = 0
    nacked_but_dequeued: int = 0
    order_violations: List[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.lost and not self.unexpected and not self.duplicates_not_redelivered

    @property
    def ordered(self) -> bool:
        return not self.order_violations


def check(publishes: Iterable[Publish], deliveries: Sequence[Delivery]) -> Result:
    attempts: Dict[str, Publish] = {}
    for p in publishes:
        attempts[p.msg_id] = p
    r = Result()
    r.attempted = len(attempts)
    outcomes = Counter(p.outcome for p in attempts.values())
    r.confirmed = outcomes["ok"]
    r.nacked = outcomes["nack"]
    r.indeterminate = r.attempted - r.confirmed - r.nacked

    seen: Counter = Counter()
    for d in sorted(deliveries, key=lambda d: d.t):
        seen[d.msg_id] += 1
        if seen[d.msg_id] > 1 and not d.redelivered:
            r.duplicates_not_redelivered.append(d.msg_id)
    r.deliveries = len(deliveries)
    r.dequeued = sum(1 for m in seen if m in attempts)
    r.unexpected = sorted(m for m in seen if m not in attempts)
    r.lost = sorted(m for m, p in attempts.items() if p.outcome == "ok" and m not in seen)
    r.duplicated = sum(1 for n in seen.values() if n > 1)
    r.duplicate_deliveries = sum(n - 1 for n in seen.values() if n > 1)
    for m, p in attempts.items():
        if p.outcome != "ok" and m in seen:
            r.recovered += 1
            if p.outcome == "nack":
                r.nacked_but_dequeued += 1
    r.order_violations = order_violations(attempts, deliveries)
    return r


def order_violations(attempts: Dict[str, Publish], deliveries: Sequence[Delivery]) -> List[str]:
    """Messages a consumer channel got first-time ahead of an earlier message of the same
    publisher channel and queue (`a<b` names the out-of-order pair)."""
    last: Dict[Tuple[str, int, str, str, int], Tuple[int, str]] = {}
    out = []
    for d in sorted(deliveries, key=lambda d: d.t):
        p = attempts.get(d.msg_id)
        if p is None or d.redelivered:
            continue
        key = (d.consumer, d.session, d.queue, p.publisher, p.session)
        prev = last.get(key)
        if prev is not None and p.seq < prev[0]:
            out.append(f"{d.msg_id}<{prev[1]}")
        if prev is None or p.seq > prev[0]:
            last[key] = (p.seq, d.msg_id)
    return out


def recovery_times(
    faults: Sequence[Fault], ok_times: Dict[str, Sequence[float]], until: Optional[float] = None
) -> List[Optional[float]]:
    """For each fault, the seconds from its heal until every worker had succeeded again (a
    publisher: a confirm; a consumer: a delivery): how long the cluster took to serve all its
    clients again. ``ok_times`` maps each worker to the sorted times of its successes. None when
    some worker had no success before the next fault began (or before ``until``)."""
    import bisect

    out: List[Optional[float]] = []
    for i, f in enumerate(faults):
        horizon = faults[i + 1].start if i + 1 < len(faults) else until
        worst = 0.0
        for times in ok_times.values():
            j = bisect.bisect_left(times, f.healed)
            if j == len(times) or (horizon is not None and times[j] > horizon):
                worst = None
                break
            worst = max(worst, times[j] - f.healed)
        out.append(worst)
    return out


def per_fault_kind(faults: Sequence[Fault], publishes: Iterable[Publish], lost: Iterable[str]):
    """Per fault kind: how many injected, and the publishes attempted while one of that kind was
    active (from its start to its heal), with their outcomes and how many of them were lost."""
    lost = set(lost)
    stats = defaultdict(Counter)
    for f in faults:
        stats[f.kind]["faults"] += 1
    windows = sorted(faults, key=lambda f: f.start)
    starts = [f.start for f in windows]
    import bisect

    for p in publishes:
        j = bisect.bisect_right(starts, p.t) - 1
        kind = windows[j].kind if j >= 0 and p.t <= windows[j].healed else "(no fault)"
        c = stats[kind]
        c["attempted"] += 1
        c[{"ok": "confirmed", "nack": "nacked"}.get(p.outcome, "indeterminate")] += 1
        if p.msg_id in lost:
            c["lost"] += 1
    return stats


def summary(r: Result) -> str:
    def few(xs):
        return "" if not xs else " (" + ", ".join(xs[:10]) + (", ..." if len(xs) > 10 else "") + ")"

    return "\n".join(
        [
            f"attempted      {r.attempted}",
            f"confirmed      {r.confirmed}",
            f"nacked         {r.nacked}",
            f"indeterminate  {r.indeterminate}",
            f"deliveries     {r.deliveries}",
            f"dequeued       {r.dequeued} distinct",
            f"lost           {len(r.lost)}{few(r.lost)}",
            f"unexpected     {len(r.unexpected)}{few(r.unexpected)}",
            f"duplicated     {r.duplicated} messages, {r.duplicate_deliveries} extra deliveries, "
            f"{len(r.duplicates_not_redelivered)} without redelivered{few(r.duplicates_not_redelivered)}",
            f"recovered      {r.recovered} (of them nacked: {r.nacked_but_dequeued})",
            f"order          {len(r.order_violations)} violations{few(r.order_violations)}",
            f"valid          {r.valid}",
        ]
    )
