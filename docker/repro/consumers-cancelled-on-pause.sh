#!/usr/bin/env bash
# Pausing one node for 6 s (SIGSTOP, SIGCONT; VICTIM=n3 by default) cancels the consumers of every
# quorum queue on every node (basic.cancel from the broker) the moment it resumes: the resumed
# node takes its peers for dead ("sent nothing for 4s") before reading what they sent, and its
# peers took it for dead. RabbitMQ keeps quorum queue consumers through such a stall.
#   docker/repro/consumers-cancelled-on-pause.sh
set -u
. "$(dirname "${BASH_SOURCE[0]}")/cluster3.sh"
"$PY" -c "$PRELUDE"'
for q in ("cq1", "cq2", "cq3"): declare(q)
cons = {}
for i, q in ((1, "cq1"), (2, "cq2"), (3, "cq3")):
    c = conn(i, hb=30); ch = c.channel()
    ch.add_on_cancel_callback(lambda frame, i=i, q=q: print(f"basic.cancel from the broker: consumer of {q} on n{i}"))
    ch.basic_consume(q, lambda *a: None)
    cons[i] = c
victim = os.environ.get("VICTIM", "n3")
print(f"SIGSTOP {victim} for 6 s"); os.kill(pids[victim], signal.SIGSTOP); t = time.time()
while time.time() - t < 6:
    for c in cons.values(): c.process_data_events(time_limit=0.1)
os.kill(pids[victim], signal.SIGCONT); print(f"SIGCONT {victim}")
t = time.time()
while time.time() - t < 10:
    for c in cons.values(): c.process_data_events(time_limit=0.1)
' "$P" "${pids[@]}"
