#!/usr/bin/env bash
# A quorum queue left idle for a few seconds (IDLE=8 by default; 2 s is fine, 5 s is not) stops
# serving, with no fault at all: every basic.get and basic.consume is answered 404 NOT_FOUND after
# 10 s and every publish nacked after 10 s, through every node, while the management API shows it
# with a leader, all members online and its messages. ("quorum queue proposal failed: no majority
# of the cluster confirmed the change in time (10s)" in the nodes' logs.)
#   docker/repro/quorum-idle.sh
set -u
. "$(dirname "${BASH_SOURCE[0]}")/cluster3.sh"
"$PY" -c "$PRELUDE"'
declare("iq")
c = conn(1); ch = c.channel(); ch.confirm_delivery()
for i in range(5): ch.basic_publish("", "iq", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
c.close()
idle = float(os.environ.get("IDLE", "8")); time.sleep(idle); print(f"idle {idle:.0f} s:", api("iq"))
for i in (1, 2, 3):
    t = time.time()
    try:
        m = conn(i).channel().basic_get("iq", auto_ack=True); print(f"n{i} basic.get: {m[2]!r} in {time.time()-t:.1f}s")
    except Exception as e: print(f"n{i} basic.get: {e!r} after {time.time()-t:.1f}s")
    t = time.time()
    try:
        ch = conn(i).channel(); ch.confirm_delivery()
        ch.basic_publish("", "iq", b"x", pika.BasicProperties(delivery_mode=2)); print(f"n{i} publish: confirmed in {time.time()-t:.1f}s")
    except Exception as e: print(f"n{i} publish: {e!r} after {time.time()-t:.1f}s")
' "$P" "${pids[@]}"
